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

-- The fates with their queue's TTL, for the two orphan views below.
CREATE OR REPLACE VIEW _fates_with_ttl AS
SELECT s.*, t.ttl_ms AS ttl_ms
FROM delivery_fates s
LEFT JOIN (
    SELECT name AS queue, min(message_ttl_ms) AS ttl_ms FROM queues WHERE message_ttl_ms IS NOT NULL GROUP BY name
) AS t ON t.queue = s.queue
SETTINGS join_use_nulls = 1;

-- orphans_after(grace_s=…): the orphans with a grace period of your choosing.
CREATE OR REPLACE VIEW orphans_after AS
WITH now64(6, 'UTC') - toIntervalMicrosecond(toInt64({grace_s:Float64} * 1000000)) AS cutoff
SELECT event_id, event_type, exchange, routing_key, queue,
       multiIf(
           state != 'undelivered', state,
           ttl_ms IS NOT NULL AND published_at + toIntervalMillisecond(ttl_ms) < cutoff, 'expired',
           'unconsumed'
       ) AS reason,
       published_at,
       dateDiff('millisecond', published_at, now64(6, 'UTC')) / 1000.0 AS age_s
FROM _fates_with_ttl
WHERE since IS NULL OR since < cutoff
ORDER BY published_at, event_id, queue;

-- The orphans with the grace the collector was started with (eventscope_settings.grace_s,
-- default 30 s). The same body as orphans_after on purpose: a parametrized view takes literal
-- parameters only, so this one cannot call orphans_after(grace_s = <the stored setting>).
CREATE OR REPLACE VIEW orphans AS
WITH now64(6, 'UTC') - toIntervalMicrosecond(toInt64(coalesce(
    (SELECT toFloat64OrNull(argMax(value, updated_at)) FROM eventscope_settings WHERE name = 'grace_s'), 30.0
) * 1000000)) AS cutoff
SELECT event_id, event_type, exchange, routing_key, queue,
       multiIf(
           state != 'undelivered', state,
           ttl_ms IS NOT NULL AND published_at + toIntervalMillisecond(ttl_ms) < cutoff, 'expired',
           'unconsumed'
       ) AS reason,
       published_at,
       dateDiff('millisecond', published_at, now64(6, 'UTC')) / 1000.0 AS age_s
FROM _fates_with_ttl
WHERE since IS NULL OR since < cutoff
ORDER BY published_at, event_id, queue;

-- chain(event_id='…'): the event itself (depth 0) and every event downstream of it, over
-- the stored causal edges (which cross traces); each event once, at its smallest depth; cycles
-- stop at depth 256. A parametrized view where DuckDB has a table macro chain(id). Each step
-- looks its causes up by derived_edges' primary key (the IN), so a step costs what it finds,
-- not the table.
CREATE OR REPLACE VIEW chain AS
WITH RECURSIVE
    walk AS (
        SELECT {event_id:String} AS event_id, 0 AS depth, CAST(NULL AS Nullable(String)) AS cause_event_id
        UNION ALL
        SELECT DISTINCT ce.effect_event_id, walk.depth + 1, ce.cause_event_id
        FROM derived_edges AS ce
        JOIN walk ON ce.cause_event_id = walk.event_id
        WHERE ce.cause_event_id IN (SELECT event_id FROM walk)
          AND walk.depth < 256 AND ce.effect_event_id != {event_id:String}
    )
SELECT event_id, min(d) AS depth, argMin(cause, d) AS cause_event_id
FROM (SELECT event_id, depth AS d, cause_event_id AS cause FROM walk)
GROUP BY event_id
ORDER BY depth, event_id;
