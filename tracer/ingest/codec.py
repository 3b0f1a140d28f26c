"""OTLP/HTTP traces on the wire: media types, gzip, decoding requests, encoding responses.

Follows the OTLP/HTTP specification (protobuf ``application/x-protobuf`` and JSON
``application/json``, where trace and span ids are hex strings, not base64). Everything
here is pure and synchronous so the HTTP layer can run it in a worker thread, and every
failure is one of three exceptions that map to one status code each:

* :class:`DecodeError` → 400 (undecodable body, truncated gzip),
* :class:`TooLarge` → 413 (above the cap *after* decompression: gzip bombs stop at the cap),
* :class:`UnsupportedMediaType` → 415 (content type or content encoding we do not speak).
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as _ProtobufDecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = [
    "JSON",
    "PROTOBUF",
    "DecodeError",
    "TooLarge",
    "UnsupportedMediaType",
    "decode",
    "decompress",
    "encode_response",
    "encode_status",
    "media_type",
]

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_CHUNK = 64 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# google.rpc.Code values used in Status bodies.
CODE_INVALID_ARGUMENT = 3
CODE_RESOURCE_EXHAUSTED = 8
CODE_UNAVAILABLE = 14


class DecodeError(ValueError):
    """The body is not a decodable ExportTraceServiceRequest (→ 400)."""


class TooLarge(ValueError):
    """The body is larger than the cap, measured after decompression (→ 413)."""


class UnsupportedMediaType(ValueError):
    """Unknown ``Content-Type`` or ``Content-Encoding`` (→ 415)."""


def media_type(content_type: str | None) -> str:
    """``PROTOBUF`` or ``JSON`` for a ``Content-Type`` header (parameters ignored)."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return _MEDIA_TYPES[value]
    except KeyError:
        raise UnsupportedMediaType(f"unsupported content type {content_type!r}") from None


def decompress(body: bytes, encoding: str | None, *, max_size: int) -> bytes:
    """The request body without its ``Content-Encoding``; never more than ``max_size`` bytes.

    gzip is inflated incrementally and abandoned as soon as the output passes ``max_size``,
    so a small bomb costs at most ``max_size`` bytes of memory. Concatenated gzip members are
    accepted, as ``gunzip`` does.
    """
    coding = (encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        if len(body) > max_size:
            raise TooLarge(f"body of {len(body)} bytes is above the limit of {max_size} bytes")
        return body
    if coding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(f"unsupported content encoding {encoding!r}")
    out = bytearray()
    data = body
    while True:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            while True:
                chunk = inflater.decompress(data, max_size + 1 - len(out))
                out += chunk
                if len(out) > max_size:
                    raise TooLarge(f"decompressed body is above the limit of {max_size} bytes")
                data = inflater.unconsumed_tail
                if not data or inflater.eof:
                    break
        except zlib.error as exc:
            raise DecodeError(f"invalid gzip body: {exc}") from None
        if not inflater.eof:
            raise DecodeError("truncated gzip body")
        data = inflater.unused_data
        if not data:
            return bytes(out)


def decode(body: bytes, media: str) -> ExportTraceServiceRequest:
    """Parse an ``ExportTraceServiceRequest`` from protobuf or OTLP/JSON.

    JSON follows the OTLP rules: unknown fields are ignored, ``traceId``/``spanId`` are hex
    (an id that is not hex becomes empty, so that span is rejected, not the whole batch).
    """
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (_ProtobufDecodeError, RuntimeError, ValueError) as exc:
            raise DecodeError(f"invalid protobuf body: {exc}") from None
        return request
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"invalid JSON body: {exc}") from None
    if not isinstance(document, dict):
        raise DecodeError("JSON body must be an object")
    try:
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"invalid OTLP/JSON body: {exc}") from None
    return request


_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _hex_to_base64(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    return base64.b64encode(raw).decode("ascii")


def _convert_ids(item: Any) -> None:
    if not isinstance(item, dict):
        return
    for name in _ID_FIELDS:
        if name in item:
            item[name] = _hex_to_base64(item[name])


def _children(item: Any, *names: str) -> list[Any]:
    if not isinstance(item, dict):
        return []
    for name in names:
        value = item.get(name)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON ids are hex; protobuf's JSON mapping expects base64 for bytes fields."""
    for resource_spans in _children(document, "resourceSpans", "resource_spans"):
        for scope_spans in _children(resource_spans, "scopeSpans", "scope_spans"):
            for span in _children(scope_spans, "spans"):
                _convert_ids(span)
                for link in _children(span, "links"):
                    _convert_ids(link)


def encode_response(media: str, *, rejected_spans: int = 0, error_message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse``; ``partial_success`` only when something was rejected."""
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if media == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def encode_status(media: str, *, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` body, as the OTLP spec wants for 4xx/5xx responses."""
    status = status_pb2.Status(code=code, message=message)
    if media == JSON:
        return json_format.MessageToJson(status, indent=None).encode()
    return status.SerializeToString()
