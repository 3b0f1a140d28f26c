-- Views and macros of the public SQL surface. They hold no data, so the collector recreates
-- them on every open (CREATE OR REPLACE) instead of migrating them.

-- Events, per expected queue, that did not end well after grace_s seconds.
-- With spans only (no firehose), the routed queues are unknown: an event nobody received is
-- 'unconsumed' with queue = the routing key when it went through the default exchange, else NULL
-- (it may as well have been unroutable: only broker truth can tell). The latest delivery
-- attempt per (event, queue) decides: unsettled → 'unacked', error/nack/reject → 'failed',
-- requeued and never delivered again → 'unconsumed'.
CREATE OR REPLACE MACRO orphans_after(grace_s) AS TABLE
WITH
    cutoff AS (
        SELECT now() - to_microseconds(CAST(CAST(grace_s AS DOUBLE) * 1000000 AS BIGINT)) AS at
    ),
    latest AS (
        SELECT d.event_id, d.queue, d.outcome, d.received_at, d.settled_at
        FROM deliveries d
        WHERE d.event_id IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY d.event_id, d.queue ORDER BY d.received_at DESC, d.span_id DESC
        ) = 1
    ),
    found AS (
        SELECT e.event_id, NULL::VARCHAR AS queue, 'unroutable' AS reason
        FROM events e
        WHERE e.routed_queues IS NOT NULL AND len(e.routed_queues) = 0
        UNION ALL
        SELECT e.event_id, q.queue, 'unconsumed' AS reason
        FROM events e, unnest(e.routed_queues) AS q(queue), cutoff
        WHERE e.published_at < cutoff.at
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.queue = q.queue)
        UNION ALL
        SELECT e.event_id,
               CASE WHEN e.exchange IN ('', 'amq.default') THEN e.routing_key END AS queue,
               'unconsumed' AS reason
        FROM events e, cutoff
        WHERE e.routed_queues IS NULL
          AND e.published_at < cutoff.at
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id)
        UNION ALL
        SELECT l.event_id, l.queue,
               CASE
                   WHEN l.outcome IS NULL THEN 'unacked'
                   WHEN l.outcome = 'requeue' THEN 'unconsumed'
                   ELSE 'failed'
               END AS reason
        FROM latest l, cutoff
        WHERE (l.outcome IS NULL OR l.outcome <> 'ack')
          AND coalesce(l.settled_at, l.received_at) < cutoff.at
    )
SELECT e.event_id, e.event_type, e.exchange, e.routing_key, f.queue, f.reason, e.published_at,
       date_diff('millisecond', e.published_at, now()) / 1000.0 AS age_s
FROM found f
JOIN events e USING (event_id)
ORDER BY e.published_at, e.event_id, f.queue;

-- The orphans with the grace the collector was started with (collector_settings.grace_s, default 30 s).
CREATE OR REPLACE VIEW orphans AS
SELECT *
FROM orphans_after(coalesce(
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
