-- The public SQL surface (docs/sql.md) as ClickHouse views: the same names, columns and
-- meanings as the DuckDB store's, over the tables derived on insert (derive.sql, refresh.sql)
-- and the broker tables (broker.sql). Differences are documented once, in
-- docs/scaling.md ("SQL differences").

CREATE OR REPLACE VIEW spans AS
SELECT
    TraceId AS trace_id,
    SpanId AS span_id,
    nullIf(ParentSpanId, '') AS parent_span_id,
    SpanName AS name,
    upper(SpanKind) AS kind,
    nullIf(ServiceName, '') AS service,
    toDateTime64(Timestamp, 6, 'UTC') AS start_time,
    toDateTime64(Timestamp + toIntervalNanosecond(Duration), 6, 'UTC') AS end_time,
    Duration / 1e6 AS duration_ms,
    upper(StatusCode) AS status,
    toJSONString(SpanAttributes) AS attributes,
    if(length(Links.TraceId) = 0, NULL,
       toJSONString(arrayMap((t, s) -> map('trace_id', t, 'span_id', s), Links.TraceId, Links.SpanId))) AS links
FROM otel_traces;

-- events, deliveries and causal_edges read the tables the per-batch derive keeps
-- (derive.sql, refresh.sql): a row's newest version wins, deleted delivery rows are gone.
-- The read-time derivations of earlier versions, replaced by the derived tables.
DROP VIEW IF EXISTS _span_events;
DROP VIEW IF EXISTS _broker_events;
DROP VIEW IF EXISTS _producer_keys;
DROP VIEW IF EXISTS _span_deliveries;
DROP VIEW IF EXISTS _parentage;

CREATE OR REPLACE VIEW events AS
SELECT event_id, event_type, exchange, routing_key, producer_service, published_at, trace_id, span_id,
       causation_id, correlation_id, routed_queues, payload_size, source, routed_known
FROM derived_events FINAL;

CREATE OR REPLACE VIEW deliveries AS
SELECT event_id, queue, consumer_service, received_at, settled_at, outcome, redelivered, error, trace_id,
       span_id, source, record_id
FROM derived_deliveries FINAL;

CREATE OR REPLACE VIEW causal_edges AS
SELECT cause_event_id, effect_event_id, argMin(via, rank) AS via, CAST(NULL AS Nullable(String)) AS flow_id
FROM derived_edges
GROUP BY cause_event_id, effect_event_id;

CREATE OR REPLACE VIEW dead_letters AS
SELECT event_id, queue, reason, count, died_at, observed_at, exchange, routing_keys, dead_letter_exchange
FROM broker_dead_letters FINAL;

CREATE OR REPLACE VIEW payloads AS
SELECT event_id, captured_at, content_type, size, is_json, truncated, redacted, body
FROM broker_payloads FINAL;

CREATE OR REPLACE VIEW queues AS SELECT * FROM broker_queues FINAL;
CREATE OR REPLACE VIEW exchanges AS SELECT * FROM broker_exchanges FINAL;
CREATE OR REPLACE VIEW bindings AS SELECT * FROM broker_bindings FINAL;

-- The orphan rules of delivery_state.sql, derived per batch for the events it touched
-- (refresh.sql, @fates): one row per (event, expected queue) whose fate is not (yet) fine;
-- `since` is when the grace starts (NULL: none).
CREATE OR REPLACE VIEW delivery_fates AS
SELECT event_id, queue, state, since, published_at, event_type, exchange, routing_key
FROM derived_fates FINAL;

-- The orphan views read the queues' TTLs as one scalar (queue names, their lowest TTL), looked
-- up per row: a join with the queues costs more than the fates it decorates, and a filter on
-- the view (a window of published_at) then reaches derived_fates' index unhindered.
DROP VIEW IF EXISTS _fates_with_ttl;

-- orphans_after(grace_s=…): the orphans with a grace period of your choosing.
CREATE OR REPLACE VIEW orphans_after AS
WITH now64(6, 'UTC') - toIntervalMicrosecond(toInt64({grace_s:Float64} * 1000000)) AS cutoff,
    (SELECT (groupArray(name), groupArray(assumeNotNull(ttl_ms))) FROM (
        SELECT name, min(message_ttl_ms) AS ttl_ms FROM queues WHERE message_ttl_ms IS NOT NULL GROUP BY name
    )) AS ttls
