"""Propagation helpers: tolerant header decoding, W3C formatting, UUIDv7, handling context."""

from __future__ import annotations

import random
import time
import uuid

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider

from eventscope.tracer.sdk.propagation import (
    HeaderGetter,
    current_handling,
    decode_header,
    extract,
    handling_context,
    inject,
    new_event_id,
    with_handling,
)

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_decode_header_accepts_text_and_bytes_and_ignores_the_rest():
    assert decode_header("abc") == "abc"
    assert decode_header(b"abc") == "abc"
    assert decode_header(b"\xff\xfe") is None
    for value in (None, 5, 1.5, {"a": 1}, [b"x"], True, "x" * 10_000):
        assert decode_header(value) is None


def test_extract_reads_bytes_and_survives_hostile_carriers():
    span = trace.get_current_span(extract({"traceparent": _TRACEPARENT.encode()}))
    assert f"{span.get_span_context().trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    for headers in (
        None,
        5,
        "text",
        [],
        {},
        {"traceparent": 7},
        {"traceparent": None},
        {"traceparent": {"nested": 1}},
        {"traceparent": "x" * 10_000},
        {1: 2},
    ):
        assert not trace.get_current_span(extract(headers)).get_span_context().is_valid
    assert HeaderGetter().keys({"a": 1, 2: 3}) == ["a"]


def test_inject_matches_the_w3c_propagator_and_keeps_existing_keys():
    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("s")
    ours: dict = {}
    inject(ours, span)
    theirs: dict = {}
    propagate.inject(theirs, context=trace.set_span_in_context(span))
    assert ours["traceparent"] == theirs["traceparent"]
    supplied = {"traceparent": _TRACEPARENT}
    inject(supplied, span)
    assert supplied == {"traceparent": _TRACEPARENT}


def test_inject_writes_what_the_w3c_propagator_writes_for_every_span_context_shape():
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    from eventscope.tracer.sdk import compat

    shapes = {
        "no state": SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)),
        "state": SpanContext(0xABC, 0xDEF, False, TraceFlags(1), TraceState([("vendor", "v"), ("o", "w")])),
        "empty state given": SpanContext(0xABC, 0xDEF, False, TraceFlags(0), TraceState()),
        "random flag": compat.span_context(0xABC, 0xDEF, False, TraceFlags(3), None),
        "built directly, state": compat.span_context(1, 2, False, TraceFlags(1), TraceState([("k", "v")])),
        "invalid": SpanContext(0, 0xDEF, is_remote=False),
        "invalid span id": SpanContext(0xABC, 0, is_remote=False),
    }
    for name, span_context in shapes.items():
        span = NonRecordingSpan(span_context)
        ours: dict = {}
        inject(ours, span)
        theirs: dict = {}
        propagate.inject(theirs, context=trace.set_span_in_context(span, Context()))
        if name.startswith("invalid"):  # OTel skips only INVALID_SPAN_CONTEXT itself; a zero id is never sent
            assert ours == {}, name
        else:
            assert ours == theirs, name
    kept = {"tracestate": "mine=1"}  # an application's own tracestate stays
    inject(kept, NonRecordingSpan(shapes["state"]))
    assert kept["tracestate"] == "mine=1" and "traceparent" in kept


def test_current_handling_reads_the_given_or_the_current_context():
    from opentelemetry import context

    ctx = with_handling(Context(), "evt-9", "flow-9")
    assert current_handling(ctx) == current_handling(ctx) and current_handling(ctx).event_id == "evt-9"
    assert current_handling(Context()) is None
    assert current_handling(context.set_value("eventscope.handling", "junk", Context())) is None
    token = context.attach(ctx)
    try:
        assert current_handling().correlation_id == "flow-9"
    finally:
        context.detach(token)
    assert current_handling() is None


