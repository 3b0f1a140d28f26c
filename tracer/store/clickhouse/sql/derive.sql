-- What each span says, derived once when it is inserted: a materialized view over
-- otel_traces (an insert trigger: it reads only the rows of each insert, so its cost follows
-- new rows, never the table) fills span_messages with one row per messaging span. The rules
-- are the normaliser's (tracer/ingest/normaliser.py), in ClickHouse SQL: current messaging
-- names first, the pre-1.2x names other instrumentations emit as fallback; the exporter
-- writes every attribute value as a string ('true', '42').
CREATE TABLE IF NOT EXISTS span_messages (
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    kind LowCardinality(String),
    op LowCardinality(String),
    service Nullable(String),
    start_time DateTime64(6, 'UTC'),
    end_time DateTime64(6, 'UTC'),
    status LowCardinality(String),
    message_id Nullable(String),
    exchange Nullable(String),
    routing_key Nullable(String),
    event_type Nullable(String),
    producer_service Nullable(String),
    causation_id Nullable(String),
    correlation_id Nullable(String),
    payload_size Nullable(Int64),
    queue Nullable(String),
    outcome Nullable(String),
    error Nullable(String),
    auto_ack Bool,
    redelivered Nullable(Bool),
    settle_outcome Nullable(String),
    link_trace_id Nullable(String),
    link_span_id Nullable(String),
    -- the event a send publishes (its message id, else otel-<trace>-<span>); a delivery's
    -- message id ('' when it has none and must be resolved through its producer span)
    event_key String
) ENGINE = ReplacingMergeTree
ORDER BY (op, event_key, trace_id, span_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS span_messages_mv TO span_messages AS
WITH
    SpanAttributes AS a,
    (k) -> if(mapContains(a, k) AND a[k] != '', a[k], NULL) AS attr,
    upper(SpanKind) AS span_kind,
    lower(coalesce(attr('messaging.operation.type'), attr('messaging.operation'))) AS raw_op,
    multiIf(
        NOT mapContains(a, 'messaging.system') AND raw_op IS NULL, '',
        raw_op IN ('send', 'publish', 'create') OR (raw_op IS NULL AND span_kind = 'PRODUCER'), 'send',
        raw_op IN ('process', 'deliver'), 'process',
        raw_op = 'receive' OR (raw_op IS NULL AND span_kind = 'CONSUMER'), 'receive',
        raw_op = 'settle', 'settle',
        ''
    ) AS operation,
    coalesce(attr('messaging.rabbitmq.destination.routing_key'), attr('messaging.rabbitmq.routing_key')) AS rk,
    coalesce(attr('messaging.destination.name'), attr('messaging.destination')) AS destination,
    attr('eventscope.settle.outcome') AS outcome_attr,
    if(outcome_attr IN ('ack', 'nack', 'reject', 'requeue', 'error'), outcome_attr, NULL) AS known_outcome,
    upper(StatusCode) AS status_code,
    attr('error.type') AS error_type,
    multiIf(
        known_outcome IS NOT NULL, known_outcome,
        lower(coalesce(attr('messaging.operation.name'), '')) = 'ack', 'ack',
        lower(coalesce(attr('messaging.operation.name'), '')) IN ('nack', 'reject')
            AND coalesce(attr('eventscope.settle.requeue'), '') IN ('true', '1'), 'requeue',
        lower(coalesce(attr('messaging.operation.name'), '')) IN ('nack', 'reject'),
            lower(attr('messaging.operation.name')),
        NULL
    ) AS settle
SELECT
    TraceId AS trace_id,
    SpanId AS span_id,
    nullIf(ParentSpanId, '') AS parent_span_id,
    span_kind AS kind,
    operation AS op,
    nullIf(ServiceName, '') AS service,
    toDateTime64(Timestamp, 6, 'UTC') AS start_time,
    toDateTime64(Timestamp + toIntervalNanosecond(Duration), 6, 'UTC') AS end_time,
    status_code AS status,
    coalesce(attr('messaging.message.id'), attr('messaging.message_id')) AS message_id,
    if(mapContains(a, 'eventscope.exchange'), a['eventscope.exchange'], destination) AS exchange,
    rk AS routing_key,
    coalesce(attr('eventscope.event.type'), rk) AS event_type,
    coalesce(attr('eventscope.producer'), nullIf(ServiceName, '')) AS producer_service,
    attr('eventscope.causation_id') AS causation_id,
    attr('eventscope.correlation_id') AS correlation_id,
    toInt64OrNull(coalesce(
        attr('messaging.message.body.size'), attr('messaging.message_payload_size_bytes'), ''
    )) AS payload_size,
    coalesce(attr('eventscope.queue'), attr('messaging.consumer.group.name'), destination) AS queue,
    if(status_code = 'ERROR' AND known_outcome IS NULL, 'error', known_outcome) AS outcome,
    if(
        status_code = 'ERROR' AND StatusMessage != '' AND StatusMessage != coalesce(error_type, ''),
        if(error_type IS NULL, StatusMessage, concat(error_type, ': ', StatusMessage)),
        error_type
    ) AS error,
    coalesce(attr('eventscope.auto_ack'), '') IN ('true', '1') AS auto_ack,
    multiIf(
        coalesce(attr('eventscope.redelivered'), '') IN ('true', '1'), true,
        mapContains(a, 'eventscope.queue'), false,
        NULL
    ) AS redelivered,
    settle AS settle_outcome,
    if(length(Links.TraceId) > 0, Links.TraceId[1], NULL) AS link_trace_id,
    if(length(Links.SpanId) > 0, Links.SpanId[1], NULL) AS link_span_id,
    if(operation = 'send', coalesce(message_id, concat('otel-', TraceId, '-', SpanId)), coalesce(message_id, ''))
        AS event_key
FROM otel_traces
WHERE operation != '' OR span_kind = 'CONSUMER';

-- Every span's place in its trace (all spans, messaging or not: parentage walks through
-- internal spans), and the messaging spans' keys, ordered by trace so that the per-batch
-- derive (refresh.sql) finds a trace's spans by the primary key.
CREATE TABLE IF NOT EXISTS span_tree (
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    consumer Bool,
    start_time DateTime64(6, 'UTC'),
    -- when the row arrived: what the follower (derive.py) derives next for spans the
    -- OpenTelemetry Collector wrote
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6),
    INDEX idx_inserted_at inserted_at TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree
