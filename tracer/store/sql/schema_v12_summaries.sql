-- eventscope store, schema version 12: summaries the writer keeps with each batch, so the
-- dashboard's pages read a narrow table instead of joining events with deliveries at millions
-- of events (docs/sql.md, "Summaries").
--
-- event_consistency: one row per event with at least one delivery, as the writer last derived
-- it (tracer/store/summaries.py) for the events a batch touched: time to consistency is the
-- milliseconds from the publish to the last delivery settled (received, when not settled).
-- The collector fills it for existing rows when it opens a file migrated to this version.
CREATE TABLE IF NOT EXISTS event_consistency (
    event_id             VARCHAR NOT NULL,
    event_type           VARCHAR,
    published_at         TIMESTAMPTZ,
    consistent_after_ms  BIGINT,
    deliveries           BIGINT NOT NULL
);
