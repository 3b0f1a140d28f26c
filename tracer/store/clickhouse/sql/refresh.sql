-- The per-batch derive (derive.py): after a batch is inserted, what it touched is derived
-- again from the tables, so the cost follows the batch, not the table. Every statement takes
-- (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'trace') (the trace ids of the batch's spans) and/or (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
-- (the event ids it touched); the writes take {version:UInt64} (newer derives win).
-- Each statement starts with a `-- @name` line.

-- @spans: every span of the batch's traces, read once (span_tree and span_keys are ordered by
-- trace id, which is random: each lookup of a batch's traces reads most of the table's
-- granules, so the statements below read this copy instead).
INSERT INTO derive_spans (derive_id, trace_id, span_id, parent_span_id, consumer, op, event_key, causation_id,
                          link_trace_id, link_span_id, settle_outcome, start_time)
SELECT {derive:UInt64}, t.trace_id, t.span_id, t.parent_span_id, t.consumer, k.op, k.event_key, k.causation_id,
       k.link_trace_id, k.link_span_id, k.settle_outcome, t.start_time
FROM (SELECT * FROM span_tree WHERE trace_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'trace') LIMIT 1 BY trace_id, span_id) AS t
LEFT JOIN (SELECT * FROM span_keys WHERE trace_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'trace') LIMIT 1 BY trace_id, span_id) AS k
    ON k.trace_id = t.trace_id AND k.span_id = t.span_id
SETTINGS join_use_nulls = 1;

