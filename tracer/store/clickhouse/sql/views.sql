-- The public SQL surface (docs/sql.md) as ClickHouse views: the same names, columns and
-- meanings as the DuckDB store's, derived at read time from span_messages (filled on insert,
-- derive.sql) and the broker tables (broker.sql). Differences are documented once, in
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

-- One row per event id from its producer spans (the earliest wins).
CREATE OR REPLACE VIEW _span_events AS
SELECT
    event_id,
    argMin(event_type, t) AS event_type,
    argMin(exchange, t) AS exchange,
    argMin(routing_key, t) AS routing_key,
    argMin(producer_service, t) AS producer_service,
    min(t) AS published_at,
    argMin(trace_id, t) AS trace_id,
    argMin(span_id, t) AS span_id,
    argMin(causation_id, t) AS causation_id,
    coalesce(argMin(correlation_id, t), if(argMin(cause_of, t) IS NULL, event_id, NULL)) AS correlation_id,
    argMin(payload_size, t) AS payload_size
FROM (
    SELECT *, start_time AS t, causation_id AS cause_of, coalesce(message_id, concat('otel-', trace_id, '-', span_id)) AS event_id
    FROM span_messages FINAL
    WHERE op = 'send'
)
GROUP BY event_id;

CREATE OR REPLACE VIEW _broker_events AS
SELECT
    event_id,
    argMin(event_type, t) AS event_type,
    argMin(exchange, t) AS exchange,
    argMin(routing_key, t) AS routing_key,
    argMin(producer_service, t) AS producer_service,
    min(t) AS published_at,
    argMin(trace_id, t) AS trace_id,
    argMin(span_id, t) AS span_id,
    argMin(causation_id, t) AS causation_id,
    argMin(correlation_id, t) AS correlation_id,
    argMin(routed_queues, t) AS routed_queues,
    argMin(payload_size, t) AS payload_size
FROM (SELECT *, published_at AS t FROM broker_events)
GROUP BY event_id;

-- Span and broker rows of one event id merge (docs/sql.md, "How span and broker rows merge"):
-- routing from the broker, the producer span's facts first. ClickHouse has no NULL array:
-- routed_queues is [] when unknown as well, and routed_known says which.
CREATE OR REPLACE VIEW events AS
SELECT
    event_id,
    if(s.found, coalesce(s.event_type, b.event_type), b.event_type) AS event_type,
    if(b.found, b.exchange, s.exchange) AS exchange,
    if(b.found, b.routing_key, s.routing_key) AS routing_key,
    if(s.found, coalesce(s.producer_service, b.producer_service), b.producer_service) AS producer_service,
    if(s.found, s.published_at, b.published_at) AS published_at,
    if(s.found, s.trace_id, b.trace_id) AS trace_id,
    if(s.found, s.span_id, b.span_id) AS span_id,
    if(s.found, coalesce(s.causation_id, b.causation_id), b.causation_id) AS causation_id,
    if(s.found, coalesce(s.correlation_id, b.correlation_id), b.correlation_id) AS correlation_id,
    if(b.found, b.routed_queues, []) AS routed_queues,
    if(s.found, coalesce(s.payload_size, b.payload_size), b.payload_size) AS payload_size,
    multiIf(s.found AND b.found, 'both', s.found, 'span', 'firehose') AS source,
    coalesce(b.found, false) AS routed_known
FROM (SELECT *, true AS found FROM _span_events) AS s
FULL OUTER JOIN (SELECT *, true AS found FROM _broker_events) AS b USING (event_id)
SETTINGS join_use_nulls = 1;

-- The producer span of each span key that has one, for deliveries without a message id.
CREATE OR REPLACE VIEW _producer_keys AS
SELECT trace_id, span_id, coalesce(message_id, concat('otel-', trace_id, '-', span_id)) AS event_id
FROM span_messages FINAL
WHERE op = 'send';

