"""Spans → rows: what each OTLP span says about events, deliveries, settles and causes.

Pure and per batch: it reads one ``ExportTraceServiceRequest`` and knows nothing of spans
seen before. What a single span cannot say by itself (the event of a delivery whose message
carried no id, a cause found only by walking up the span tree, a settle whose delivery came
in an earlier batch) is handed on as *needs* that :mod:`eventscope.tracer.ingest.lineage` resolves
against the spans it remembers.

Spans of other instrumentations are read in their own dialect: the pre-1.2x messaging names
of ``contract.LEGACY`` are mapped to the current ones first, then the span's instrumentation
scope picks the :mod:`eventscope.tracer.ingest.dialects` reader that says what its route,
queue and settle outcome are. Requests come decoded by the protobuf runtime
(:func:`normalise`) or read straight from their bytes by :mod:`eventscope.tracer.ingest.wire`
(:func:`normalise_protobuf`); both end in the same per-span function.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from eventscope.tracer import contract as A
from eventscope.tracer.ingest import wire
from eventscope.tracer.ingest.dialects import Dialect, dialect_for
from eventscope.tracer.ingest.dialects import text as _text

__all__ = [
    "CauseNeed",
    "DeliveryNeed",
    "Normalised",
    "SettleNeed",
    "SpanNode",
    "normalise",
    "normalise_protobuf",
    "synthesized_event_id",
]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_ATTRIBUTES = 1024
_MAX_NAME_CHARS = 1024
_MAX_REASONS = 5
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
KIND_PRODUCER = A.SPAN_KIND_PRODUCER
KIND_CONSUMER = A.SPAN_KIND_CONSUMER
_OUTCOMES = A.OUTCOMES
_SETTLE_OPERATIONS = {"ack": A.OUTCOME_ACK, "nack": A.OUTCOME_NACK, "reject": A.OUTCOME_REJECT}
_SYNTHESIZED_PREFIX = "otel-"
_LEGACY_NAMES = frozenset(A.LEGACY)

Key = tuple[str, str]


def synthesized_event_id(trace_id: str, span_id: str) -> str:
    """The stable event id of a message published without ``message_id``: its PRODUCER span."""
    return f"{_SYNTHESIZED_PREFIX}{trace_id}-{span_id}"


@dataclass(slots=True)
class SpanNode:
    """What lineage remembers of every span: its place in the tree and its event, if any."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int
    event_id: str | None
    synthesized: bool = False


@dataclass(slots=True)
class DeliveryNeed:
    """A delivery whose message had no id: its event is its producer span's (link or parent)."""

    key: Key
    producers: list[Key]


@dataclass(slots=True)
class CauseNeed:
    """A publish without ``x-causation-id``: its cause is the delivery it ran under, if any."""

    effect_event_id: str
    start: Key


@dataclass(slots=True)
class SettleNeed:
    """A settle span: the outcome of the delivery that is its parent span."""

    delivery: Key
    outcome: str
    settled_at: int


@dataclass
class Normalised:
    """One request's rows, ready for the store; ``rejected`` spans were invalid."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    nodes: list[SpanNode] = field(default_factory=list)
    delivery_needs: list[DeliveryNeed] = field(default_factory=list)
    cause_needs: list[CauseNeed] = field(default_factory=list)
    settle_needs: list[SettleNeed] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.spans)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < _MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        return f"{self.rejected} span(s) rejected: " + "; ".join(self.reasons)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(any_value.bytes_value).decode("ascii")
    return getattr(any_value, kind)


def _attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _current_names(attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` with legacy names also visible under their current names."""
    if attributes.keys().isdisjoint(_LEGACY_NAMES):  # most spans: no copy, no loop
        return attributes
    merged = attributes
    for legacy, current in A.LEGACY.items():
        if legacy in attributes and current not in attributes:
            if merged is attributes:
                merged = dict(attributes)
            merged[current] = attributes[legacy]
    return merged


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int):
        return bool(value)
    return None


def normalise(request: Any, *, max_attributes: int = _DEFAULT_MAX_ATTRIBUTES) -> Normalised:
    """The rows of one ``ExportTraceServiceRequest``; invalid spans are counted, not raised.

    A span is invalid when its trace id is not 16 bytes, its span id not 8 bytes, its parent
    id neither empty nor 8 bytes, or it has more than ``max_attributes`` attributes.
    """
    out = Normalised()
    for resource_spans in request.resource_spans:
        resource = resource_spans.resource
        service = None
        for kv in resource.attributes:
            if kv.key == "service.name":
                service = _text(_value(kv.value))
                break
        for scope_spans in resource_spans.scope_spans:
            dialect = dialect_for(scope_spans.scope.name, scope_spans.scope.version)
            for span in scope_spans.spans:
                _span(span, service, dialect, out, max_attributes)
    return out


