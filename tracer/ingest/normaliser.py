"""Spans → rows: what each OTLP span says about events, deliveries, settles and causes.

Pure and per batch: it reads one ``ExportTraceServiceRequest`` and knows nothing of spans
seen before. What a single span cannot say by itself (the event of a delivery whose message
carried no id, a cause found only by walking up the span tree, a settle whose delivery came
in an earlier batch) is handed on as *needs* that :mod:`eventscope.tracer.ingest.lineage` resolves
against the spans it remembers.

Readers of other instrumentations are welcome: the pre-1.2x messaging names of
``attributes.LEGACY`` (e.g. ``opentelemetry-instrumentation-pika``'s
``messaging.destination`` / ``messaging.operation``, spans named ``"<dest> send"`` and
``"<dest> receive"``) are mapped to the current ones before anything is derived.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any

from eventscope.tracer import contract as A

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
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
KIND_PRODUCER = 4
KIND_CONSUMER = 5
_SEND_OPERATIONS = frozenset({A.OP_SEND, "publish", "create"})
_DELIVERY_OPERATIONS = frozenset({A.OP_PROCESS, A.OP_RECEIVE, "deliver"})
_OUTCOMES = frozenset({A.OUTCOME_ACK, A.OUTCOME_NACK, A.OUTCOME_REJECT, A.OUTCOME_REQUEUE, A.OUTCOME_ERROR})
_SETTLE_OPERATIONS = {"ack": A.OUTCOME_ACK, "nack": A.OUTCOME_NACK, "reject": A.OUTCOME_REJECT}
_SYNTHESIZED_PREFIX = "otel-"

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
    merged = attributes
    for legacy, current in A.LEGACY.items():
        if legacy in attributes and current not in attributes:
            if merged is attributes:
                merged = dict(attributes)
            merged[current] = attributes[legacy]
    return merged


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text or None


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


def _operation(attributes: dict[str, Any], kind: int) -> str | None:
    """``send`` / ``process`` / ``receive`` / ``settle`` or None for non-messaging spans."""
    operation = _text(attributes.get(A.MESSAGING_OPERATION_TYPE))
    if operation is not None:
        operation = operation.lower()
    if A.MESSAGING_SYSTEM not in attributes and operation is None:
        return None
    if operation in _SEND_OPERATIONS or (operation is None and kind == KIND_PRODUCER):
        return A.OP_SEND
    if operation in _DELIVERY_OPERATIONS or (operation is None and kind == KIND_CONSUMER):
        return A.OP_PROCESS if operation in (A.OP_PROCESS, "deliver") else A.OP_RECEIVE
    if operation == A.OP_SETTLE:
        return A.OP_SETTLE
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
            for span in scope_spans.spans:
                _span(span, service, out, max_attributes)
    return out


def _span(span: Any, service: str | None, out: Normalised, max_attributes: int) -> None:
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
    out: Normalised,
) -> None:
    """One span's rows from its decoded fields (the protobuf message's or the wire reader's)."""
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
        "kind": _KINDS.get(kind, "UNSPECIFIED"),
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

    operation = _operation(attributes, kind)
    if operation == A.OP_SEND:
        _event(row, node, attributes, service, out)
    elif operation in (A.OP_PROCESS, A.OP_RECEIVE):
        _delivery(row, node, attributes, service, status, status_message, links, out)
    elif operation == A.OP_SETTLE and parent_span_id is not None:
        outcome = _settle_outcome(attributes)
        if outcome is not None:
            out.settle_needs.append(SettleNeed((trace_id, parent_span_id), outcome, start_ns // 1000))


def _event(
    row: dict[str, Any], node: SpanNode, attributes: dict[str, Any], service: str | None, out: Normalised
) -> None:
    trace_id, span_id = row["trace_id"], row["span_id"]
    event_id = _text(attributes.get(A.MESSAGING_MESSAGE_ID))
    if event_id is None:
        event_id = synthesized_event_id(trace_id, span_id)
        node.synthesized = True
    routing_key = _text(attributes.get(A.MESSAGING_ROUTING_KEY))
    # Other instrumentations name only a destination: the exchange, or for the default
    # exchange the routing key (opentelemetry-instrumentation-pika). Best effort.
    raw_exchange = attributes.get(A.EXCHANGE)
    exchange = (
        _text(attributes.get(A.MESSAGING_DESTINATION_NAME)) if raw_exchange is None else str(raw_exchange)
    )
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
    status: str,
    status_message: str,
    links: list[dict[str, str]],
    out: Normalised,
) -> None:
    trace_id, span_id = row["trace_id"], row["span_id"]
    event_id = _text(attributes.get(A.MESSAGING_MESSAGE_ID))
    queue = (
        _text(attributes.get(A.QUEUE))
        or _text(attributes.get(A.MESSAGING_CONSUMER_GROUP))
        or _text(attributes.get(A.MESSAGING_DESTINATION_NAME))
    )
    outcome = _text(attributes.get(A.SETTLE_OUTCOME))
    if outcome not in _OUTCOMES:
        outcome = None
    error = _text(attributes.get(A.ERROR_TYPE))
    if status == "ERROR":
        if outcome is None:
            outcome = A.OUTCOME_ERROR
        if status_message and status_message != error:
            error = f"{error}: {status_message}" if error else status_message
    settled_at = None
    if outcome is not None:
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


# -- the wire reader ----------------------------------------------------------------------
# Reading attributes through the protobuf runtime costs ~1 µs each (a wrapper object per
# KeyValue and per AnyValue); a messaging span has ten or more, most of them the same on
# every span (system, operation, exchange, queue, ...). The reader below walks the
# request's bytes instead and decodes each distinct KeyValue once: its key, value and JSON
# text are cached by its bytes. It accepts only what it fully understands; anything else
# (malformed or unusual input, a field seen twice) makes it give up, and the caller decodes
# the request with the protobuf runtime and :func:`normalise` — which also gives the
# precise error for undecodable bodies.


class _GiveUp(Exception):
    """The wire reader cannot vouch for this input: use the protobuf runtime."""


_MAX_CACHED_KEY_VALUES = 8192
# Keys whose values differ on (nearly) every span: caching those pairs would only churn.
_UNIQUE_VALUED = frozenset(
    {
        A.MESSAGING_MESSAGE_ID,
        A.MESSAGING_DELIVERY_TAG,
        A.MESSAGING_CONVERSATION_ID,
        A.CAUSATION_ID,
        A.CORRELATION_ID,
        "messaging.message_id",
        "messaging.conversation_id",
    }
)
_key_values: dict[bytes, tuple[str, Any, str]] = {}
_keys: dict[bytes, tuple[str, str, bool]] = {}
_unpack_double = struct.Struct("<d").unpack_from
_unpack_fixed64 = struct.Struct("<Q").unpack_from


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _GiveUp


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) of each field in ``data[pos:end]``:
    varints give their value, LEN fields their start, fixed fields their start.
    """
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _read_varint(data, pos)
        if tag < 8:
            raise _GiveUp  # field number 0
        wire = tag & 7
        if wire == 2:
            size = data[pos]
            if size < 0x80:
                pos += 1
            else:
                size, pos = _read_varint(data, pos)
            stop = pos + size
            if stop > end:
                raise _GiveUp
            yield tag >> 3, 2, pos, stop
            pos = stop
        elif wire == 0:
            value, pos = _read_varint(data, pos)
            yield tag >> 3, 0, value, pos
        elif wire == 1:
            if pos + 8 > end:
                raise _GiveUp
            yield tag >> 3, 1, pos, pos + 8
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise _GiveUp
            yield tag >> 3, 5, pos, pos + 4
            pos += 4
        else:
            raise _GiveUp
    if pos != end:
        raise _GiveUp


def _int32(value: int) -> int:
    """An int32 field (enums) from its varint: negative ones are sign-extended to 64 bits."""
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << 31) <= value < 1 << 31:
        raise _GiveUp
    return value


def _signed64(value: int) -> int:
    if value >= 1 << 64:
        raise _GiveUp
    return value - (1 << 64) if value >= 1 << 63 else value


def _any_value(data: bytes, pos: int, end: int) -> Any:
    """An AnyValue, as :func:`_value` makes of the protobuf message."""
    value: Any = None
    for number, wire, start, stop in _fields(data, pos, end):
        if value is not None:
            raise _GiveUp  # two members of the oneof: leave merging rules to protobuf
        if number == 1 and wire == 2:
            value = data[start:stop].decode("utf-8")
        elif number == 2 and wire == 0:
            value = start != 0
        elif number == 3 and wire == 0:
            value = _signed64(start)
        elif number == 4 and wire == 1:
            value = _unpack_double(data, start)[0]
        elif number == 5 and wire == 2:
            value = [
                _any_value(data, s, e) if w == 2 else _give_up()
                for n, w, s, e in _fields(data, start, stop)
                if n == 1 or _give_up()
            ]
        elif number == 6 and wire == 2:
            value = {}
            for n, w, s, e in _fields(data, start, stop):
                if n != 1 or w != 2:
                    raise _GiveUp
                key, item = _key_value_parts(data, s, e)
                value[key] = item
        elif number == 7 and wire == 2:
            value = base64.b64encode(data[start:stop]).decode("ascii")
        else:
            raise _GiveUp
    return value


def _give_up() -> Any:
    raise _GiveUp


def _key_value_parts(data: bytes, pos: int, end: int) -> tuple[str, Any]:
    key = ""
    value: Any = None
    seen = 0
    for number, wire, start, stop in _fields(data, pos, end):
        if wire != 2 or number not in (1, 2) or seen & number:
            raise _GiveUp
        seen |= number
        if number == 1:
            key = data[start:stop].decode("utf-8")
        else:
            value = _any_value(data, start, stop)
    return key, value


def _key_value(data: bytes, pos: int, end: int) -> tuple[str, Any, str]:
    """(key, value, its JSON text ``"key":value``) of one KeyValue, cached by its bytes."""
    raw = data[pos:end]
    cached = _key_values.get(raw)
    if cached is not None:
        return cached
    # the key comes first (as every encoder writes it): decode it once per distinct key
    if end - pos > 2 and data[pos] == 0x0A and data[pos + 1] < 0x80:
        key_end = pos + 2 + data[pos + 1]
        key_raw = data[pos + 2 : key_end]
        known = _keys.get(key_raw)
        if known is None:
            key = key_raw.decode("utf-8")
            if len(_keys) >= _MAX_CACHED_KEY_VALUES:
                _keys.clear()
            known = _keys[key_raw] = (key, _encode_string(key), key in _UNIQUE_VALUED)
        key, key_json, unique = known
        if unique and key_end < end and data[key_end] == 0x12:
            # the usual shape: a string value, every length in one byte
            size = data[key_end + 1] if key_end + 4 <= end else 0x80
            if size < 0x80 and data[key_end + 2] == 0x0A and data[key_end + 3] == size - 2:
                stop = key_end + 2 + size
                if stop == end:
                    value = data[key_end + 4 : stop].decode("utf-8")
                    return key, value, key_json + ":" + _encode_string(value)
            _, value = _key_value_parts(data, pos, end)
            if type(value) is str:
                return key, value, key_json + ":" + _encode_string(value)
            return key, value, key_json + ":" + json.dumps(value, separators=(",", ":"), default=str)
    key, value = _key_value_parts(data, pos, end)
    entry = (key, value, json.dumps({key: value}, separators=(",", ":"), default=str)[1:-1])
    if isinstance(value, list | dict):
        return entry  # shared mutable values would be a trap: cache scalars only
    if len(_key_values) >= _MAX_CACHED_KEY_VALUES:
        _key_values.clear()
    _key_values[raw] = entry
    return entry


def normalise_protobuf(body: bytes, *, max_attributes: int = _DEFAULT_MAX_ATTRIBUTES) -> Normalised | None:
    """The rows of a protobuf ``ExportTraceServiceRequest`` read straight from its bytes, the
    same as :func:`normalise` makes of the decoded message; ``None`` when the reader gives up
    (then decode the body with the protobuf runtime and call :func:`normalise`).
    """
    try:
        out = Normalised()
        for number, wire, start, stop in _fields(body, 0, len(body)):
            if number == 1:
                if wire != 2:
                    return None
                _resource_spans(body, start, stop, out, max_attributes)
        return out
    except (_GiveUp, IndexError, UnicodeDecodeError, struct.error, RecursionError):
        return None


def _resource_spans(data: bytes, pos: int, end: int, out: Normalised, max_attributes: int) -> None:
    service = None
    named = False
    scopes = []
    seen_resource = False
    for number, wire, start, stop in _fields(data, pos, end):
        if wire != 2 and number in (1, 2, 3):
            raise _GiveUp
        if number == 1:
            if seen_resource:
                raise _GiveUp  # protobuf would merge the two
            seen_resource = True
            for n, w, s, e in _fields(data, start, stop):
                if n == 1:
                    if w != 2:
                        raise _GiveUp
                    key, value, _ = _key_value(data, s, e)
                    if key == "service.name" and not named:
                        service = _text(value)
                        named = True
                elif n != 2 or w != 0:
                    raise _GiveUp
        elif number == 2:
            scopes.append((start, stop))
        elif number == 3:
            data[start:stop].decode("utf-8")
    for start, stop in scopes:  # the resource may come after its spans on the wire
        _scope_spans(data, start, stop, service, out, max_attributes)


def _scope_spans(
    data: bytes, pos: int, end: int, service: str | None, out: Normalised, max_attributes: int
) -> None:
    for number, wire, start, stop in _fields(data, pos, end):
        if wire != 2 and number in (1, 2, 3):
            raise _GiveUp
        if number == 2:
            _wire_span(data, start, stop, service, out, max_attributes)
        elif number == 1:
            for n, w, s, e in _fields(data, start, stop):
                if n in (1, 2) and w == 2:
                    data[s:e].decode("utf-8")
                elif n == 3 and w == 2:
                    _key_value(data, s, e)
                elif n != 4 or w != 0:
                    raise _GiveUp
        elif number == 3:
            data[start:stop].decode("utf-8")


_SPAN_LEN_FIELDS = frozenset({1, 2, 3, 4, 5, 9, 11, 13, 15})


def _wire_span(
    data: bytes, pos: int, end: int, service: str | None, out: Normalised, max_attributes: int
) -> None:
    trace_raw = span_raw = parent_raw = b""
    name = ""
    kind = start_ns = end_ns = status_code = 0
    status_message = ""
    seen_status = False
    raw_attributes: dict[str, Any] = {}
    fragments: list[str] = []
    links: list[tuple[bytes, bytes]] = []
    for number, wire, start, stop in _fields(data, pos, end):
        if number == 9:
            if wire != 2:
                raise _GiveUp
            key, value, fragment = _key_value(data, start, stop)
            raw_attributes[key] = value
            fragments.append(fragment)
        elif (wire == 2) != (number in _SPAN_LEN_FIELDS):
            raise _GiveUp
        elif number == 1:
            trace_raw = data[start:stop]
        elif number == 2:
            span_raw = data[start:stop]
        elif number == 4:
            parent_raw = data[start:stop]
        elif number == 5:
            name = data[start:stop].decode("utf-8")
        elif number == 6:
            kind = start if start < 1 << 31 else _int32(start)
        elif number == 7:
            if wire != 1:
                raise _GiveUp
            start_ns = _unpack_fixed64(data, start)[0]
        elif number == 8:
            if wire != 1:
                raise _GiveUp
            end_ns = _unpack_fixed64(data, start)[0]
        elif number == 15:
            if seen_status:
                raise _GiveUp
            seen_status = True
            for n, w, s, e in _fields(data, start, stop):
                if n == 2 and w == 2:
                    status_message = data[s:e].decode("utf-8")
                elif n == 3 and w == 0:
                    status_code = s if s < 1 << 31 else _int32(s)
                else:
                    raise _GiveUp
        elif number == 13:
            link_trace = link_span = b""
            for n, w, s, e in _fields(data, start, stop):
                if n == 1 and w == 2:
                    link_trace = data[s:e]
                elif n == 2 and w == 2:
                    link_span = data[s:e]
                elif n == 3 and w == 2:
                    data[s:e].decode("utf-8")
                elif n == 4 and w == 2:
                    _key_value(data, s, e)
                elif not ((n == 5 and w == 0) or (n == 6 and w == 5)):
                    raise _GiveUp
            links.append((link_trace, link_span))
        elif number == 11:
            for n, w, s, e in _fields(data, start, stop):
                if n == 2 and w == 2:
                    data[s:e].decode("utf-8")
                elif n == 3 and w == 2:
                    _key_value(data, s, e)
                elif not ((n == 1 and w == 1) or (n == 4 and w == 0)):
                    raise _GiveUp
        elif number == 3:
            data[start:stop].decode("utf-8")
        elif number == 16:
            if wire != 5:
                raise _GiveUp
        elif number not in (10, 12, 14) or wire != 0:
            raise _GiveUp
    if len(fragments) > max_attributes:
        if _valid_ids(trace_raw, span_raw, parent_raw, out):
            out.reject(f"more than {max_attributes} attributes")
        return
    # a key given twice: the last value wins, as in the decoded message's dict (None: dump it)
    attributes_json = "{" + ",".join(fragments) + "}" if len(raw_attributes) == len(fragments) else None
    _span_row(
        trace_raw,
        span_raw,
        parent_raw,
        name,
        kind,
        start_ns,
        end_ns,
        status_code,
        status_message,
        raw_attributes,
        attributes_json,
        links,
        service,
        out,
    )
