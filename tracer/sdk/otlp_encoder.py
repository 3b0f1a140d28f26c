"""OTLP trace requests encoded straight to protobuf bytes, with the repeating parts cached.

The SDK's OTLP encoder builds a protobuf object for every attribute of every span (about
2 µs each here) and hashes each span's resource through ``json.dumps``. Messaging spans
repeat most of their attributes (system, operation, exchange, routing key, queue, server,
service), so encoding each distinct key/value pair once and reusing its bytes makes the
exporter's share of the tracing cost a fraction of what it was. The output is the same
``ExportTraceServiceRequest`` the SDK would send (tests compare the decoded messages).

Only the wire format is written here; HTTP, retries and limits stay the SDK exporter's
(:class:`LeanOtlpSpanExporter` replaces just its encoding step, and falls back to the SDK's
encoder if this one ever fails).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from eventscope.tracer import contract as A
from eventscope.tracer.sdk import compat
from eventscope.tracer.sdk.lean import _UNSET, LeanSpan

__all__ = ["LeanOtlpSpanExporter", "encode_request"]

logger = logging.getLogger(__name__)

_MAX_CACHED_PAIRS = 8192
# Attributes whose values differ on (nearly) every span: caching them would only churn.
_UNIQUE_VALUED = frozenset(
    {
        A.MESSAGING_MESSAGE_ID,
        A.MESSAGING_DELIVERY_TAG,
        A.MESSAGING_CONVERSATION_ID,
        A.MESSAGING_BODY_SIZE,
        A.CAUSATION_ID,
        A.CORRELATION_ID,
    }
)
_MAX_CACHED_VALUE_CHARS = 256
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# opentelemetry.trace.SpanKind value -> OTLP SpanKind number, by the contract's names
_KINDS = {kind.value: A.SPAN_KIND_CODES[kind.name] for kind in SpanKind}
_fields = compat.span_context_fields  # (trace_id, span_id, is_remote, flags, state), one call
_NO_STATE = compat.EMPTY_TRACE_STATE  # the shared empty TraceState (its truth test is a Python call)
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack


_ONE_BYTE = tuple(bytes((i,)) for i in range(128))
_TAGS = {number: bytes((number << 3 | 2,)) for number in range(1, 16)}  # length-delimited fields


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    if value < 0:
        value += 1 << 64
    if value < 0x4000:  # delivery tags, sizes: two or three bytes, without the loop
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x20_0000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    size = len(payload)
    return _TAGS[number] + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode("utf-8")) if value else b""


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message body, as the SDK encodes it (bool before int; None is empty)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(1, value.encode("utf-8"))
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(6, b"".join(_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _text(1, key) + _field(2, _any_value(value))


_pairs: dict[tuple[int, str, type, Any], bytes] = {}
_keys: dict[str, bytes] = {}  # the encoded key of a pair whose value is not cached


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` fields; scalar pairs are encoded once and reused."""
    if not attributes:
        return b""
    return _pairs_of(number, attributes.items())


def _pairs_of(number: int, items: Iterable[tuple[str, Any]]) -> bytes:
    tag = _TAGS[number]
    parts = []
    append = parts.append
    for key, value in items:
        kind = type(value)
        if key not in _UNIQUE_VALUED and (
            kind is bool or kind is int or (kind is str and len(value) <= _MAX_CACHED_VALUE_CHARS)
        ):
            cache_key = (number, key, kind, value)
            encoded = _pairs.get(cache_key)
            if encoded is None:
                if len(_pairs) >= _MAX_CACHED_PAIRS:
                    _pairs.clear()
                encoded = _pairs[cache_key] = _field(number, _key_value(key, value))
            append(encoded)
            continue
        try:
            encoded_key = _keys.get(key)
            if encoded_key is None:
                if len(_keys) >= _MAX_CACHED_PAIRS:
                    _keys.clear()
                encoded_key = _keys[key] = _text(1, key)
            # the per-message values (ids, tags, sizes): the AnyValue, its KeyValue field and
            # the repeated field written with their lengths inline, no helper call per layer
            if kind is str:
                raw = value.encode("utf-8")
                size = len(raw)
                any_value = b"\x0a" + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + raw
            elif kind is int:
                any_value = b"\x18" + (_ONE_BYTE[value] if 0 <= value < 0x80 else _varint(value))
            else:
                any_value = _any_value(value)
            size = len(any_value)
            pair = encoded_key + b"\x12" + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + any_value
            size = len(pair)
            append(tag + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + pair)
        except Exception as exc:  # the SDK encoder logs and skips such attributes too
            logger.exception("Failed to encode key %s: %s", key, exc)
    return b"".join(parts)


