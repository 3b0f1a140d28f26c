-- eventscope store, schema version 13: a summary per delivery and one per flow, so the
-- dashboard's fan-out, topology, lag and workflows pages read narrow tables instead of joining
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

-- flow_summary: one row per flow (coalesce(correlation_id, event_id), as the workflows page
-- groups events), as the writer last derived it for the flows a batch touched: how many events,
-- when it started, its first and last event types, its last activity (publish, receive or
-- settle), and how many of its deliveries are not settled with the first of them as a step
-- ("type @ queue (not settled)"). The workflows page classifies flows from it and the orphans.
CREATE TABLE IF NOT EXISTS flow_summary (
    flow_id           VARCHAR NOT NULL,
    events            BIGINT NOT NULL,
    started_at        TIMESTAMPTZ,
    first_event_type  VARCHAR,
    last_event_type   VARCHAR,
    last_activity_at  TIMESTAMPTZ,
    unsettled         BIGINT NOT NULL,
    unsettled_step    VARCHAR
);
