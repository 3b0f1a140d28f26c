"""OTLP trace requests read straight from their protobuf bytes, for the collector's hot path.

Reading attributes through the protobuf runtime costs ~1 µs each (a wrapper object per
KeyValue and per AnyValue); a messaging span has ten or more, most of them the same on
every span (system, operation, exchange, queue, ...). This reader walks the request's bytes
instead and decodes each distinct KeyValue once: its key, value and JSON text are cached by
its bytes (bench/README.md has the figures that keep it). It accepts only what it fully
understands; anything else (malformed or unusual input, a field seen twice) raises
:class:`GiveUp`, and the caller decodes the request with the protobuf runtime
(:mod:`eventscope.tracer.ingest.codec`), which also gives the precise error for undecodable
bodies. It knows the protobuf layout only: what a span means is the normaliser's business.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_string
from typing import Any

from eventscope.tracer import contract as A

__all__ = ["GiveUp", "WireSpan", "spans"]


@dataclass(slots=True)
class WireSpan:
    """The fields of one span the normaliser reads, as the protobuf message would give them.

    ``attributes_json`` is the attributes' JSON object text built from cached fragments, or
    ``None`` when a key was given twice (the caller dumps ``attributes`` then);
    ``attribute_count`` counts them as sent.
    """

    service: str | None
    scope_name: str
    scope_version: str
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    attributes_json: str | None
    attribute_count: int
    links: list[tuple[bytes, bytes]]


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) or None


class GiveUp(Exception):
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
            raise GiveUp


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
            raise GiveUp  # field number 0
        wire = tag & 7
        if wire == 2:
            size = data[pos]
            if size < 0x80:
                pos += 1
            else:
                size, pos = _read_varint(data, pos)
            stop = pos + size
            if stop > end:
                raise GiveUp
            yield tag >> 3, 2, pos, stop
            pos = stop
        elif wire == 0:
            value, pos = _read_varint(data, pos)
            yield tag >> 3, 0, value, pos
        elif wire == 1:
            if pos + 8 > end:
                raise GiveUp
            yield tag >> 3, 1, pos, pos + 8
            pos += 8
        elif wire == 5:
            if pos + 4 > end:
                raise GiveUp
            yield tag >> 3, 5, pos, pos + 4
            pos += 4
        else:
            raise GiveUp
    if pos != end:
        raise GiveUp


def _int32(value: int) -> int:
    """An int32 field (enums) from its varint: negative ones are sign-extended to 64 bits."""
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << 31) <= value < 1 << 31:
        raise GiveUp
    return value


def _signed64(value: int) -> int:
    if value >= 1 << 64:
        raise GiveUp
    return value - (1 << 64) if value >= 1 << 63 else value


def _any_value(data: bytes, pos: int, end: int) -> Any:
    """An AnyValue, as :func:`_value` makes of the protobuf message."""
    value: Any = None
    for number, wire, start, stop in _fields(data, pos, end):
        if value is not None:
            raise GiveUp  # two members of the oneof: leave merging rules to protobuf
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
                    raise GiveUp
                key, item = _key_value_parts(data, s, e)
                value[key] = item
        elif number == 7 and wire == 2:
            value = base64.b64encode(data[start:stop]).decode("ascii")
        else:
            raise GiveUp
    return value


def _give_up() -> Any:
    raise GiveUp


def _key_value_parts(data: bytes, pos: int, end: int) -> tuple[str, Any]:
    key = ""
    value: Any = None
    seen = 0
    for number, wire, start, stop in _fields(data, pos, end):
        if wire != 2 or number not in (1, 2) or seen & number:
            raise GiveUp
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


def spans(body: bytes) -> Iterator[WireSpan]:
    """Every span of a protobuf ``ExportTraceServiceRequest``, in wire order; raises
    :class:`GiveUp` (possibly after yielding some) when the bytes are not plain enough.
    """
    try:
        for number, wire, start, stop in _fields(body, 0, len(body)):
            if number == 1:
                if wire != 2:
                    raise GiveUp
                yield from _resource_spans(body, start, stop)
    except (IndexError, UnicodeDecodeError, struct.error, RecursionError) as exc:
        raise GiveUp from exc


def _resource_spans(data: bytes, pos: int, end: int) -> Iterator[WireSpan]:
    service = None
    named = False
    scopes = []
    seen_resource = False
    for number, wire, start, stop in _fields(data, pos, end):
        if wire != 2 and number in (1, 2, 3):
            raise GiveUp
        if number == 1:
            if seen_resource:
                raise GiveUp  # protobuf would merge the two
            seen_resource = True
            for n, w, s, e in _fields(data, start, stop):
                if n == 1:
                    if w != 2:
                        raise GiveUp
                    key, value, _ = _key_value(data, s, e)
                    if key == "service.name" and not named:
                        service = _text(value)
                        named = True
                elif n != 2 or w != 0:
                    raise GiveUp
        elif number == 2:
            scopes.append((start, stop))
        elif number == 3:
            data[start:stop].decode("utf-8")
    for start, stop in scopes:  # the resource may come after its spans on the wire
        yield from _scope_spans(data, start, stop, service)


def _scope_spans(data: bytes, pos: int, end: int, service: str | None) -> Iterator[WireSpan]:
    scope_name = scope_version = ""
    span_ranges = []
    seen_scope = False
    for number, wire, start, stop in _fields(data, pos, end):
        if wire != 2 and number in (1, 2, 3):
            raise GiveUp
        if number == 2:
            span_ranges.append((start, stop))
        elif number == 1:
            if seen_scope:
                raise GiveUp  # protobuf would merge the two
            seen_scope = True
            for n, w, s, e in _fields(data, start, stop):
                if n == 1 and w == 2:
                    scope_name = data[s:e].decode("utf-8")
                elif n == 2 and w == 2:
                    scope_version = data[s:e].decode("utf-8")
                elif n == 3 and w == 2:
                    _key_value(data, s, e)
                elif n != 4 or w != 0:
                    raise GiveUp
        elif number == 3:
            data[start:stop].decode("utf-8")
    for start, stop in span_ranges:  # the scope may come after its spans on the wire
        yield _wire_span(data, start, stop, service, scope_name, scope_version)


def _link(data: bytes, pos: int, end: int) -> tuple[bytes, bytes]:
    link_trace = link_span = b""
    for n, w, s, e in _fields(data, pos, end):
        if n == 1 and w == 2:
            link_trace = data[s:e]
        elif n == 2 and w == 2:
            link_span = data[s:e]
        elif n == 3 and w == 2:
            data[s:e].decode("utf-8")
        elif n == 4 and w == 2:
            _key_value(data, s, e)
        elif not ((n == 5 and w == 0) or (n == 6 and w == 5)):
            raise GiveUp
    return link_trace, link_span


def _span_event(data: bytes, pos: int, end: int) -> None:
    """A span event: checked, not kept (the normaliser reads none)."""
    for n, w, s, e in _fields(data, pos, end):
        if n == 2 and w == 2:
            data[s:e].decode("utf-8")
        elif n == 3 and w == 2:
            _key_value(data, s, e)
        elif not ((n == 1 and w == 1) or (n == 4 and w == 0)):
            raise GiveUp


_SPAN_LEN_FIELDS = frozenset({1, 2, 3, 4, 5, 9, 11, 13, 15})


def _wire_span(
    data: bytes, pos: int, end: int, service: str | None, scope_name: str, scope_version: str
) -> WireSpan:
    """One Span message. The loop over its fields is :func:`_fields` written out in place:
    a span has ~20 fields, and the generator's resumption per field was a fifth of decoding.
    """
    trace_raw = span_raw = parent_raw = b""
    name = ""
    kind = start_ns = end_ns = status_code = 0
    status_message = ""
    seen_status = False
    raw_attributes: dict[str, Any] = {}
    fragments: list[str] = []
    links: list[tuple[bytes, bytes]] = []
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = _read_varint(data, pos)
        if tag < 8:
            raise GiveUp  # field number 0
        number = tag >> 3
        wire = tag & 7
        if wire == 2:
            start = data[pos]
            if start < 0x80:
                start, stop = pos + 1, pos + 1 + start
            else:
                size, start = _read_varint(data, pos)
                stop = start + size
            if stop > end or number not in _SPAN_LEN_FIELDS:
                raise GiveUp
            pos = stop
            if number == 9:
                key, value, fragment = _key_value(data, start, stop)
                raw_attributes[key] = value
                fragments.append(fragment)
            elif number == 1:
                trace_raw = data[start:stop]
            elif number == 2:
                span_raw = data[start:stop]
            elif number == 4:
                parent_raw = data[start:stop]
            elif number == 5:
                name = data[start:stop].decode("utf-8")
            elif number == 15:
                if seen_status:
                    raise GiveUp
                seen_status = True
                for n, w, s, e in _fields(data, start, stop):
                    if n == 2 and w == 2:
                        status_message = data[s:e].decode("utf-8")
                    elif n == 3 and w == 0:
                        status_code = s if s < 1 << 31 else _int32(s)
                    else:
                        raise GiveUp
            elif number == 13:
                links.append(_link(data, start, stop))
            elif number == 11:
                _span_event(data, start, stop)
            else:  # 3: trace_state
                data[start:stop].decode("utf-8")
        elif wire == 1:
            start = pos
            pos += 8
            if pos > end:
                raise GiveUp
            if number == 7:
                start_ns = _unpack_fixed64(data, start)[0]
            elif number == 8:
                end_ns = _unpack_fixed64(data, start)[0]
            else:
                raise GiveUp
        elif wire == 0:
            value, pos = _read_varint(data, pos)
            if number == 6:
                kind = value if value < 1 << 31 else _int32(value)
            elif number not in (10, 12, 14):
                raise GiveUp
        elif wire == 5 and number == 16:
            pos += 4
            if pos > end:
                raise GiveUp
        else:
            raise GiveUp
    if pos != end:
        raise GiveUp
    # a key given twice: the last value wins, as in the decoded message's dict (None: dump it)
    attributes_json = "{" + ",".join(fragments) + "}" if len(raw_attributes) == len(fragments) else None
    return WireSpan(
        service,
        scope_name,
        scope_version,
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
        len(fragments),
        links,
    )