-- Consumer spans, their event resolved (message id, else the producer span they link to or
-- descend from) and their settle span applied (docs/sql.md: a settle span gives the outcome of
-- the delivery that is its parent, unless the delivery already has one other than 'error').
CREATE OR REPLACE VIEW _span_deliveries AS
SELECT
    coalesce(d.message_id, nullIf(pl.event_id, ''), nullIf(pp.event_id, '')) AS event_id,
    d.queue AS queue,
    d.service AS consumer_service,
    d.start_time AS received_at,
    if(st.found AND (d.outcome IS NULL OR d.outcome = 'error'), st.settled_at,
       if(d.outcome IS NULL, NULL, if(d.auto_ack, d.start_time, d.end_time))) AS settled_at,
    if(st.found AND (d.outcome IS NULL OR d.outcome = 'error'), st.settle_outcome, d.outcome) AS outcome,
    d.redelivered AS redelivered,
    d.error AS error,
    d.trace_id AS trace_id,
    d.span_id AS span_id
FROM (SELECT * FROM span_messages FINAL WHERE op IN ('process', 'receive')) AS d
LEFT JOIN (
    SELECT trace_id, parent AS span_id, argMin(outcome_of_settle, t) AS settle_outcome,
           min(t) AS settled_at, true AS found
    FROM (
        SELECT trace_id, parent_span_id AS parent, settle_outcome AS outcome_of_settle, start_time AS t
        FROM span_messages
        WHERE op = 'settle' AND settle_outcome IS NOT NULL AND parent_span_id IS NOT NULL
    )
    GROUP BY trace_id, parent
) AS st ON st.trace_id = d.trace_id AND st.span_id = d.span_id
LEFT JOIN _producer_keys AS pl ON pl.trace_id = d.link_trace_id AND pl.span_id = d.link_span_id
LEFT JOIN _producer_keys AS pp ON pp.trace_id = d.trace_id AND pp.span_id = d.parent_span_id
SETTINGS join_use_nulls = 1;

-- One row per delivery attempt: a consumer span and a firehose deliver record of the same
-- (event, queue, redelivered flag) pair in time order (1st with 1st, ...).
CREATE OR REPLACE VIEW deliveries AS
WITH
    spans_side AS (
        SELECT *, row_number() OVER (
            PARTITION BY event_id, queue, coalesce(redelivered, false) ORDER BY received_at, span_id
        ) AS n
        FROM _span_deliveries
        WHERE event_id IS NOT NULL
    ),
    records AS (
        SELECT record_id, any(event_id) AS event_id, any(queue) AS queue,
               min(received_at) AS received_at, any(redelivered) AS redelivered
        FROM broker_deliveries
        GROUP BY record_id
    ),
    records_side AS (
        SELECT *, row_number() OVER (
            PARTITION BY event_id, queue, coalesce(redelivered, false) ORDER BY received_at, record_id
        ) AS n
        FROM records
    )
SELECT
    if(s.found, s.event_id, f.event_id) AS event_id,
    if(s.found, s.queue, f.queue) AS queue,
    if(s.found, s.consumer_service, NULL) AS consumer_service,
    if(s.found, s.received_at, f.received_at) AS received_at,
    if(s.found, s.settled_at, NULL) AS settled_at,
    if(s.found, s.outcome, NULL) AS outcome,
    if(f.found, f.redelivered, s.redelivered) AS redelivered,
    if(s.found, s.error, NULL) AS error,
    if(s.found, s.trace_id, NULL) AS trace_id,
    if(s.found, s.span_id, NULL) AS span_id,
    multiIf(s.found AND f.found, 'both', s.found, 'span', 'firehose') AS source,
    if(f.found, f.record_id, NULL) AS record_id
FROM (SELECT *, true AS found FROM spans_side) AS s
FULL OUTER JOIN (SELECT *, true AS found FROM records_side) AS f
    ON s.event_id = f.event_id AND s.queue = f.queue
       AND coalesce(s.redelivered, false) = coalesce(f.redelivered, false) AND s.n = f.n
