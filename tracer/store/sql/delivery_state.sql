-- The orphan rules, once (docs/sql.md, "Orphans"; views.sql turns states into reasons): one
-- row per (event, expected queue) whose fate is not (yet) fine. The store creates the view
-- delivery_fates from this file over every event, and the writer (store.py, _refresh_state)
-- stores it in delivery_state for every event a batch touches. `since` is the time the grace
-- runs from (NULL: no grace, e.g. unroutable); 'undelivered' becomes 'expired' or
-- 'unconsumed' at query time, by the queue's TTL.
--
-- Routes that bypass queues: a message published to RabbitMQ's direct reply-to
-- (amq.rabbitmq.reply-to.*) is routed to no queue (routed_queues = []), yet its client's
-- pseudo-consumer receives it: with a delivery it is consumed, without one 'unroutable' (the
-- client is gone), after the grace, since its consumer span may come after the firehose record.
-- A delivery whose instrumentation cannot tell an ack from "still processing" has the outcome
-- 'unknown': it is a candidate ('unknown', on the queue the firehose delivered it from) only when
-- the firehose saw the delivery; views.sql keeps it as 'unacked' only when the queue's state
-- (management poller) says its messages may still be unacknowledged, else it is no orphan.
--
-- {scope} restricts every scan to the events concerned: `event_id IN (SELECT event_id FROM
-- _eventscope_touched) AND event_id BETWEEN $lo AND $hi` (the range lets DuckDB skip row
-- groups by their min/max when ids grow with time, as UUIDv7 do), or `true` to rebuild all.
WITH
    ev AS (SELECT * FROM events WHERE {scope}),
    dels AS (SELECT * FROM deliveries WHERE {scope}),
    -- the latest attempt per queue. Attempts received in the same instant (Node's amqplib
    -- instrumentation stamps milliseconds, and its sub-millisecond settle times do not keep
    -- order either): a requeued attempt is never the last one beside another (its redelivery
    -- is that other), then the later settle, then a settled attempt over one not settled yet
    latest AS (
        SELECT d.event_id, d.queue, d.outcome, d.received_at, d.settled_at, d.trace_id IS NOT NULL AS traced,
               d.record_id IS NOT NULL AS seen_by_broker
        FROM dels d
        WHERE d.event_id IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY d.event_id, d.queue
            ORDER BY d.received_at DESC, coalesce(d.outcome = 'requeue', false), d.settled_at DESC NULLS LAST,
                     d.span_id DESC NULLS LAST
        ) = 1
    ),
    deaths AS (
        SELECT event_id, queue, max(observed_at) AS observed_at
        FROM dead_letters
        WHERE {scope}
        GROUP BY event_id, queue
    ),
    unrouted AS (
        SELECT e.event_id, e.published_at,
               CASE WHEN e.exchange IN ('', 'amq.default') THEN e.routing_key END AS queue
        FROM ev e
        WHERE e.routed_queues IS NULL
          AND NOT EXISTS (SELECT 1 FROM dels d WHERE d.event_id = e.event_id)
    ),
    undelivered AS (
        SELECT e.event_id, q.queue, e.published_at
        FROM ev e, unnest(e.routed_queues) AS q(queue)
        WHERE NOT EXISTS (SELECT 1 FROM dels d WHERE d.event_id = e.event_id AND d.queue = q.queue)
        UNION ALL
        SELECT u.event_id, u.queue, u.published_at
        FROM unrouted u
        WHERE NOT EXISTS (SELECT 1 FROM deaths dl WHERE dl.event_id = u.event_id)
          AND NOT starts_with(coalesce(u.queue, ''), 'amq.rabbitmq.reply-to')
    ),
    broker_delivered AS (
        SELECT event_id, min(queue) AS queue
        FROM dels
        WHERE trace_id IS NULL AND queue IS NOT NULL
        GROUP BY event_id
    ),
    direct_replies AS (
        SELECT e.event_id, e.published_at
        FROM ev e
        WHERE coalesce(e.exchange, '') IN ('', 'amq.default')
          AND starts_with(e.routing_key, 'amq.rabbitmq.reply-to')
    ),
    found AS (
        SELECT e.event_id, NULL::VARCHAR AS queue, 'unroutable' AS state,
               CASE WHEN r.event_id IS NOT NULL THEN e.published_at END AS since
        FROM ev e
        LEFT JOIN direct_replies r USING (event_id)
        WHERE e.routed_queues IS NOT NULL AND len(e.routed_queues) = 0
          -- replayed (docs/redrive.md) and delivered since: its deliveries decide (below)
          AND NOT EXISTS (SELECT 1 FROM dels d WHERE d.event_id = e.event_id)
        UNION ALL
        -- without broker truth, a direct reply nobody received had no queue to wait in
        SELECT u.event_id, NULL::VARCHAR AS queue, 'unroutable' AS state, u.published_at AS since
        FROM unrouted u
        JOIN direct_replies r USING (event_id)
        UNION ALL
        SELECT x.event_id, x.queue,
               CASE WHEN dl.event_id IS NOT NULL THEN 'dead_lettered' ELSE 'undelivered' END AS state,
               x.published_at AS since
        FROM undelivered x
        LEFT JOIN deaths dl ON dl.event_id = x.event_id AND dl.queue = x.queue
        UNION ALL
        SELECT u.event_id, dl.queue, 'dead_lettered' AS state, u.published_at AS since
        FROM unrouted u
        JOIN deaths dl ON dl.event_id = u.event_id
        UNION ALL
        SELECT l.event_id, coalesce(l.queue, bd.queue) AS queue,
               CASE
                   WHEN dl.observed_at >= l.received_at THEN 'dead_lettered'
                   WHEN l.outcome IS NULL THEN 'unacked'
                   WHEN l.outcome = 'requeue' THEN 'unconsumed'
                   WHEN l.outcome = 'unknown' THEN 'unknown'
                   ELSE 'failed'
               END AS state,
               coalesce(l.settled_at, l.received_at) AS since
        FROM latest l
        LEFT JOIN deaths dl ON dl.event_id = l.event_id AND dl.queue = l.queue
        LEFT JOIN broker_delivered bd ON bd.event_id = l.event_id
        WHERE dl.observed_at >= l.received_at
           OR (l.outcome = 'unknown' AND (l.seen_by_broker OR (l.queue IS NULL AND bd.queue IS NOT NULL)))
           OR (l.outcome <> 'ack' AND l.outcome <> 'unknown')
           OR (l.outcome IS NULL AND l.traced)
    )
SELECT f.event_id, f.queue, f.state, f.since, e.published_at, e.event_type, e.exchange, e.routing_key
FROM found f
JOIN ev e USING (event_id)
