-- The orphan rules, once (docs/sql.md, "Orphans"; views.sql turns states into reasons): one
-- row per (event, expected queue) whose fate is not (yet) fine. The store creates the view
-- delivery_fates from this file over every event, and the writer (store.py, _refresh_state)
-- stores it in delivery_state for every event a batch touches. `since` is the time the grace
-- runs from (NULL: no grace, e.g. unroutable); 'undelivered' becomes 'expired' or
-- 'unconsumed' at query time, by the queue's TTL.
--
-- {scope} restricts every scan to the events concerned: `event_id IN (SELECT event_id FROM
-- _eventscope_touched) AND event_id BETWEEN $lo AND $hi` (the range lets DuckDB skip row
-- groups by their min/max when ids grow with time, as UUIDv7 do), or `true` to rebuild all.
WITH
    ev AS (SELECT * FROM events WHERE {scope}),
    dels AS (SELECT * FROM deliveries WHERE {scope}),
    latest AS (
        SELECT d.event_id, d.queue, d.outcome, d.received_at, d.settled_at, d.trace_id IS NOT NULL AS traced
        FROM dels d
        WHERE d.event_id IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY d.event_id, d.queue ORDER BY d.received_at DESC, d.span_id DESC NULLS LAST
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
    ),
    found AS (
        SELECT e.event_id, NULL::VARCHAR AS queue, 'unroutable' AS state, NULL::TIMESTAMPTZ AS since
        FROM ev e
        WHERE e.routed_queues IS NOT NULL AND len(e.routed_queues) = 0
          -- replayed (docs/redrive.md) and delivered since: its deliveries decide (below)
          AND NOT EXISTS (SELECT 1 FROM dels d WHERE d.event_id = e.event_id)
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
        SELECT l.event_id, l.queue,
               CASE
                   WHEN dl.observed_at >= l.received_at THEN 'dead_lettered'
                   WHEN l.outcome IS NULL THEN 'unacked'
                   WHEN l.outcome = 'requeue' THEN 'unconsumed'
                   ELSE 'failed'
               END AS state,
               coalesce(l.settled_at, l.received_at) AS since
        FROM latest l
        LEFT JOIN deaths dl ON dl.event_id = l.event_id AND dl.queue = l.queue
        WHERE dl.observed_at >= l.received_at
           OR l.outcome <> 'ack'
           OR (l.outcome IS NULL AND l.traced)
    )
SELECT f.event_id, f.queue, f.state, f.since, e.published_at, e.event_type, e.exchange, e.routing_key
FROM found f
JOIN ev e USING (event_id)
