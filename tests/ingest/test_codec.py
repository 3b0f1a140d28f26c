"""OTLP/HTTP decoding: media types, gzip (truncated, bombs, members), protobuf and JSON."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from eventscope.tracer.ingest import codec as otlp
from tests.spans import PRODUCER, new_trace, request, span


def test_media_types() -> None:
    assert otlp.media_type("application/x-protobuf") == otlp.PROTOBUF
    assert otlp.media_type("application/protobuf") == otlp.PROTOBUF
    assert otlp.media_type("Application/JSON; charset=utf-8") == otlp.JSON
    for bad in (None, "", "text/plain", "application/grpc"):
        with pytest.raises(otlp.UnsupportedMediaType):
            otlp.media_type(bad)


def test_identity_and_gzip() -> None:
    body = b"x" * 1000
    assert otlp.decompress(body, None, max_size=1000) == body
    assert otlp.decompress(gzip.compress(body), "gzip", max_size=1000) == body
    # concatenated members, as gunzip accepts them
    assert otlp.decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", max_size=10) == b"abcd"
    with pytest.raises(otlp.TooLarge):
        otlp.decompress(body, "identity", max_size=999)
    with pytest.raises(otlp.UnsupportedMediaType):
        otlp.decompress(body, "br", max_size=10_000)


def test_truncated_and_invalid_gzip() -> None:
    compressed = gzip.compress(b"y" * 10_000)
    with pytest.raises(otlp.DecodeError):
        otlp.decompress(compressed[: len(compressed) // 2], "gzip", max_size=100_000)
    with pytest.raises(otlp.DecodeError):
        otlp.decompress(b"not gzip at all", "gzip", max_size=100_000)


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # 200 MiB → ~200 KiB
    assert len(bomb) < 1024 * 1024
    started = time.monotonic()
    with pytest.raises(otlp.TooLarge):
        otlp.decompress(bomb, "gzip", max_size=1024 * 1024)
    assert time.monotonic() - started < 1.0


def test_protobuf_round_trip_and_garbage() -> None:
    trace_id = new_trace()
    message = request(span("publish shop", PRODUCER, trace_id=trace_id))
    decoded = otlp.decode(message.SerializeToString(), otlp.PROTOBUF)
    assert decoded.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() == trace_id
    with pytest.raises(otlp.DecodeError):
        otlp.decode(b"\xff\xff\xff\xff garbage \x00\x01", otlp.PROTOBUF)


def test_json_hex_ids_and_unknown_fields() -> None:
    trace_id, span_id = new_trace(), "00f067aa0ba902b7"
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "someFutureField": {"x": 1},
                "scopeSpans": [
                    {
                        "scope": {"name": "test"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": "",
                                "name": "publish shop",
                                "kind": 4,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000001000000",
                                "unknownSpanField": [1, 2, 3],
                                "links": [{"traceId": trace_id, "spanId": span_id}],
                            },
                            {"traceId": "not-hex", "spanId": span_id, "name": "bad"},
                        ],
                    }
                ],
            }
        ]
    }
    decoded = otlp.decode(json.dumps(document).encode(), otlp.JSON)
    spans = decoded.resource_spans[0].scope_spans[0].spans
    assert spans[0].trace_id.hex() == trace_id and spans[0].span_id.hex() == span_id
    assert spans[0].links[0].span_id.hex() == span_id
    assert spans[0].kind == 4 and spans[0].start_time_unix_nano == 1_700_000_000_000_000_000
    assert spans[1].trace_id == b""  # rejected later as one invalid span, not the whole batch


@pytest.mark.parametrize("body", [b"{", b"[1, 2]", b'{"resourceSpans": "nope"}', b"\xff\xfe"])
def test_json_garbage(body: bytes) -> None:
    with pytest.raises(otlp.DecodeError):
        otlp.decode(body, otlp.JSON)


def test_responses_and_status_bodies() -> None:
    assert otlp.encode_response(otlp.PROTOBUF) == b""
    response = ExportTraceServiceResponse()
    response.ParseFromString(otlp.encode_response(otlp.PROTOBUF, rejected_spans=2, error_message="bad"))
    assert response.partial_success.rejected_spans == 2
    document = json.loads(otlp.encode_response(otlp.JSON, rejected_spans=1, error_message="x"))
    assert document["partialSuccess"]["rejectedSpans"] == "1"
    status = status_pb2.Status()
    status.ParseFromString(otlp.encode_status(otlp.PROTOBUF, code=3, message="nope"))
    assert (status.code, status.message) == (3, "nope")
    parsed = json_format.Parse(otlp.encode_status(otlp.JSON, code=3, message="nope"), status_pb2.Status())
    assert parsed.message == "nope"