ORDER BY (trace_id, span_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS span_tree_mv TO span_tree AS
SELECT TraceId AS trace_id, SpanId AS span_id, nullIf(ParentSpanId, '') AS parent_span_id,
       upper(SpanKind) = 'CONSUMER' AS consumer, toDateTime64(Timestamp, 6, 'UTC') AS start_time
FROM otel_traces;

CREATE TABLE IF NOT EXISTS span_keys (
    trace_id String,
    span_id String,
    op LowCardinality(String),
    event_key String,
    parent_span_id Nullable(String),
    causation_id Nullable(String),
    link_trace_id Nullable(String),
    link_span_id Nullable(String),
    settle_outcome Nullable(String),
    start_time DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (trace_id, span_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS span_keys_mv TO span_keys AS
SELECT trace_id, span_id, op, event_key, parent_span_id, causation_id, link_trace_id, link_span_id,
       settle_outcome, start_time
FROM span_messages;

-- Deliveries without a message id that link to a producer span, by the span they link to.
CREATE TABLE IF NOT EXISTS span_links (
    link_trace_id String,
    link_span_id String,
    trace_id String,
    span_id String,
    start_time DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY (link_trace_id, link_span_id, trace_id, span_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS span_links_mv TO span_links AS
SELECT assumeNotNull(link_trace_id) AS link_trace_id, assumeNotNull(link_span_id) AS link_span_id, trace_id,
       span_id, start_time
FROM span_messages
WHERE op IN ('process', 'receive') AND event_key = '' AND link_trace_id IS NOT NULL AND link_span_id IS NOT NULL;

-- Causal edges, stored: the x-causation-id ones on insert (materialized views over the
-- producer spans and the firehose's publish records), the parentage ones by the per-batch
-- derive (refresh.sql: they need the span tree, which may arrive in any order). rank 0 is
-- causation_id, 1 parentage: an edge found both ways is named by its causation id.
CREATE TABLE IF NOT EXISTS derived_edges (
    cause_event_id String,
    effect_event_id String,
    via LowCardinality(String),
    rank UInt8,
    derived_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree
ORDER BY (cause_event_id, effect_event_id, rank);

-- The edges of a derive's touched events are found by their effect (flows.py).
ALTER TABLE derived_edges ADD INDEX IF NOT EXISTS idx_effect effect_event_id TYPE bloom_filter(0.001) GRANULARITY 1;

-- Flow ids (flows.py): every edge under the flow of its events (a connected component of the
-- edges), so chain() reads one flow by key; each event's flow, the newest version wins.
CREATE TABLE IF NOT EXISTS edge_flows (
    flow_id String,
    cause_event_id String,
    effect_event_id String,
    labelled_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree
ORDER BY (flow_id, cause_event_id, effect_event_id);

CREATE TABLE IF NOT EXISTS event_flows (
    event_id String,
    flow_id String,
    version UInt64,
    labelled_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS span_edges_mv TO derived_edges AS
SELECT assumeNotNull(causation_id) AS cause_event_id, event_key AS effect_event_id,
       'causation_id' AS via, toUInt8(0) AS rank
FROM span_messages
WHERE op = 'send' AND causation_id IS NOT NULL AND causation_id != event_key;

CREATE MATERIALIZED VIEW IF NOT EXISTS broker_edges_mv TO derived_edges AS
SELECT assumeNotNull(causation_id) AS cause_event_id, event_id AS effect_event_id,
       'causation_id' AS via, toUInt8(0) AS rank
FROM broker_events
WHERE causation_id IS NOT NULL AND causation_id != event_id;

-- The merged events, the paired deliveries and the fates (what orphans reads) of docs/sql.md,
-- rewritten by the per-batch
-- derive (refresh.sql) for the events a batch touched: the newest `version` of a row wins;
-- a delivery row the newest derive no longer makes is replaced by a deleted one.
CREATE TABLE IF NOT EXISTS derived_events (
    event_id String,
    event_type Nullable(String),
    exchange Nullable(String),
    routing_key Nullable(String),
    producer_service Nullable(String),
    published_at DateTime64(6, 'UTC'),
    trace_id Nullable(String),
    span_id Nullable(String),
    causation_id Nullable(String),
    correlation_id Nullable(String),
    routed_queues Array(String),
    payload_size Nullable(Int64),
    source LowCardinality(String),
    routed_known Bool,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS derived_deliveries (
    grp String,
    row_key String,
    event_id Nullable(String),
    queue Nullable(String),
    consumer_service Nullable(String),
    received_at Nullable(DateTime64(6, 'UTC')),
    settled_at Nullable(DateTime64(6, 'UTC')),
    outcome Nullable(String),
    redelivered Nullable(Bool),
    error Nullable(String),
    trace_id Nullable(String),
    span_id Nullable(String),
    source LowCardinality(String),
    record_id Nullable(String),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version, deleted)
ORDER BY (grp, row_key);

CREATE TABLE IF NOT EXISTS derived_fates (
    event_id String,
    row_key String,
    queue Nullable(String),
    state LowCardinality(String),
    since Nullable(DateTime64(6, 'UTC')),
    published_at DateTime64(6, 'UTC'),
    event_type Nullable(String),
    exchange Nullable(String),
    routing_key Nullable(String),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version, deleted)
ORDER BY (event_id, row_key);

-- A time window of the orphans (published_at > …) skips the granules outside it: event ids
-- grow with time (UUIDv7), so each granule of this table spans a short time.
ALTER TABLE derived_fates ADD INDEX IF NOT EXISTS idx_published published_at TYPE minmax GRANULARITY 1;

-- Scratch rows of one derive (derive.py): the keys a batch touched, its traces' spans, the
-- deliveries in its scope and what they resolved to; read by the statements of that derive
-- only (derive_id), dropped by the hour.
CREATE TABLE IF NOT EXISTS derive_keys (
    derive_id UInt64,
    kind LowCardinality(String),
    id String,
    created_at DateTime DEFAULT now()
) ENGINE = MergeTree
PARTITION BY toStartOfHour(created_at)
ORDER BY (derive_id, kind, id)
TTL created_at + INTERVAL 1 HOUR
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS derive_spans (
    derive_id UInt64,
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    consumer Bool,
    op Nullable(String),
    event_key Nullable(String),
    causation_id Nullable(String),
    link_trace_id Nullable(String),
    link_span_id Nullable(String),
    settle_outcome Nullable(String),
    start_time DateTime64(6, 'UTC'),
    created_at DateTime DEFAULT now()
) ENGINE = MergeTree
PARTITION BY toStartOfHour(created_at)
ORDER BY (derive_id, trace_id, span_id)
TTL created_at + INTERVAL 1 HOUR
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS derive_scope (
    derive_id UInt64,
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    message_id Nullable(String),
    queue Nullable(String),
    service Nullable(String),
    start_time DateTime64(6, 'UTC'),
    end_time DateTime64(6, 'UTC'),
    outcome Nullable(String),
    auto_ack Bool,
    redelivered Nullable(Bool),
    error Nullable(String),
    link_trace_id Nullable(String),
    link_span_id Nullable(String),
    created_at DateTime DEFAULT now()
) ENGINE = MergeTree
PARTITION BY toStartOfHour(created_at)
ORDER BY (derive_id, trace_id, span_id)
TTL created_at + INTERVAL 1 HOUR
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS derive_resolved (
    derive_id UInt64,
    event_id Nullable(String),
    queue Nullable(String),
    consumer_service Nullable(String),
    received_at DateTime64(6, 'UTC'),
    settled_at Nullable(DateTime64(6, 'UTC')),
    outcome Nullable(String),
    redelivered Nullable(Bool),
    error Nullable(String),
    trace_id String,
    span_id String,
    created_at DateTime DEFAULT now()
) ENGINE = MergeTree
PARTITION BY toStartOfHour(created_at)
ORDER BY (derive_id, trace_id, span_id)
TTL created_at + INTERVAL 1 HOUR
SETTINGS ttl_only_drop_parts = 1;
