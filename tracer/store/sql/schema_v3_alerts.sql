-- eventscope store, schema version 3: alert lifecycle and delivery state (issue 4,
-- docs/alerts.md). The public `alerts` table keeps exactly its documented columns (users insert
-- into it positionally); what the alert engine knows beyond them lives here, one row per alert:
--   SELECT * FROM alerts JOIN alert_details USING (alert_id)
CREATE TABLE IF NOT EXISTS alert_details (
    alert_id      VARCHAR NOT NULL PRIMARY KEY,
    severity      VARCHAR NOT NULL,   -- info | warning | critical
    status        VARCHAR NOT NULL,   -- firing | resolved
    event_type    VARCHAR,
    group_key     VARCHAR,            -- threshold rules: the group (the rule); NULL for per-event alerts
    event_count   BIGINT,             -- threshold rules: matching events in the window when it fired
    detail        VARCHAR,            -- e.g. the declared or learned services that never processed it
    attempts      INTEGER NOT NULL DEFAULT 0,  -- delivery attempts over every sink
    last_error    VARCHAR,            -- the latest delivery failure (kept after a later success)
    delivered_at  TIMESTAMPTZ         -- when every sink last took a notification of it
);
