-- Broker truth written by `eventscope collect --store clickhouse://… --firehose` instances.
-- Every table is a ReplacingMergeTree keyed by the row's identity (docs/sql.md,
-- "Idempotence"): a record redelivered to another instance, or replayed after a failed
-- write, is stored once after a merge; the public views read with FINAL or GROUP BY, so
-- answers never count a replay twice, merged or not.

-- Firehose publish records, one per event id; the first record seen wins (version = the
-- negated observation time, so the earliest has the highest version).
CREATE TABLE IF NOT EXISTS broker_events (
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
    version Int64 MATERIALIZED -toUnixTimestamp64Micro(published_at)
) ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

-- Firehose deliver records, one per record identity (a hash of the record).
CREATE TABLE IF NOT EXISTS broker_deliveries (
    record_id String,
    event_id String,
    queue String,
    received_at DateTime64(6, 'UTC'),
    redelivered Nullable(Bool)
) ENGINE = ReplacingMergeTree
ORDER BY (event_id, record_id);

-- x-death entries, keyed as in DuckDB: (event_id, queue, reason, count); the first
-- observation wins.
CREATE TABLE IF NOT EXISTS broker_dead_letters (
    event_id String,
    queue String,
    reason String,
    count Int64,
    died_at Nullable(DateTime64(6, 'UTC')),
    observed_at DateTime64(6, 'UTC'),
    exchange Nullable(String),
    routing_keys Array(String),
    dead_letter_exchange Nullable(String),
    version Int64 MATERIALIZED -toUnixTimestamp64Micro(observed_at)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (event_id, queue, reason, count);

-- Captured bodies (--capture-payloads), the first capture wins.
CREATE TABLE IF NOT EXISTS broker_payloads (
    event_id String,
    captured_at DateTime64(6, 'UTC'),
    content_type Nullable(String),
    size Nullable(Int64),
    is_json Bool,
    truncated Bool,
    redacted Int32,
    body Nullable(String),
    version Int64 MATERIALIZED -toUnixTimestamp64Micro(captured_at)
) ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

-- The management poller's snapshots: the latest poll of each object wins (version =
-- last_seen_at); `present` turns false when a later poll of the vhost no longer lists it.
CREATE TABLE IF NOT EXISTS broker_queues (
    vhost String,
    name String,
    type Nullable(String),
    durable Nullable(Bool),
    auto_delete Nullable(Bool),
    exclusive Nullable(Bool),
    arguments Nullable(String),
    policy Nullable(String),
    message_ttl_ms Nullable(Int64),
    dead_letter_exchange Nullable(String),
    dead_letter_routing_key Nullable(String),
    max_length Nullable(Int64),
    overflow Nullable(String),
    messages Nullable(Int64),
    messages_ready Nullable(Int64),
    messages_unacknowledged Nullable(Int64),
    consumers Nullable(Int64),
    state Nullable(String),
    first_seen_at DateTime64(6, 'UTC'),
    last_seen_at DateTime64(6, 'UTC'),
    present Bool
) ENGINE = ReplacingMergeTree(last_seen_at)
ORDER BY (vhost, name);

CREATE TABLE IF NOT EXISTS broker_exchanges (
    vhost String,
    name String,
    type Nullable(String),
    durable Nullable(Bool),
    auto_delete Nullable(Bool),
    internal Nullable(Bool),
    arguments Nullable(String),
    first_seen_at DateTime64(6, 'UTC'),
    last_seen_at DateTime64(6, 'UTC'),
    present Bool
) ENGINE = ReplacingMergeTree(last_seen_at)
ORDER BY (vhost, name);

CREATE TABLE IF NOT EXISTS broker_bindings (
    vhost String,
    source String,
    destination String,
    destination_type String,
    routing_key Nullable(String),
    arguments Nullable(String),
    properties_key String,
    first_seen_at DateTime64(6, 'UTC'),
    last_seen_at DateTime64(6, 'UTC'),
    present Bool
) ENGINE = ReplacingMergeTree(last_seen_at)
ORDER BY (vhost, source, destination, destination_type, properties_key);

-- Settings the views read (grace_s) and the alert evaluator's lease: one row per name, the
-- newest write wins.
CREATE TABLE IF NOT EXISTS eventscope_settings (
    name String,
    value String,
    updated_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;
