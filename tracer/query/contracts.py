"""The contracts' read questions: what flows (for ``contracts export`` and ``contracts check
--db/--api``) and the Catalog page. Registered in :data:`questions.QUESTIONS`, so each is
served as ``GET /api/<name>`` and asked the same way live or post-mortem. Answers are
JSON-ready.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

__all__ = [
    "QUESTIONS",
    "catalog",
    "contract_observations",
    "contract_traffic",
    "contract_violations",
    "payload_samples",
]

_DEFAULT_TRAFFIC_LIMIT = 100_000
_DEFAULT_SAMPLES = 50
_DEFAULT_RATE_WINDOW_S = 300.0

_OBSERVATIONS = """
SELECT 'send' AS role, producer_service AS service, event_type, exchange, routing_key,
       NULL AS queue, count(*) AS events, max(published_at) AS last_seen
FROM events WHERE producer_service IS NOT NULL AND event_type IS NOT NULL
GROUP BY ALL
UNION ALL
SELECT 'receive', d.consumer_service, e.event_type, e.exchange, e.routing_key, d.queue,
       count(DISTINCT d.event_id), max(d.received_at)
FROM deliveries d JOIN events e USING (event_id)
WHERE d.consumer_service IS NOT NULL AND e.event_type IS NOT NULL
GROUP BY ALL
ORDER BY role, service, event_type, exchange, routing_key, queue
"""
_SAMPLES = """
SELECT event_type, exchange, routing_key, body FROM (
    SELECT e.event_type, e.exchange, e.routing_key, p.body,
           row_number() OVER (PARTITION BY e.event_type, e.exchange, e.routing_key
                              ORDER BY p.captured_at DESC) AS n
    FROM payloads p JOIN events e USING (event_id)
    WHERE p.is_json AND NOT p.truncated AND p.body IS NOT NULL
) WHERE n <= $per_type
ORDER BY event_type, exchange, routing_key
"""
_TRAFFIC = """
WITH recent AS (
    SELECT event_id, event_type, exchange, routing_key, producer_service, published_at
    FROM events ORDER BY published_at DESC LIMIT $limit
),
consumers AS (
    SELECT event_id,
           list(DISTINCT consumer_service ORDER BY consumer_service) AS consumers,
           list(DISTINCT consumer_service ORDER BY consumer_service)
               FILTER (WHERE outcome = 'ack') AS acked_by
    FROM deliveries
    WHERE consumer_service IS NOT NULL AND event_id IN (SELECT event_id FROM recent)
    GROUP BY event_id
)
SELECT r.*, coalesce(c.acked_by, []) AS acked_by, coalesce(c.consumers, []) AS consumers,
       CASE WHEN p.is_json AND NOT p.truncated THEN p.body END AS payload
FROM recent r
LEFT JOIN consumers c USING (event_id)
LEFT JOIN payloads p USING (event_id)
ORDER BY r.published_at, r.event_id
"""
_VIOLATIONS = """
SELECT event_id, kind, service, event_type, exchange, routing_key, document, detail, detected_at, resolved_at
FROM contract_violations
WHERE ($kind IS NULL OR kind = $kind) AND ($event_type IS NULL OR event_type = $event_type)
ORDER BY detected_at DESC, event_id, kind
LIMIT $limit
"""
_DECLARED = """
SELECT service, role, event_type, exchange, routing_key, queue, document
FROM contract_declarations ORDER BY event_type, role, service
"""
_TYPES = """
SELECT event_type, count(*) AS events, max(published_at) AS last_seen,
       count(*) FILTER (
           WHERE published_at >= (SELECT max(published_at) FROM events)
                                 - to_microseconds(CAST($window_s * 1000000 AS BIGINT))
       ) / $window_s AS rate_per_s