SELECT event_id, event_type, exchange, routing_key, queue,
       multiIf(
           state != 'undelivered', state,
           has(ttls.1, queue)
               AND published_at + toIntervalMillisecond(ttls.2[indexOf(ttls.1, queue)]) < cutoff, 'expired',
           'unconsumed'
       ) AS reason,
       published_at,
       dateDiff('millisecond', published_at, now64(6, 'UTC')) / 1000.0 AS age_s
FROM delivery_fates
WHERE since IS NULL OR since < cutoff
ORDER BY published_at, event_id, queue;

-- The orphans with the grace the collector was started with (eventscope_settings.grace_s,
-- default 30 s). The same body as orphans_after on purpose: a parametrized view takes literal
-- parameters only, so this one cannot call orphans_after(grace_s = <the stored setting>).
CREATE OR REPLACE VIEW orphans AS
WITH now64(6, 'UTC') - toIntervalMicrosecond(toInt64(coalesce(
    (SELECT toFloat64OrNull(argMax(value, updated_at)) FROM eventscope_settings WHERE name = 'grace_s'), 30.0
) * 1000000)) AS cutoff,
    (SELECT (groupArray(name), groupArray(assumeNotNull(ttl_ms))) FROM (
        SELECT name, min(message_ttl_ms) AS ttl_ms FROM queues WHERE message_ttl_ms IS NOT NULL GROUP BY name
    )) AS ttls
SELECT event_id, event_type, exchange, routing_key, queue,
       multiIf(
           state != 'undelivered', state,
           has(ttls.1, queue)
               AND published_at + toIntervalMillisecond(ttls.2[indexOf(ttls.1, queue)]) < cutoff, 'expired',
           'unconsumed'
       ) AS reason,
       published_at,
       dateDiff('millisecond', published_at, now64(6, 'UTC')) / 1000.0 AS age_s
FROM delivery_fates
WHERE since IS NULL OR since < cutoff
ORDER BY published_at, event_id, queue;

-- chain(event_id='…'): the event itself (depth 0) and every event downstream of it, over
-- the stored causal edges (which cross traces); each event once, at its smallest depth (its
-- cause: the smallest id among those one level up); cycles stop at depth 256. A parametrized
-- view where DuckDB has a table macro chain(id). It reads the root's flow (flows.py: an
-- event's flow holds every event connected to it) by key and walks it breadth-first in
-- memory, one level per arrayFold step: a ClickHouse recursive CTE plans each step again.
-- The walk's state: (events found, their depths, their causes, the last level's events); an
-- event reached from two causes of one level is found twice there (the GROUP BY keeps one);
-- it takes at most as many steps as the flow has causes.
CREATE OR REPLACE VIEW chain AS
WITH
    (SELECT groupArray((cause_event_id, effect_event_id)) FROM (
        SELECT DISTINCT cause_event_id, effect_event_id FROM edge_flows
        WHERE flow_id = (SELECT argMax(flow_id, version) FROM event_flows WHERE event_id = {event_id:String})
          AND effect_event_id != {event_id:String}
    )) AS edges,
    arrayFold(
        (walk, step) -> if(empty(walk.4), walk, arrayMap(
            found -> (
                arrayConcat(walk.1, arrayMap(e -> e.2, found)),
                arrayConcat(walk.2, arrayMap(e -> toUInt16(step + 1), found)),
                arrayConcat(walk.3, arrayMap(e -> CAST(e.1 AS Nullable(String)), found)),
                arrayMap(e -> e.2, found)
            ),
            [arrayFilter(e -> has(walk.4, e.1) AND NOT has(walk.1, e.2), edges)]
        )[1]),
        range(least(256, length(arrayDistinct(arrayMap(e -> e.1, edges))))),
        ([{event_id:String}], [toUInt16(0)], [CAST(NULL AS Nullable(String))], [{event_id:String}])
    ) AS walked
SELECT event_id, toUInt32(min(d)) AS depth, argMin(c, (d, c)) AS cause_event_id
FROM (SELECT arrayJoin(arrayZip(walked.1, walked.2, walked.3)) AS found)
ARRAY JOIN [found.1] AS event_id, [found.2] AS d, [found.3] AS c
GROUP BY event_id
ORDER BY depth, event_id;
