"""Incidents: the per-event alerts of a rule with ``group_by``, gathered so that people read one
notification instead of hundreds (docs/alerts.md, "Incidents").

What callers (the engine) can rely on:

* **One incident per (rule, group) at a time.** The group is the values of the rule's
  ``group_by`` fields (``reason``, ``event_type``, ``queue``, ...) of each firing alert. The
  first alert of a group opens an incident; later ones join it while it is open. Once its
  last alert resolved, the incident is resolved and the next alert of the group opens a new one.
* **Few notifications.** :meth:`IncidentBook.transitions` says, once per tick, which
  incidents must notify: ``opened`` (once), ``updated`` (it grew, and ``repeat_interval``
  passed since its last notification) and ``resolved`` (once). Nothing else is ever sent.
* **Bounded.** Each incident keeps the ids of its firing events (needed to know when the last
  one resolves: they are firing alerts the engine already holds) and five examples.
* The book does no I/O: the engine writes :meth:`IncidentBook.row` snapshots through the writer
  and hands :meth:`IncidentBook.payload` to the sinks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from eventscope.tracer.alerts.rules import Rule

__all__ = ["EXAMPLES", "Incident", "IncidentBook", "Member"]

logger = logging.getLogger(__name__)

EXAMPLES = 5  # example events an incident keeps and every notification carries


@dataclass(frozen=True)
class Member:
    """What an incident needs of one of its alerts."""

    alert_id: str
    event_id: str
    reason: str
    queue: str | None
    event_type: str | None
    exchange: str | None
    routing_key: str | None
    producer: str | None

    def value(self, key: str) -> str | None:
        return getattr(self, key)


@dataclass
class Incident:
    incident_id: str
    rule: Rule
    group: dict[str, str | None]
    opened_s: float
    last_seen_s: float
    first: Member
    event_count: int = 0
    firing: set[str] = field(default_factory=set)  # event ids of its alerts still firing
    examples: list[Member] = field(default_factory=list)
    notified_s: float | None = None
    notified_count: int = 0  # event_count at the latest notification
    notifications: int = 0
    resolved_s: float | None = None
    resolution_sent: bool = False

    @property
    def is_open(self) -> bool:
        return self.resolved_s is None


def _incident_id(rule: str, group: dict[str, str | None], opened_s: float) -> str:
    parts = (rule, "incident", json.dumps(group, sort_keys=True), f"{opened_s:.6f}")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1_000_000)


class IncidentBook:
    """The open incidents of every grouping rule; see the module doc."""

    def __init__(self, *, dashboard_url: str) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        self._open: dict[tuple[str, str], Incident] = {}  # (rule, group as JSON) → incident
        self._changed: dict[str, Incident] = {}  # incidents to write at the end of the tick
        self.opened = 0
        self.resolved = 0

    # -- membership ---------------------------------------------------------------------------
    def join(self, rule: Rule, member: Member, now: float) -> Incident:
        """A firing alert of ``rule`` joins the open incident of its group (opening one)."""
        assert rule.group_by is not None
        group = {key: member.value(key) for key in rule.group_by}
        key = (rule.name, json.dumps(group, sort_keys=True))
        incident = self._open.get(key)
        if incident is None:
            incident = Incident(_incident_id(rule.name, group, now), rule, group, now, now, member)
            self._open[key] = incident
            self.opened += 1
        incident.event_count += 1
        incident.last_seen_s = now
        incident.firing.add(member.event_id)
        if len(incident.examples) < EXAMPLES:
            incident.examples.append(member)
        self._changed[incident.incident_id] = incident
        return incident

    def leave(self, incident: Incident, event_id: str, now: float) -> None:
        """An alert of ``incident`` resolved; the incident resolves with its last one."""
        incident.firing.discard(event_id)
        if not incident.firing and incident.is_open:
            incident.resolved_s = now
            self._open.pop((incident.rule.name, json.dumps(incident.group, sort_keys=True)), None)
            self.resolved += 1
        self._changed[incident.incident_id] = incident

    def resume(self, incident: Incident) -> None:
        """An incident a previous run left open (its firing alerts join it with :meth:`rejoin`)."""
        self._open[(incident.rule.name, json.dumps(incident.group, sort_keys=True))] = incident

    def rejoin(self, incident: Incident, event_id: str) -> None:
        incident.firing.add(event_id)

    # -- what the tick does with them ---------------------------------------------------------
    def transitions(self, now: float) -> list[tuple[Incident, str]]:
        """The notifications due now, in order: (incident, opened | updated | resolved)."""
        due: list[tuple[Incident, str]] = []
        for incident in list(self._changed.values()) + [
            i for i in self._open.values() if i.incident_id not in self._changed
        ]:
            if incident.notifications == 0:
                due.append((incident, "opened"))
                self._notified(incident, now)
                if incident.is_open:
                    continue
            if not incident.is_open:
                if not incident.resolution_sent:
                    incident.resolution_sent = True
                    due.append((incident, "resolved"))
                    self._notified(incident, now)
            elif (
                incident.event_count > incident.notified_count
                and incident.notified_s is not None
                and now - incident.notified_s >= incident.rule.repeat_interval_s
            ):
                due.append((incident, "updated"))
                self._notified(incident, now)
        return due

    def _notified(self, incident: Incident, now: float) -> None:
        incident.notified_s = now
        incident.notified_count = incident.event_count
        incident.notifications += 1
        self._changed[incident.incident_id] = incident

    def changed(self) -> list[dict[str, Any]]:
        """Rows of the incidents changed since the last call (for the ``incidents`` table)."""
        changed, self._changed = self._changed, {}
        return [self.row(incident) for incident in changed.values()]

    def open_by_rule(self) -> dict[tuple[str, str], int]:
        """Open incidents by (rule, severity)."""
        counts: dict[tuple[str, str], int] = {}
        for incident in self._open.values():
            key = (incident.rule.name, incident.rule.severity)
            counts[key] = counts.get(key, 0) + 1
        return counts

    # -- shapes -------------------------------------------------------------------------------
    @staticmethod
    def row(incident: Incident) -> dict[str, Any]:
        """The ``incidents`` row of an incident now (schema version 9)."""
        return {
            "incident_id": incident.incident_id,
            "rule": incident.rule.name,
            "severity": incident.rule.severity,
            "status": "open" if incident.is_open else "resolved",
            "reason": incident.group.get("reason", incident.first.reason),
            "event_type": incident.group.get("event_type", incident.first.event_type),
            "queue": incident.group.get("queue", incident.first.queue),
            "group_key": json.dumps(incident.group, sort_keys=True),
            "event_count": incident.event_count,
            "open_count": len(incident.firing),
            "examples": [member.event_id for member in incident.examples],
            "opened_at": _us(incident.opened_s),
            "last_seen_at": _us(incident.last_seen_s),
            "notified_at": _us(incident.notified_s),
            "notifications": incident.notifications,
            "resolved_at": _us(incident.resolved_s),
            "delivered": False,
        }

    def payload(self, incident: Incident, notification: str, now: float) -> dict[str, Any]:
        """The notification every sink sends for an incident (docs/alerts.md, "Incidents")."""
        row = self.row(incident)
        return {
            "alert_id": incident.incident_id,  # what sinks and delivery outcomes key on
            "incident_id": incident.incident_id,
            "kind": "incident",
            "notification": notification,
            "rule": incident.rule.name,
            "severity": incident.rule.severity,
            "status": "resolved" if notification == "resolved" else "firing",
            "group": dict(incident.group),
            "reason": row["reason"],
            "event_type": row["event_type"],
            "queue": row["queue"],
            "event_count": incident.event_count,
            "open_count": len(incident.firing),
            "first_seen": _iso(incident.opened_s),
            "last_seen": _iso(incident.last_seen_s),
            "age_s": round(max(0.0, now - incident.opened_s), 3),
            "fired_at": _iso(incident.opened_s),
            "resolved_at": _iso(incident.resolved_s),
            "examples": [
                {
                    "event_id": member.event_id,
                    "event_type": member.event_type,
                    "queue": member.queue,
                    "reason": member.reason,
                    "dashboard_url": f"{self.dashboard_url}/chain?event={member.event_id}",
                }
                for member in incident.examples
            ],
            "dashboard_url": f"{self.dashboard_url}/alerts?incident={incident.incident_id}",
        }
