"""Every question asked of the store, one function each: the API, the CLI and the dashboard
call these and nothing else.

All take a DuckDB connection (a :meth:`Store.reader` of a running collector, or a file
opened with :func:`store.connect_read_only`) and run inside a read-only transaction.
:func:`run_sql` is the way untrusted SQL gets in: one ``SELECT`` (or ``EXPLAIN``) statement,
a read-only transaction, a time limit enforced with ``connection.interrupt()``, and a row
cap. The sandbox of the store (no external access, locked configuration) is the layer
underneath; this module is the second.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import duckdb

from eventscope.tracer.query.alerting import alert_candidates, alert_details, recent_events
from eventscope.tracer.query.sandbox import (
    SqlError,
    SqlRejected,
    SqlResult,
    SqlTimeout,
    jsonable,
    run_sql,
)
from eventscope.tracer.query.sandbox import records as _records
from eventscope.tracer.query.topology import (
    event_types,
    fanout_delivered,
    fanout_matrix,
    lag,
    per_event,
    topology,
    workflows,
)

__all__ = [
    "QUESTIONS",
    "SqlError",
    "SqlRejected",
    "SqlResult",
    "SqlTimeout",
    "alert_candidates",
    "alert_details",
    "alerts",
    "chain",
    "chain_detail",
    "event",
    "event_types",
    "events_page",
    "facets",
    "fanout",
    "fanout_delivered",
    "fanout_matrix",
    "jsonable",
    "lag",
    "orphan_counts",
    "orphan_report",
    "orphaned_groups",
    "orphans",
    "rates",
    "recent_events",
    "run_sql",
    "schema",
    "slowest",
    "summary",
    "top_orphaned",
    "topology",
    "upstream",
    "workflows",
]

logger = logging.getLogger(__name__)


def _own(connection: Any, question: str) -> Any:
    """The backend hook: on a ClickHouse store's connection (store/clickhouse) the question is
    answered in ClickHouse SQL by :mod:`.clickhouse`; None for DuckDB.
    """
    engine = getattr(connection, "clickhouse_engine", None)
    if engine is None:
        return None
    from eventscope.tracer.query import clickhouse

    return functools.partial(clickhouse.answer, engine, question)


# -- the questions ----------------------------------------------------------------------------
_ORPHANS = """
SELECT event_id, event_type, exchange, routing_key, queue, reason, published_at, age_s
FROM orphans
WHERE ($reason IS NULL OR reason = $reason)
ORDER BY published_at DESC, event_id, queue
LIMIT $limit
"""

_ORPHANS_AFTER = """
SELECT event_id, event_type, exchange, routing_key, queue, reason, published_at, age_s
FROM maintained_orphans($grace_s)
WHERE ($reason IS NULL OR reason = $reason)
ORDER BY published_at DESC, event_id, queue
LIMIT $limit
"""

_ORPHAN_COUNTS = "SELECT reason, count(*) AS n FROM orphans GROUP BY reason ORDER BY reason"

_EVENT = "SELECT * FROM events WHERE event_id = $event_id"
_EVENT_DELIVERIES = """
SELECT * FROM deliveries WHERE event_id = $event_id ORDER BY received_at, queue, span_id
"""
_EVENT_CAUSES = "SELECT cause_event_id, via FROM causal_edges WHERE effect_event_id = $event_id ORDER BY 1"
_EVENT_EFFECTS = "SELECT effect_event_id, via FROM causal_edges WHERE cause_event_id = $event_id ORDER BY 1"
_EVENT_ORPHANS = "SELECT queue, reason, age_s FROM orphans WHERE event_id = $event_id ORDER BY queue"
_EVENT_PAYLOAD = "SELECT * EXCLUDE (event_id) FROM payloads WHERE event_id = $event_id"

_CHAIN = """
SELECT c.event_id, c.depth, c.cause_event_id, e.event_type, e.exchange, e.routing_key,
       e.producer_service, e.published_at,
       (SELECT count(*) FROM deliveries d WHERE d.event_id = c.event_id) AS deliveries
