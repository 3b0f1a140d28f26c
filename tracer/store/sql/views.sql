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
-- The rules are written once, in delivery_state.sql: the store creates the view
-- delivery_fates from it over every event, and the writer stores the same derivation for the
-- events each batch touches in the table delivery_state. Both hold one row per (event,
-- expected queue) whose fate is not (yet) fine, with the steps that depend on the clock or on
-- the management poller left to query time, here: `since` is when the grace starts (NULL: no
-- grace, e.g. unroutable) and 'undelivered' becomes 'expired' (the queue's TTL ran out) or
-- 'unconsumed'.
CREATE OR REPLACE MACRO _orphans_from(source, grace_s) AS TABLE
WITH
    cutoff AS (
        SELECT now() - to_microseconds(CAST(CAST(grace_s AS DOUBLE) * 1000000 AS BIGINT)) AS at
    ),
    ttls AS (
        SELECT name AS queue, min(message_ttl_ms) AS ttl_ms
        FROM queues
        WHERE message_ttl_ms IS NOT NULL
        GROUP BY name
    ),
    due AS (
        SELECT s.*, count(*) FILTER (WHERE s.state = 'unknown') OVER (PARTITION BY s.queue) AS unknowns
        FROM query_table(source) s
        CROSS JOIN cutoff
        WHERE s.since IS NULL OR s.since < cutoff.at
    ),
    held AS (
        SELECT name AS queue, max(last_seen_at) AS polled_at, arg_max(messages_unacknowledged, last_seen_at) AS unacked
        FROM queues
        WHERE present
        GROUP BY name
    ),
    seen AS (
        SELECT name AS queue, min(first_seen_at) AS first_seen_at, max(last_seen_at) AS last_seen_at
        FROM queues
        GROUP BY name
    ),
    polls AS (SELECT min(first_seen_at) AS first_at, max(last_seen_at) AS at FROM queues),
    routed AS (
        -- The firehose lists a default-exchange publish as routed to the queue of its routing
        -- key even when no such queue exists: the management poller, having polled since the
        -- publish without seeing the queue then, tells it was unroutable (never seen; gone
        -- before the publish; or first seen after a poll that came after the publish).
        SELECT d.*,
               d.state = 'undelivered' AND coalesce(d.exchange, '') IN ('', 'amq.default')
               AND polls.at > d.published_at
               AND (
                   seen.queue IS NULL
                   OR seen.last_seen_at < d.published_at
                   OR (polls.first_at > d.published_at AND seen.first_seen_at > polls.first_at)
               ) AS no_such_queue
        FROM due d
        CROSS JOIN polls
        LEFT JOIN seen ON seen.queue = d.queue
    )
SELECT s.event_id, s.event_type, s.exchange, s.routing_key,
       CASE WHEN s.no_such_queue THEN NULL ELSE s.queue END AS queue,
       CASE
           WHEN s.no_such_queue THEN 'unroutable'
           WHEN s.state = 'unknown' THEN 'unacked'
           WHEN s.state <> 'undelivered' THEN s.state
           WHEN t.ttl_ms IS NOT NULL AND s.published_at + to_milliseconds(t.ttl_ms) < cutoff.at THEN 'expired'
           ELSE 'unconsumed'
       END AS reason,
       s.published_at,
       date_diff('millisecond', s.published_at, now()) / 1000.0 AS age_s
FROM routed s
CROSS JOIN cutoff
LEFT JOIN ttls t ON t.queue = s.queue
LEFT JOIN held h ON h.queue = s.queue
-- 'unknown' (the instrumentation cannot tell an ack from "still processing") is 'unacked' only
-- when the queue, polled after the delivery's grace ran out, still holds at least as many unacknowledged
-- messages as there are such deliveries past the grace: otherwise some were surely settled and
-- the broker cannot say which, so none is reported.
WHERE s.state <> 'unknown'
   OR (h.polled_at - s.since >= now() - cutoff.at AND h.polled_at > s.since
       AND h.unacked >= s.unknowns AND h.unacked > 0)
ORDER BY s.published_at, s.event_id, s.queue;

-- Everything derived from the tables on each call (e.g. after editing them by hand).
CREATE OR REPLACE MACRO orphans_after(grace_s) AS TABLE
SELECT * FROM _orphans_from('delivery_fates', grace_s);

-- The same from delivery_state, which the collector's writer keeps up to date with every
-- batch: the same rows and order for what the collector wrote, without re-deriving every
-- event's fate on each query.
CREATE OR REPLACE MACRO maintained_orphans(grace_s) AS TABLE
SELECT * FROM _orphans_from('delivery_state', grace_s);

-- The orphans with the grace the collector was started with (collector_settings.grace_s, default 30 s),
-- from the maintained delivery state.
CREATE OR REPLACE VIEW orphans AS
SELECT *
FROM maintained_orphans(coalesce(
    (SELECT TRY_CAST(value AS DOUBLE) FROM collector_settings WHERE name = 'grace_s'), 30.0
));

-- The edges of an event's flow (tracer/flows.py): connected edges carry the same flow_id, so a
-- walk from the event never leaves them. The row groups of other flows are skipped by their
-- min/max, so a walk costs the size of its flow, not of causal_edges. `direction` says which
-- side of an edge the event is looked up on: 'cause' (downstream walks) or 'effect'
-- (upstream). Edges without a flow_id (inserted by hand) are always included.
CREATE OR REPLACE MACRO flow_edges(event_id, direction) AS TABLE
WITH flow AS (
    SELECT max(flow_id) AS flow_id
    FROM causal_edges
    WHERE (direction = 'cause' AND cause_event_id = CAST(event_id AS VARCHAR))
       OR (direction = 'effect' AND effect_event_id = CAST(event_id AS VARCHAR))
)
SELECT ce.cause_event_id, ce.effect_event_id, ce.via
FROM causal_edges ce JOIN flow ON ce.flow_id = flow.flow_id
UNION ALL
SELECT cause_event_id, effect_event_id, via FROM causal_edges WHERE flow_id IS NULL;

-- The event itself (depth 0) and every event downstream of it, over causal_edges (which cross
-- traces). Each event appears once, at its smallest depth; cycles stop at depth 256.
CREATE OR REPLACE MACRO chain(root_event_id) AS TABLE
WITH RECURSIVE
    edges AS MATERIALIZED (SELECT cause_event_id, effect_event_id FROM flow_edges(root_event_id, 'cause')),
    walk(event_id, depth, cause_event_id) AS (
        SELECT CAST(root_event_id AS VARCHAR), 0, NULL::VARCHAR
        UNION
        SELECT ce.effect_event_id, walk.depth + 1, ce.cause_event_id
        FROM walk
        JOIN edges ce ON ce.cause_event_id = walk.event_id
        WHERE walk.depth < 256 AND ce.effect_event_id <> CAST(root_event_id AS VARCHAR)
    )
SELECT event_id, min(depth) AS depth, arg_min(cause_event_id, depth) AS cause_event_id
FROM walk
GROUP BY event_id
ORDER BY depth, event_id;

