-- eventscope store, schema version 1: the tables of the SQL surface (docs/sql.md, a public contract:
-- extend, don't break). Views and macros live in views.sql and are recreated on every open.
-- Times are TIMESTAMPTZ (UTC); ids are lowercase hex as in W3C trace context.

CREATE TABLE IF NOT EXISTS spans (
    trace_id        VARCHAR NOT NULL,
    span_id         VARCHAR NOT NULL,
    parent_span_id  VARCHAR,
    name            VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,   -- INTERNAL | SERVER | CLIENT | PRODUCER | CONSUMER | UNSPECIFIED
    service         VARCHAR,            -- resource service.name
    start_time      TIMESTAMPTZ NOT NULL,
    end_time        TIMESTAMPTZ NOT NULL,
    duration_ms     DOUBLE NOT NULL,
    status          VARCHAR NOT NULL,   -- UNSET | OK | ERROR
    attributes      JSON,
    links           JSON,               -- [{"trace_id": .., "span_id": ..}, ...]
    event_id        VARCHAR,            -- extension: the event this span published (PRODUCER) or received
    PRIMARY KEY (trace_id, span_id)
);

CREATE TABLE IF NOT EXISTS events (
    event_id          VARCHAR NOT NULL PRIMARY KEY,
    event_type        VARCHAR,
    exchange          VARCHAR,
    routing_key       VARCHAR,
    producer_service  VARCHAR,
    published_at      TIMESTAMPTZ NOT NULL,
    trace_id          VARCHAR,
    span_id           VARCHAR,
    causation_id      VARCHAR,
    correlation_id    VARCHAR,
    routed_queues     VARCHAR[],         -- NULL when unknown (no broker truth)
    payload_size      BIGINT,
    source            VARCHAR NOT NULL   -- span | firehose | both
);

CREATE TABLE IF NOT EXISTS deliveries (
    event_id          VARCHAR,           -- NULL until the producer is known (no message id on the wire)
    queue             VARCHAR,
    consumer_service  VARCHAR,
    received_at       TIMESTAMPTZ NOT NULL,
    settled_at        TIMESTAMPTZ,
    outcome           VARCHAR,           -- ack | nack | reject | requeue | error | NULL (not settled)
    redelivered       BOOLEAN,
    error             VARCHAR,
    trace_id          VARCHAR NOT NULL,
    span_id           VARCHAR NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);

CREATE TABLE IF NOT EXISTS causal_edges (
    cause_event_id   VARCHAR NOT NULL,
    effect_event_id  VARCHAR NOT NULL,
    via              VARCHAR NOT NULL,   -- extension: 'causation_id' (header) | 'parentage' (span tree)
    PRIMARY KEY (cause_event_id, effect_event_id)
);

CREATE TABLE IF NOT EXISTS alerts (
    alert_id     VARCHAR NOT NULL PRIMARY KEY,
    rule         VARCHAR NOT NULL,
    event_id     VARCHAR,
    queue        VARCHAR,
    reason       VARCHAR,
    fired_at     TIMESTAMPTZ NOT NULL,
    resolved_at  TIMESTAMPTZ,
    delivered    BOOLEAN NOT NULL DEFAULT false
);

-- What the running collector was told (e.g. grace_s for the orphans view); rewritten on open.
CREATE TABLE IF NOT EXISTS collector_settings (
    name   VARCHAR NOT NULL PRIMARY KEY,
    value  VARCHAR
);
