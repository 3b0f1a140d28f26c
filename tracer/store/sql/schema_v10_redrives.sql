-- eventscope store, schema version 10: redrives (tracer/redrive/, docs/redrive.md). One row per
-- message a redrive request touched: sent back into the flow, refused (loop guard, no capture,
-- not selected) or failed (unroutable, broker nack). Written by the collector only; the public
-- SQL surface (docs/sql.md). Creates this table only, so it applies on top of v8 or v9.
CREATE TABLE IF NOT EXISTS redrives (
    redrive_id      VARCHAR NOT NULL PRIMARY KEY,  -- also sent as header x-eventscope-redrive-id
    request_id      VARCHAR NOT NULL,              -- the request (one message, a selection, a group)
    event_id        VARCHAR NOT NULL,              -- the event redriven: its identity is kept
    actor           VARCHAR NOT NULL,              -- who asked (CLI user@host, dashboard, API caller)
    requested_at    TIMESTAMPTZ NOT NULL,
    mode            VARCHAR NOT NULL,              -- dead_letter (moved from a DLQ) | capture (replayed)
    from_queue      VARCHAR,                       -- the dead-letter queue (NULL for a replay)
    to_exchange     VARCHAR,                       -- where it was (or would have been) published
    to_routing_key  VARCHAR,
    redrive_count   INTEGER,                       -- the x-eventscope-redrive value sent (1 = first)
    edited          BOOLEAN NOT NULL,
    original_body   VARCHAR,                       -- when edited: the body before (base64: prefix if binary)
    original_headers JSON,                         -- when edited: the headers before
    outcome         VARCHAR NOT NULL,              -- sent | refused | failed
    error           VARCHAR                        -- why refused or failed
);
