"""The alert engine: rules evaluated inside the collector, incrementally, about every second.

What callers can rely on:

* **Incremental.** The writer hands the engine every committed batch (:meth:`observe`, on the
  writer thread: a dictionary update, nothing more). A tick looks only at events that came due
  (their ``within`` passed), at events touched by new deliveries or dead letters after they
  were evaluated, and — every ``recheck_interval_s`` — at the events of firing alerts. Their
  facts come from :func:`queries.alert_candidates`, whose scans are restricted to those ids;
  there is never a scan of the whole table per tick.
* **Exactly once.** One alert per (rule, event), or per (rule, group) for threshold rules,
  with a deterministic ``alert_id`` inserted ``ON CONFLICT DO NOTHING``: repeated ticks,
  rechecks and restarts do not fire twice. An alert that resolved does not fire again for the
  same event.
* **Lifecycle.** firing → resolved once the event no longer matches the rule (it was finally
  consumed: acked by every expected queue and expected service); a threshold alert resolves
  once fewer than ``count`` matching events fell in the last ``window``. Both transitions are
  written (through the writer thread: DuckDB has one writer), then sent to the sinks.
* **Delivery state.** Each sink's outcome lands on the alert: ``alerts.delivered`` (every sink
  took the latest notification) and ``alert_details.attempts`` / ``last_error``.
* Runtime errors in a tick are caught, logged once and counted (``errors``); the next tick
  tries again. Events beyond ``max_inbox`` waiting for a tick or ``max_watched`` waiting for
  their ``within`` are not watched (policy ``drop-newest``, counted in ``dropped``); evaluated
  events are remembered for later failures up to ``max_evaluated`` (least recent forgotten).

Reasons: the orphan reasons of the ``orphans`` view (computed with a grace of 0: ``within``
is the rule's own), ``missing_consumer`` for a declared (``[alerts.expect]``) or learned
(``learn_after``) consumer service that never acked the event, and ``poison`` for an event
redelivered more than ``redelivery_limit`` times (or dead-lettered that often) and not yet acked.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from eventscope.tracer.alerts.incidents import Incident, IncidentBook, Member
from eventscope.tracer.alerts.records import (
    TickStats,
    _Alert,
    _alert_id,
    _apply,
    _Delivery,
    _epoch,
    _Event,
    _Group,
    _iso,
)
from eventscope.tracer.alerts.rules import AlertsConfig, Rule, implicit_expect_rule
from eventscope.tracer.alerts.sinks import DeliveryResult, SinkSet
from eventscope.tracer.contracts import rows as contract_rows
from eventscope.tracer.contracts.checks import ContractChecks
from eventscope.tracer.contracts.config import CONTRACT_REASONS, CONTRACT_RULE, SILENT_RULE
from eventscope.tracer.ingest.writer import WriteQueueFull, Writer
from eventscope.tracer.metrics import Family, labels
from eventscope.tracer.query import incidents as incident_queries
from eventscope.tracer.query import questions as queries
from eventscope.tracer.store.duckdb_store import Store

if TYPE_CHECKING:
    from eventscope.tracer.store.duckdb_store import Batch

__all__ = ["DROP_POLICY", "AlertEngine", "TickStats"]

logger = logging.getLogger(__name__)

DROP_POLICY = "drop-newest"
_DEFAULT_MAX_INBOX = 200_000
_DEFAULT_MAX_EVALUATED = 200_000
_DEFAULT_MAX_WATCHED = 1_000_000
_DEFAULT_RECHECK_INTERVAL_S = 30.0
_DEFAULT_WRITE_TIMEOUT_S = 30.0
_CATCH_UP_MARGIN_S = 60.0
_DEFAULT_GRACE_S = 30.0  # the collector's default grace: when the contracts rule judges an event
_CHUNK = 5000
# the reason an alert reports when an event has several (first wins)
_PRIORITY = (
    "poison",
    "unroutable",
    "dead_lettered",
    "expired",
    "failed",
    "unacked",
    "unconsumed",
    "missing_consumer",
)
_RANK = {reason: index for index, reason in enumerate(_PRIORITY)}


class AlertEngine:
    """Evaluates :class:`AlertsConfig` against what the collector stores; see the module doc."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        store: Store,
        writer: Writer,
        sinks: SinkSet | None = None,
        clock: Any = time.time,
        max_inbox: int = _DEFAULT_MAX_INBOX,
        max_evaluated: int = _DEFAULT_MAX_EVALUATED,
        max_watched: int = _DEFAULT_MAX_WATCHED,
        recheck_interval_s: float = _DEFAULT_RECHECK_INTERVAL_S,
        sink_backoff_s: float | None = None,
        grace_s: float | None = None,
    ) -> None:
        """``grace_s``: the collector's grace (``--grace``), which the implicit
        ``[alerts.expect]`` rule waits; a rule that selects ``missing_consumer`` sets its own wait.
        """
        self.config = config
        self.store = store
        self.writer = writer
        self.clock = clock
        self.max_inbox = max_inbox
        self.max_evaluated = max_evaluated
        self.max_watched = max_watched
        self.recheck_interval_s = recheck_interval_s
        self.rules: tuple[Rule, ...] = config.rules
        if config.expect and not any("missing_consumer" in rule.reasons for rule in config.rules):
            self.rules += (implicit_expect_rule(grace_s),)
        # [contracts]: per-event findings once the collector's grace passed; silences apart
        self.contracts = ContractChecks(config.contracts, clock=clock) if config.contracts else None
        self._contract_within_s = _DEFAULT_GRACE_S if grace_s is None else grace_s
        self._silent_rule = Rule(name=SILENT_RULE, reasons=frozenset({"silent"}))
        self._silent: dict[str, _Alert] = {}  # event type → its firing silence
        if self.contracts is not None:
            reasons = frozenset(CONTRACT_REASONS) - {"silent"}
            self.rules += (Rule(name=CONTRACT_RULE, reasons=reasons, within_s=self._contract_within_s),)
        if sinks is None:
            options = {} if sink_backoff_s is None else {"backoff_s": sink_backoff_s}
            sinks = SinkSet(config.sinks, on_result=self._on_result, **options)
        self.sinks = sinks
        self.incidents = IncidentBook(dashboard_url=config.dashboard_url)
        self._lock = threading.Lock()
        self._inbox: dict[str, dict[str, Any]] = {}
        self._touched: set[str] = set()
        self._watched: dict[str, _Event] = {}
        self._due: list[tuple[float, str]] = []
        self._evaluated: OrderedDict[str, _Event] = OrderedDict()
        self._firing: dict[tuple[str, str], _Alert] = {}  # (rule, event id) → alert
        self._done: set[tuple[str, str]] = set()  # (rule, event id) already alerted (and resolved)
        self._groups: dict[str, _Group] = {}
        self._group_last: dict[str, tuple[_Event, tuple[str | None, str, str | None]]] = {}
        self._streaks: dict[tuple[str, str], int] = {}  # (event type, service) → consecutive acks
        self._deliveries: dict[tuple[str, str], _Delivery] = {}
        self._results: list[DeliveryResult] = []
        self._writes: list[tuple[str, Any]] = []
        self._unsent: list[tuple[str, dict[str, Any]]] = []  # (rule, notification) once stored
        self._next_recheck = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counters: Counter[str] = Counter()
        self.dropped = 0
        self.errors = 0
        self.last_tick_s = 0.0
        self._error_logged = False

    # -- wiring ---------------------------------------------------------------------------
    def start(self, *, thread: bool = True) -> AlertEngine:
        """Resume the alerts still firing in the store, start the sinks and the tick thread
        (``thread=False``: the caller calls :meth:`tick`, as tests and benchmarks do).
        """
        self._resume()
        if self.contracts is not None:
            documents = self.contracts.catalog.documents
            self.writer.call(lambda store: contract_rows.replace_declarations(store, documents)).result(
                timeout=_DEFAULT_WRITE_TIMEOUT_S
            )
        self.sinks.start()
        self.writer.on_commit = self.observe
        if thread:
            self._thread = threading.Thread(target=self._run, name="eventscope-alerts", daemon=True)
            self._thread.start()
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop ticking, give the sinks ``timeout`` to deliver, record their outcomes; idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self.writer.on_commit == self.observe:
            self.writer.on_commit = None
        if self._thread is not None:
            self._thread.join(timeout)
        self.sinks.close(timeout=timeout)
        try:
            if self.contracts is not None:
                self._write_contracts()
            self._flush()
        except Exception as exc:
            logger.warning("alert engine: last delivery outcomes not recorded: %s", exc)

    def _run(self) -> None:
        interval = self.config.interval_s
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:
                self.errors += 1
                if not self._error_logged:
                    self._error_logged = True
                    logger.exception("alert evaluation failed (counted from now on; next tick retries)")

    def observe(self, batches: Sequence[Batch]) -> None:
        """The writer's commit hook: remember new events and the events deliveries touched."""
        with self._lock:
            for batch in batches:
                for row in batch.events:
                    event_id = row.get("event_id")
                    if event_id is None:
                        continue
                    known = self._inbox.get(event_id)
                    if known is not None:
                        known.update({k: v for k, v in row.items() if v is not None})
                    elif len(self._inbox) < self.max_inbox:
                        self._inbox[event_id] = dict(row)
                    else:
                        self.dropped += 1
                for row in (*batch.deliveries, *getattr(batch, "dead_letters", ())):
                    event_id = row.get("event_id")
                    if event_id is not None:
                        self._touched.add(event_id)
        if self.contracts is not None:
            self.contracts.observe(batches)

    # -- the tick -----------------------------------------------------------------------------
    def tick(self) -> TickStats:
        """One evaluation: new and due events, touched events, firing alerts; then writes and
        notifications. Public so that tests and benchmarks can drive it.
        """
        started = time.perf_counter()
        now = self.clock()
        stats = TickStats()
        with self._lock:
            inbox, self._inbox = self._inbox, {}
            touched, self._touched = self._touched, set()
        self._admit(inbox, touched)
        due = self._pop_due(now)
        recheck = {
            eid
            for eid in touched
            if eid in self._evaluated or (eid in self._watched and self._watched[eid].evaluated)
        }
        if now >= self._next_recheck:
            self._next_recheck = now + self.recheck_interval_s
            recheck |= {key[1] for key in self._firing if self._firing[key].group_key is None}
        candidates = set(due) | recheck
        stats.candidates = len(candidates)
        fired: list[_Alert] = []
        resolved: list[_Alert] = []
        if candidates:
            # new events and old ones apart: each query's id range stays narrow (queries.py)
            facts, reasons = self._facts([sorted(due), sorted(recheck - set(due))])
            for event_id in sorted(candidates):
                event = self._watched.get(event_id) or self._evaluated.get(event_id)
                if event is None:
                    continue
                row = facts.get(event_id)
                if row is None:  # gone (retention) before it was evaluated
                    self._forget(event_id)
                    continue
                event.update(row)
                hits = self._hits(event, row, reasons.get(event_id, []), first=event_id in due)
                self._evaluate(event, hits, now, fired, resolved, rules_due=due.get(event_id))
                self._settle(event_id, event)
        self._evaluate_groups(now, fired, resolved)
        if self.contracts is not None:
            self._evaluate_silent(now, fired, resolved)
        self._trim()
        for kind, status, alerts in (("fire", "firing", fired), ("resolve", "resolved", resolved)):
            for alert in alerts:
                self._writes.append((kind, alert))
                if alert.incident is None:  # grouped alerts notify through their incident
                    self._unsent.append((alert.rule.name, self.payload(alert, status, now)))
        for incident, notification in self.incidents.transitions(now):
            self._unsent.append((incident.rule.name, self.incidents.payload(incident, notification, now)))
            self.counters[f"incident_notifications_{notification}"] += 1
        self._writes.extend(("incident", row) for row in self.incidents.changed())
        if self._flush():  # notify only what is stored, so that outcomes find their alert
            unsent, self._unsent = self._unsent, []
            for rule, body in unsent:
                self._notify(rule, body)
        stats.fired, stats.resolved = len(fired), len(resolved)
        stats.seconds = time.perf_counter() - started
        self.last_tick_s = stats.seconds
        self.counters["ticks"] += 1
        self.counters["candidates"] += stats.candidates
        return stats

    def _admit(self, inbox: dict[str, dict[str, Any]], touched: set[str]) -> None:
        for event_id, row in inbox.items():
            event = self._watched.get(event_id) or self._evaluated.get(event_id)
            if event is not None:  # the other side of a merge (span ↔ firehose)
                event.update(row)
                if event_id in self._evaluated:
                    touched.add(event_id)
                continue
            event = _Event(event_id)
            event.update(row)
            published_us = row.get("published_at")
            event.published_s = published_us / 1e6 if isinstance(published_us, int | float) else self.clock()
            event.rules = [
                rule
                for rule in self.rules
                if rule.matches_event(
                    event_type=event.event_type,
                    exchange=event.exchange,
                    routing_key=event.routing_key,
                    producer=event.producer,
                )
            ]
            if not event.rules:
                continue
            if len(self._watched) >= self.max_watched:
                self.dropped += 1
                continue
            self._watched[event_id] = event
            heapq.heappush(self._due, (event.published_s + min(r.within_s for r in event.rules), event_id))

    def _pop_due(self, now: float) -> dict[str, list[Rule]]:
        """Events whose (next) rule's ``within`` has passed → the rules now due for them."""
        due: dict[str, list[Rule]] = {}
        while self._due and self._due[0][0] <= now:
            _, event_id = heapq.heappop(self._due)
            event = self._watched.get(event_id)
            if event is None:
                continue
            age = now - event.published_s
            ready = [r for r in event.rules if r.name not in event.evaluated and r.within_s <= age]
            later = [r.within_s for r in event.rules if r.name not in event.evaluated and r.within_s > age]
            if later:
                heapq.heappush(self._due, (event.published_s + min(later), event_id))
            if ready:
                due.setdefault(event_id, []).extend(ready)
        return due

    def _facts(
        self, groups: list[list[str]]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[str | None, str]]]]:
        facts: dict[str, dict[str, Any]] = {}
        reasons: dict[str, list[tuple[str | None, str]]] = {}
        chunks = [ids[start : start + _CHUNK] for ids in groups for start in range(0, len(ids), _CHUNK)]
        connection = self.store.reader()
        try:
            for chunk in chunks:
                rows, orphans = queries.alert_candidates(
                    connection, chunk, redelivery_limit=self.config.redelivery_limit
                )
                for row in rows:
                    facts[row["event_id"]] = row
                for row in orphans:
                    reasons.setdefault(row["event_id"], []).append((row["queue"], row["reason"]))
        finally:
            connection.close()
        return facts, reasons

    def _hits(
        self, event: _Event, row: dict[str, Any], orphans: list[tuple[str | None, str]], *, first: bool
    ) -> list[tuple[str | None, str, str | None]]:
        """(queue, reason, detail) of everything wrong with the event, most telling first."""
        hits: list[tuple[str | None, str, str | None]] = [(queue, reason, None) for queue, reason in orphans]
        acked = set(row.get("acked_by") or ())
        expected = [
            service
            for pattern, services in self.config.expect.items()
            if fnmatch.fnmatchcase(event.event_type or "", pattern)
            for service in services
        ]
        missing = [s for s in dict.fromkeys(expected) if s not in acked]
        if missing:
            hits.append((None, "missing_consumer", f"expected: {', '.join(missing)}"))
        if self.config.learn_after and event.event_type and first and not event.learned:
            event.learned = True
            lost = self._learn(event.event_type, acked, exclude=set(expected))
            if lost:
                hits.append((None, "missing_consumer", f"learned: {', '.join(lost)}"))
        if self.contracts is not None and self.clock() - event.published_s >= self._contract_within_s:
            hits.extend(self.contracts.check(event, sorted(acked)))
        hits.sort(key=lambda hit: (_RANK.get(hit[1], 99), hit[0] or ""))
        return hits

    def _learn(self, event_type: str, acked: set[str], *, exclude: set[str]) -> list[str]:
        """Update the learned baseline with one occurrence; the services that just stopped."""
        assert self.config.learn_after is not None
        lost: list[str] = []
        for (kind, service), streak in list(self._streaks.items()):
            if kind == event_type and service not in acked:
                if streak >= self.config.learn_after and service not in exclude:
                    lost.append(service)
                self._streaks[(kind, service)] = 0
        for service in acked:
            self._streaks[(event_type, service)] = self._streaks.get((event_type, service), 0) + 1
        return sorted(lost)

    def _evaluate(
        self,
        event: _Event,
        hits: list[tuple[str | None, str, str | None]],
        now: float,
        fired: list[_Alert],
        resolved: list[_Alert],
        *,
        rules_due: list[Rule] | None,
    ) -> None:
        if rules_due:
            event.evaluated.update(rule.name for rule in rules_due)
        for rule in event.rules:
            if rule.name not in event.evaluated:
                continue
            hit = next((h for h in hits if h[1] in rule.reasons and rule.matches_queue(h[0])), None)
            key = (rule.name, event.event_id)
            if rule.threshold is not None:
                if hit is not None and key not in self._done:
                    self._done.add(key)
                    self._groups.setdefault(rule.name, _Group()).hits.append((now, event.event_id))
                    self._group_last[rule.name] = (event, hit)
                continue
            alert = self._firing.get(key)
            if hit is not None and alert is None and key not in self._done:
                queue, reason, detail = hit
                alert = _Alert(_alert_id(rule.name, event.event_id), rule, event, queue, reason, detail, now)
                if rule.group_by is not None:
                    alert.incident = self.incidents.join(rule, alert.member(), now)
                self._firing[key] = alert
                self._done.add(key)
                fired.append(alert)
            elif hit is None and alert is not None:
                alert.resolved_s = now
                del self._firing[key]
                if alert.incident is not None:
                    self.incidents.leave(alert.incident, event.event_id, now)
                resolved.append(alert)

    def _evaluate_groups(self, now: float, fired: list[_Alert], resolved: list[_Alert]) -> None:
        for rule in self.rules:
            if rule.threshold is None:
                continue
            group = self._groups.setdefault(rule.name, _Group())
            while group.hits and group.hits[0][0] < now - rule.threshold.window_s:
                group.hits.popleft()
            count = len(group.hits)
            if group.firing is None and count >= rule.threshold.count:
                event, (queue, reason, detail) = self._group_last[rule.name]
                group.episodes += 1
                alert = _Alert(
                    _alert_id(rule.name, "group", f"{now:.6f}", str(group.episodes)),
                    rule,
                    event,
                    queue,
                    reason,
                    detail,
                    now,
                    group_key=rule.name,
                    event_count=count,
                )
                group.firing = alert
                fired.append(alert)
            elif group.firing is not None and count < rule.threshold.count:
                group.firing.resolved_s = now
                resolved.append(group.firing)
                group.firing = None

    def _evaluate_silent(self, now: float, fired: list[_Alert], resolved: list[_Alert]) -> None:
        """Silent producers: one alert per silence of an event type, resolved when it flows."""
        assert self.contracts is not None
        started, ended = self.contracts.poll_silence(now)
        for silence in started:
            event = _Event(
                silence.event_id,
                event_type=silence.event_type,
                producer=silence.producer,
                published_s=silence.last_s,
            )
            alert = _Alert(
                _alert_id(SILENT_RULE, silence.event_type, f"{now:.6f}"),
                self._silent_rule,
                event,
                None,
                "silent",
                silence.detail,
                now,
                group_key=f"silent:{silence.event_type}",
            )
            self._silent[silence.event_type] = alert
            fired.append(alert)
        for event_type in ended:
            alert = self._silent.pop(event_type, None)
            if alert is not None:
                alert.resolved_s = now
                resolved.append(alert)
        self._write_contracts()

    def _write_contracts(self) -> None:
        """The contracts' new rows and resolutions, through the writer (kept on failure)."""
        assert self.contracts is not None
        violations, resolutions = self.contracts.take_writes()
        if violations or resolutions:
            try:
                self.writer.call(
                    lambda store: contract_rows.write_violations(store, violations, resolutions)
                ).result(timeout=_DEFAULT_WRITE_TIMEOUT_S)
            except (WriteQueueFull, FutureTimeout) as exc:
                self.contracts.give_back(violations, resolutions)
                logger.debug("contract violations postponed: %s", exc)

    def _resume_silence(self, row: dict[str, Any]) -> None:
        """A silence left firing by the previous run resolves when its type flows again."""
        assert self.contracts is not None
        event = _Event(row["event_id"], event_type=row["event_type"])
        self._silent[row["event_type"]] = _Alert(
            row["alert_id"],
            self._silent_rule,
            event,
            None,
            "silent",
            row["detail"],
            _epoch(row["fired_at"]),
            group_key=f"silent:{row['event_type']}",
        )
        self.contracts.resume_silence(row["event_type"], row["event_id"])

    def _settle(self, event_id: str, event: _Event) -> None:
        """Move an event whose every rule was evaluated to the 'evaluated' memory."""
        if event_id in self._watched and len(event.evaluated) == len(event.rules):
            del self._watched[event_id]
            self._evaluated[event_id] = event
        if event_id in self._evaluated:
            self._evaluated.move_to_end(event_id)

    def _trim(self) -> None:
        """Bound the 'evaluated' memory: forget the least recently seen events, except those
        with a firing alert (a later failure of a forgotten event no longer fires).
        """
        excess = len(self._evaluated) - self.max_evaluated
        if excess <= 0:
            return
        firing = {key[1] for key in self._firing}
        for event_id in list(itertools.islice(self._evaluated, excess + len(firing))):
            if excess <= 0:
                break
            if event_id not in firing:
                del self._evaluated[event_id]
                excess -= 1
                self.counters["forgotten"] += 1

    def _forget(self, event_id: str) -> None:
        self._watched.pop(event_id, None)
        self._evaluated.pop(event_id, None)

    # -- writing and notifying ------------------------------------------------------------
    def _on_result(self, result: DeliveryResult) -> None:
        """From the sinks' threads: recorded on the alert at the next tick."""
        with self._lock:
            self._results.append(result)

    def _flush(self) -> bool:
        """Write the tick's transitions and the delivery outcomes so far, through the writer;
        False when the writer had no room or time (the next tick tries again).
        """
        with self._lock:
            results, self._results = self._results, []
        for result in results:
            delivery = self._deliveries.get((result.alert_id, result.status))
            done = None
            if delivery is not None:
                delivery.pending -= 1
                delivery.ok = delivery.ok and result.ok
                if delivery.pending <= 0:
                    done = delivery.ok
                    del self._deliveries[(result.alert_id, result.status)]
            self._writes.append(("delivery", (result, done)))
            self.counters["delivered" if result.ok else "undelivered"] += 1
        if not self._writes:
            return True
        writes, self._writes = self._writes, []
        try:
            future = self.writer.call(lambda store: _apply(store, writes))
            future.result(timeout=_DEFAULT_WRITE_TIMEOUT_S)
        except (WriteQueueFull, FutureTimeout) as exc:
            self._writes = writes + self._writes  # next tick tries again
            self.counters["write_retries"] += 1
            logger.debug("alert writes postponed: %s", exc)
            return False
        for kind, _item in writes:
            if kind == "fire":
                self.counters["fired"] += 1
            elif kind == "resolve":
                self.counters["resolved"] += 1
        return True

    def _notify(self, rule: str, body: dict[str, Any]) -> None:
        targets = self.sinks.targets(rule)
        if not targets:
            return
        self._deliveries[(body["alert_id"], body["status"])] = _Delivery(pending=len(targets))
        for deliverer in targets:
            deliverer.put(dict(body))

    def payload(self, alert: _Alert, status: str, now: float) -> dict[str, Any]:
        """The notification every sink sends (docs/alerts.md, "Payload")."""
        event = alert.event
        base = self.config.dashboard_url.rstrip("/")
        return {
            "alert_id": alert.alert_id,
            "rule": alert.rule.name,
            "severity": alert.rule.severity,
            "status": status,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "exchange": event.exchange,
            "routing_key": event.routing_key,
            "queue": alert.queue,
            "reason": alert.reason,
            "detail": alert.detail,
            "producer": event.producer,
            "age_s": round(max(0.0, now - event.published_s), 3),
            "correlation_id": event.correlation_id or event.event_id,
            "trace_id": event.trace_id,
            "group": alert.group_key,
            "event_count": alert.event_count,
            "fired_at": _iso(alert.fired_s),
            "resolved_at": _iso(alert.resolved_s) if alert.resolved_s is not None else None,
            "dashboard_url": f"{base}/chain?event={event.event_id}",
        }

    def _resume(self) -> None:
        """Pick up where a previous run stopped: alerts left firing are watched again for
        resolution (rechecked at the first tick), and events of the last ``within`` (plus a
        margin) are evaluated again, without firing twice what already fired.
        """
        since_s = max((rule.within_s for rule in self.rules), default=0.0) + _CATCH_UP_MARGIN_S
        connection = self.store.reader()
        try:
            rows = queries.alert_details(connection, firing=True, limit=1_000_000)
            recent, fired = queries.recent_events(connection, since_s=since_s, limit=self.max_inbox)
            open_incidents, members = incident_queries.open_incidents(connection)
        finally:
            connection.close()
        incidents = self._resume_incidents(open_incidents)
        incident_of = {row["event_id"]: incidents.get(row["incident_id"]) for row in members}
        self._done.update((row["rule"], row["event_id"]) for row in fired)
        with self._lock:
            for row in recent:
                self._inbox.setdefault(row["event_id"], row)
        rules = {rule.name: rule for rule in self.rules}
        for row in rows:
            if row["rule"] == SILENT_RULE and self.contracts is not None and row.get("event_type"):
                self._resume_silence(row)
                continue
            rule = rules.get(row["rule"])
            if rule is None or row["event_id"] is None or rule.threshold is not None:
                continue  # a rule no longer configured stays firing: resolve it by hand
            event = self._evaluated.get(row["event_id"]) or _Event(row["event_id"], rules=[rule])
            if rule not in event.rules:
                event.rules.append(rule)
            event.evaluated.add(rule.name)
            event.learned = True
            self._evaluated[event.event_id] = event
            alert = _Alert(
                row["alert_id"],
                rule,
                event,
                row["queue"],
                row["reason"],
                row["detail"],
                _epoch(row["fired_at"]),
            )
            incident = incident_of.get(event.event_id)
            if incident is not None and incident.rule is rule:
                alert.incident = incident
                self.incidents.rejoin(incident, event.event_id)
            self._firing[(rule.name, event.event_id)] = alert
            self._done.add((rule.name, event.event_id))
        for incident in incidents.values():
            if not incident.firing:  # its last alerts resolved while nobody watched: resolve it
                self.incidents.leave(incident, "", self.clock())

    def _resume_incidents(self, rows: list[dict[str, Any]]) -> dict[str, Incident]:
        """The open incidents of rules still grouping, by id (their alerts rejoin them)."""
        rules = {rule.name: rule for rule in self.rules if rule.group_by is not None}
        resumed: dict[str, Incident] = {}
        for row in rows:
            rule = rules.get(row["rule"])
            if rule is None:
                continue  # no longer grouped: its alerts resolve one by one
            group = json.loads(row["group_key"])
            examples = [
                Member("", event_id, row["reason"], row["queue"], row["event_type"], None, None, None)
                for event_id in row["examples"] or ()
            ]
            first = examples[0] if examples else Member("", "", row["reason"], None, None, None, None, None)
            incident = Incident(
                row["incident_id"],
                rule,
                group,
                _epoch(row["opened_at"]),
                _epoch(row["last_seen_at"]),
                first,
                event_count=row["event_count"],
                examples=examples,
                notified_s=_epoch(row["notified_at"]) if row["notified_at"] is not None else None,
                notified_count=row["event_count"],
                notifications=row["notifications"],
            )
            self.incidents.resume(incident)
            resumed[incident.incident_id] = incident
        return resumed

    # -- metrics --------------------------------------------------------------------------
    def incident_figures(self) -> dict[str, Any]:
        """Open incidents by (rule, severity), and how many opened and resolved since start:
        what ``/metrics`` shows of incidents.
        """
        return {
            "open": self.incidents.open_by_rule(),
            "opened": self.incidents.opened,
            "resolved": self.incidents.resolved,
        }

    def firing(self) -> dict[tuple[str, str], int]:
        """Alerts firing now by (rule, severity)."""
        counts: Counter[tuple[str, str]] = Counter()
        for alert in self._firing.values():
            counts[(alert.rule.name, alert.rule.severity)] += 1
        for group in self._groups.values():
            if group.firing is not None:
                counts[(group.firing.rule.name, group.firing.rule.severity)] += 1
        for alert in self._silent.values():
            counts[(alert.rule.name, alert.rule.severity)] += 1
        return dict(counts)

    def _incident_families(self) -> list[Family]:
        figures = self.incident_figures()
        grouped = [rule for rule in self.rules if rule.group_by is not None]
        samples = [
            (
                labels(rule=rule.name, severity=rule.severity),
                figures["open"].get((rule.name, rule.severity), 0),
            )
            for rule in grouped
        ]
        return [
            ("alert_incidents_open", "gauge", "Incidents open now, by rule (rules with group_by).", samples),
            ("alert_incidents_opened_total", "counter", "Incidents opened.", [("", figures["opened"])]),
            ("alert_incidents_resolved_total", "counter", "Incidents resolved.", [("", figures["resolved"])]),
        ]

    def metric_families(self) -> list[Family]:
        firing = self.firing()
        samples = [
            (
                labels(rule=rule.name, severity=rule.severity),
                firing.get((rule.name, rule.severity), 0),
            )
            for rule in self.rules
        ]
        return [
            ("alerts_firing", "gauge", "Alerts firing now, by rule.", samples),
            ("alerts_fired_total", "counter", "Alerts fired.", [("", self.counters["fired"])]),
            ("alerts_resolved_total", "counter", "Alerts resolved.", [("", self.counters["resolved"])]),
            (
                "alert_evaluation_errors_total",
                "counter",
                "Alert ticks that failed (logged once).",
                [("", self.errors)],
            ),
            (
                "alert_observations_dropped_total",
                "counter",
                f"Events the alert engine could not take (policy {DROP_POLICY}).",
                [("", self.dropped)],
            ),
            (
                "alert_watched_events",
                "gauge",
                "Events waiting for their `within`.",
                [("", len(self._watched))],
            ),
            (
                "alert_tick_seconds",
                "gauge",
                "Duration of the last evaluation tick.",
                [("", self.last_tick_s)],
            ),
            *self._incident_families(),
            *self.sinks.metric_families(),
        ]