def normalise_protobuf(body: bytes, *, max_attributes: int = _DEFAULT_MAX_ATTRIBUTES) -> Normalised | None:
    """The rows of a protobuf ``ExportTraceServiceRequest`` read straight from its bytes, the
    same as :func:`normalise` makes of the decoded message; ``None`` when the wire reader gives
    up (then decode the body with the protobuf runtime and call :func:`normalise`: malformed
    or unusual input still needs that path, and it gives the precise error).
    """
    out = Normalised()
    try:
        for span in wire.spans(body):
            if span.attribute_count > max_attributes:
                if _valid_ids(span.trace_id, span.span_id, span.parent_span_id, out):
                    out.reject(f"more than {max_attributes} attributes")
                continue
            _span_row(
                span.trace_id,
                span.span_id,
                span.parent_span_id,
                span.name,
                span.kind,
                span.start_ns,
                span.end_ns,
                span.status_code,
                span.status_message,
                span.attributes,
                span.attributes_json,
                span.links,
                span.service,
                dialect_for(span.scope_name, span.scope_version),
                out,
            )
    except wire.GiveUp:
        return None
    return out


def _span(span: Any, service: str | None, dialect: Dialect, out: Normalised, max_attributes: int) -> None:
    if len(span.attributes) > max_attributes:
        if _valid_ids(span.trace_id, span.span_id, span.parent_span_id, out):
            out.reject(f"more than {max_attributes} attributes")
        return
    raw_attributes = _attributes(span.attributes)
    links = [(link.trace_id, link.span_id) for link in span.links]
    _span_row(
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        int(span.kind),
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.status.code,
        span.status.message,
        raw_attributes,
        None,
        links,
        service,
        dialect,
        out,
    )


def _valid_ids(trace_raw: bytes, span_raw: bytes, parent_raw: bytes, out: Normalised) -> bool:
    if len(trace_raw) != 16 or not any(trace_raw):
        out.reject("invalid trace_id")
        return False
    if len(span_raw) != 8 or not any(span_raw):
        out.reject("invalid span_id")
        return False
    if parent_raw and len(parent_raw) != 8:
        out.reject("invalid parent_span_id")
        return False
    return True


