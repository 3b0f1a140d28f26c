"""The incident questions (schema version 9, docs/alerts.md "Incidents"): the incidents, the
alerts of one, and what a restarted alert engine picks up again.

Registered in :data:`questions.QUESTIONS` (``GET /api/incidents``, ``/api/incident_alerts``),
so the dashboard, the CLI and the API read the same rows. A database file older than version 9
has no incidents: the questions answer with no rows rather than an error.
"""

from __future__ import annotations

from typing import Any

import duckdb

from eventscope.tracer.query import sandbox

__all__ = ["incident_alerts", "incidents", "open_incidents"]

_SORTS = {
    "size": "i.event_count DESC, i.opened_at",
    "age": "i.opened_at",
    "newest": "i.last_seen_at DESC",
}

_HAS_INCIDENTS = """
SELECT count(*) > 0 AS found FROM information_schema.tables
WHERE table_schema = 'main' AND table_name = 'incidents'
"""

# ORDER BY is one of _SORTS (a fixed string chosen by key, never user text)
_INCIDENTS = """
SELECT i.incident_id, i.rule, i.severity, i.status, i.reason, i.event_type, i.queue, i.event_count,
       i.open_count, i.opened_at, i.last_seen_at,
       date_diff('millisecond', i.opened_at, coalesce(i.resolved_at, now())) / 1000.0 AS age_s,
       i.resolved_at, i.notifications, i.notified_at, i.delivered, i.examples, i.group_key
FROM incidents i
WHERE ($status IS NULL OR i.status = $status)
ORDER BY i.status = 'resolved', {order}, i.incident_id
LIMIT $limit
"""

_INCIDENT_ALERTS = """
SELECT a.alert_id, CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END AS state,
       a.event_id, coalesce(e.event_type, d.event_type) AS event_type, a.queue, a.reason, d.detail,
       a.fired_at, a.resolved_at
FROM alert_details d JOIN alerts a USING (alert_id) LEFT JOIN events e ON e.event_id = a.event_id
WHERE d.incident_id = $incident_id
ORDER BY a.fired_at, a.alert_id
LIMIT $limit
"""

_OPEN_INCIDENTS = "SELECT * FROM incidents WHERE status = 'open'"
_OPEN_MEMBERS = """
SELECT d.incident_id, a.event_id FROM alert_details d JOIN alerts a USING (alert_id)
WHERE a.resolved_at IS NULL AND d.incident_id IS NOT NULL
"""


def _has_incidents(connection: duckdb.DuckDBPyConnection) -> bool:
    return bool(sandbox.records(connection, _HAS_INCIDENTS, {})[0]["found"])


def incidents(
    connection: duckdb.DuckDBPyConnection,
    *,
    status: str | None = None,
    sort: str = "size",
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Incidents, open first; ``status`` is ``open`` or ``resolved``; ``sort`` is ``size``
    (most events first), ``age`` (oldest first) or ``newest`` (latest event first).
    """
    if sort not in _SORTS:
        raise sandbox.SqlRejected(f"sort must be one of {', '.join(_SORTS)}, not {sort!r}")
    if not _has_incidents(connection):
        return []
    sql = _INCIDENTS.format(order=_SORTS[sort])
    return sandbox.records(connection, sql, {"status": status, "limit": int(limit)})


def incident_alerts(
    connection: duckdb.DuckDBPyConnection, *, incident_id: str, limit: int = 500
) -> list[dict[str, Any]]:
    """The per-event alerts of one incident, oldest first."""
    if not _has_incidents(connection):
        return []
    return sandbox.records(connection, _INCIDENT_ALERTS, {"incident_id": incident_id, "limit": int(limit)})


def open_incidents(
    connection: duckdb.DuckDBPyConnection,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open incidents (Python values) and the (incident, event) of their firing alerts: what a
    restarted alert engine resumes.
    """
    if not _has_incidents(connection):
        return [], []
    return (
        sandbox.plain_records(connection, _OPEN_INCIDENTS, {}),
        sandbox.plain_records(connection, _OPEN_MEMBERS, {}),
    )


# Served as GET /api/<name>: registered by questions.QUESTIONS.
QUESTIONS = {"incidents": incidents, "incident_alerts": incident_alerts}