-- @touched: the event ids a batch's traces touched: the events of its messaging spans, and
-- the events its deliveries reach through a link (derive.py adds the broker rows' ones).
INSERT INTO derive_keys (derive_id, kind, id)
SELECT DISTINCT {derive:UInt64}, 'event', event_key FROM (
    SELECT event_key FROM derive_spans
    WHERE derive_id = {derive:UInt64} AND event_key IS NOT NULL AND event_key != ''
    UNION ALL
    SELECT event_key FROM span_keys
    WHERE op = 'send' AND (trace_id, span_id) IN (
        SELECT assumeNotNull(link_trace_id), assumeNotNull(link_span_id) FROM derive_spans
        WHERE derive_id = {derive:UInt64} AND op IN ('process', 'receive') AND event_key = ''
          AND link_trace_id IS NOT NULL
    )
);

-- @events: one row per touched event: its producer spans (the earliest wins) and its firehose
-- publish records (the earliest wins) merged as docs/sql.md says ("How span and broker rows
-- merge"): routing from the broker, the producer span's facts first. ClickHouse has no NULL
-- array: routed_queues is [] when unknown as well, and routed_known says which.
INSERT INTO derived_events
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
    coalesce(b.found, false) AS routed_known,
    {version:UInt64} AS version
FROM (
    SELECT
        event_key AS event_id,
        argMin(event_type, t) AS event_type,
        argMin(exchange, t) AS exchange,
        argMin(routing_key, t) AS routing_key,
        argMin(producer_service, t) AS producer_service,
        min(t) AS published_at,
        argMin(trace_id, t) AS trace_id,
        argMin(span_id, t) AS span_id,
        argMin(causation_id, t) AS causation_id,
        coalesce(argMin(correlation_id, t),
                 if(argMin(cause_of, t) IS NULL, event_key, NULL)) AS correlation_id,
        argMin(payload_size, t) AS payload_size,
        true AS found
    FROM (
        SELECT *, start_time AS t, causation_id AS cause_of FROM span_messages
        WHERE op = 'send' AND event_key IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
    )
    GROUP BY event_key
) AS s
FULL OUTER JOIN (
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
        argMin(payload_size, t) AS payload_size,
        true AS found
    FROM (SELECT *, published_at AS t FROM broker_events WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event'))
    GROUP BY event_id
) AS b USING (event_id)
SETTINGS join_use_nulls = 1;

-- @scope: the consumer spans whose delivery may belong to a touched event (or whose event is
-- not known yet): found by the primary keys only, so the cost follows the batch: deliveries
-- by message id, and those without one in the batch's traces, in the touched events' traces,
-- or linking to either.
INSERT INTO derive_scope (derive_id, trace_id, span_id, parent_span_id, message_id, queue, service, start_time,
                          end_time, outcome, auto_ack, redelivered, error, link_trace_id, link_span_id)
WITH
    own AS (
        SELECT trace_id, span_id FROM span_messages WHERE op = 'send' AND event_key IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
    ),
    anonymous AS (
        -- deliveries without a message id: in the batch's traces, linking to them or to a
        -- touched event's producer, and those a touched event already had
        SELECT trace_id, span_id FROM derive_spans
        WHERE derive_id = {derive:UInt64} AND op IN ('process', 'receive') AND event_key = ''
        UNION ALL
        SELECT trace_id, span_id FROM span_links
        WHERE link_trace_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'trace')
           OR (link_trace_id IN (SELECT trace_id FROM own)
               AND (link_trace_id, link_span_id) IN (SELECT trace_id, span_id FROM own))
        UNION ALL
        SELECT assumeNotNull(trace_id), assumeNotNull(span_id) FROM derived_deliveries FINAL
        WHERE grp IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event') AND span_id IS NOT NULL
    ),
    scope AS (
        SELECT * FROM (
            SELECT * FROM span_messages
            WHERE op IN ('process', 'receive') AND event_key IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
            UNION ALL
            SELECT * FROM span_messages
            WHERE op IN ('process', 'receive') AND event_key = ''
              AND trace_id IN (SELECT trace_id FROM anonymous)
              AND (trace_id, span_id) IN (SELECT trace_id, span_id FROM anonymous)
        )
        LIMIT 1 BY trace_id, span_id
    )
SELECT {derive:UInt64}, trace_id, span_id, parent_span_id, message_id, queue, service, start_time, end_time, outcome,
       auto_ack, redelivered, error, link_trace_id, link_span_id
FROM scope;

-- @resolve: the scope's deliveries, their event resolved (message id, else the producer span
-- they link to or descend from) and their settle span applied (a settle span gives the outcome
-- of the delivery that is its parent, unless it already has one other than 'error').
INSERT INTO derive_resolved (derive_id, event_id, queue, consumer_service, received_at, settled_at, outcome,
                             redelivered, error, trace_id, span_id)
WITH
    scope AS (SELECT * FROM derive_scope WHERE derive_id = {derive:UInt64}),
    producers AS (
        SELECT trace_id, span_id, event_key FROM span_keys
        WHERE op = 'send' AND trace_id IN (
            SELECT trace_id FROM scope WHERE message_id IS NULL
            UNION ALL
            SELECT assumeNotNull(link_trace_id) FROM scope WHERE message_id IS NULL AND link_trace_id IS NOT NULL
        )
        LIMIT 1 BY trace_id, span_id
    ),
    settles AS (
        SELECT trace_id, parent AS span_id, argMin(outcome_of_settle, t) AS settle_outcome,
               min(t) AS settled_at, true AS found
        FROM (
            SELECT trace_id, assumeNotNull(parent_span_id) AS parent, settle_outcome AS outcome_of_settle,
                   start_time AS t
            FROM span_keys
            WHERE trace_id IN (SELECT trace_id FROM scope)
              AND op = 'settle' AND settle_outcome IS NOT NULL AND parent_span_id IS NOT NULL
        )
        GROUP BY trace_id, parent
    ),
    resolved AS (
        SELECT
            coalesce(d.message_id, nullIf(pl.event_key, ''), nullIf(pp.event_key, '')) AS event_id,
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
        FROM scope AS d
        LEFT JOIN settles AS st ON st.trace_id = d.trace_id AND st.span_id = d.span_id
        LEFT JOIN producers AS pl ON pl.trace_id = d.link_trace_id AND pl.span_id = d.link_span_id
        LEFT JOIN producers AS pp ON pp.trace_id = d.trace_id AND pp.span_id = d.parent_span_id
        SETTINGS join_use_nulls = 1
    )
SELECT {derive:UInt64}, * FROM resolved;

-- @deliveries: every delivery row of the touched events, again: the resolved consumer spans
-- paired with firehose deliver records of the same (event, queue, redelivered flag) in time
-- order (1st with 1st, ...); consumer spans whose event is not known yet are rows of their
-- own (event_id NULL). The rows these events had before are written deleted first (version),
-- so a row this derive no longer makes is gone.
INSERT INTO derived_deliveries
WITH
    spans_side AS (
        SELECT *, row_number() OVER (
            PARTITION BY event_id, queue, coalesce(redelivered, false) ORDER BY received_at, span_id
        ) AS n
        FROM (SELECT * EXCEPT (derive_id, created_at) FROM derive_resolved WHERE derive_id = {derive:UInt64})
        WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
    ),
    records_side AS (
        SELECT *, row_number() OVER (
            PARTITION BY event_id, queue, coalesce(redelivered, false) ORDER BY received_at, record_id
        ) AS n
        FROM (
            SELECT record_id, any(e) AS event_id, any(q) AS queue, min(r) AS received_at,
                   any(rd) AS redelivered
            FROM (
                SELECT record_id, event_id AS e, queue AS q, received_at AS r, redelivered AS rd
                FROM broker_deliveries
                WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
            )
            GROUP BY record_id
        )
    )
SELECT
    grp, row_key, event_id, queue, consumer_service, received_at, settled_at, outcome, redelivered, error,
    trace_id, span_id, source, record_id, {version:UInt64} AS version, toUInt8(1) AS deleted
FROM derived_deliveries FINAL
WHERE grp IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
   OR (grp = '' AND row_key IN (SELECT concat(trace_id, '|', span_id) FROM (SELECT * EXCEPT (derive_id, created_at) FROM derive_resolved WHERE derive_id = {derive:UInt64})
                                WHERE event_id IS NULL OR event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')))
UNION ALL
SELECT
    assumeNotNull(if(s.found, s.event_id, f.event_id)) AS grp,
    concat(if(s.found, s.queue, f.queue), '|', toString(coalesce(if(s.found, s.redelivered, f.redelivered), false)),
           '|', toString(if(s.found, s.n, f.n))) AS row_key,
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
    if(f.found, f.record_id, NULL) AS record_id,
    {version:UInt64} + 1 AS version,
    toUInt8(0) AS deleted
FROM (SELECT *, true AS found FROM spans_side) AS s
FULL OUTER JOIN (SELECT *, true AS found FROM records_side) AS f
    ON s.event_id = f.event_id AND s.queue = f.queue
       AND coalesce(s.redelivered, false) = coalesce(f.redelivered, false) AND s.n = f.n
UNION ALL
SELECT '', concat(trace_id, '|', span_id), NULL, queue, consumer_service, received_at, settled_at, outcome,
       redelivered, error, trace_id, span_id, 'span', NULL, {version:UInt64} + 1, toUInt8(0)
FROM (SELECT * EXCEPT (derive_id, created_at) FROM derive_resolved WHERE derive_id = {derive:UInt64})
WHERE event_id IS NULL
SETTINGS join_use_nulls = 1;

-- @fates: the orphan rules of delivery_state.sql for the touched events: one row per (event,
-- expected queue) whose fate is not (yet) fine; `since` is when the grace starts (NULL: none).
-- What depends on the clock (the grace, a queue's message TTL) is the orphan views' part, at
-- read time. The rows these events had before are written deleted first, as for deliveries.
INSERT INTO derived_fates
WITH
    ev AS (SELECT * FROM derived_events FINAL WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')),
    dels AS (SELECT * FROM derived_deliveries FINAL WHERE grp IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event') AND event_id IS NOT NULL),
    latest AS (
        SELECT event_id, queue, outcome, received_at, settled_at, trace_id IS NOT NULL AS traced
        FROM dels
        ORDER BY received_at DESC, coalesce(outcome = 'requeue', false), settled_at DESC NULLS LAST, span_id DESC NULLS LAST
        LIMIT 1 BY event_id, queue
    ),
    deaths AS (
        SELECT event_id, queue, max(observed_at) AS observed_at
        FROM broker_dead_letters FINAL
        WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
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
SELECT event_id, row_key, queue, state, since, published_at, event_type, exchange, routing_key,
       {version:UInt64} AS version, toUInt8(1) AS deleted
FROM derived_fates FINAL
WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
UNION ALL
SELECT f.event_id AS event_id, concat(coalesce(f.queue, ''), '|', f.state) AS row_key, f.queue AS queue,
       f.state AS state, f.since AS since, e.published_at AS published_at, e.event_type AS event_type,
       e.exchange AS exchange, e.routing_key AS routing_key, {version:UInt64} + 1 AS version, toUInt8(0) AS deleted
FROM found f
JOIN ev e ON e.event_id = f.event_id
SETTINGS join_use_nulls = 1;

-- @parentage: span parentage for the batch's traces: a publish without a causation id
-- whose nearest CONSUMER ancestor (up to three spans up) delivered another event was caused
-- by that event. A trace's spans may arrive in any order and in several batches: every
-- batch derives its traces again (the edges only grow; the table keeps each once).
INSERT INTO derived_edges (cause_event_id, effect_event_id, via, rank)
WITH
    candidates AS (
        SELECT trace_id, assumeNotNull(parent_span_id) AS parent_span_id, event_key AS effect
        FROM derive_spans
        WHERE derive_id = {derive:UInt64} AND op = 'send' AND causation_id IS NULL
          AND parent_span_id IS NOT NULL
    ),
    tree AS (
        SELECT trace_id, span_id, parent_span_id, consumer FROM derive_spans WHERE derive_id = {derive:UInt64}
    ),
    consumer_events AS (
        SELECT d.trace_id AS trace_id, d.span_id AS span_id,
               if(d.event_key != '', d.event_key, nullIf(pk.event_key, '')) AS event_id
        FROM (
            SELECT trace_id, span_id, parent_span_id, assumeNotNull(event_key) AS event_key FROM derive_spans
            WHERE derive_id = {derive:UInt64} AND op IN ('process', 'receive')
        ) AS d
        LEFT JOIN (
            SELECT trace_id, span_id, event_key FROM derive_spans
            WHERE derive_id = {derive:UInt64} AND op = 'send'
        ) AS pk ON pk.trace_id = d.trace_id AND pk.span_id = d.parent_span_id
    )
SELECT DISTINCT assumeNotNull(ce.event_id) AS cause_event_id, c.effect AS effect_event_id,
       'parentage' AS via, toUInt8(1) AS rank
FROM candidates c
LEFT JOIN tree p1 ON p1.trace_id = c.trace_id AND p1.span_id = c.parent_span_id
LEFT JOIN tree p2 ON p2.trace_id = c.trace_id AND p2.span_id = p1.parent_span_id AND NOT p1.consumer
LEFT JOIN tree p3 ON p3.trace_id = c.trace_id AND p3.span_id = p2.parent_span_id AND NOT p2.consumer
JOIN consumer_events ce ON ce.trace_id = c.trace_id
    AND ce.span_id = multiIf(p1.consumer, p1.span_id, p2.consumer, p2.span_id, p3.consumer, p3.span_id, '')
WHERE ce.event_id IS NOT NULL AND ce.event_id != c.effect
SETTINGS join_use_nulls = 1;