def _span_row(
    trace_raw: bytes,
    span_raw: bytes,
    parent_raw: bytes,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    status_code: int,
    status_message: str,
    raw_attributes: dict[str, Any],
    attributes_json: str | None,
    raw_links: list[tuple[bytes, bytes]],
    service: str | None,
    dialect: Dialect,
    out: Normalised,
) -> None:
    """One span's rows from its decoded fields (the protobuf message's or the wire reader's),
    read in the dialect of the instrumentation that wrote it.
    """
    if not _valid_ids(trace_raw, span_raw, parent_raw, out):
        return
    trace_id = trace_raw.hex()
    span_id = span_raw.hex()
    parent_span_id = parent_raw.hex() if parent_raw and any(parent_raw) else None
    end_ns = end_ns or start_ns
    attributes = _current_names(raw_attributes)
    links = [
        {"trace_id": link_trace.hex(), "span_id": link_span.hex()}
        for link_trace, link_span in raw_links
        if len(link_trace) == 16 and len(link_span) == 8
    ]
    status = _STATUS.get(status_code, "UNSET")
    if attributes_json is None:
        attributes_json = json.dumps(raw_attributes, separators=(",", ":"), default=str)
    row: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent_span_id,
        "name": name[:_MAX_NAME_CHARS],
        "kind": A.SPAN_KINDS.get(kind, "UNSPECIFIED"),
        "service": service,
        "start_time": start_ns // 1000,
        "end_time": end_ns // 1000,
        "duration_ms": (end_ns - start_ns) / 1e6,
        "status": status,
        "attributes": attributes_json,
        "links": json.dumps(links, separators=(",", ":")) if links else None,
        "event_id": None,
    }
    out.spans.append(row)
    node = SpanNode(trace_id, span_id, parent_span_id, kind, None)
    out.nodes.append(node)

    operation = dialect.operation(attributes, kind)
    if operation == A.OP_SEND:
        _event(row, node, attributes, service, dialect, name, out)
    elif operation in (A.OP_PROCESS, A.OP_RECEIVE):
        _delivery(row, node, attributes, service, dialect, name, status, status_message, links, out)
    elif operation == A.OP_SETTLE and parent_span_id is not None:
        outcome = _settle_outcome(attributes)
        if outcome is not None:
            out.settle_needs.append(SettleNeed((trace_id, parent_span_id), outcome, start_ns // 1000))


def _event(
    row: dict[str, Any],
    node: SpanNode,
    attributes: dict[str, Any],
    service: str | None,
    dialect: Dialect,
    name: str,
    out: Normalised,
) -> None:
    trace_id, span_id = row["trace_id"], row["span_id"]
    event_id = _text(attributes.get(A.MESSAGING_MESSAGE_ID))
    if event_id is None:
        event_id = synthesized_event_id(trace_id, span_id)
        node.synthesized = True
    exchange, routing_key = dialect.route(attributes, name)
    causation_id = _text(attributes.get(A.CAUSATION_ID))
    event_type = _text(attributes.get(A.EVENT_TYPE)) or routing_key
    row["event_id"] = node.event_id = event_id
    out.events.append(
        {
            "event_id": event_id,
            "event_type": event_type,
            "exchange": exchange,
            "routing_key": routing_key,
            "producer_service": _text(attributes.get(A.PRODUCER)) or service,
            "published_at": row["start_time"],
            "trace_id": trace_id,
            "span_id": span_id,
            "causation_id": causation_id,
            # the adapter leaves it out on a root event, which is its own flow
            "correlation_id": _text(attributes.get(A.CORRELATION_ID))
            or (event_id if causation_id is None else None),
            "routed_queues": None,
            "payload_size": _integer(attributes.get(A.MESSAGING_BODY_SIZE)),
            "source": "span",
        }
    )
    if causation_id is not None:
        if causation_id != event_id:
            out.edges.append((causation_id, event_id, "causation_id"))
    elif row["parent_span_id"] is not None:
        out.cause_needs.append(CauseNeed(event_id, (trace_id, row["parent_span_id"])))


def _delivery(
    row: dict[str, Any],
    node: SpanNode,
    attributes: dict[str, Any],
    service: str | None,
    dialect: Dialect,
    name: str,
    status: str,
    status_message: str,
    links: list[dict[str, str]],
    out: Normalised,
) -> None:
    trace_id, span_id = row["trace_id"], row["span_id"]
    event_id = _text(attributes.get(A.MESSAGING_MESSAGE_ID))
    queue = dialect.queue(attributes, name)
    outcome = dialect.outcome(attributes, status=status, status_message=status_message)
    error = _text(attributes.get(A.ERROR_TYPE))
    if status == "ERROR" and status_message and status_message != error:
        error = f"{error}: {status_message}" if error else status_message
    settled_at = None
    if outcome is not None and outcome != A.OUTCOME_UNKNOWN:
        # auto-ack settles on delivery; a settle inside processing happened by the span's end.
        settled_at = row["start_time"] if _boolean(attributes.get(A.AUTO_ACK)) else row["end_time"]
    row["event_id"] = node.event_id = event_id
    out.deliveries.append(
        {
            "event_id": event_id,
            "queue": queue,
            "consumer_service": service,
            "received_at": row["start_time"],
            "settled_at": settled_at,
            "outcome": outcome,
            # eventscope writes it only when true; other instrumentations may not know it
            "redelivered": _boolean(attributes.get(A.REDELIVERED))
            or (False if A.QUEUE in attributes else None),
            "error": error,
            "trace_id": trace_id,
            "span_id": span_id,
            "source": "span",
            "record_id": None,
        }
    )
    if event_id is None:
        producers = [(link["trace_id"], link["span_id"]) for link in links]
        if row["parent_span_id"] is not None:
            producers.append((trace_id, row["parent_span_id"]))
        if producers:
            out.delivery_needs.append(DeliveryNeed((trace_id, span_id), producers))


def _settle_outcome(attributes: dict[str, Any]) -> str | None:
    outcome = _text(attributes.get(A.SETTLE_OUTCOME))
    if outcome in _OUTCOMES:
        return outcome
    operation = (_text(attributes.get(A.MESSAGING_OPERATION_NAME)) or "").lower()
    outcome = _SETTLE_OPERATIONS.get(operation)
    if outcome is not None and outcome != A.OUTCOME_ACK and _boolean(attributes.get(A.SETTLE_REQUEUE)):
        return A.OUTCOME_REQUEUE
    return outcome
