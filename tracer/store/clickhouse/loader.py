"""OTLP spans → ``otel_traces`` rows, written as the OpenTelemetry Collector's ClickHouse
exporter writes them (its ``pushTraceData``): ``Timestamp`` = start (ns), lowercase hex ids
(``""`` for none), ``SpanKind`` / ``StatusCode`` as the collector's ``traceutil`` spells them
(``Producer``, ``Consumer``, ``Error``, ``Unset`` ...), ``ServiceName`` from the resource's
``service.name``, every attribute value as its string (``AsString``: ``"42"``, ``"true"``,
JSON for arrays and maps), ``Duration`` = end - start in ns, Events and Links as the
Nested columns' parallel arrays.

Two inputs: an ``ExportTraceServiceRequest`` (:func:`rows_from_request`; for tests, bench and
single-node chDB use) and the collector's normalised span rows (:func:`rows_from_normalised`;
``eventscope collect --store chdb://…`` keeps what the normaliser kept: span attributes,
links, status; no resource attributes but ``service.name``, no span events). At scale the
OpenTelemetry Collector writes ``otel_traces`` itself and this module is not in the path.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

__all__ = ["OTEL_TRACES", "load_request", "rows_from_normalised", "rows_from_request", "to_arrow"]

logger = logging.getLogger(__name__)

_KINDS = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
_KIND_NAMES = {name.upper(): name for name in _KINDS.values()}
_STATUS = {0: "Unset", 1: "Ok", 2: "Error"}
_STATUS_NAMES = {name.upper(): name for name in _STATUS.values()}
_MAP = pa.map_(pa.string(), pa.string())
_NS = pa.timestamp("ns", tz="UTC")
OTEL_TRACES = pa.schema(
    [
        ("Timestamp", _NS),
        ("TraceId", pa.string()),
        ("SpanId", pa.string()),
        ("ParentSpanId", pa.string()),
        ("TraceState", pa.string()),
        ("SpanName", pa.string()),
        ("SpanKind", pa.string()),
        ("ServiceName", pa.string()),
        ("ResourceAttributes", _MAP),
        ("ScopeName", pa.string()),
        ("ScopeVersion", pa.string()),
        ("SpanAttributes", _MAP),
        ("Duration", pa.uint64()),
        ("StatusCode", pa.string()),
        ("StatusMessage", pa.string()),
        ("Events.Timestamp", pa.list_(_NS)),
        ("Events.Name", pa.list_(pa.string())),
        ("Events.Attributes", pa.list_(_MAP)),
        ("Links.TraceId", pa.list_(pa.string())),
        ("Links.SpanId", pa.list_(pa.string())),
        ("Links.TraceState", pa.list_(pa.string())),
        ("Links.Attributes", pa.list_(_MAP)),
    ]
)


def _as_string(value: Any) -> str:
    """pdata ``Value.AsString``: strings as they are, bools ``true``/``false``, JSON otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _any_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def _attributes(key_values: Iterable[Any]) -> list[tuple[str, str]]:
    return [(kv.key, _as_string(_any_value(kv.value))) for kv in key_values]


def rows_from_request(request: Any) -> list[dict[str, Any]]:
    """An ``ExportTraceServiceRequest`` (protobuf message) → ``otel_traces`` rows."""
    rows = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = dict(resource).get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                rows.append(
                    {
                        "Timestamp": span.start_time_unix_nano,
                        "TraceId": span.trace_id.hex(),
                        "SpanId": span.span_id.hex(),
                        "ParentSpanId": span.parent_span_id.hex(),
                        "TraceState": span.trace_state,
                        "SpanName": span.name,
                        "SpanKind": _KINDS.get(span.kind, "Unspecified"),
                        "ServiceName": service,
                        "ResourceAttributes": resource,
                        "ScopeName": scope_spans.scope.name,
                        "ScopeVersion": scope_spans.scope.version,
                        "SpanAttributes": _attributes(span.attributes),
                        "Duration": max(0, span.end_time_unix_nano - span.start_time_unix_nano),
                        "StatusCode": _STATUS.get(span.status.code, "Unset"),
                        "StatusMessage": span.status.message,
                        "Events.Timestamp": [e.time_unix_nano for e in span.events],
                        "Events.Name": [e.name for e in span.events],
                        "Events.Attributes": [_attributes(e.attributes) for e in span.events],
                        "Links.TraceId": [link.trace_id.hex() for link in span.links],
                        "Links.SpanId": [link.span_id.hex() for link in span.links],
                        "Links.TraceState": [link.trace_state for link in span.links],
                        "Links.Attributes": [_attributes(link.attributes) for link in span.links],
                    }
                )
    return rows


def _status_message(error: str | None, attributes: dict[str, Any]) -> str:
    """The status message the normaliser folded into ``deliveries.error`` (``type: message``)."""
    if not error:
        return ""
    error_type = attributes.get("error.type")
    prefix = f"{error_type}: " if error_type else ""
    if prefix and error.startswith(prefix):
        return error[len(prefix) :]
    return "" if error == error_type else error


def rows_from_normalised(
    spans: Sequence[dict[str, Any]], errors: dict[tuple[str, str], str | None]
) -> list[dict[str, Any]]:
    """The normaliser's span rows (and the deliveries' errors by span key) → ``otel_traces`` rows."""
    rows = []
    for span in spans:
        try:
            attributes = json.loads(span["attributes"]) if span["attributes"] else {}
        except ValueError:
            attributes = {}
        links = json.loads(span["links"]) if span["links"] else []
        start_ns = span["start_time"] * 1000
        status = _STATUS_NAMES.get(span["status"], "Unset")
        rows.append(
            {
                "Timestamp": start_ns,
                "TraceId": span["trace_id"],
                "SpanId": span["span_id"],
                "ParentSpanId": span["parent_span_id"] or "",
                "TraceState": "",
                "SpanName": span["name"],
                "SpanKind": _KIND_NAMES.get(span["kind"], "Unspecified"),
                "ServiceName": span["service"] or "",
                "ResourceAttributes": [("service.name", span["service"])] if span["service"] else [],
                "ScopeName": "",
                "ScopeVersion": "",
                "SpanAttributes": [(key, _as_string(value)) for key, value in attributes.items()],
                "Duration": max(0, (span["end_time"] - span["start_time"]) * 1000),
                "StatusCode": status,
                "StatusMessage": _status_message(errors.get((span["trace_id"], span["span_id"])), attributes)
                if status == "Error"
                else "",
                "Events.Timestamp": [],
                "Events.Name": [],
                "Events.Attributes": [],
                "Links.TraceId": [link["trace_id"] for link in links],
                "Links.SpanId": [link["span_id"] for link in links],
                "Links.TraceState": ["" for _ in links],
                "Links.Attributes": [[] for _ in links],
            }
        )
    return rows


def to_arrow(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=OTEL_TRACES)


def load_request(engine: Any, request: Any) -> int:
    """Insert one ``ExportTraceServiceRequest`` into ``otel_traces`` and derive what it
    touched (:mod:`.derive`); returns the span count."""
    from eventscope.tracer.store.clickhouse import derive

    rows = rows_from_request(request)
    engine.insert_arrow("otel_traces", to_arrow(rows))
    derive.refresh(engine, traces=(row["TraceId"] for row in rows))
    return len(rows)
