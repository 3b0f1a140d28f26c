-- Views and macros of the public SQL surface. They hold no data, so the collector recreates
-- them on every open (CREATE OR REPLACE) instead of migrating them.

-- Events, per expected queue, that did not end well after grace_s seconds: one row per
-- (event, queue), the reason being the message's final fate there (docs/sql.md, "Orphans").
--
-- Expected queues: the firehose's routed_queues (broker truth; [] = unroutable). Without it
-- (spans only) they are unknown: an event nobody received is 'unconsumed' with queue = the
-- routing key when it went through the default exchange, else NULL (it may as well have been
-- unroutable: only broker truth can tell), unless the dead-letter tap saw it die somewhere.
-- Never delivered from an expected queue: 'dead_lettered' if a dead-letter copy from that
-- queue was seen, 'expired' if the queue has a message TTL (management poller) that ran out,
-- else 'unconsumed'. Delivered: the latest attempt decides — a dead-letter copy seen after it
-- → 'dead_lettered' (a nack into a DLX is one row, not 'failed' as well), unsettled →
-- 'unacked', error/nack/reject → 'failed', requeued and never delivered again → 'unconsumed',
-- ack → fine. An attempt only the firehose saw (no consumer span) has an unknown settle: it
-- counts as consumed, never as an orphan. Dead-letter times are the collector's (observed_at).
CREATE OR REPLACE MACRO orphans_after(grace_s) AS TABLE
WITH
    cutoff AS (
        SELECT now() - to_microseconds(CAST(CAST(grace_s AS DOUBLE) * 1000000 AS BIGINT)) AS at
    ),
    latest AS (
        SELECT d.event_id, d.queue, d.outcome, d.received_at, d.settled_at, d.trace_id IS NOT NULL AS traced
        FROM deliveries d
        WHERE d.event_id IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY d.event_id, d.queue ORDER BY d.received_at DESC, d.span_id DESC NULLS LAST
        ) = 1
    ),
    deaths AS (
        SELECT event_id, queue, max(observed_at) AS observed_at
        FROM dead_letters
        GROUP BY event_id, queue
    ),
    ttls AS (
        SELECT name AS queue, min(message_ttl_ms) AS ttl_ms
        FROM queues
        WHERE message_ttl_ms IS NOT NULL
        GROUP BY name
    ),
    unrouted AS (
        -- spans only, nobody received it: the one queue we can name, if any
        SELECT e.event_id, e.published_at,
               CASE WHEN e.exchange IN ('', 'amq.default') THEN e.routing_key END AS queue
        FROM events e
        WHERE e.routed_queues IS NULL
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id)
    ),
    undelivered AS (
        SELECT e.event_id, q.queue, e.published_at
        FROM events e, unnest(e.routed_queues) AS q(queue)
        WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.queue = q.queue)
        UNION ALL
        SELECT u.event_id, u.queue, u.published_at
        FROM unrouted u
        WHERE NOT EXISTS (SELECT 1 FROM dead_letters dl WHERE dl.event_id = u.event_id)
    ),
    found AS (
        SELECT e.event_id, NULL::VARCHAR AS queue, 'unroutable' AS reason
        FROM events e
        WHERE e.routed_queues IS NOT NULL AND len(e.routed_queues) = 0
        UNION ALL
        SELECT x.event_id, x.queue,
               CASE
                   WHEN dl.event_id IS NOT NULL THEN 'dead_lettered'
                   WHEN t.ttl_ms IS NOT NULL
                        AND x.published_at + to_milliseconds(t.ttl_ms) < cutoff.at THEN 'expired'
                   ELSE 'unconsumed'
               END AS reason
        FROM undelivered x
        CROSS JOIN cutoff
        LEFT JOIN deaths dl ON dl.event_id = x.event_id AND dl.queue = x.queue
        LEFT JOIN ttls t ON t.queue = x.queue
        WHERE x.published_at < cutoff.at
        UNION ALL
        -- spans only, nobody received it, but it died somewhere: the queue is known after all
        SELECT u.event_id, dl.queue, 'dead_lettered' AS reason
        FROM unrouted u
        CROSS JOIN cutoff
        JOIN deaths dl ON dl.event_id = u.event_id
        WHERE u.published_at < cutoff.at
        UNION ALL
        SELECT l.event_id, l.queue,
               CASE
                   WHEN dl.observed_at >= l.received_at THEN 'dead_lettered'
                   WHEN l.outcome IS NULL THEN 'unacked'
                   WHEN l.outcome = 'requeue' THEN 'unconsumed'
                   ELSE 'failed'
               END AS reason
        FROM latest l
        CROSS JOIN cutoff
        LEFT JOIN deaths dl ON dl.event_id = l.event_id AND dl.queue = l.queue
        WHERE coalesce(l.settled_at, l.received_at) < cutoff.at
          AND (
              dl.observed_at >= l.received_at
              OR l.outcome <> 'ack'
              OR (l.outcome IS NULL AND l.traced)
          )
    )
