"""Alerts as data: what the engine remembers of events, alerts and groups, and how a flush
of fired, resolved and delivered alerts and incidents is written to the store.

The engine (:mod:`.engine`) decides; this module holds its records and writes them, on the
writer thread, in one transaction (:func:`_apply`), in the order that lets an outcome concern
an alert or incident inserted by the same flush.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from eventscope.tracer.alerts.incidents import Incident, Member
from eventscope.tracer.alerts.rules import Rule
from eventscope.tracer.alerts.sinks import DeliveryResult
from eventscope.tracer.store.duck import registered, transaction

if TYPE_CHECKING:
    from eventscope.tracer.store.duckdb_store import Store

_TS = pa.timestamp("us", tz="UTC")
_ALERT_ROWS = pa.schema(
    [
        ("alert_id", pa.string()),
        ("rule", pa.string()),
        ("event_id", pa.string()),
        ("queue", pa.string()),
        ("reason", pa.string()),
        ("fired_at", _TS),
        ("resolved_at", _TS),
        ("delivered", pa.bool_()),
    ]
)
_DETAIL_ROWS = pa.schema(
    [
        ("alert_id", pa.string()),
        ("severity", pa.string()),
        ("status", pa.string()),
        ("event_type", pa.string()),
        ("group_key", pa.string()),
        ("event_count", pa.int64()),
        ("detail", pa.string()),
        ("attempts", pa.int32()),
        ("last_error", pa.string()),
        ("delivered_at", _TS),
        ("incident_id", pa.string()),
    ]
)
_INCIDENT_ROWS = pa.schema(
    [
        ("incident_id", pa.string()),
        ("rule", pa.string()),
        ("severity", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("event_type", pa.string()),
        ("queue", pa.string()),
        ("group_key", pa.string()),
        ("event_count", pa.int64()),
        ("open_count", pa.int64()),
        ("examples", pa.list_(pa.string())),
        ("opened_at", _TS),
        ("last_seen_at", _TS),
        ("notified_at", _TS),
        ("notifications", pa.int32()),
        ("resolved_at", _TS),
        ("delivered", pa.bool_()),
    ]
)
_OUTCOME_ROWS = pa.schema(
    [("alert_id", pa.string()), ("attempts", pa.int32()), ("error", pa.string()), ("done", pa.bool_())]
)


@dataclass
class _Event:
    """What the engine remembers of an event it watches."""

    event_id: str
    event_type: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    producer: str | None = None
    published_s: float = 0.0
    trace_id: str | None = None
    correlation_id: str | None = None
    rules: list[Rule] = field(default_factory=list)  # the rules its event-level globs match
    evaluated: set[str] = field(default_factory=set)  # rules whose `within` has passed
    learned: bool = False  # counted in the learned baseline

    def update(self, row: dict[str, Any]) -> None:
        for attribute, key in (
            ("event_type", "event_type"),
            ("exchange", "exchange"),
            ("routing_key", "routing_key"),
            ("producer", "producer_service"),
            ("trace_id", "trace_id"),
            ("correlation_id", "correlation_id"),
        ):
            value = row.get(key)
            if value is not None:
                setattr(self, attribute, value)


@dataclass
class _Alert:
    alert_id: str
    rule: Rule
    event: _Event
    queue: str | None
    reason: str
    detail: str | None
    fired_s: float
    group_key: str | None = None
    event_count: int | None = None
    resolved_s: float | None = None
    incident: Incident | None = None  # rules with group_by: the incident it belongs to

    def member(self) -> Member:
        event = self.event
        return Member(
            self.alert_id,
            event.event_id,
            self.reason,
            self.queue,
            event.event_type,
            event.exchange,
            event.routing_key,
            event.producer,
        )


@dataclass
class _Group:
    hits: deque[tuple[float, str]] = field(default_factory=deque)
    firing: _Alert | None = None
    episodes: int = 0


@dataclass
class TickStats:
    """What one tick did (returned by :meth:`AlertEngine.tick`, summed in the counters)."""

    candidates: int = 0
    fired: int = 0
    resolved: int = 0
    seconds: float = 0.0


@dataclass
class _Delivery:
    pending: int
    ok: bool = True


def _alert_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def _iso(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def _epoch(value: Any) -> float:
    import datetime as dt

    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value).timestamp()
    return time.time()


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1_000_000)


@dataclass
class _Rows:
    """One flush's writes, gathered by kind (see :data:`_GATHER`)."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    resolutions: dict[str, int | None] = field(default_factory=dict)
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)


def _gather_fire(rows: _Rows, alert: _Alert) -> None:
    rows.alerts.append(
        {
            "alert_id": alert.alert_id,
            "rule": alert.rule.name,
            "event_id": alert.event.event_id,
            "queue": alert.queue,
            "reason": alert.reason,
            "fired_at": _us(alert.fired_s),
            "resolved_at": None,
            "delivered": False,
        }
    )
    rows.details.append(
        {
            "alert_id": alert.alert_id,
            "severity": alert.rule.severity,
            "status": "firing",
            "event_type": alert.event.event_type,
            "group_key": alert.group_key,
            "event_count": alert.event_count,
            "detail": alert.detail,
            "attempts": 0,
            "last_error": None,
            "delivered_at": None,
            "incident_id": alert.incident.incident_id if alert.incident is not None else None,
        }
    )