FROM chain($event_id) c
LEFT JOIN events e USING (event_id)
ORDER BY c.depth, e.published_at, c.event_id
"""


def orphans(
    connection: duckdb.DuckDBPyConnection,
    *,
    reason: str | None = None,
    grace_s: float | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Orphans, newest first; ``grace_s`` overrides the collector's grace."""
    if (own := _own(connection, "orphans")) is not None:
        return own(reason=reason, grace_s=grace_s, limit=limit)
    if grace_s is None:
        return _records(connection, _ORPHANS, {"reason": reason, "limit": limit})
    return _records(
        connection,
        _ORPHANS_AFTER,
        {"reason": reason, "limit": limit, "grace_s": grace_s},
    )


_ORPHAN_GAUGES = """
SELECT reason, coalesce(queue, '') AS queue, coalesce(event_type, '') AS event_type, count(*) AS n
FROM orphans GROUP BY ALL ORDER BY ALL
"""


def orphan_gauges(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Orphans by reason, queue and event type (the Prometheus gauges of /metrics)."""
    if (own := _own(connection, "orphan_gauges")) is not None:
        return own()
    return _records(connection, _ORPHAN_GAUGES, {})


def orphan_counts(connection: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many orphans there are of each reason (for /metrics and the overview)."""
    if (own := _own(connection, "orphan_counts")) is not None:
        return own()
    return {row["reason"]: row["n"] for row in _records(connection, _ORPHAN_COUNTS, {})}


def event(connection: duckdb.DuckDBPyConnection, event_id: str) -> dict[str, Any] | None:
    """One event with its deliveries, causes, effects, orphan rows and captured payload (or
    None); None if the event is unknown.
    """
    if (own := _own(connection, "event")) is not None:
        return own(event_id)
    params = {"event_id": event_id}
    found = _records(connection, _EVENT, params)
    if not found:
        return None
    return {
        "event": found[0],
        "deliveries": _records(connection, _EVENT_DELIVERIES, params),
        "causes": _records(connection, _EVENT_CAUSES, params),
        "effects": _records(connection, _EVENT_EFFECTS, params),
        "orphans": _records(connection, _EVENT_ORPHANS, params),
        "payload": next(iter(_records(connection, _EVENT_PAYLOAD, params)), None),
    }


def chain(connection: duckdb.DuckDBPyConnection, event_id: str) -> list[dict[str, Any]]:
    """The event and everything downstream of it, with depth and cause, shallowest first."""
    if (own := _own(connection, "chain")) is not None:
        return own(event_id)
    return _records(connection, _CHAIN, {"event_id": event_id})


# -- the dashboard's questions ----------------------------------------------------------------
# Each takes keyword-only parameters of plain types (str, int, float, bool or None): the
# collector serves every one of them as ``GET /api/<name>?param=value`` (see QUESTIONS).
_DEFAULT_BUCKETS = 60
_OUTCOMES = ("ack", "nack", "reject", "requeue", "error", "unknown", "unsettled")

_SUMMARY = """
SELECT (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM deliveries) AS deliveries,
       (SELECT count(*) FROM causal_edges) AS causal_edges,
       (SELECT count(DISTINCT producer_service) FROM events) AS producers,
       (SELECT count(DISTINCT consumer_service) FROM deliveries) AS consumers,
       (SELECT min(published_at) FROM events) AS first_at,
       (SELECT max(published_at) FROM events) AS last_at,
       (SELECT count(*) FROM alerts WHERE resolved_at IS NULL) AS alerts_firing
"""

# time_bucket() on TIMESTAMPTZ goes through ICU for every row (most of a pass over millions of
# rows): the bucket number comes from the stored microseconds instead, counted per number, and
# only the ~60 buckets are turned back into times. The same buckets: time_bucket's origin for
# widths without months is 2000-01-03 00:00:00+00 (tests/query/test_time_arithmetic.py).
_ORIGIN_US = 946_857_600_000_000  # 2000-01-03 00:00:00+00 in µs since the epoch


def _bucket_number(column: str) -> str:
    since = f"(epoch_us({column}) - {_ORIGIN_US})"
    return f"({since} // w.us - ({since} % w.us < 0)::BIGINT)"


_RATES = f"""
WITH w AS (SELECT CAST($bucket_s * 1000000 AS BIGINT) AS us),
published AS (SELECT {_bucket_number("published_at")} AS n, count(*) AS events FROM events, w GROUP BY 1),
received AS (
    SELECT {_bucket_number("received_at")} AS n, count(*) AS deliveries FROM deliveries, w GROUP BY 1
)
SELECT TIMESTAMPTZ '2000-01-03 00:00:00+00' + to_microseconds(n * (SELECT us FROM w)) AS bucket,
       coalesce(p.events, 0) / $bucket_s AS events_per_s,
       coalesce(r.deliveries, 0) / $bucket_s AS deliveries_per_s
FROM published p FULL OUTER JOIN received r USING (n)
ORDER BY bucket
"""

# One pass over the orphans view (its cost dominates at scale), three shapes in one result:
# 'group' rows (per reason, event type, exchange, routing key, queue), 'bucket' rows (per time
# bucket and reason) and the newest $limit orphan 'row's.
_ORPHAN_REPORT = """
WITH o AS MATERIALIZED (
    SELECT event_id, event_type, exchange, routing_key, queue, reason, published_at, age_s FROM orphans
)
SELECT 'group' AS kind, NULL::TIMESTAMPTZ AS bucket, reason, event_type, exchange, routing_key, queue,
       count(*) AS n, NULL::VARCHAR AS event_id, max(published_at) AS published_at, NULL::DOUBLE AS age_s
FROM o GROUP BY reason, event_type, exchange, routing_key, queue
UNION ALL
SELECT 'bucket', time_bucket(to_microseconds(CAST($bucket_s * 1000000 AS BIGINT)), published_at), reason,
       NULL, NULL, NULL, NULL, count(*), NULL, NULL, NULL
FROM o GROUP BY 2, 3
UNION ALL
(SELECT 'row', NULL, reason, event_type, exchange, routing_key, queue, NULL, event_id, published_at, age_s
 FROM o ORDER BY published_at DESC, event_id, queue LIMIT $limit)
"""


_SLOWEST = """
SELECT * FROM {per_event} ORDER BY consistent_after_ms DESC, event_id LIMIT $limit
"""

_FACETS = """
SELECT 'event_type' AS facet, event_type AS value FROM (SELECT DISTINCT event_type FROM events)
UNION ALL SELECT 'service', s FROM (
    SELECT producer_service AS s FROM events UNION SELECT consumer_service FROM deliveries
)
UNION ALL SELECT 'exchange', exchange FROM (SELECT DISTINCT exchange FROM events)
UNION ALL SELECT 'queue', queue FROM (SELECT DISTINCT queue FROM deliveries)
ORDER BY facet, value
"""

# The events page's filters, one clause per filter given (param → clause). Only the clauses of
# the filters given are written into the query: `$x IS NULL OR …` for every filter kept DuckDB
# from pushing the page's top-N into the scan (0.6 s instead of 10 ms at 10M events, unfiltered).
_EVENT_FILTERS = {
    "since": "e.published_at >= CAST($since AS TIMESTAMPTZ)",
    "until": "e.published_at < CAST($until AS TIMESTAMPTZ)",
    "event_type": "e.event_type = $event_type",
    "exchange": "e.exchange = $exchange",
    "routing_key": "e.routing_key = $routing_key",
    "trace_id": "e.trace_id = $trace_id",
    "event_id": "(e.event_id = $event_id OR e.correlation_id = $event_id)",
    "service": """(e.producer_service = $service OR EXISTS (
        SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.consumer_service = $service))""",
    "queue": "EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.queue = $queue)",
    "outcome": """EXISTS (
        SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id
          AND (d.outcome = $outcome OR ($outcome = 'unsettled' AND d.outcome IS NULL)))""",
    "payload_path": """EXISTS (
        SELECT 1 FROM payloads p WHERE p.event_id = e.event_id
          AND CASE WHEN p.is_json THEN json_extract_string(p.body, $payload_path) END = $payload_value)""",
}


def _event_filter(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``FROM events e WHERE …`` for the filters of ``params`` that are given, and their params."""
    given = [name for name in _EVENT_FILTERS if params.get(name) is not None]
    used = {name: params[name] for name in given}
    if "payload_path" in used:
        used["payload_value"] = params["payload_value"]
    where = " AND ".join(_EVENT_FILTERS[name] for name in given)
    return "FROM events e" + (f"\nWHERE {where}" if where else ""), used


# A page in two steps: its ids, then its rows with their deliveries, read by the page's id range
# (row groups skipped by their min/max, as the chain page's questions) instead of joining the
# page with every delivery.
_EVENTS_PAGE_IDS = """
SELECT e.event_id
{filter}
ORDER BY e.published_at DESC, e.event_id
LIMIT $limit OFFSET $offset
"""

_EVENTS_PAGE = """
WITH page AS (
    SELECT e.event_id, e.published_at, e.event_type, e.producer_service, e.exchange, e.routing_key,
           e.trace_id, e.correlation_id, e.causation_id, e.payload_size
    FROM events e
    WHERE e.event_id BETWEEN $lo AND $hi AND e.event_id IN (SELECT unnest($ids))
),
d AS (
    SELECT event_id, queue, outcome FROM deliveries
    WHERE event_id BETWEEN $lo AND $hi AND event_id IN (SELECT unnest($ids))
)
SELECT p.*, count(d.event_id) AS deliveries,
       string_agg(DISTINCT d.queue, ', ' ORDER BY d.queue) AS queues,
       string_agg(DISTINCT coalesce(d.outcome, 'unsettled'), ', ' ORDER BY coalesce(d.outcome, 'unsettled'))
           AS outcomes
FROM page p LEFT JOIN d ON d.event_id = p.event_id
GROUP BY ALL
ORDER BY p.published_at DESC, p.event_id
"""

_EVENTS_COUNT = "SELECT count(*) AS n {filter}"

_UPSTREAM = """
WITH RECURSIVE
    edges AS MATERIALIZED (SELECT cause_event_id, effect_event_id FROM flow_edges($event_id, 'effect')),
    walk(event_id, depth, effect_event_id) AS (
        SELECT CAST($event_id AS VARCHAR), 0, NULL::VARCHAR
        UNION
        SELECT ce.cause_event_id, walk.depth + 1, ce.effect_event_id
        FROM walk JOIN edges ce ON ce.effect_event_id = walk.event_id
        WHERE walk.depth < 256 AND ce.cause_event_id <> CAST($event_id AS VARCHAR)
    )
SELECT w.event_id, min(w.depth) AS depth, arg_min(w.effect_event_id, w.depth) AS effect_event_id,
       any_value(e.event_type) AS event_type, any_value(e.producer_service) AS producer_service,
       any_value(e.published_at) AS published_at
FROM walk w LEFT JOIN events e USING (event_id)
WHERE w.depth > 0
GROUP BY w.event_id
ORDER BY depth, w.event_id
"""

# The chain page's questions take the chain's event ids ($ids, from one chain() walk) and
# their range ($lo, $hi): a constant range lets DuckDB skip the row groups of events,
# deliveries and spans by their min/max (ids grow with time, as UUIDv7 do), so each costs the
# size of the chain, not of the tables; IN alone reads the whole id column. Ids that do not
# grow with time lose the skipping, never the answer.
_CHAIN_IDS = "SELECT event_id FROM chain($event_id)"
_IN_CHAIN = "event_id BETWEEN $lo AND $hi AND event_id IN (SELECT unnest($ids))"

_CHAIN_HOPS = f"""
WITH c AS (SELECT * FROM chain($event_id)),
e AS (SELECT * FROM events WHERE {_IN_CHAIN}),
d AS (SELECT * FROM deliveries WHERE {_IN_CHAIN})
SELECT c.event_id, c.depth, c.cause_event_id, e.event_type, e.producer_service, e.exchange,
       e.routing_key, e.published_at, e.trace_id, e.correlation_id, e.source,
       d.queue, d.consumer_service, d.received_at, d.settled_at, d.outcome, d.redelivered, d.error,
       date_diff('microsecond', e.published_at, d.received_at) / 1000.0 AS wait_ms,
       date_diff('microsecond', d.received_at, d.settled_at) / 1000.0 AS processing_ms
FROM c
LEFT JOIN e USING (event_id)
LEFT JOIN d ON d.event_id = c.event_id
ORDER BY c.depth, e.published_at, c.event_id, d.received_at, d.queue
"""

_CHAIN_ORPHANS = """
WITH o AS MATERIALIZED (SELECT event_id, queue, reason, age_s FROM orphans)
SELECT o.event_id, o.queue, o.reason, o.age_s
FROM o WHERE o.event_id IN (SELECT unnest($ids))
ORDER BY o.event_id, o.queue
"""

_CHAIN_DEATHS = f"""
SELECT event_id, queue, reason, count, died_at, exchange, routing_keys, dead_letter_exchange
FROM dead_letters WHERE {_IN_CHAIN}
ORDER BY event_id, died_at, queue
"""

_CHAIN_PAYLOADS = f"""
SELECT event_id, content_type, size, is_json, truncated, redacted, body
FROM payloads WHERE {_IN_CHAIN}
ORDER BY event_id
"""

_TRACE_LINKS = f"""
SELECT DISTINCT s.trace_id AS trace_id, l.link->>'trace_id' AS linked_trace_id
FROM (SELECT trace_id, links FROM spans WHERE {_IN_CHAIN}) s,
     unnest(CAST(s.links AS JSON[])) AS l(link)
WHERE l.link->>'trace_id' <> s.trace_id
ORDER BY 1, 2
"""

# Per (event type, queue): events delivered there (first attempts) and acked. Redeliveries
# and repeated acks of one message are rare enough to count this way, without DISTINCT.
_ALERTS = """
SELECT a.alert_id, a.rule, CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END AS state,
       a.reason, a.event_id, e.event_type, a.queue, a.fired_at, a.resolved_at, a.delivered
FROM alerts a LEFT JOIN events e ON e.event_id = a.event_id
WHERE ($state IS NULL OR (CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END) = $state)
ORDER BY a.resolved_at IS NOT NULL, a.fired_at DESC, a.alert_id
LIMIT $limit
"""

# The same with the alert engine's state (schema version 3, alert_details), when the file has it.
_ALERTS_DETAILED = """
SELECT a.alert_id, a.rule, coalesce(x.severity, 'warning') AS severity,
       CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END AS state,
       a.reason, a.event_id, coalesce(e.event_type, x.event_type) AS event_type, a.queue, x.detail,
       x.event_count, a.fired_at, a.resolved_at, a.delivered, x.attempts, x.last_error
FROM alerts a LEFT JOIN events e ON e.event_id = a.event_id LEFT JOIN alert_details x USING (alert_id)
WHERE ($state IS NULL OR (CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END) = $state)
ORDER BY a.resolved_at IS NOT NULL, a.fired_at DESC, a.alert_id
LIMIT $limit
"""
_HAS_ALERT_DETAILS = """
SELECT count(*) > 0 AS found FROM information_schema.tables
WHERE table_schema = 'main' AND table_name = 'alert_details'
"""

_SCHEMA = """
SELECT table_name AS "table", column_name AS "column", data_type AS "type"
FROM information_schema.columns
WHERE table_schema = 'main' AND NOT starts_with(table_name, '_')
ORDER BY table_name, ordinal_position
"""


def _bucket_s(connection: duckdb.DuckDBPyConnection, buckets: int) -> float:
    """A round bucket width that cuts the stored time range into about ``buckets`` pieces."""
    (row,) = _records(
        connection,
        "SELECT date_diff('millisecond', min(published_at), max(published_at)) / 1000.0 AS span FROM events",
        {},
    )
    span = row["span"] or 0.0
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if span / width <= buckets:
            return float(width)
    return 86400.0 * 7


def summary(connection: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Totals for the overview: events, deliveries, edges, services, time range, firing alerts."""
    return _records(connection, _SUMMARY, {})[0]


def rates(connection: duckdb.DuckDBPyConnection, *, buckets: int = _DEFAULT_BUCKETS) -> dict[str, Any]:
    """Events/s and deliveries/s per time bucket (the bucket width chosen for ~``buckets``)."""
    bucket_s = _bucket_s(connection, buckets)
    return {"bucket_s": bucket_s, "rates": _records(connection, _RATES, {"bucket_s": bucket_s})}


def orphan_report(
    connection: duckdb.DuckDBPyConnection, *, buckets: int = _DEFAULT_BUCKETS, limit: int = 1000
) -> dict[str, Any]:
    """Everything the overview and orphans pages show about orphans, from one pass over the view:
    ``counts`` by reason, ``groups`` (reason, event type, exchange, routing key, queue → n,
    largest first), ``over_time`` (bucket, reason → orphans; ``bucket_s`` wide) and the newest
    ``limit`` orphan ``rows``.
    """
    bucket_s = _bucket_s(connection, buckets)
    found = _records(connection, _ORPHAN_REPORT, {"bucket_s": bucket_s, "limit": limit})
    groups, over_time, rows = [], [], []
    counts: dict[str, int] = {}
    for row in found:
        kind = row.pop("kind")
        if kind == "group":
            counts[row["reason"]] = counts.get(row["reason"], 0) + row["n"]
            groups.append(
                {k: row[k] for k in ("reason", "event_type", "exchange", "routing_key", "queue", "n")}
            )
        elif kind == "bucket":
            over_time.append({"bucket": row["bucket"], "reason": row["reason"], "orphans": row["n"]})
        else:
            rows.append({k: v for k, v in row.items() if k not in ("bucket", "n")})
    groups.sort(key=lambda g: (-g["n"], g["reason"], g["event_type"] or "", g["queue"] or ""))
    over_time.sort(key=lambda b: (b["bucket"], b["reason"]))
    rows.sort(key=lambda r: (r["published_at"], r["event_id"], r["queue"] or ""), reverse=True)
    return {
        "counts": dict(sorted(counts.items())),
        "groups": groups,
        "bucket_s": bucket_s,
        "over_time": over_time,
        "rows": rows,
    }


def top_orphaned(connection: duckdb.DuckDBPyConnection, *, limit: int = 10) -> list[dict[str, Any]]:
    """The (event type, queue, reason) groups with the most orphans."""
    return orphaned_groups(orphan_report(connection, limit=0)["groups"], limit=limit)


def orphaned_groups(groups: list[dict[str, Any]], *, limit: int = 10) -> list[dict[str, Any]]:
    """:func:`orphan_report` groups summed per (event type, queue, reason), largest first."""
    summed: dict[tuple[str, str, str], int] = {}
    for group in groups:
        key = (group["event_type"], group["queue"] or "(no queue)", group["reason"])
        summed[key] = summed.get(key, 0) + group["n"]
    ordered = sorted(summed.items(), key=lambda item: (-item[1], item[0]))
    return [{"event_type": t, "queue": q, "reason": r, "orphans": n} for (t, q, r), n in ordered[:limit]]


def slowest(connection: duckdb.DuckDBPyConnection, *, limit: int = 10) -> list[dict[str, Any]]:
    """Events with the longest time to consistency (publish → last delivery settled)."""
    return _records(connection, _SLOWEST.replace("{per_event}", per_event(connection)), {"limit": limit})


def facets(connection: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Distinct event types, services, exchanges and queues (the events filter's choices)."""
    found: dict[str, list[str]] = {"event_type": [], "service": [], "exchange": [], "queue": []}
    for row in _records(connection, _FACETS, {}):
        if row["value"] is not None:
            found[row["facet"]].append(row["value"])
    return found


def events_page(
    connection: duckdb.DuckDBPyConnection,
    *,
    since: str | None = None,
    until: str | None = None,
    event_type: str | None = None,
    service: str | None = None,
    exchange: str | None = None,
    routing_key: str | None = None,
    queue: str | None = None,
    outcome: str | None = None,
    trace_id: str | None = None,
    event_id: str | None = None,
    payload: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """One page of events (newest first) matching every filter given, and how many match.

    ``event_id`` also matches the events of the flow it started (correlation id); ``outcome``
    is a delivery outcome or ``unsettled``; ``since``/``until`` are ISO 8601 times;
    ``payload`` is ``field=value`` (``customer.id=7`` for nested fields), matched against the
    captured JSON bodies (payload capture, ``payloads`` table).
    """
    if outcome is not None and outcome not in _OUTCOMES:
        raise SqlRejected(f"outcome must be one of {', '.join(_OUTCOMES)}")
    path, value = payload_filter(payload)
    params: dict[str, Any] = {
        "payload_path": path,
        "payload_value": value,
        "since": since,
        "until": until,
        "event_type": event_type,
        "service": service,
        "exchange": exchange,
        "routing_key": routing_key,
        "queue": queue,
        "outcome": outcome,
        "trace_id": trace_id,
        "event_id": event_id,
    }
    where, used = _event_filter(params)
    total = _records(connection, _EVENTS_COUNT.replace("{filter}", where), used)[0]["n"]
    page = {**used, "limit": max(0, limit), "offset": max(0, offset)}
    ids = [row["event_id"] for row in _records(connection, _EVENTS_PAGE_IDS.replace("{filter}", where), page)]
    rows = _records(connection, _EVENTS_PAGE, {"ids": ids, "lo": min(ids), "hi": max(ids)}) if ids else []
    return {"total": total, "offset": offset, "rows": rows}


_PAYLOAD_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def payload_filter(text: str | None) -> tuple[str | None, str | None]:
    """``field=value`` → (JSON path, value), (None, None) when no filter is given; raises
    :class:`SqlRejected` for anything else.
    """
    if text is None or not text.strip():
        return None, None
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not _PAYLOAD_FIELD.fullmatch(name):
        raise SqlRejected(
            f"payload filter must be field=value, e.g. order_id=42 or customer.id=7; not {text!r}"
        )
    return "$." + name, value.strip()


def upstream(connection: duckdb.DuckDBPyConnection, event_id: str) -> list[dict[str, Any]]:
    """What caused the event, transitively: each cause with its distance and the effect it caused."""
    return _records(connection, _UPSTREAM, {"event_id": event_id})


def chain_detail(connection: duckdb.DuckDBPyConnection, event_id: str) -> dict[str, Any]:
    """The chain downstream of an event, one row per (event, delivery attempt) with time in
    queue and processing time, plus its orphans, dead-letter deaths (x-death) and the traces
    it crosses through span links, and the payloads captured of its events.
    """
    ids = [row["event_id"] for row in _records(connection, _CHAIN_IDS, {"event_id": event_id})]
    scope = {"ids": ids, "lo": min(ids), "hi": max(ids)}  # the chain holds at least the event itself
    return {
        "hops": _records(connection, _CHAIN_HOPS, {"event_id": event_id, **scope}),
        "orphans": _records(connection, _CHAIN_ORPHANS, {"ids": ids}),
        "dead_letters": _records(connection, _CHAIN_DEATHS, scope),
        "trace_links": _records(connection, _TRACE_LINKS, scope),
        "payloads": _records(connection, _CHAIN_PAYLOADS, scope),
    }


def fanout(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Fan-out completeness: per (event type, queue) seen for it, how many of the type's events
    were delivered, acked, failed, dead-lettered, or never reached the queue (missing).
    """
    return fanout_matrix(
        fanout_delivered(connection), orphan_report(connection, limit=0)["groups"], event_types(connection)
    )


def alerts(
    connection: duckdb.DuckDBPyConnection, *, state: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Alerts, firing first then newest; ``state`` is ``firing`` or ``resolved``. With the
    alert engine's state when the database has it (severity, detail, delivery attempts).
    """
    detailed = _records(connection, _HAS_ALERT_DETAILS, {})[0]["found"]
    return _records(connection, _ALERTS_DETAILED if detailed else _ALERTS, {"state": state, "limit": limit})


def schema(connection: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Tables and views of the SQL surface with their columns (the SQL editor's reference)."""
    return _records(connection, _SCHEMA, {})


# The questions served as ``GET /api/<name>`` and asked through ``Source.ask(name, ...)``.
QUESTIONS: dict[str, Any] = {
    "summary": summary,
    "rates": rates,
    "orphan_report": orphan_report,
    "fanout_delivered": fanout_delivered,
    "event_types": event_types,
    "top_orphaned": top_orphaned,
    "slowest": slowest,
    "orphan_counts": orphan_counts,
    "facets": facets,
    "events_page": events_page,
    "upstream": upstream,
    "chain_detail": chain_detail,
    "fanout": fanout,
    "topology": topology,
    "lag": lag,
    "workflows": workflows,
    "alerts": alerts,
    "schema": schema,
}

QUESTIONS["alert_details"] = alert_details


# Questions that live in modules of their own (they import nothing from here).
from eventscope.tracer.query import contracts as _contracts  # noqa: E402
from eventscope.tracer.query import incidents as _incidents  # noqa: E402
from eventscope.tracer.query import sequence as _sequence  # noqa: E402

QUESTIONS.update(_contracts.QUESTIONS)
QUESTIONS.update(_incidents.QUESTIONS)
QUESTIONS.update(_sequence.QUESTIONS)