def test_inject_carries_baggage_of_the_parent_context_and_only_then():
    from opentelemetry import baggage

    span = TracerProvider().get_tracer("t").start_span("s")
    with_baggage = baggage.set_baggage("tenant", "acme", Context())
    emptied = baggage.remove_baggage("tenant", with_baggage)
    for parent, expected in ((with_baggage, "tenant=acme"), (emptied, None), (Context(), None), (None, None)):
        ours: dict = {}
        inject(ours, span, parent)
        theirs: dict = {}
        propagate.inject(theirs, context=trace.set_span_in_context(span, parent))
        assert ours.get("baggage") == theirs.get("baggage") == expected
        assert ours["traceparent"] == theirs["traceparent"]


def test_new_event_id_is_a_time_ordered_uuid7():
    before = int(time.time() * 1000)
    first = new_event_id()
    ids = [new_event_id() for _ in range(1000)]
    parsed = uuid.UUID(first)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - before) < 1000
    assert len(set(ids)) == 1000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_handling_context_carries_event_and_flow_ids():
    assert current_handling() is None
    ctx = with_handling(trace.set_span_in_context(trace.INVALID_SPAN), "evt-1", None)
    handling = current_handling(ctx)
    assert (handling.event_id, handling.correlation_id) == ("evt-1", "evt-1")
    assert current_handling(with_handling(ctx, "evt-2", "flow")).correlation_id == "flow"


def test_the_one_step_handler_context_equals_the_two_step_one():
    from opentelemetry import baggage
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)))
    parent = baggage.set_baggage("tenant", "acme", extract({"traceparent": _TRACEPARENT}, Context()))
    for correlation in (None, "flow"):
        one = handling_context(parent, span, "evt-1", correlation)
        two = with_handling(trace.set_span_in_context(span, parent), "evt-1", correlation)
        assert isinstance(one, Context) and dict(one) == dict(two)
        assert trace.get_current_span(one) is span and baggage.get_baggage("tenant", one) == "acme"
    assert "tenant" not in dict(parent) and trace.get_current_span(parent) is not span  # not mutated


def _otel_reading(headers):
    ctx = propagate.extract(headers, context=Context())
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid:
        return None
    return (
        span_context.trace_id,
        span_context.span_id,
        int(span_context.trace_flags),
        str(span_context.trace_state),
    )


def _our_reading(headers):
    span_context = trace.get_current_span(extract(headers, Context())).get_span_context()
    if not span_context.is_valid:
        return None
    return (
        span_context.trace_id,
        span_context.span_id,
        int(span_context.trace_flags),
        str(span_context.trace_state),
    )


def test_fast_traceparent_parsing_agrees_with_the_otel_propagator():
    rng = random.Random(1234)
    alphabet = "0123456789abcdefABCDEF- \tx"
    corpus = [
        _TRACEPARENT,
        f" {_TRACEPARENT}\t",
        _TRACEPARENT.upper(),
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "00-00000000000000000000000000000000-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-012",
        "",
        "00",
    ]
    for _ in range(3000):
        chars = list(_TRACEPARENT)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.6:
                chars[position] = rng.choice(alphabet)
            elif action < 0.8:
                del chars[position]
            else:
                chars.insert(position, rng.choice(alphabet))
        corpus.append("".join(chars))
    for value in corpus:
        for headers in ({"traceparent": value}, {"traceparent": value, "tracestate": "a=1,b=2"}):
            assert _our_reading(headers) == _otel_reading(headers), headers


def test_new_event_id_text_is_the_uuid_module_s_for_the_same_bits(monkeypatch):
    from eventscope.tracer import contract

    rng = random.Random(16)
    for _ in range(2000):
        ms, rand = rng.getrandbits(48), rng.getrandbits(80)
        monkeypatch.setattr(contract.time, "time_ns", lambda ms=ms: ms * 1_000_000 + 999_999)
        monkeypatch.setattr(contract.random, "getrandbits", lambda _bits, rand=rand: rand)
        text = contract.new_event_id()
        value = ms << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
        assert text == str(uuid.UUID(int=value))
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and parsed.int >> 80 == ms
