"""The shape of the system, from what flowed: fan-out, topology (producers, routes, consumer
groups, who collaborates with whom), lag and time to consistency, workflows.

The dashboard's Topology, Lag and Workflows pages ask these (through ``questions.QUESTIONS``,
so the API and the CLI answer them too); each is one function over a read connection.
"""

from __future__ import annotations

from typing import Any

import duckdb

from eventscope.tracer.query.sandbox import records as _records
from eventscope.tracer.store.summaries import DELIVERIES, FLOW_EVENTS, FLOWS, ms_between

CONSISTENCY_PER_EVENT = f"""
SELECT e.event_id, e.event_type, e.published_at,
       {ms_between("e.published_at", "max(coalesce(d.settled_at, d.received_at))")}
           AS consistent_after_ms,
       count(*) AS deliveries
FROM events e JOIN deliveries d ON d.event_id = e.event_id
GROUP BY e.event_id, e.event_type, e.published_at
"""

_HAS_SUMMARY = """
SELECT count(*) > 0 AS found FROM information_schema.tables
WHERE table_schema = 'main' AND table_name = $table
"""

# What delivery_summary holds, derived from the tables (a file older than schema version 13).
PER_DELIVERY = DELIVERIES.replace("{scope}", "true")
# What flow_summary holds, derived from the tables (a file older than schema version 13).
PER_FLOW = FLOWS.replace("{flow_events}", FLOW_EVENTS).replace("{scope}", "true")


def per_event(connection: duckdb.DuckDBPyConnection) -> str:
    """Where time to consistency per event comes from: the writer's summary (schema version
    12, tracer/store/summaries.py), or the derivation in a file older than that.
    """
    if _records(connection, _HAS_SUMMARY, {"table": "event_consistency"})[0]["found"]:
        return "event_consistency"
    return f"({CONSISTENCY_PER_EVENT})"


def per_delivery(connection: duckdb.DuckDBPyConnection) -> str:
    """Where each delivery with its event's type, exchange, producer, time in queue and
    processing time comes from: the writer's summary (schema version 13), or the join of
    deliveries with events in a file older than that.
    """
    if _records(connection, _HAS_SUMMARY, {"table": "delivery_summary"})[0]["found"]:
        return "delivery_summary"
    return f"({PER_DELIVERY})"


def per_flow(connection: duckdb.DuckDBPyConnection) -> str:
    """Where each flow's events, start, last activity and unsettled deliveries come from: the
    writer's summary (schema version 13), or the derivation in a file older than that.
    """
    if _records(connection, _HAS_SUMMARY, {"table": "flow_summary"})[0]["found"]:
        return "flow_summary"
    return f"({PER_FLOW})"


__all__ = [
    "CONSISTENCY_PER_EVENT",
    "PER_DELIVERY",
    "PER_FLOW",
    "event_types",
    "fanout_delivered",
    "fanout_matrix",
    "lag",
    "per_delivery",
    "per_event",
    "per_flow",
    "topology",
    "workflows",
]

_FANOUT_DELIVERED = """
WITH typed AS (SELECT event_type, count(*) AS events FROM events GROUP BY 1)
SELECT d.event_type, d.queue, any_value(d.consumer_service) AS consumer_service,
       any_value(t.events) AS events,
       count(*) FILTER (WHERE NOT coalesce(d.redelivered, false)) AS delivered,
       count(*) FILTER (WHERE d.outcome = 'ack') AS acked
FROM {per_delivery} d JOIN typed t ON t.event_type = d.event_type
WHERE d.queue IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
"""
_EVENT_TYPE_COUNTS = "SELECT event_type, count(*) AS events FROM events GROUP BY 1"

_PRODUCER_EDGES = """
SELECT producer_service AS producer, exchange, count(*) AS events,
       count(*) / greatest(date_diff('millisecond', min(published_at), max(published_at)) / 1000.0, 1.0)
           AS events_per_s
FROM events GROUP BY ALL ORDER BY events DESC, producer, exchange
"""

_ROUTE_EDGES = """
SELECT d.exchange, d.queue, d.consumer_service AS consumer, count(*) AS deliveries,
       count(*) FILTER (WHERE d.outcome IS DISTINCT FROM 'ack') AS errors,
       quantile_cont(d.wait_us / 1000.0, 0.5) AS wait_p50_ms,
       count(*) / greatest(date_diff('millisecond', min(d.received_at), max(d.received_at)) / 1000.0, 1.0)
           AS deliveries_per_s
FROM {per_delivery} d
GROUP BY ALL ORDER BY deliveries DESC, d.exchange, d.queue, consumer
"""

_CONSUMER_GROUPS = """
WITH per AS (
    SELECT queue, consumer_service, count(*) AS deliveries FROM deliveries
    WHERE queue IS NOT NULL GROUP BY ALL
)
SELECT queue, consumer_service, deliveries,
       round(100.0 * deliveries / sum(deliveries) OVER (PARTITION BY queue), 1) AS share_pct,
       count(*) OVER (PARTITION BY queue) AS members
FROM per ORDER BY queue, deliveries DESC, consumer_service
"""