def _gather_resolve(rows: _Rows, alert: _Alert) -> None:
    rows.resolutions[alert.alert_id] = _us(alert.resolved_s)


def _gather_delivery(rows: _Rows, item: tuple[DeliveryResult, bool | None]) -> None:
    result, done = item
    outcome = rows.outcomes.setdefault(
        result.alert_id, {"alert_id": result.alert_id, "attempts": 0, "error": None, "done": None}
    )
    outcome["attempts"] += result.attempts
    if result.error is not None and not result.ok:
        outcome["error"] = f"{result.sink}: {result.error}"
    elif result.error is not None and outcome["error"] is None:
        outcome["error"] = f"{result.sink}: {result.error} (delivered after retrying)"
    if done is not None:
        outcome["done"] = done


def _gather_incident(rows: _Rows, row: dict[str, Any]) -> None:
    rows.incidents[row["incident_id"]] = row  # the latest snapshot wins


# kind of write (what the tick queues) → how it is gathered
_GATHER: dict[str, Any] = {
    "fire": _gather_fire,
    "resolve": _gather_resolve,
    "delivery": _gather_delivery,
    "incident": _gather_incident,
}


def _write_alerts(connection: Any, rows: _Rows) -> None:
    if not rows.alerts:
        return
    _with(
        connection,
        pa.Table.from_pylist(rows.alerts, schema=_ALERT_ROWS),
        "INSERT INTO alerts SELECT * FROM _eventscope_rows ON CONFLICT DO NOTHING",
    )
    _with(
        connection,
        pa.Table.from_pylist(rows.details, schema=_DETAIL_ROWS),
        "INSERT INTO alert_details SELECT * FROM _eventscope_rows ON CONFLICT DO NOTHING",
    )


def _write_resolutions(connection: Any, rows: _Rows) -> None:
    if not rows.resolutions:
        return
    table = pa.table(
        {
            "alert_id": pa.array(list(rows.resolutions), pa.string()),
            "resolved_at": pa.array(list(rows.resolutions.values()), _TS),
        }
    )
    _with(
        connection,
        table,
        "UPDATE alerts SET resolved_at = r.resolved_at FROM _eventscope_rows r "
        "WHERE alerts.alert_id = r.alert_id AND alerts.resolved_at IS NULL",
    )
    _with(
        connection,
        table,
        "UPDATE alert_details SET status = 'resolved' FROM _eventscope_rows r "
        "WHERE alert_details.alert_id = r.alert_id",
    )


def _write_incidents(connection: Any, rows: _Rows) -> None:
    """Upsert the incidents' snapshots; a new notification makes ``delivered`` false until
    its outcomes arrive.
    """
    if not rows.incidents:
        return
    _with(
        connection,
        pa.Table.from_pylist(list(rows.incidents.values()), schema=_INCIDENT_ROWS),
        "INSERT INTO incidents SELECT * FROM _eventscope_rows ON CONFLICT (incident_id) DO UPDATE SET "
        "status = excluded.status, event_count = excluded.event_count, open_count = excluded.open_count, "
        "examples = excluded.examples, last_seen_at = excluded.last_seen_at, "
        "notified_at = excluded.notified_at, resolved_at = excluded.resolved_at, "
        "delivered = CASE WHEN excluded.notifications > incidents.notifications THEN false "
        "ELSE incidents.delivered END, notifications = excluded.notifications",
    )


def _write_outcomes(connection: Any, rows: _Rows) -> None:
    if not rows.outcomes:
        return
    table = pa.Table.from_pylist(list(rows.outcomes.values()), schema=_OUTCOME_ROWS)
    _with(
        connection,
        table,
        "UPDATE alerts SET delivered = o.done FROM _eventscope_rows o "
        "WHERE alerts.alert_id = o.alert_id AND o.done IS NOT NULL",
    )
    _with(
        connection,
        table,
        "UPDATE alert_details SET attempts = alert_details.attempts + o.attempts, "
        "last_error = coalesce(o.error, alert_details.last_error), "
        "delivered_at = CASE WHEN o.done THEN now() ELSE alert_details.delivered_at END "
        "FROM _eventscope_rows o WHERE alert_details.alert_id = o.alert_id",
    )
    _with(
        connection,
        table,
        "UPDATE incidents SET delivered = o.done FROM _eventscope_rows o "
        "WHERE incidents.incident_id = o.alert_id AND o.done IS NOT NULL",
    )


# in this order: an outcome may concern an alert or incident inserted by the same flush
_WRITERS = (_write_alerts, _write_incidents, _write_resolutions, _write_outcomes)


def _apply(store: Store, writes: list[tuple[str, Any]]) -> None:
    """On the writer thread: alert inserts, resolutions, incidents and delivery outcomes, in one
    transaction.
    """
    rows = _Rows()
    for kind, item in writes:
        _GATHER[kind](rows, item)
    connection = store.reader()
    try:
        with transaction(connection):
            for write in _WRITERS:
                write(connection, rows)
    finally:
        connection.close()


def _with(connection: Any, table: pa.Table, sql: str) -> None:
    with registered(connection, "_eventscope_rows", table):
        connection.execute(sql)