def _status(status: Any) -> bytes:
    if status is None:
        return b""
    code = status.status_code.value
    body = _text(2, status.description or "") + (b"\x18" + _varint(code) if code else b"")
    return _field(15, body)


def _span_flags(parent: Any) -> int:
    flags = _HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _IS_REMOTE
    return flags


_prefixes: dict[int, tuple[dict[str, Any], bytes]] = {}
_KIND_FIELDS = {kind: b"\x30" + _varint(_KINDS[kind.value]) for kind in SpanKind}
_FLAGS_LOCAL_PARENT = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)
_FLAGS_REMOTE_PARENT = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
_STATUS_UNSET = _field(15, b"")


def _prefix_block(prefix: dict[str, Any]) -> bytes:
    """The encoded pairs of a shared attribute prefix (lean.share_prefix), once per prefix dict."""
    entry = _prefixes.get(id(prefix))
    if entry is None or entry[0] is not prefix:
        if len(_prefixes) >= _MAX_CACHED_PAIRS:
            _prefixes.clear()
        entry = _prefixes[id(prefix)] = (prefix, _pairs_of(9, prefix.items()))
    return entry[1]


_TIMES = struct.Struct("<BQBQ").pack  # start_time_unix_nano (field 7) and end (field 8), fixed64
_TAIL_LOCAL_PARENT = _STATUS_UNSET + _FLAGS_LOCAL_PARENT
_TAIL_REMOTE_PARENT = _STATUS_UNSET + _FLAGS_REMOTE_PARENT
# id(kind) -> {name: the encoded name and kind fields}. Keyed on the SpanKind member's id:
# hashing an Enum member is a Python-level call (Enum.__hash__), once per span otherwise. The
# members live as long as the class, so their ids never change nor get reused.
_named: dict[int, dict[str, bytes]] = {id(kind): {} for kind in SpanKind}


def _lean_span(span: LeanSpan) -> bytes:
    """A plain adapter span (no events, links, status or trace state) straight from its fields.

    The same bytes :func:`_span` writes for it, without the ``ReadableSpan`` properties and
    with the span's shared attribute prefix written as one cached block.
    """
    context = span._context
    parent = span._parent
    by_name = _named.get(id(span._kind))
    named = by_name.get(span._name) if by_name is not None else None
    if named is None:
        named = _text(5, span._name) + _KIND_FIELDS[span._kind]  # not a SpanKind: a KeyError, as before
        if by_name is not None:
            if len(by_name) >= _MAX_CACHED_PAIRS:
                by_name.clear()
            by_name[span._name] = named
    attributes = span._attributes
    prefix = span._prefix
    if prefix is not None:
        entry = _prefixes.get(id(prefix))
        block = entry[1] if entry is not None and entry[0] is prefix else _prefix_block(prefix)
        if len(attributes) > len(prefix):
            block += _pairs_of(9, islice(attributes.items(), len(prefix), None))
    else:
        block = _pairs_of(9, attributes.items())
    trace_id, span_id, _remote, _flags, _state = _fields(context)
    if parent:
        _trace, parent_id, parent_remote, _flags, _state = _fields(parent)
        ids = b"\x0a\x10%b\x12\x08%b\x22\x08%b" % (
            trace_id.to_bytes(16, "big"),
            span_id.to_bytes(8, "big"),
            parent_id.to_bytes(8, "big"),
        )
        tail = _TAIL_REMOTE_PARENT if parent_remote else _TAIL_LOCAL_PARENT
    else:
        ids = b"\x0a\x10%b\x12\x08%b" % (trace_id.to_bytes(16, "big"), span_id.to_bytes(8, "big"))
        tail = _TAIL_LOCAL_PARENT
    body = b"".join((ids, named, _TIMES(0x39, span._start_time or 0, 0x41, span._end_time or 0), block, tail))
    size = len(body)
    return b"\x12" + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + body