_COLLABORATION = """
WITH talks AS (
    SELECT DISTINCT d.producer_service AS sender, d.consumer_service AS receiver
    FROM {per_delivery} d
    WHERE d.producer_service IS NOT NULL AND d.consumer_service IS NOT NULL
      AND d.producer_service <> d.consumer_service
),
services AS (SELECT sender AS service FROM talks UNION SELECT receiver FROM talks)
SELECT s.service,
       (SELECT count(*) FROM talks t WHERE t.sender = s.service) AS sends_to,
       (SELECT count(*) FROM talks t WHERE t.receiver = s.service) AS receives_from,
       (SELECT count(*) FROM talks t JOIN talks r ON r.sender = t.receiver AND r.receiver = t.sender
        WHERE t.sender = s.service) AS replies_from
FROM services s ORDER BY s.service
"""

_LAG_BY_QUEUE = """
WITH per AS (
    SELECT d.queue, d.consumer_service, count(*) AS deliveries,
           quantile_cont(d.wait_us / 1000.0, [0.5, 0.95]) AS wait,
           quantile_cont(d.processing_us / 1000.0, [0.5, 0.95]) AS work
    FROM {per_delivery} d
    WHERE d.queue IS NOT NULL
    GROUP BY ALL
)
SELECT queue, consumer_service, deliveries, wait[1] AS wait_p50_ms, wait[2] AS wait_p95_ms,
       work[1] AS processing_p50_ms, work[2] AS processing_p95_ms
FROM per ORDER BY wait_p95_ms DESC NULLS LAST, queue
"""

# Time to consistency per event type and its outliers (above the type's p99): 'type' rows and
# 'outlier' rows. The outliers are looked for only above the lowest p99 (a filter in the scan,
# ~1 % of the rows reach the join); the summary table is read twice, the derivation (an older
# file) materialised once.
_CONSISTENCY = """
WITH per AS {materialized} (SELECT * FROM {per_event}),
stats AS MATERIALIZED (
    SELECT event_type, count(*) AS events, quantile_cont(consistent_after_ms, [0.5, 0.95, 0.99]) AS q,
           max(consistent_after_ms) AS max_ms
    FROM per GROUP BY event_type
)
SELECT 'type' AS kind, event_type, events, q[1] AS p50_ms, q[2] AS p95_ms, q[3] AS p99_ms, max_ms,
       NULL::VARCHAR AS event_id, NULL::TIMESTAMPTZ AS published_at, NULL::BIGINT AS consistent_after_ms
FROM stats
UNION ALL
(SELECT 'outlier', per.event_type, NULL, NULL, NULL, s.q[3], NULL, per.event_id, per.published_at,
        per.consistent_after_ms
 FROM per JOIN stats s USING (event_type)
 WHERE per.consistent_after_ms > (SELECT min(q[3]) FROM stats) AND per.consistent_after_ms > s.q[3]
 ORDER BY per.consistent_after_ms DESC, per.event_id
 LIMIT $limit)
"""

# The orphans of each flow (the one part that depends on the time asked), then every flow
# classified from its summary row: read twice, not materialised (the counts read three narrow
# columns; the page's rows are a top-N).
_WORKFLOWS = """
WITH problems AS MATERIALIZED (
    SELECT coalesce(e.correlation_id, e.event_id) AS flow_id, count(*) AS orphans,
           arg_min(o.step, (o.published_at, o.step)) AS stuck_at
    FROM (
        SELECT event_id, published_at,
               event_type || coalesce(' @ ' || queue, '') || ' (' || reason || ')' AS step
        FROM orphans
    ) o JOIN events e ON e.event_id = o.event_id
    GROUP BY 1
),
classified AS NOT MATERIALIZED (
    SELECT p.flow_id, p.events, p.started_at, p.first_event_type, p.last_event_type, p.last_activity_at,
           coalesce(o.orphans, 0) AS orphans, coalesce(o.stuck_at, p.unsettled_step) AS stuck_at,
           CASE
               WHEN o.orphans > 0 THEN 'stuck'
               WHEN p.last_activity_at >= now() - to_microseconds(CAST($stuck_after_s * 1000000 AS BIGINT))
                   THEN 'in progress'
               WHEN p.unsettled > 0 THEN 'stuck'
               ELSE 'complete'
           END AS status
    FROM {per_flow} p
    LEFT JOIN problems o USING (flow_id)
)
SELECT 'flow' AS kind, flow_id, status, first_event_type, last_event_type, stuck_at, events, orphans,
       started_at, last_activity_at,
       date_diff('millisecond', started_at, last_activity_at) / 1000.0 AS duration_s
FROM (
    SELECT * FROM classified
    WHERE ($status IS NULL OR status = $status)
    ORDER BY CASE status WHEN 'stuck' THEN 0 WHEN 'in progress' THEN 1 ELSE 2 END, started_at DESC, flow_id
    LIMIT $limit
)
UNION ALL
SELECT 'count', NULL, status, NULL, NULL, NULL, count(*), NULL, NULL, NULL, NULL
FROM classified GROUP BY status
"""