UNION ALL
SELECT NULL, queue, consumer_service, received_at, settled_at, outcome, redelivered, error, trace_id, span_id,
       'span', NULL
FROM _span_deliveries
WHERE event_id IS NULL
SETTINGS join_use_nulls = 1;

-- Causal edges: x-causation-id (span or firehose side), and span parentage for a publish
-- without one: the nearest CONSUMER ancestor (up to three spans up) names the cause.
CREATE OR REPLACE VIEW _parentage AS
WITH
    candidates AS (
        SELECT trace_id, parent_span_id, coalesce(message_id, concat('otel-', trace_id, '-', span_id)) AS effect
        FROM span_messages FINAL
        WHERE op = 'send' AND causation_id IS NULL AND parent_span_id IS NOT NULL
    ),
    tree AS (
        SELECT TraceId AS trace_id, SpanId AS span_id, nullIf(ParentSpanId, '') AS parent_span_id,
               upper(SpanKind) = 'CONSUMER' AS consumer
        FROM otel_traces
        WHERE TraceId IN (SELECT trace_id FROM candidates)
    ),
    consumer_events AS (
        -- the delivery spans of those traces only, their event by message id or parent producer
        SELECT d.trace_id AS trace_id, d.span_id AS span_id,
               coalesce(d.message_id, nullIf(pk.event_id, '')) AS event_id
        FROM (
            SELECT trace_id, span_id, parent_span_id, message_id
            FROM span_messages FINAL
            WHERE op IN ('process', 'receive') AND trace_id IN (SELECT trace_id FROM candidates)
        ) AS d
        LEFT JOIN (
            SELECT trace_id, span_id, coalesce(message_id, concat('otel-', trace_id, '-', span_id)) AS event_id
            FROM span_messages FINAL
            WHERE op = 'send' AND trace_id IN (SELECT trace_id FROM candidates)
        ) AS pk ON pk.trace_id = d.trace_id AND pk.span_id = d.parent_span_id
    )
SELECT ce.event_id AS cause_event_id, c.effect AS effect_event_id, 'parentage' AS via
FROM candidates c
LEFT JOIN tree p1 ON p1.trace_id = c.trace_id AND p1.span_id = c.parent_span_id
LEFT JOIN tree p2 ON p2.trace_id = c.trace_id AND p2.span_id = p1.parent_span_id AND NOT p1.consumer
LEFT JOIN tree p3 ON p3.trace_id = c.trace_id AND p3.span_id = p2.parent_span_id AND NOT p2.consumer
JOIN consumer_events ce ON ce.trace_id = c.trace_id
    AND ce.span_id = multiIf(p1.consumer, p1.span_id, p2.consumer, p2.span_id, p3.consumer, p3.span_id, '')
WHERE ce.event_id IS NOT NULL AND ce.event_id != c.effect
SETTINGS join_use_nulls = 1;

CREATE OR REPLACE VIEW causal_edges AS
SELECT cause_event_id, effect_event_id, argMin(how, rank) AS via, CAST(NULL AS Nullable(String)) AS flow_id
FROM (
    SELECT causation_id AS cause_event_id, coalesce(message_id, concat('otel-', trace_id, '-', span_id))
           AS effect_event_id, 'causation_id' AS how, 0 AS rank
    FROM span_messages
    WHERE op = 'send' AND causation_id IS NOT NULL
    UNION ALL
    SELECT causation_id, event_id, 'causation_id', 0 FROM broker_events WHERE causation_id IS NOT NULL
    UNION ALL
    SELECT assumeNotNull(cause_event_id), effect_event_id, via, 1 FROM _parentage
)
WHERE cause_event_id != effect_event_id
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