def _span(span: ReadableSpan) -> bytes:
    if (
        type(span) is LeanSpan
        and not span._events
        and not span._links
        and (
            span._status is _UNSET
            or (span._status.status_code is StatusCode.UNSET and span._status.description is None)
        )
        and ((state := _fields(span._context)[4]) is _NO_STATE or not state)
    ):
        return _lean_span(span)
    context = span.context
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_text(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    parent = span.parent
    if parent:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_text(5, span.name))
    parts.append(b"\x30" + _varint(_KINDS[span.kind.value]))
    parts.append(b"\x39" + _pack_fixed64(span.start_time or 0))
    parts.append(b"\x41" + _pack_fixed64(span.end_time or 0))
    parts.append(_attributes(9, span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        body = (
            b"\x09" + _pack_fixed64(event.timestamp) + _text(2, event.name) + _attributes(3, event.attributes)
        )
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field(11, body))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        linked = link.context
        body = (
            b"\x0a\x10"
            + linked.trace_id.to_bytes(16, "big")
            + b"\x12\x08"
            + linked.span_id.to_bytes(8, "big")
        )
        body += _attributes(4, link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + _pack_fixed32(_span_flags(linked))
        parts.append(_field(13, body))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    parts.append(_status(span.status))
    parts.append(b"\x85\x01" + _pack_fixed32(_span_flags(parent)))
    return _field(2, b"".join(parts))


_headers: dict[int, tuple[Any, bytes]] = {}


def _cached(holder: Any, encode: Any) -> bytes:
    """Encoding of a resource or scope, cached per object (they live as long as the provider)."""
    entry = _headers.get(id(holder))
    if entry is None or entry[0] is not holder:
        if len(_headers) >= 256:
            _headers.clear()
        entry = _headers[id(holder)] = (holder, encode(holder))
    return entry[1]


def _resource(resource: Any) -> bytes:
    return _field(1, _attributes(1, resource.attributes))


def _scope(scope: Any) -> bytes:
    if scope is None:
        return _field(1, b"")
    body = _text(1, scope.name) + _text(2, scope.version or "") + _attributes(3, scope.attributes)
    return _field(1, body)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """``ExportTraceServiceRequest`` bytes for ``spans``, grouped by resource, then by scope."""
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    last_resource = last_scope = last = None
    for span in spans:
        if type(span) is LeanSpan:  # the properties below, read without their calls
            resource = span._resource
            scope = span._instrumentation_scope or None
        else:
            resource = span.resource
            scope = span.instrumentation_scope or None
        if resource is not last_resource or scope is not last_scope or last is None:
            # a batch is mostly runs of one resource and scope: look the group up per run
            scopes = groups.setdefault(id(resource), (resource, {}))[1]
            last = scopes.setdefault(id(scope), (scope, []))[1]
            last_resource, last_scope = resource, scope
        last.append(_span(span))
    out = []
    for resource, scopes in groups.values():
        body = [_cached(resource, _resource)]
        for scope, encoded in scopes.values():
            scope_body = _cached(scope, _scope) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_body += _text(3, scope.schema_url)
            body.append(_field(2, scope_body))
        if resource.schema_url:
            body.append(_text(3, resource.schema_url))
        out.append(_field(1, b"".join(body)))
    return b"".join(out)


class LeanOtlpSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter (transport, retries, limits, metrics) with this encoder.

    Exporters that do not split encoding from transport (older releases: see
    :func:`compat.exporter_internals`) run exactly as the stock exporter.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._eventscope_internals = compat.exporter_internals(self)
        self._eventscope_warned = False
        if self._eventscope_internals is None:
            logger.debug("this OTLP exporter does not split encoding from transport: stock export path")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        internals = self._eventscope_internals
        if internals is None or self._shutdown:
            return self._stock_export(spans)
        client, metrics, max_request_size = internals
        try:
            serialized = encode_request(spans)
        except Exception as exc:
            logger.warning("eventscope's OTLP encoder failed (%s); using the SDK's for this batch", exc)
            return self._stock_export(spans)
        with metrics.export_operation(len(spans)) as result:
            if 0 < max_request_size < len(serialized):
                logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(serialized),
                    max_request_size,
                )
                result.error = ValueError("request too large")
                return SpanExportResult.FAILURE
            outcome = client.export(serialized)
            if not outcome.success:
                result.error = outcome.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def _stock_export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The SDK's own export; older releases raise when the collector is down: a failure, logged once."""
        try:
            return super().export(spans)
        except Exception as exc:
            if not self._eventscope_warned:
                self._eventscope_warned = True
                logger.warning("exporting spans to %s failed (%s); spans are dropped", self._endpoint, exc)
            return SpanExportResult.FAILURE
