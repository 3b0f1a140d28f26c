-- eventscope store, schema version 13: a summary per delivery, so the dashboard's fan-out,
-- topology and lag pages group and take percentiles over one narrow table instead of joining
-- deliveries with events at millions of events (docs/sql.md, "Summaries").
--
-- delivery_summary: one row per delivery whose event is stored, as the writer last derived it
-- (tracer/store/summaries.py) for the events a batch touched: what the pages group by, from
-- the event (type, exchange, producer) and the delivery (queue, consumer, outcome,
-- redelivered), and the per-delivery values their percentiles need: microseconds in the queue
-- (publish to receive) and processing (receive to settle; NULL when not settled).
-- The collector fills it for existing rows when it opens a file migrated to this version.
CREATE TABLE IF NOT EXISTS delivery_summary (
    event_id          VARCHAR NOT NULL,
    event_type        VARCHAR,
    exchange          VARCHAR,
    producer_service  VARCHAR,
    queue             VARCHAR,
    consumer_service  VARCHAR,
    outcome           VARCHAR,
    redelivered       BOOLEAN,
    received_at       TIMESTAMPTZ NOT NULL,
    wait_us           BIGINT,
    processing_us     BIGINT
);
