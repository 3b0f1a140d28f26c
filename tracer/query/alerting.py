"""What the alert engine reads: candidates for its rules, recent events, alert details.

Kept apart from the dashboard's questions because the engine asks them every tick, on the
writer's schedule: each is one bounded, parameterised query over a time or id range.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from eventscope.tracer.query.sandbox import plain_records as _plain_records
from eventscope.tracer.query.sandbox import records as _records
from eventscope.tracer.store.duck import registered

__all__ = ["alert_candidates", "alert_details", "recent_events"]

# -- alerts -----------------------------------------------------------------------------------
_ALERT_DETAILS = """
SELECT a.alert_id, a.rule, coalesce(d.severity, 'warning') AS severity,
       coalesce(d.status, CASE WHEN a.resolved_at IS NULL THEN 'firing' ELSE 'resolved' END) AS status,
       a.event_id, d.event_type, a.queue, a.reason, d.detail, d.event_count, a.fired_at, a.resolved_at,
       a.delivered, coalesce(d.attempts, 0) AS attempts, d.last_error
FROM alerts a LEFT JOIN alert_details d USING (alert_id)
WHERE (NOT $firing OR a.resolved_at IS NULL)
ORDER BY a.fired_at DESC, a.alert_id
LIMIT $limit
"""

# The orphan reasons of a few candidate events (``_eventscope_alert_ids``) with a grace of 0,
# read from delivery_state (which the writer has brought up to date in the transaction of the
# batch that woke the engine; the reasons as views.sql's _orphans_from turns states into
# them), plus 'poison' (an attempt count or dead-letter count past $limit while not yet
# acked). Every scan is restricted to the candidates; the redundant range $lo..$hi (their
# smallest and largest id) lets DuckDB skip whole row groups by their min/max when ids grow
# with time, as the adapter's UUIDv7 do: the cost then follows the candidates, not the table.
_ALERT_ORPHANS = """
WITH
    ids AS (SELECT DISTINCT event_id FROM _eventscope_alert_ids),
    dels AS (
        SELECT * FROM deliveries
        WHERE event_id BETWEEN $lo AND $hi AND event_id IN (SELECT event_id FROM ids)
    ),
    deaths AS (
        SELECT event_id, queue, max(count) AS deaths
        FROM dead_letters
        WHERE event_id BETWEEN $lo AND $hi AND event_id IN (SELECT event_id FROM ids)
        GROUP BY event_id, queue
    ),
    attempts AS (SELECT event_id, queue, count(*) AS attempts FROM dels GROUP BY event_id, queue),
    latest AS (
        SELECT event_id, queue, outcome
        FROM dels
        QUALIFY row_number() OVER (
            PARTITION BY event_id, queue ORDER BY received_at DESC, coalesce(outcome = 'requeue', false),
                settled_at DESC NULLS LAST, span_id DESC NULLS LAST
        ) = 1
    ),
    ttls AS (
        SELECT name AS queue, min(message_ttl_ms) AS ttl_ms
        FROM queues WHERE message_ttl_ms IS NOT NULL GROUP BY name
    )
SELECT s.event_id, s.queue,
       CASE
           WHEN s.state <> 'undelivered' THEN s.state
           WHEN t.ttl_ms IS NOT NULL AND s.published_at + to_milliseconds(t.ttl_ms) < now() THEN 'expired'
           ELSE 'unconsumed'
       END AS reason
FROM delivery_state s
LEFT JOIN ttls t ON t.queue = s.queue
WHERE s.event_id BETWEEN $lo AND $hi AND s.event_id IN (SELECT event_id FROM ids)
UNION ALL
SELECT l.event_id, l.queue, 'poison'
FROM latest l
JOIN attempts a ON a.event_id = l.event_id AND a.queue = l.queue
LEFT JOIN deaths dl ON dl.event_id = l.event_id AND dl.queue = l.queue
WHERE (a.attempts - 1 > $limit OR coalesce(dl.deaths, 0) > $limit) AND coalesce(l.outcome, '') <> 'ack'
"""

_ALERT_EVENTS = """
WITH ids AS (SELECT DISTINCT event_id FROM _eventscope_alert_ids),
     acked AS (
         SELECT event_id, list(DISTINCT consumer_service ORDER BY consumer_service) AS services
         FROM deliveries
         WHERE event_id BETWEEN $lo AND $hi AND event_id IN (SELECT event_id FROM ids)
           AND outcome = 'ack' AND consumer_service IS NOT NULL
         GROUP BY event_id
     )
SELECT e.event_id, e.event_type, e.exchange, e.routing_key, e.producer_service, e.trace_id,
       e.correlation_id, coalesce(a.services, []) AS acked_by
FROM events e
LEFT JOIN acked a USING (event_id)
WHERE e.event_id BETWEEN $lo AND $hi AND e.event_id IN (SELECT event_id FROM ids)
"""


def alert_details(
    connection: duckdb.DuckDBPyConnection, *, firing: bool = False, limit: int = 1000
) -> list[dict[str, Any]]:
    """Alerts with their engine state (severity, delivery attempts, last error), newest first;
    ``firing`` keeps the unresolved ones. ``eventscope alerts`` prints these.
    """
    return _records(connection, _ALERT_DETAILS, {"firing": firing, "limit": limit})


_RECENT_EVENTS = """
SELECT event_id, event_type, exchange, routing_key, producer_service, epoch_us(published_at) AS published_at,
       trace_id, correlation_id
FROM events
WHERE published_at >= now() - to_microseconds(CAST(CAST($since_s AS DOUBLE) * 1000000 AS BIGINT))
LIMIT $limit
"""

_RECENT_ALERT_KEYS = """
SELECT rule, event_id FROM alerts
WHERE event_id IS NOT NULL
  AND fired_at >= now() - to_microseconds(CAST(CAST($since_s AS DOUBLE) * 1000000 AS BIGINT))
"""


def recent_events(
    connection: duckdb.DuckDBPyConnection, *, since_s: float, limit: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events published in the last ``since_s`` seconds (``published_at`` in epoch µs, as the
    writer hands rows over) and the (rule, event) of alerts fired meanwhile: what a restarted
    alert engine evaluates again without firing twice.
    """
    params = {"since_s": since_s}
    events = _plain_records(connection, _RECENT_EVENTS, {**params, "limit": limit})
    return events, _plain_records(connection, _RECENT_ALERT_KEYS, params)


def alert_candidates(
    connection: duckdb.DuckDBPyConnection, event_ids: list[str], *, redelivery_limit: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the alert engine needs about a few events: their rows (with the consumer services
    that acked them) and their orphan reasons per queue, 'poison' included. Cheapest when the
    ids are close in time (ask for new events and old ones separately).
    """

    if not event_ids:
        return [], []
    bounds = {"lo": min(event_ids), "hi": max(event_ids)}
    with registered(
        connection, "_eventscope_alert_ids", pa.table({"event_id": pa.array(event_ids, pa.string())})
    ):
        found = _plain_records(connection, _ALERT_EVENTS, bounds)
        reasons = _plain_records(connection, _ALERT_ORPHANS, {"limit": redelivery_limit, **bounds})
    return found, reasons