-- The orphan rules of delivery_state.sql over every event: one row per (event, expected
-- queue) whose fate is not (yet) fine; `since` is when the grace starts (NULL: none).
CREATE OR REPLACE VIEW delivery_fates AS
WITH
    ev AS (SELECT * FROM events),
    dels AS (SELECT * FROM deliveries WHERE event_id IS NOT NULL),
    latest AS (
        SELECT event_id, queue, outcome, received_at, settled_at, trace_id IS NOT NULL AS traced
        FROM dels
        ORDER BY received_at DESC, span_id DESC NULLS LAST
        LIMIT 1 BY event_id, queue
    ),
    deaths AS (
        SELECT event_id, queue, max(observed_at) AS observed_at
        FROM dead_letters
        GROUP BY event_id, queue
    ),
    delivered_pairs AS (SELECT DISTINCT event_id, queue FROM dels),
    unrouted AS (
        SELECT e.event_id AS event_id, e.published_at AS published_at,
               if(e.exchange IN ('', 'amq.default'), e.routing_key, NULL) AS queue
        FROM ev e
        WHERE NOT e.routed_known AND e.event_id NOT IN (SELECT event_id FROM dels)
    ),
    undelivered AS (
        SELECT event_id, queue, published_at
        FROM (SELECT event_id, arrayJoin(routed_queues) AS queue, published_at FROM ev WHERE routed_known)
        WHERE (event_id, queue) NOT IN (SELECT event_id, queue FROM delivered_pairs)
        UNION ALL
        SELECT event_id, queue, published_at
        FROM unrouted
        WHERE event_id NOT IN (SELECT event_id FROM deaths)
    ),
    found AS (
        SELECT event_id, CAST(NULL AS Nullable(String)) AS queue, 'unroutable' AS state,
               CAST(NULL AS Nullable(DateTime64(6, 'UTC'))) AS since
        FROM ev
        WHERE routed_known AND length(routed_queues) = 0
        UNION ALL
        SELECT x.event_id, x.queue, if(dl.observed_at IS NOT NULL, 'dead_lettered', 'undelivered'), x.published_at
        FROM undelivered x
        LEFT JOIN deaths dl ON dl.event_id = x.event_id AND dl.queue = x.queue
        UNION ALL
        SELECT u.event_id, dl.queue, 'dead_lettered', u.published_at
        FROM unrouted u
        JOIN deaths dl ON dl.event_id = u.event_id
        UNION ALL
        SELECT l.event_id, l.queue,
               multiIf(
                   dl.observed_at >= l.received_at, 'dead_lettered',
                   l.outcome IS NULL, 'unacked',
                   l.outcome = 'requeue', 'unconsumed',
                   'failed'
               ),
               coalesce(l.settled_at, l.received_at)
        FROM latest l
        LEFT JOIN deaths dl ON dl.event_id = l.event_id AND dl.queue = l.queue
        WHERE dl.observed_at >= l.received_at
           OR l.outcome != 'ack'
           OR (l.outcome IS NULL AND l.traced)
    )
SELECT f.event_id AS event_id, f.queue AS queue, f.state AS state, f.since AS since,
       e.published_at AS published_at, e.event_type AS event_type, e.exchange AS exchange,
       e.routing_key AS routing_key
FROM found f
JOIN ev e ON e.event_id = f.event_id
SETTINGS join_use_nulls = 1;

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
-- causal_edges (which cross traces); each event once, at its smallest depth; cycles stop at
-- depth 256. A parametrized view where DuckDB has a table macro chain(id).
CREATE OR REPLACE VIEW chain AS
WITH RECURSIVE
    walk AS (
        SELECT {event_id:String} AS event_id, 0 AS depth, CAST(NULL AS Nullable(String)) AS cause_event_id
        UNION ALL
        SELECT ce.effect_event_id, walk.depth + 1, ce.cause_event_id
        FROM walk
        JOIN causal_edges AS ce ON ce.cause_event_id = walk.event_id
        WHERE walk.depth < 256 AND ce.effect_event_id != {event_id:String}
    )
SELECT event_id, min(d) AS depth, argMin(cause, d) AS cause_event_id
FROM (SELECT event_id, depth AS d, cause_event_id AS cause FROM walk)
GROUP BY event_id
ORDER BY depth, event_id;
