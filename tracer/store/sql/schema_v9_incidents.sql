-- eventscope store, schema version 9: incidents (docs/alerts.md, "Incidents").
--
-- A rule with `group_by` gathers its per-event alerts into incidents: one per (rule, group),
-- notified once when it opens, at most every `repeat_interval` while it grows, and once when
-- its last event resolves. The per-event rows stay in `alerts` (the public table is unchanged);
-- `alert_details.incident_id` says which incident each belongs to:
--   SELECT * FROM alerts JOIN alert_details USING (alert_id) WHERE incident_id = '...'
CREATE TABLE IF NOT EXISTS incidents (
    incident_id    VARCHAR NOT NULL PRIMARY KEY,
    rule           VARCHAR NOT NULL,
    severity       VARCHAR NOT NULL,   -- info | warning | critical
    status         VARCHAR NOT NULL,   -- open | resolved
    reason         VARCHAR,            -- the group's fields (NULL when the rule does not group by them)
    event_type     VARCHAR,
    queue          VARCHAR,
    group_key      VARCHAR NOT NULL,   -- every field of the group, as JSON
    event_count    BIGINT NOT NULL,    -- events that joined the incident
    open_count     BIGINT NOT NULL,    -- of them, still firing
    examples       VARCHAR[],          -- the first five event ids
    opened_at      TIMESTAMPTZ NOT NULL,
    last_seen_at   TIMESTAMPTZ NOT NULL,  -- when the latest event joined
    notified_at    TIMESTAMPTZ,        -- the latest notification (opened, updated or resolved)
    notifications  INTEGER NOT NULL DEFAULT 0,
    resolved_at    TIMESTAMPTZ,
    delivered      BOOLEAN NOT NULL DEFAULT false  -- every sink took the latest notification
);
ALTER TABLE alert_details ADD COLUMN IF NOT EXISTS incident_id VARCHAR;
