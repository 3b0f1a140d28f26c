-- eventscope store, schema version 6: payload capture (tracer/payloads.py; off by default,
-- `eventscope collect --firehose --capture-payloads`). One row per event whose published body
-- the firehose tap kept: redacted first, then cut to the size cap.
CREATE TABLE IF NOT EXISTS payloads (
    event_id      VARCHAR NOT NULL PRIMARY KEY,
    captured_at   TIMESTAMPTZ NOT NULL,  -- when the collector read the publish record
    content_type  VARCHAR,               -- the AMQP property
    size          BIGINT NOT NULL,       -- bytes of the body as published
    is_json       BOOLEAN NOT NULL,      -- body is whole, valid JSON (json_extract works on it)
    truncated     BOOLEAN NOT NULL,      -- body was cut to the size cap
    redacted      INTEGER NOT NULL,      -- how many field values were replaced by "[redacted]"
    body          VARCHAR                -- UTF-8 text; NULL for binary or encoded bodies
);
