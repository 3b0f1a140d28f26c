-- eventscope store, schema version 11: contracts (docs/contracts.md). What the AsyncAPI
-- documents named in [contracts] declare, and every way the traffic departed from them: one
-- row per (event, kind, service). `kind` is one of missing_consumer, undeclared_producer,
-- undeclared_consumer, undeclared_type, schema_violation, silent. `detail` never holds a
-- payload value (schema violations say the JSON path and the rule that failed).
CREATE TABLE IF NOT EXISTS contract_violations (
    event_id      VARCHAR NOT NULL,     -- the event judged (silent: the last one before the silence)
    kind          VARCHAR NOT NULL,
    service       VARCHAR,              -- the producer, consumer or declaring service concerned
    event_type    VARCHAR,
    exchange      VARCHAR,
    routing_key   VARCHAR,
    document      VARCHAR,              -- the AsyncAPI file of `service`, when it has one
    detail        VARCHAR,
    detected_at   TIMESTAMPTZ NOT NULL,
    resolved_at   TIMESTAMPTZ           -- silent: the type flowed again; missing_consumer: processed late
);
-- The declarations of the documents the collector was started with (replaced at each start):
-- declared producers and consumers side by side with the observed ones (Catalog page, SQL).
CREATE TABLE IF NOT EXISTS contract_declarations (
    service       VARCHAR NOT NULL,
    role          VARCHAR NOT NULL,     -- send | receive
    event_type    VARCHAR NOT NULL,
    message       VARCHAR NOT NULL,
    operation     VARCHAR,
    channel       VARCHAR,
    exchange      VARCHAR,
    routing_key   VARCHAR,
    queue         VARCHAR,
    payload_schema VARCHAR,             -- JSON Schema of the payload, $refs inlined
    document      VARCHAR NOT NULL,
    line          INTEGER
);