FROM events WHERE event_type IS NOT NULL GROUP BY event_type
"""
_VIOLATION_COUNTS = """
SELECT event_type, kind, count(*) AS n FROM contract_violations WHERE resolved_at IS NULL GROUP BY ALL
"""


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json(item) for item in value]
    return value


def _rows(
    connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    cursor = connection.cursor()
    try:
        result = cursor.execute(sql, params or {})
        columns = [column[0] for column in result.description]
        return [{c: _json(v) for c, v in zip(columns, row, strict=True)} for row in result.fetchall()]
    finally:
        cursor.close()


def _has(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = _rows(
        connection, "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = $t", {"t": table}
    )
    return bool(found[0]["n"])


def contract_observations(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Who was seen sending and receiving what: role, service, event type, exchange, routing
    key, queue (receivers), events, last seen.
    """
    return _rows(connection, _OBSERVATIONS)


def payload_samples(
    connection: duckdb.DuckDBPyConnection, *, per_type: int = _DEFAULT_SAMPLES
) -> list[dict[str, Any]]:
    """The newest ``per_type`` whole JSON bodies per (event type, exchange, routing key)."""
    return _rows(connection, _SAMPLES, {"per_type": per_type})


def contract_traffic(
    connection: duckdb.DuckDBPyConnection, *, limit: int = _DEFAULT_TRAFFIC_LIMIT
) -> list[dict[str, Any]]:
    """The newest ``limit`` events with what a contract check needs: producer, acking and
    all consumer services, and the captured body when it is whole JSON.
    """
    return _rows(connection, _TRAFFIC, {"limit": limit})


def contract_violations(
    connection: duckdb.DuckDBPyConnection,
    *,
    kind: str | None = None,
    event_type: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Rows of ``contract_violations``, newest first (empty before schema v11)."""
    if not _has(connection, "contract_violations"):
        return []
    return _rows(connection, _VIOLATIONS, {"kind": kind, "event_type": event_type, "limit": limit})


def catalog(
    connection: duckdb.DuckDBPyConnection, *, window_s: float = _DEFAULT_RATE_WINDOW_S
) -> list[dict[str, Any]]:
    """Per event type: declared and observed producers and consumers side by side (each
    service ``match``, ``missing`` or ``undeclared``), rate over the last ``window_s`` of
    traffic, last seen, and open (unresolved) violations by kind.
    """
    declared = _rows(connection, _DECLARED) if _has(connection, "contract_declarations") else []
    observed = contract_observations(connection)
    types = {row["event_type"]: row for row in _rows(connection, _TYPES, {"window_s": window_s})}
    counts: dict[str, dict[str, int]] = {}
    if _has(connection, "contract_violations"):
        for row in _rows(connection, _VIOLATION_COUNTS):
            counts.setdefault(row["event_type"], {})[row["kind"]] = row["n"]
    names = sorted({*types, *(d["event_type"] for d in declared)} - {None})
    out: list[dict[str, Any]] = []
    for name in names:
        entry: dict[str, Any] = {"event_type": name}
        for role, label in (("send", "producers"), ("receive", "consumers")):
            wanted = {d["service"] for d in declared if d["event_type"] == name and d["role"] == role}
            seen = {o["service"] for o in observed if o["event_type"] == name and o["role"] == role}
            entry[label] = [
                {
                    "service": service,
                    "status": "match"
                    if service in wanted and service in seen
                    else "missing"
                    if service in wanted
                    else "undeclared",
                }
                for service in sorted(wanted | seen)
            ]
        facts = types.get(name, {})
        entry.update(
            declared=any(d["event_type"] == name for d in declared),
            events=facts.get("events", 0),
            rate_per_s=facts.get("rate_per_s", 0.0),
            last_seen=facts.get("last_seen"),
            violations=counts.get(name, {}),
        )
        out.append(entry)
    return out


QUESTIONS: dict[str, Any] = {
    "catalog": catalog,
    "contract_observations": contract_observations,
    "contract_traffic": contract_traffic,
    "contract_violations": contract_violations,
    "payload_samples": payload_samples,
}