def fanout_delivered(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The delivery half of :func:`fanout`: per (event type, queue), events delivered and acked."""
    return _records(connection, _FANOUT_DELIVERED.replace("{per_delivery}", per_delivery(connection)), {})


def event_types(connection: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many events there are of each type."""
    return {row["event_type"]: row["events"] for row in _records(connection, _EVENT_TYPE_COUNTS, {})}


def fanout_matrix(
    delivered: list[dict[str, Any]], groups: list[dict[str, Any]], types: dict[str, int]
) -> list[dict[str, Any]]:
    """:func:`fanout` from its parts (so a caller holding an :func:`orphan_report` asks no more)."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for row in delivered:
        cells[(row["event_type"], row["queue"])] = {
            **row,
            "failed": 0,
            "dead_lettered": 0,
        }
    for group in groups:
        if group["queue"] is None:
            continue
        key = (group["event_type"], group["queue"])
        cell = cells.setdefault(
            key,
            {
                "event_type": group["event_type"],
                "queue": group["queue"],
                "consumer_service": None,
                "events": types.get(group["event_type"], 0),
                "delivered": 0,
                "acked": 0,
                "failed": 0,
                "dead_lettered": 0,
            },
        )
        if group["reason"] in ("failed", "unacked"):
            cell["failed"] += group["n"]
        elif group["reason"] in ("dead_lettered", "expired"):
            cell["dead_lettered"] += group["n"]
    matrix = []
    for key in sorted(cells, key=lambda k: (k[0] or "", k[1] or "")):
        cell = cells[key]
        cell["missing"] = max(0, (cell["events"] or 0) - cell["delivered"])
        matrix.append(cell)
    return matrix


def topology(connection: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Observed traffic: producer → exchange and exchange → queue → consumer edges with rates,
    errors and wait; consumer groups with each member's share; who talks to whom.
    """
    deliveries = per_delivery(connection)
    collaboration = _records(connection, _COLLABORATION.replace("{per_delivery}", deliveries), {})
    for row in collaboration:
        row["role"] = "orchestrator" if row["sends_to"] >= 2 and row["replies_from"] >= 2 else "choreography"
    return {
        "producers": _records(connection, _PRODUCER_EDGES, {}),
        "routes": _records(connection, _ROUTE_EDGES.replace("{per_delivery}", deliveries), {}),
        "groups": _records(connection, _CONSUMER_GROUPS, {}),
        "collaboration": collaboration,
    }


def lag(connection: duckdb.DuckDBPyConnection, *, outliers: int = 20) -> dict[str, Any]:
    """Time in queue vs processing per queue, time to consistency per event type, outliers."""
    source = per_event(connection)
    sql = _CONSISTENCY.replace("{per_event}", source)
    sql = sql.replace(
        "{materialized}", "NOT MATERIALIZED" if source == "event_consistency" else "MATERIALIZED"
    )
    found = _records(connection, sql, {"limit": outliers})
    types = ("event_type", "events", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    consistency = [{k: row[k] for k in types} for row in found if row["kind"] == "type"]
    consistency.sort(key=lambda row: row["event_type"])
    consistency.sort(key=lambda row: row["p95_ms"], reverse=True)
    picked = ("event_id", "event_type", "published_at", "consistent_after_ms", "p99_ms")
    slow = [{k: row[k] for k in picked} for row in found if row["kind"] == "outlier"]
    slow.sort(key=lambda row: row["event_id"])
    slow.sort(key=lambda row: row["consistent_after_ms"], reverse=True)
    queues = _records(connection, _LAG_BY_QUEUE.replace("{per_delivery}", per_delivery(connection)), {})
    return {"queues": queues, "consistency": consistency, "outliers": slow}


def workflows(
    connection: duckdb.DuckDBPyConnection,
    *,
    stuck_after_s: float = 60.0,
    status: str | None = None,
    limit: int = 200,
) -> dict[str, Any]:
    """Flows grouped by correlation id: ``stuck`` (an orphan in it, or a delivery still not
    settled with no activity for ``stuck_after_s``; ``stuck_at`` names the step), ``in progress``
    (activity within ``stuck_after_s``) or ``complete``.
    """
    params = {"stuck_after_s": stuck_after_s, "status": status, "limit": limit}
    found = _records(connection, _WORKFLOWS.replace("{per_flow}", per_flow(connection)), params)
    by_status = {row["status"]: row["events"] for row in found if row["kind"] == "count"}
    shown = [{k: v for k, v in row.items() if k != "kind"} for row in found if row["kind"] == "flow"]
    # the order of the SQL (a UNION ALL does not keep it): stuck, in progress, complete; newest first
    shown.sort(key=lambda r: r["flow_id"])
    shown.sort(key=lambda r: r["started_at"] or "", reverse=True)
    shown.sort(key=lambda r: {"stuck": 0, "in progress": 1}.get(r["status"], 2))
    return {
        "flows": sum(by_status.values()),
        "stuck": by_status.get("stuck", 0),
        "by_status": by_status,
        "flows_shown": shown,
    }
