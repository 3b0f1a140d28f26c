"""The hand-written OTLP encoder produces exactly what the SDK's encoder produces."""

from __future__ import annotations

import random

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from eventscope.tracer.sdk.lean import LeanTracer, share_prefix
from eventscope.tracer.sdk.otlp_encoder import encode_request
from eventscope.tracer.sdk.provider import Telemetry

_VALUES = [
    "text",
    "",
    "é☃",
    "x" * 300,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    True,
    False,
    0.0,
    -2.5,
    1e300,
    b"",
    b"\x00\xff",
    None,
    ["a", "b"],
    [1, 2, 3],
    [True, False],
    [1.5],
    [],
    {"k": "v", "n": {"deep": [1, "x"]}},
]


def _spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "wire", "n": 3}, schema_url="https://example.com/r")
    )
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    rng = random.Random(7)
    remote = SpanContext(
        0x1234,
        0x5678,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("a", "1"), ("b", "2")]),
    )
    local = SpanContext(0x9999, 0x8888, is_remote=False, trace_flags=TraceFlags(1))
    tracers = [
        provider.get_tracer("scope-a", "1.2", schema_url="https://opentelemetry.io/schemas/1.37.0"),
        provider.get_tracer("scope-b"),
        provider.get_tracer("scope-c", "3", attributes={"scope.attr": "x"}),
    ]
    for index in range(60):
        tracer = tracers[index % 3]
        parent = [None, remote, local][index % 3]
        ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        attributes = {f"k{i}": rng.choice(_VALUES) for i in range(rng.randint(0, 12))}
        links = [Link(remote, {"l": rng.choice(_VALUES)}), Link(local)] if index % 4 == 0 else []
        span = tracer.start_span(
            f"span {index}", context=ctx, kind=list(SpanKind)[index % 5], attributes=attributes, links=links
        )
        if index % 5 == 0:
            span.add_event("evt", {"e": rng.choice(_VALUES)})
            span.record_exception(ValueError("boom"))
        if index % 7 == 0:
            span.set_status(StatusCode.ERROR, "failed")
        elif index % 7 == 1:
            span.set_status(StatusCode.OK)
        span.end()
    lean = LeanTracer(Telemetry(provider, "", owned=True, processor=processor), "lean", "1", "")
    for index in range(10):
        span = lean.start_span(f"lean {index}", kind=SpanKind.PRODUCER, attributes={"a": index, "b": "same"})
        span.end()
    # adapter-style spans: a shared attribute prefix, a remote or local parent, some overwritten or failed
    prefix = {"messaging.system": "rabbitmq", "server.port": 5672, "flag": True}
    for index in range(12):
        parent = [None, remote, local][index % 3]
        ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        attributes = {**prefix, "messaging.message.id": f"id-{index}", "k": rng.choice(_VALUES)}
        span = lean.start_span("publish shop", context=ctx, kind=SpanKind.PRODUCER, attributes=attributes)
        share_prefix(span, prefix)
        if index % 4 == 1:
            span.set_attribute("server.port", 5673)  # an overwrite of a shared pair
        if index % 4 == 2:
            span.set_attribute("late", "added")
        if index % 4 == 3:
            span.record_exception(ValueError("boom"))
            span.set_status(StatusCode.ERROR, "failed")
        span.end()
    return exporter.get_finished_spans()


def _parse(data: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(data)
    return message


def test_encoding_equals_the_sdk_encoding():
    spans = _spans()
    ours = _parse(encode_request(spans))
    theirs = encode_spans(spans)
    assert ours == theirs
    # the cache must not change the result on a second pass
    assert _parse(encode_request(spans)) == theirs


def test_each_span_alone_equals_the_sdk_encoding():
    for span in _spans():
        assert _parse(encode_request([span])) == encode_spans([span]), span.name


def test_empty_batch():
    assert encode_request([]) == b""


def test_a_shared_prefix_is_encoded_once_and_overwrites_are_honoured():
    spans = [span for span in _spans() if span.name == "publish shop"]
    assert len(spans) == 12
    for span in spans:
        assert _parse(encode_request([span])) == encode_spans([span])
    overwritten = [span for span in spans if span.attributes["server.port"] == 5673]
    assert overwritten and all(span._prefix is None for span in overwritten)


def _lean_tracer(service: str, exporter: InMemorySpanExporter, scope: str) -> LeanTracer:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return LeanTracer(Telemetry(provider, "", owned=True, processor=processor), scope, "1", "")


def test_per_message_values_of_every_length_and_interleaved_resources_equal_the_sdk_encoding():
    # the inline lengths of the per-message pairs (one-byte and multi-byte varints), and a batch
    # whose spans alternate between resources and scopes (the grouping looked up per run)
    exporter = InMemorySpanExporter()
    tracers = [
        _lean_tracer("a", exporter, "scope-1"),
        _lean_tracer("b", exporter, "scope-1"),
        _lean_tracer("c", exporter, "scope-2"),
    ]
    prefix = {"messaging.system": "rabbitmq", "messaging.destination.name": "orders"}
    values = ["", "x", "é" * 60, "y" * 127, "z" * 128, "w" * 20_000, 0, 127, 128, 2**40, -5, True, 2.5, ["a"]]
    for index, value in enumerate(values * 2):
        tracer = tracers[index % len(tracers)] if index < len(values) else tracers[0]
        attributes = {
            **prefix,
            "messaging.message.id": value,
            "messaging.rabbitmq.message.delivery_tag": index,
            "messaging.message.body.size": value,
        }
        span = tracer.start_span("process orders", kind=SpanKind.CONSUMER, attributes=attributes)
        share_prefix(span, prefix)
        span.end()
    spans = exporter.get_finished_spans()
    assert len({id(span.resource) for span in spans}) == 3
    assert _parse(encode_request(spans)) == encode_spans(spans)
    for span in spans:
        assert _parse(encode_request([span])) == encode_spans([span])


def test_one_name_under_every_kind_keeps_each_kind_and_the_name_cache_stays_bounded(monkeypatch):
    from eventscope.tracer.sdk import otlp_encoder

    # the name cache is keyed by kind first: the same name must not bring back another kind's bytes
    exporter = InMemorySpanExporter()
    lean = _lean_tracer("kinds", exporter, "scope")
    for _ in range(2):  # the second pass reads the cache
        for kind in SpanKind:
            lean.start_span("same name", kind=kind, attributes={"a": 1}).end()
    spans = exporter.get_finished_spans()
    assert _parse(encode_request(spans)) == encode_spans(spans)
    encoded = _parse(encode_request(spans)).resource_spans[0].scope_spans[0].spans
    assert sorted({span.kind for span in encoded}) == [1, 2, 3, 4, 5]  # OTLP's five kinds, all kept

    monkeypatch.setattr(otlp_encoder, "_MAX_CACHED_PAIRS", 4)
    exporter.clear()
    for index in range(10):
        lean.start_span(f"name {index}", kind=SpanKind.CONSUMER).end()
    spans = exporter.get_finished_spans()
    assert _parse(encode_request(spans)) == encode_spans(spans)
    assert 0 < len(otlp_encoder._named[id(SpanKind.CONSUMER)]) <= 4
