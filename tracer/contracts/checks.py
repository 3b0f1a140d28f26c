"""Runtime checks: the written contracts held against what flows (docs/contracts.md).

The alert engine drives this module, so the checks are as incremental as the alerts: the
engine hands over every committed batch (:meth:`ContractChecks.observe`, on the writer thread:
dictionary updates only), and asks :meth:`ContractChecks.check` about each event once its
``within`` (the collector's grace for the implicit ``contracts`` rule) has passed, and again
when late deliveries touch it. What callers can rely on:

* **Kinds.** ``missing_consumer`` (a declared receiver never acked the event),
  ``undeclared_producer`` / ``undeclared_consumer`` (a service the matched messages do not
  declare), ``undeclared_type`` (an event in the contracts' scope no message matches),
  ``schema_violation`` (a captured payload fails its message's JSON Schema) and ``silent`` (an
  event type that flowed steadily stopped; :class:`SilenceWatch`).
* **One row per (event, kind, service)** in ``contract_violations``, written through the
  writer (DuckDB has one writer) and inserted only when absent: rechecks and restarts do not
  duplicate. The same findings are the alert reasons of the implicit ``contracts`` rule.
* **Never a guess.** A producer or consumer the spans do not name (an uninstrumented service
  seen only by the firehose) is not called undeclared.
* **Payloads, sampled.** Bodies kept by payload capture are validated for a deterministic
  ``sample_rate`` share of the events (by event id, so a replay samples the same ones), with
  validators compiled once per schema (``jsonschema-rs``, ~10x faster than the Python
  compilers here), on the value payload capture already parsed (no second ``json.loads``);
  on failure the reference ``jsonschema`` says where and why. The detail holds the JSON path
  and the rule that failed, never a payload value. A field the capture redacted
  (``"[redacted]"``) is not held against the schema.
* Bounded memory: payloads waiting for their check, consumers seen per event, ids recently
  counted and rows waiting for the writer all have limits (policy drop-newest, counted).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs

from eventscope.tracer.contracts.config import ContractsConfig
from eventscope.tracer.contracts.matching import Catalog, Match

__all__ = ["ContractChecks", "Resolution", "SchemaCheck", "Silence", "SilenceWatch", "Violation"]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"  # what payload capture writes in place of a secret (broker/payloads.py)
DROP_POLICY = "drop-newest"
_DEFAULT_MAX_PAYLOADS = 20_000
_DEFAULT_MAX_EVENTS = 200_000
_DEFAULT_MAX_PENDING = 100_000
_SILENT_WINDOW = 50  # arrivals per type the usual gap is learned from
_MIN_SILENCE_S = 1.0
_MAX_TYPES = 10_000
_DETAIL_LIMIT = 300


_UNPARSED = object()


@dataclass(frozen=True)
class _Parsed:
    """A body payload capture already parsed (and redacted): validated without ``json.loads``."""

    value: Any


Resolution = tuple[str, str, str | None, float]  # event id, kind, service, resolved at (s)


@dataclass(frozen=True)
class Violation:
    """One row of ``contract_violations``."""

    event_id: str
    kind: str
    service: str | None
    event_type: str | None
    exchange: str | None
    routing_key: str | None
    document: str | None
    detail: str | None
    detected_at_s: float
    resolved_at_s: float | None = None


# -- payload schemas ------------------------------------------------------------------------------
class SchemaCheck:
    """Compiled validators, one per distinct schema (cached for the process's life)."""

    def __init__(self) -> None:
        self._compiled: dict[str, Callable[[Any], bool]] = {}
        self._reference: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _validator(self, schema_json: str) -> Callable[[Any], Any]:
        compiled = self._compiled.get(schema_json)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(schema_json)
                if compiled is None:
                    schema = json.loads(schema_json)
                    if isinstance(schema, dict) and "$schema" in schema:
                        validator = jsonschema_rs.validator_for(schema)
                    else:  # AsyncAPI's Schema Object is draft 7 based
                        validator = jsonschema_rs.Draft7Validator(schema)
                    compiled = validator.is_valid
                    self._compiled[schema_json] = compiled
        return compiled

    def problems(self, schema_json: str, value: Any) -> list[str]:
        """``path: rule`` of every failure (empty when valid); never a payload value."""
        try:
            compiled = self._compiled.get(schema_json) or self._validator(schema_json)
            if compiled(value):
                return []
        except Exception as exc:  # a schema or value the compiled validator refuses: jsonschema decides
            logger.debug("compiled validator unavailable: %s", exc)
        return self._explain(schema_json, value)

    def _explain(self, schema_json: str, value: Any) -> list[str]:
        import jsonschema

        validator = self._reference.get(schema_json)
        if validator is None:
            schema = json.loads(schema_json)
            validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(
                schema
            )
            self._reference[schema_json] = validator
        out: list[str] = []
        for error in validator.iter_errors(value):
            if error.instance == REDACTED:
                continue
            out.append(f"{_json_path(error.absolute_path)}: {_reason(error)}")
        return sorted(out)


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _reason(error: Any) -> str:
    """What failed, in words from the schema only (the payload's values stay out)."""
    rule, expected = error.validator, error.validator_value
    if rule == "required" and isinstance(error.instance, dict):
        missing = [name for name in expected if name not in error.instance]
        return f"required property {', '.join(map(repr, missing))} missing"
    if rule == "type":
        return f"not of type {expected if isinstance(expected, str) else ' or '.join(expected)}"
    if rule == "additionalProperties" and isinstance(error.instance, dict):
        return "additional properties not allowed"
    text = json.dumps(expected, sort_keys=True, default=str)
    return f"fails {rule} {text if len(text) <= 80 else text[:79] + '…'}"


# -- silent producers -------------------------------------------------------------------------
@dataclass
class _Flow:
    times: deque[float] = field(default_factory=lambda: deque(maxlen=_SILENT_WINDOW))
    count: int = 0
    last_s: float = 0.0
    last_event: str = ""
    producer: str | None = None
    silent: bool = False
    resumed: bool = False


@dataclass(frozen=True)
class Silence:
    event_type: str
    event_id: str  # the last event before the silence
    producer: str | None
    last_s: float
    usual_gap_s: float
    detail: str


class SilenceWatch:
    """Per event type: its usual gap (mean over the last arrivals); ``silent`` once nothing
    came for ``factor`` times that gap (at least a second), for types that flowed at least
    ``min_rate`` per minute over at least ``min_events`` arrivals; over when the type flows again.
    """

    def __init__(self, *, factor: float, min_rate_per_min: float, min_events: int) -> None:
        self.factor = factor
        self.max_gap_s = 60.0 / min_rate_per_min if min_rate_per_min > 0 else float("inf")
        self.min_events = min_events
        self._flows: dict[str, _Flow] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def seen(self, event_type: str, at_s: float, event_id: str, producer: str | None) -> None:
        with self._lock:
            flow = self._flows.get(event_type)
            if flow is None:
                if len(self._flows) >= _MAX_TYPES:
                    self.dropped += 1
                    return
                flow = self._flows[event_type] = _Flow()
            flow.count += 1
            flow.times.append(at_s)
            if at_s >= flow.last_s:
                flow.last_s, flow.last_event, flow.producer = at_s, event_id, producer or flow.producer
            if flow.silent:
                flow.resumed = True

    def mark_silent(self, event_type: str) -> None:
        with self._lock:
            self._flows.setdefault(event_type, _Flow()).silent = True

    def usual_gap(self, flow: _Flow) -> float | None:
        if len(flow.times) < max(2, self.min_events):
            return None
        ordered = sorted(flow.times)
        gap = (ordered[-1] - ordered[0]) / (len(ordered) - 1)
        return gap if 0 < gap <= self.max_gap_s else None

    def poll(self, now: float) -> tuple[list[Silence], list[str]]:
        """Types that just fell silent, and types that just flowed again."""
        started: list[Silence] = []
        ended: list[str] = []
        with self._lock:
            for event_type, flow in self._flows.items():
                if flow.silent:
                    if flow.resumed:
                        flow.silent = flow.resumed = False
                        flow.times.clear()  # learn the usual gap afresh
                        flow.times.append(flow.last_s)
                        ended.append(event_type)
                    continue
                gap = self.usual_gap(flow)
                if gap is None:
                    continue
                quiet = now - flow.last_s
                if quiet > max(self.factor * gap, _MIN_SILENCE_S):
                    flow.silent = True
                    started.append(
                        Silence(
                            event_type=event_type,
                            event_id=flow.last_event,
                            producer=flow.producer,
                            last_s=flow.last_s,
                            usual_gap_s=gap,
                            detail=f"no {event_type} for {quiet:.1f}s "
                            f"(usual gap {gap:.3g}s, k={self.factor:g})",
                        )
                    )
        return started, ended


# -- the checks -----------------------------------------------------------------------------------
class ContractChecks:
    """The contracts of :class:`ContractsConfig` against the events the engine evaluates."""

    def __init__(
        self,
        config: ContractsConfig,
        *,
        clock: Callable[[], float] = time.time,
        max_payloads: int = _DEFAULT_MAX_PAYLOADS,
        max_events: int = _DEFAULT_MAX_EVENTS,
        max_pending: int = _DEFAULT_MAX_PENDING,
    ) -> None:
        self.config = config
        self.catalog = Catalog(config.documents)
        self.clock = clock
        self.schemas = SchemaCheck()
        self.silence = SilenceWatch(
            factor=config.silent_factor,
            min_rate_per_min=config.silent_min_rate,
            min_events=config.silent_min_events,
        )
        self.max_payloads = max_payloads
        self.max_events = max_events
        self.max_pending = max_pending
        self._threshold = int(config.sample_rate * 0xFFFFFFFF)
        self._lock = threading.Lock()
        self._payloads: dict[str, str | _Parsed] = {}
        self._consumers: OrderedDict[str, set[str]] = OrderedDict()
        self._counted: OrderedDict[str, None] = OrderedDict()
        self._schema_results: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._recorded: OrderedDict[tuple[str, str, str], float | None] = OrderedDict()  # → resolved at
        self._pending: list[Violation] = []
        self._resolutions: list[Resolution] = []
        self._silenced: dict[str, tuple[str, str | None]] = {}  # event type → its silent row's key
        self.counters: Counter[str] = Counter()

    def sampled(self, event_id: str) -> bool:
        return zlib.crc32(event_id.encode()) <= self._threshold if self._threshold else False

    # -- on the writer thread -------------------------------------------------------------------
    def observe(self, batches: Sequence[Any]) -> None:
        """Arrivals per type (silent producers), consumers per event, sampled payloads."""
        with self._lock:
            for batch in batches:
                for row in batch.events:
                    event_id = row.get("event_id")
                    if event_id is None or event_id in self._counted:
                        continue
                    self._remember(self._counted, event_id, None)
                    published = row.get("published_at")
                    if row.get("event_type") and isinstance(published, int | float):
                        self.silence.seen(
                            row["event_type"], published / 1e6, event_id, row.get("producer_service")
                        )
                for row in batch.deliveries:
                    service, event_id = row.get("consumer_service"), row.get("event_id")
                    if service and event_id:
                        known = self._consumers.get(event_id)
                        if known is None:
                            self._remember(self._consumers, event_id, {service})
                        else:
                            known.add(service)
                for row in getattr(batch, "payloads", ()):
                    event_id, body = row.get("event_id"), row.get("body")
                    if not (event_id and body and row.get("is_json") and not row.get("truncated")):
                        continue
                    if not self.sampled(event_id):
                        continue
                    if len(self._payloads) >= self.max_payloads:
                        self.counters["payloads_dropped"] += 1
                        continue
                    parsed = row.get("parsed", _UNPARSED)
                    self._payloads[event_id] = body if parsed is _UNPARSED else _Parsed(parsed)
                    self.counters["payloads_sampled"] += 1

    def _remember(self, memory: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        memory[key] = value
        if len(memory) > self.max_events:
            memory.popitem(last=False)

    # -- on the engine's thread -----------------------------------------------------------------
    def check(self, event: Any, acked_by: Sequence[str]) -> list[tuple[str | None, str, str | None]]:
        """``(queue, reason, detail)`` of every contract finding about ``event`` (an engine
        ``_Event``: event_id, event_type, exchange, routing_key, producer); records new rows.
        """
        self.counters["checked"] += 1
        match = self.catalog.match(
            event_type=event.event_type, exchange=event.exchange, routing_key=event.routing_key
        )
        if not match.in_scope:
            return []
        with self._lock:
            consumers = set(self._consumers.get(event.event_id, ())) | set(acked_by)
            body = self._payloads.pop(event.event_id, None)
        schema_results = self._schema_results.get(event.event_id)
        if schema_results is None and body is not None:
            schema_results = self.validate(match, body)
            self._remember(self._schema_results, event.event_id, schema_results)
        findings = self.judge(
            match,
            producer=event.producer,
            consumers=consumers,
            acked_by=acked_by,
            schema_results=schema_results,
        )
        now = self.clock()
        still = {service for kind, service, _, _ in findings if kind == "missing_consumer"}
        for service in match.receivers:  # consumed late (a recheck): the row is resolved
            key = (event.event_id, "missing_consumer", service)
            if service not in still and self._recorded.get(key) is None and key in self._recorded:
                self._recorded[key] = now
                self._resolutions.append((event.event_id, "missing_consumer", service, now))
        hits: list[tuple[str | None, str, str | None]] = []
        for kind, service, document, detail in findings:
            detail_text = detail if kind != "missing_consumer" else None
            hits.append((None, kind, _hit_detail(kind, service, detail_text)))
            key = (event.event_id, kind, service or "")
            if key in self._recorded:
                continue
            self._remember(self._recorded, key, None)
            self._queue(
                Violation(
                    event_id=event.event_id,
                    kind=kind,
                    service=service,
                    event_type=event.event_type,
                    exchange=event.exchange,
                    routing_key=event.routing_key,
                    document=document or self._document(service),
                    detail=(detail or "")[:_DETAIL_LIMIT] or None,
                    detected_at_s=now,
                )
            )
        return hits

    def judge(
        self,
        match: Match,
        *,
        producer: str | None,
        consumers: set[str],
        acked_by: Sequence[str],
        schema_results: list[tuple[str, str]] | None,
    ) -> list[tuple[str, str | None, str | None, str | None]]:
        """(kind, service, document, detail) of every finding; no state, no writes."""
        if not match.in_scope:
            return []
        if not match.declarations:
            return [("undeclared_type", producer, None, "no AsyncAPI message matches this event")]
        findings: list[tuple[str, str | None, str | None, str | None]] = []
        senders, receivers = match.senders, match.receivers
        if producer and producer not in senders:
            findings.append(
                ("undeclared_producer", producer, None, f"declared senders: {', '.join(senders) or 'nobody'}")
            )
        for service in sorted(set(consumers) - set(receivers)):
            declared = ", ".join(receivers) or "nobody"
            findings.append(("undeclared_consumer", service, None, f"declared receivers: {declared}"))
        for service in receivers:
            if service not in acked_by:
                findings.append(("missing_consumer", service, self._document(service), "declared consumer"))
        for service, detail in schema_results or ():
            findings.append(("schema_violation", service, self._document(service), detail))
        return findings

    def validate(self, match: Match, body: str | _Parsed) -> list[tuple[str, str]]:
        """(service, problems) per payload schema of ``match`` that ``body`` (JSON text, or the
        value capture parsed) fails.
        """
        if isinstance(body, _Parsed):
            value = body.value
        else:
            try:
                value = json.loads(body)
            except ValueError:
                return []
        self.counters["payloads_validated"] += 1
        results = []
        for service, schema_json in match.schemas():
            problems = self.schemas.problems(schema_json, value)
            if problems:
                results.append((service, "; ".join(problems)))
        return results

    def check_traffic(self, rows: Sequence[dict[str, Any]]) -> list[Violation]:
        """Post-mortem: judge stored events (rows of the ``contract_traffic`` question) at
        once, every payload validated (no sampling); silences are not judged.
        """
        now = self.clock()
        out: list[Violation] = []
        for row in rows:
            match = self.catalog.match(
                event_type=row.get("event_type"),
                exchange=row.get("exchange"),
                routing_key=row.get("routing_key"),
            )
            body = row.get("payload")
            findings = self.judge(
                match,
                producer=row.get("producer_service"),
                consumers=set(row.get("consumers") or ()),
                acked_by=list(row.get("acked_by") or ()),
                schema_results=self.validate(match, body) if body and match.declarations else None,
            )
            for kind, service, document, detail in findings:
                out.append(
                    Violation(
                        event_id=row["event_id"],
                        kind=kind,
                        service=service,
                        event_type=row.get("event_type"),
                        exchange=row.get("exchange"),
                        routing_key=row.get("routing_key"),
                        document=document or self._document(service),
                        detail=(detail or "")[:_DETAIL_LIMIT] or None,
                        detected_at_s=now,
                    )
                )
        return out

    def _document(self, service: str | None) -> str | None:
        for document in self.catalog.documents:
            if document.service == service:
                return document.file
        return None

    def _queue(self, violation: Violation) -> None:
        if len(self._pending) >= self.max_pending:
            self.counters["violations_dropped"] += 1
            return
        self._pending.append(violation)
        self.counters[f"violations_{violation.kind}"] += 1

    def poll_silence(self, now: float) -> tuple[list[Silence], list[str]]:
        """Silences that started (recorded as ``silent`` rows) and types that flow again."""
        started, ended = self.silence.poll(now)
        for silence in started:
            self._queue(
                Violation(
                    event_id=silence.event_id,
                    kind="silent",
                    service=silence.producer,
                    event_type=silence.event_type,
                    exchange=None,
                    routing_key=None,
                    document=self._document(silence.producer),
                    detail=silence.detail,
                    detected_at_s=now,
                )
            )
            self._silenced[silence.event_type] = (silence.event_id, silence.producer)
        for event_type in ended:
            key = self._silenced.pop(event_type, None)
            if key is not None:
                self._resolutions.append((key[0], "silent", key[1], now))
        return started, ended

    def resume_silence(self, event_type: str, event_id: str) -> None:
        """A silence the previous run left open: over (and resolved) when the type flows again."""
        self.silence.mark_silent(event_type)
        self._silenced[event_type] = (event_id, None)

    def take_writes(self) -> tuple[list[Violation], list[Resolution]]:
        """Rows and resolutions to write; :meth:`give_back` if the write failed."""
        pending, self._pending = self._pending, []
        resolutions, self._resolutions = self._resolutions, []
        return pending, resolutions

    def give_back(self, pending: list[Violation], resolutions: list[Resolution]) -> None:
        self._pending = pending + self._pending
        self._resolutions = resolutions + self._resolutions


def _hit_detail(kind: str, service: str | None, detail: str | None) -> str:
    """The alert's detail: the service and what the contract says; no payload value."""
    if kind == "missing_consumer":
        return f"declared: {service}"
    if kind == "undeclared_type":
        return detail or kind
    return f"{service}: {detail}" if detail else str(service)