SELECT e.event_id, e.event_type, e.exchange, e.routing_key, f.queue, f.reason, e.published_at,
       date_diff('millisecond', e.published_at, now()) / 1000.0 AS age_s
FROM found f
JOIN events e USING (event_id)
ORDER BY e.published_at, e.event_id, f.queue;

-- orphans_after(grace_s) read from delivery_state, which the collector's writer keeps up to
-- date with every batch (schema_v4_perf.sql, delivery_state.sql): the same rows and order for
-- what the collector wrote, without re-deriving every event's fate on each query.
CREATE OR REPLACE MACRO maintained_orphans(grace_s) AS TABLE
WITH
    cutoff AS (
        SELECT now() - to_microseconds(CAST(CAST(grace_s AS DOUBLE) * 1000000 AS BIGINT)) AS at
    ),
    ttls AS (
        SELECT name AS queue, min(message_ttl_ms) AS ttl_ms
        FROM queues
        WHERE message_ttl_ms IS NOT NULL
        GROUP BY name
    )
SELECT s.event_id, s.event_type, s.exchange, s.routing_key, s.queue,
       CASE
           WHEN s.state <> 'undelivered' THEN s.state
           WHEN t.ttl_ms IS NOT NULL AND s.published_at + to_milliseconds(t.ttl_ms) < cutoff.at THEN 'expired'
           ELSE 'unconsumed'
       END AS reason,
       s.published_at,
       date_diff('millisecond', s.published_at, now()) / 1000.0 AS age_s
FROM delivery_state s
CROSS JOIN cutoff
LEFT JOIN ttls t ON t.queue = s.queue
WHERE s.since IS NULL OR s.since < cutoff.at
ORDER BY s.published_at, s.event_id, s.queue;

-- The orphans with the grace the collector was started with (collector_settings.grace_s, default 30 s),
-- from the maintained delivery state.
CREATE OR REPLACE VIEW orphans AS
SELECT *
FROM maintained_orphans(coalesce(
    (SELECT TRY_CAST(value AS DOUBLE) FROM collector_settings WHERE name = 'grace_s'), 30.0
));

-- The event itself (depth 0) and every event downstream of it, over causal_edges (which cross
-- traces). Each event appears once, at its smallest depth; cycles stop at depth 256.
CREATE OR REPLACE MACRO chain(root_event_id) AS TABLE
WITH RECURSIVE walk(event_id, depth, cause_event_id) AS (
    SELECT CAST(root_event_id AS VARCHAR), 0, NULL::VARCHAR
    UNION
    SELECT ce.effect_event_id, walk.depth + 1, ce.cause_event_id
    FROM walk
    JOIN causal_edges ce ON ce.cause_event_id = walk.event_id
    WHERE walk.depth < 256 AND ce.effect_event_id <> CAST(root_event_id AS VARCHAR)
)
SELECT event_id, min(depth) AS depth, arg_min(cause_event_id, depth) AS cause_event_id
FROM walk
GROUP BY event_id
ORDER BY depth, event_id;

