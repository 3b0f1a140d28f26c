"""Propagation helpers: tolerant header decoding, W3C formatting, UUIDv7, handling context."""

from __future__ import annotations

import time
import uuid

from eventscope.tracer.propagation import (
    HeaderGetter,
    current_handling,
    decode_header,
    extract,
    inject,
    new_event_id,
    with_handling,
)
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

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
