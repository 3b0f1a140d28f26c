"""The lean span path: same spans as the SDK's, and it steps aside whenever it must."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer.sdk.lean import LeanSpan, LeanTracer, share_prefix
from eventscope.tracer.sdk.provider import Telemetry


def _owned():
    provider = TracerProvider(resource=Resource.create({"service.name": "lean"}))
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    setup = Telemetry(provider, "http://127.0.0.1:1/v1/traces", owned=True, processor=processor)
    return provider, exporter, setup


def _exported(span):
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": dict(span.attributes),
        "status": span.status.status_code,
        "events": [(e.name, dict(e.attributes)) for e in span.events],
        "links": [(link.context.trace_id, link.context.span_id) for link in span.links],
        "resource": dict(span.resource.attributes),
        "scope": (span.instrumentation_scope.name, span.instrumentation_scope.version),
        "sampled": span.context.trace_flags.sampled,
        "flags": int(span.context.trace_flags),  # incl. the random-trace-id flag where the SDK sets it
        "parent": span.parent.span_id if span.parent else None,
        "trace_matches_parent": span.parent is None or span.parent.trace_id == span.context.trace_id,
    }


def test_lean_spans_export_like_sdk_spans():
    provider, exporter, setup = _owned()
    assert LeanTracer.eligible(setup)
    lean = LeanTracer(setup, "scope", "1.0", "https://opentelemetry.io/schemas/1.37.0")
    sdk = provider.get_tracer("scope", "1.0", schema_url="https://opentelemetry.io/schemas/1.37.0")
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    linked = SpanContext(0x123, 0x456, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    ctx = trace.set_span_in_context(NonRecordingSpan(parent))
    for tracer in (lean, sdk):
        span = tracer.start_span(
            "process q",
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes={"a": 1, "b": "x"},
            links=[Link(linked)],
        )
        span.set_attribute("c", [1, 2])
        span.set_attribute("bad", object())
        span.set_attributes({"none": None, "bytes": b"raw", "map": {"k": [1, 2]}})
        span.record_exception(ValueError("nope"))
        span.set_status(StatusCode.ERROR, "nope")
        span.end()
        span.set_attribute("after-end", 1)
    lean_span, sdk_span = exporter.get_finished_spans()
    assert _exported(lean_span) == _exported(sdk_span)
    assert lean_span.events[0].attributes["exception.type"] == "ValueError"


def test_root_spans_get_fresh_random_ids():
    _provider, exporter, setup = _owned()
    lean = LeanTracer(setup, "scope", "1.0", "")
    for _ in range(50):
        lean.start_span("root", kind=SpanKind.PRODUCER).end()
    spans = exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 50
    assert all(s.parent is None and s.context.trace_flags.sampled for s in spans)


def test_lean_path_steps_aside_for_unsampled_parents_and_added_processors():
    provider, exporter, setup = _owned()
    lean = LeanTracer(setup, "scope", "1.0", "")
    unsampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    span = lean.start_span("x", context=trace.set_span_in_context(NonRecordingSpan(unsampled)))
    assert not isinstance(span, LeanSpan) and not span.is_recording()
    span.end()
    assert exporter.get_finished_spans() == ()

    extra = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(extra))
    assert not LeanTracer.eligible(setup)
    span = lean.start_span("seen by both")
    assert not isinstance(span, LeanSpan)
    span.end()
    assert [s.name for s in extra.get_finished_spans()] == ["seen by both"]
    assert [s.name for s in exporter.get_finished_spans()] == ["seen by both"]


def test_not_eligible_when_the_application_owns_the_provider_or_samples_differently(monkeypatch):
    provider, _exporter, setup = _owned()
    assert not LeanTracer.eligible(
        Telemetry(provider, setup.traces_url, owned=False, processor=setup.processor)
    )
    assert not LeanTracer.eligible(None)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    assert not LeanTracer.eligible(setup)


@pytest.mark.integration
def test_application_processor_added_to_the_owned_provider_sees_adapter_spans(amqp, spans):
    provider = spans.provider
    multi = provider._active_span_processor
    saved = multi._span_processors
    app_exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(app_exporter))
    try:
        queue = amqp.queue()
        instrument_channel(amqp.connection.channel()).basic_publish("", queue, b"x")
    finally:
        multi._span_processors = saved
    assert [s.name for s in app_exporter.get_finished_spans()] == ["publish amq.default"]
    assert [s.name for s in spans.named("publish")] == ["publish amq.default"]


@pytest.mark.integration
def test_attributes_set_by_the_handler_on_the_current_span_are_exported(amqp, spans):
    queue = amqp.queue()
    amqp.admin.basic_publish("", queue, b"x")
    channel = instrument_channel(amqp.connect().channel())

    def callback(ch, method, properties, body):
        trace.get_current_span().set_attribute("order.id", "42")
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue, callback)
    channel.connection.call_later(5, channel.stop_consuming)
    channel.start_consuming()
    (process,) = spans.named("process")
    assert process.attributes["order.id"] == "42"


def test_not_eligible_when_span_limits_would_truncate(monkeypatch):
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8")
    _provider, _exporter, setup = _owned()
    assert not LeanTracer.eligible(setup)
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "4")
    _provider, _exporter, setup = _owned()
    assert not LeanTracer.eligible(setup)


def test_ended_spans_go_onto_the_batch_queue_and_fall_back_to_on_end_when_it_cannot_take_them(monkeypatch):
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from eventscope.tracer.sdk import compat

    provider = TracerProvider(resource=Resource.create({"service.name": "lean"}))
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(
        exporter, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=60_000
    )
    provider.add_span_processor(processor)
    setup = Telemetry(provider, "http://127.0.0.1:1/v1/traces", owned=True, processor=processor)
    lean = LeanTracer(setup, "scope", "1.0", "")
    assert lean._batch is processor._batch_processor
    calls = []
    on_end = processor.on_end
    monkeypatch.setattr(processor, "on_end", lambda span: (calls.append(span.name), on_end(span)))

    for index in range(3):
        lean.start_span(f"queued {index}").end()
    assert calls == []  # straight onto the queue; a full batch (2) wakes the export thread
    assert processor.force_flush(5_000)
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["queued 0", "queued 1", "queued 2"]

    monkeypatch.setattr(compat, "PID", [-1])  # as in a forked child before the SDK re-initialised
    lean.start_span("after fork").end()
    monkeypatch.undo()
    monkeypatch.setattr(processor, "on_end", lambda span: (calls.append(span.name), on_end(span)))
    processor.shutdown()
    lean.start_span("after shutdown").end()  # the SDK drops it (and says so); nothing raises
    assert calls == ["after fork", "after shutdown"]
    assert "after shutdown" not in [s.name for s in exporter.get_finished_spans()]


def test_a_processor_without_the_known_batch_queue_gets_on_end():
    _provider, exporter, setup = _owned()  # a SimpleSpanProcessor
    lean = LeanTracer(setup, "scope", "1.0", "")
    assert lean._batch is None
    lean.start_span("simple").end()
    assert [s.name for s in exporter.get_finished_spans()] == ["simple"]


@pytest.mark.parametrize("fast", [True, False])
def test_span_contexts_built_directly_equal_the_public_constructor(monkeypatch, fast):
    from opentelemetry.trace import TraceState

    from eventscope.tracer.sdk import compat

    assert compat._FAST_SPAN_CONTEXT  # this SDK's SpanContext is the tuple compat expects
    monkeypatch.setattr(compat, "_FAST_SPAN_CONTEXT", fast)
    for state in (None, TraceState([("vendor", "x")])):
        for remote in (True, False):
            ours = compat.span_context(2**128 - 1, 1, remote, TraceFlags(1), state)
            public = SpanContext(
                2**128 - 1, 1, is_remote=remote, trace_flags=TraceFlags(1), trace_state=state
            )
            assert type(ours) is SpanContext and ours == public
            assert (ours.is_valid, ours.is_remote, ours.trace_state) == (True, remote, public.trace_state)
            # the fields read in one call (encoder, lean tracer) are what the properties answer
            expected = (2**128 - 1, 1, remote, TraceFlags(1), public.trace_state)
            assert compat.span_context_fields(ours) == compat._public_fields(public) == expected
            assert compat.span_context_fields(public) == expected
    assert compat.span_context(1, 2, False, TraceFlags(1), None).trace_state is compat.EMPTY_TRACE_STATE


def test_root_span_ids_from_one_random_draw_are_independent_and_the_parent_is_found_in_any_context():
    _provider, exporter, setup = _owned()
    lean = LeanTracer(setup, "scope", "1.0", "")
    for _ in range(200):
        lean.start_span("root").end()
    spans = exporter.get_finished_spans()
    # trace and span ids come from one 192-bit draw: neither repeats, and they do not overlap
    assert len({s.context.trace_id for s in spans}) == len({s.context.span_id for s in spans}) == 200
    assert all(s.context.trace_id & 0xFFFF_FFFF_FFFF_FFFF != s.context.span_id for s in spans)
    assert max(s.context.trace_id for s in spans) >= 1 << 120  # the full 128 bits are used

    # the parent is read from the current span in every shape a context holds one
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    local = lean.start_span("local parent")
    contexts = {
        "non-recording": trace.set_span_in_context(NonRecordingSpan(parent)),
        "lean": trace.set_span_in_context(local),
        "sdk": trace.set_span_in_context(_provider.get_tracer("sdk").start_span("sdk parent")),
        "not a span": trace.set_span_in_context("junk"),  # get_current_span ignores it: a root
    }
    for name, ctx in contexts.items():
        child = lean.start_span(name, context=ctx)
        expected = trace.get_current_span(ctx).get_span_context()
        if expected.is_valid:
            assert child.parent == expected and child.context.trace_id == expected.trace_id, name
        else:
            assert child.parent is None, name
        with trace.use_span(trace.get_current_span(ctx), end_on_exit=False):  # the same, as current
            implicit = lean.start_span(name)
        assert (implicit.parent or None) == (child.parent or None), name


def test_set_known_is_set_attribute_for_plain_values():
    _provider, exporter, setup = _owned()
    lean = LeanTracer(setup, "scope", "1.0", "")
    prefix = {"messaging.system": "rabbitmq"}
    span = lean.start_span("x", attributes=dict(prefix))
    share_prefix(span, prefix)
    span.set_known("outcome", "ack")
    assert span._prefix is prefix  # a new key keeps the shared block
    span.set_known("messaging.system", "other")
    assert span._prefix is None  # an overwrite drops it, as set_attribute does
    span.end()
    span.set_known("after-end", True)
    (exported,) = exporter.get_finished_spans()
    assert dict(exported.attributes) == {"messaging.system": "other", "outcome": "ack"}
