-- eventscope store, schema version 4: orphans kept up to date on ingest (docs/sql.md,
-- "Orphans"; bench/README.md, "Collector").
--
-- delivery_state: one row per (event, expected queue) whose fate is not (yet) fine, as the
-- writer last derived it from events, deliveries and dead_letters (delivery_state.sql), with
-- each batch, for the events the batch touched. 'since' is when the grace starts (NULL: none).
-- The `orphans` view and maintained_orphans(grace_s) read it; orphans_after(grace_s) still
-- derives everything from the tables (e.g. after editing them by hand). The collector fills
-- it for existing rows when it opens a file migrated to this version.
CREATE TABLE IF NOT EXISTS delivery_state (
    event_id      VARCHAR NOT NULL,
    queue         VARCHAR,
    state         VARCHAR NOT NULL,    -- unroutable | undelivered | dead_lettered | unacked | failed | unconsumed
    since         TIMESTAMPTZ,
    published_at  TIMESTAMPTZ NOT NULL,
    event_type    VARCHAR,
    exchange      VARCHAR,
    routing_key   VARCHAR
);

-- deliveries: the same columns in the same order, without UNIQUE (trace_id, span_id) and
-- UNIQUE (record_id). Their ART indexes were ~400 of ~1,650 bytes on disk per event (two
-- deliveries each), and INSERT OR IGNORE against two unique constraints cost in proportion
-- to the table. The writer stores each delivery once without them: a consumer span's delivery
-- only when its span is new (spans keeps its primary key), a firehose record only when its
-- record_id is not stored yet.
CREATE TABLE deliveries_v4 (
    event_id          VARCHAR,
    queue             VARCHAR,
    consumer_service  VARCHAR,
    received_at       TIMESTAMPTZ NOT NULL,
    settled_at        TIMESTAMPTZ,
    outcome           VARCHAR,
    redelivered       BOOLEAN,
    error             VARCHAR,
    trace_id          VARCHAR,
    span_id           VARCHAR,
    source            VARCHAR NOT NULL DEFAULT 'span',
    record_id         VARCHAR
);
INSERT INTO deliveries_v4 SELECT * FROM deliveries ORDER BY received_at;
DROP TABLE deliveries;
ALTER TABLE deliveries_v4 RENAME TO deliveries;
