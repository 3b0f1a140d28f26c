-- eventscope store, schema version 2: broker truth (firehose tap, dead-letter tap, management
-- poller). Extensions of the public SQL surface; docs/sql.md documents every table and column.

-- deliveries: a delivery the firehose saw but no consumer span reported (an uninstrumented
-- consumer) is a row without a span, so (trace_id, span_id) become nullable: the table is
-- rebuilt with the same columns in the same order, plus two extension columns at the end.
CREATE TABLE deliveries_v2 (
    event_id          VARCHAR,           -- NULL until the producer is known (no message id on the wire)
    queue             VARCHAR,
    consumer_service  VARCHAR,
    received_at       TIMESTAMPTZ NOT NULL,
    settled_at        TIMESTAMPTZ,
    outcome           VARCHAR,           -- ack | nack | reject | requeue | error | NULL (not settled / unknown)
    redelivered       BOOLEAN,
    error             VARCHAR,
    trace_id          VARCHAR,           -- NULL: seen by the firehose only, no consumer span
    span_id           VARCHAR,
    source            VARCHAR NOT NULL DEFAULT 'span',  -- extension: span | firehose | both
    record_id         VARCHAR,           -- extension: the firehose deliver record (replays stored once)
    UNIQUE (trace_id, span_id),
    UNIQUE (record_id)
);
INSERT INTO deliveries_v2
SELECT event_id, queue, consumer_service, received_at, settled_at, outcome, redelivered, error,
       trace_id, span_id, 'span', NULL
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;

-- One row per x-death entry the collector saw (dead-letter tap, or a dead-lettered copy the
-- firehose saw delivered). count is RabbitMQ's: the times it died in that queue for that reason.
CREATE TABLE IF NOT EXISTS dead_letters (
    event_id              VARCHAR NOT NULL,
    queue                 VARCHAR NOT NULL,   -- the queue it died in
    reason                VARCHAR NOT NULL,   -- rejected | expired | maxlen | delivery_limit
    count                 BIGINT NOT NULL,
    died_at               TIMESTAMPTZ,        -- x-death time (the broker's clock, whole seconds)
    observed_at           TIMESTAMPTZ NOT NULL, -- when the collector first saw this death
    exchange              VARCHAR,            -- where the message had been published
    routing_keys          VARCHAR[],
    dead_letter_exchange  VARCHAR,            -- the DLX the copy came through (NULL: history entry)
    PRIMARY KEY (event_id, queue, reason, count)
);

-- The management poller's view of the broker: the latest state of every queue, exchange and
-- binding it has seen; present = false once a poll no longer lists it.
CREATE TABLE IF NOT EXISTS queues (
    vhost                    VARCHAR NOT NULL,
    name                     VARCHAR NOT NULL,
    type                     VARCHAR,          -- classic | quorum | stream
    durable                  BOOLEAN,
    auto_delete              BOOLEAN,
    exclusive                BOOLEAN,
    arguments                JSON,
    policy                   VARCHAR,
    message_ttl_ms           BIGINT,           -- effective: the lower of x-message-ttl and the policy's
    dead_letter_exchange     VARCHAR,          -- effective: the argument, else the policy's
    dead_letter_routing_key  VARCHAR,
    max_length               BIGINT,
    overflow                 VARCHAR,
    messages                 BIGINT,           -- statistics: lag by the plugin's collection interval
    messages_ready           BIGINT,
    messages_unacknowledged  BIGINT,
    consumers                BIGINT,
    state                    VARCHAR,
    first_seen_at            TIMESTAMPTZ NOT NULL,
    last_seen_at             TIMESTAMPTZ NOT NULL,
    present                  BOOLEAN NOT NULL,
    PRIMARY KEY (vhost, name)
);

CREATE TABLE IF NOT EXISTS exchanges (
    vhost          VARCHAR NOT NULL,
    name           VARCHAR NOT NULL,
    type           VARCHAR,
    durable        BOOLEAN,
    auto_delete    BOOLEAN,
    internal       BOOLEAN,
    arguments      JSON,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    last_seen_at   TIMESTAMPTZ NOT NULL,
    present        BOOLEAN NOT NULL,
    PRIMARY KEY (vhost, name)
);

CREATE TABLE IF NOT EXISTS bindings (
    vhost             VARCHAR NOT NULL,
    source            VARCHAR NOT NULL,    -- '' = the default exchange
    destination       VARCHAR NOT NULL,
    destination_type  VARCHAR NOT NULL,    -- queue | exchange
    routing_key       VARCHAR NOT NULL,
    arguments         JSON,
    properties_key    VARCHAR NOT NULL,    -- RabbitMQ's identity of the binding (key + arguments)
    first_seen_at     TIMESTAMPTZ NOT NULL,
    last_seen_at      TIMESTAMPTZ NOT NULL,
    present           BOOLEAN NOT NULL,
    PRIMARY KEY (vhost, source, destination, destination_type, properties_key)
);
