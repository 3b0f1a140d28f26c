"""A delivery's parent read straight from its headers equals the propagators' answer, in every case.

``AmqpTracing.start_delivery`` reads the producer's span context from the headers without
building a ``Context`` for it (``propagation.carried``, ``LeanTracer.start_child``). These
tests hold it to what OpenTelemetry's own propagators and tracer make of the same headers
and the same current context: the span's parent, trace, flags and trace state, its links,
and the context the handler runs in.
"""

from __future__ import annotations

import contextvars
import logging

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pika.spec import BasicProperties

from eventscope.adapters._spans import AmqpTracing, suppressed
from eventscope.tracer.sdk import compat
from eventscope.tracer.sdk import provider as telemetry
from eventscope.tracer.sdk.lean import LeanSpan, LeanTracer
from eventscope.tracer.sdk.propagation import (
    GENERIC,
    HeaderGetter,
    carried,
    current_handling,
    extract,
    with_handling,
)

_TRACE = "0af7651916cd43dd8448eb211c80319c"
_HEADERS = {
    "no headers": None,
    "empty": {},
    "sampled": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01"},
    "as bytes": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01".encode()},
    "trace state": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01", "tracestate": "vendor=v,other=w"},
    "random flag": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-03"},
    "unsampled": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-00"},
    "invalid": {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
    "not text": {"traceparent": 42},
    "baggage": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01", "baggage": "tenant=acme"},
    "baggage only": {"baggage": "tenant=acme"},
    "correlation": {"traceparent": f"00-{_TRACE}-b7ad6b7169203331-01", "x-correlation-id": "flow-1"},
}
_APP_KEY = context.create_key("application value")


def _tracers():
    provider = TracerProvider(resource=Resource.create({"service.name": "parent"}))
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    setup = telemetry.Telemetry(provider, "http://127.0.0.1:1/v1/traces", owned=True, processor=processor)
    return {"lean": LeanTracer(setup, "scope", "1.0", ""), "sdk": provider.get_tracer("scope", "1.0")}


def _currents():
    outer = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1)))
    return {
        "empty": Context(),
        "application value": context.set_value(_APP_KEY, "kept", Context()),
        # a delivery handled inside another handler: the outer span is current
        "inside a span": context.set_value(_APP_KEY, "kept", trace.set_span_in_context(outer, Context())),
    }


def _tracing(tracer, link_mode):
    tracing = AmqpTracing(
        service="svc", link_mode=link_mode, server_address=None, server_port=None, library="l", version="1"
    )
    tracing._state = (telemetry.current(), tracer, None)  # this tracer, for the current setup()
    return tracing


def _reading(span_context):
    if span_context is None or not span_context.is_valid:
        return None
    return (
        span_context.trace_id,
        span_context.span_id,
        span_context.is_remote,
        int(span_context.trace_flags),
        str(span_context.trace_state),
    )


@pytest.mark.parametrize("link_mode", ["parent", "link"])
@pytest.mark.parametrize("tracer_kind", ["lean", "sdk"])
def test_the_delivery_span_and_handler_context_are_what_the_propagators_make_of_the_headers(
    tracer_kind, link_mode
):
    tracer = _tracers()[tracer_kind]
    tracing = _tracing(tracer, link_mode)
    for current_name, current in _currents().items():
        for header_name, headers in _HEADERS.items():
            case = f"{current_name} / {header_name}"
            props = BasicProperties(message_id="evt-1", headers=None if headers is None else dict(headers))
            delivery = tracing.start_delivery(
                "process", "q", "ex", "rk", 7, False, props, b"body", False, None, current
            )
            span = delivery.span
            # what OpenTelemetry's propagators make of the headers (read as text), in the same context
            extracted = propagate.extract(dict(headers or {}), context=current, getter=HeaderGetter())
            producer = trace.get_current_span(extracted).get_span_context()
            parent_context = extracted if link_mode == "parent" else current
            expected_parent = trace.get_current_span(parent_context).get_span_context()
            span_parent = span.parent if isinstance(span, LeanSpan) or hasattr(span, "parent") else None
            if expected_parent.is_valid and not expected_parent.trace_flags.sampled:
                assert not span.is_recording(), case  # the SDK's own sampler said no
                assert span.get_span_context().trace_id == expected_parent.trace_id, case
                continue
            assert _reading(span_parent) == _reading(expected_parent), case
            if expected_parent.is_valid:
                assert span.get_span_context().trace_id == expected_parent.trace_id, case
                assert span.get_span_context().trace_state == expected_parent.trace_state, case
            links = [_reading(link.context) for link in span.links]
            assert links == ([_reading(producer)] if link_mode == "link" and producer.is_valid else []), case
            # the handler's context: the parent context, this span current, this event handled
            handler = delivery.context
            assert trace.get_current_span(handler) is span, case
            assert context.get_value(_APP_KEY, handler) == context.get_value(_APP_KEY, current), case
            assert baggage.get_all(handler) == baggage.get_all(parent_context), case
            handling = current_handling(handler)
            correlation = "flow-1" if header_name == "correlation" else "evt-1"
            assert (handling.event_id, handling.correlation_id) == ("evt-1", correlation), case
            expected = with_handling(trace.set_span_in_context(span, parent_context), "evt-1", correlation)
            assert dict(handler) == dict(expected), case
            assert trace.get_current_span(current).get_span_context() != span.get_span_context(), case
            span.end()


def test_carried_reads_the_producer_as_extract_does_and_defers_to_the_propagators_when_it_must():
    for name, headers in _HEADERS.items():
        found = carried(headers)
        ours = trace.get_current_span(extract(headers, Context())).get_span_context()
        if found is GENERIC:
            assert "baggage" in headers, name
        else:
            assert _reading(found) == _reading(ours), name
    assert carried(["traceparent"]) is None and carried("00-x") is None  # not a mapping: nothing


def test_context_shortcuts_are_opentelemetry_s_own_functions(caplog):
    assert compat.get_current() is context.get_current()
    assert not suppressed() and not suppressed(Context())
    assert suppressed(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    ctx = context.set_value(_APP_KEY, "attached")
    token = compat.attach(ctx)
    try:
        assert context.get_current() is ctx and compat.get_current() is ctx
    finally:
        compat.detach(token)
    assert context.get_value(_APP_KEY) is None
    # a token from another contextvars Context: logged by OpenTelemetry's detach, never raised
    foreign = contextvars.copy_context().run(compat.attach, ctx)
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        compat.detach(foreign)
    assert "Failed to detach context" in caplog.text
    assert context.get_value(_APP_KEY) is None
