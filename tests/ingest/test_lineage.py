"""Lineage: causes, delivery events and settles that need spans from other batches."""

from __future__ import annotations

from eventscope.tracer.ingest.lineage import Lineage
from eventscope.tracer.ingest.normaliser import normalise, synthesized_event_id
from tests.spans import (
    INTERNAL,
    PRODUCER,
    new_span_id,
    new_trace,
    process,
    publish,
    request,
    settle,
    span,
)


def test_cause_from_parentage_when_the_publish_arrives_first() -> None:
    """A publish inside A's processing ends (and is exported) before A's CONSUMER span."""
    lineage = Lineage()
    trace_id, consumer_id, handler_id = new_trace(), new_span_id(), new_span_id()
    child = publish(trace_id=trace_id, event_id="B", parent=handler_id)
    first = lineage.apply(normalise(request(child)))
    assert first.edges == set() and lineage.waiting == 1
    handler = span("handle", INTERNAL, trace_id=trace_id, span_id=handler_id, parent=consumer_id)
    consumer = process(trace_id=trace_id, parent=new_span_id(), event_id="A", queue="q", span_id=consumer_id)
    second = lineage.apply(normalise(request(handler, consumer)))
    assert second.edges == {("A", "B", "parentage")}
    assert lineage.waiting == 0


def test_root_publish_has_no_cause() -> None:
    lineage = Lineage()
    result = lineage.apply(normalise(request(publish(trace_id=new_trace(), event_id="A"))))
    assert result.edges == set() and lineage.waiting == 0


def test_delivery_event_resolved_when_the_producer_arrives_later() -> None:
    lineage = Lineage()
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    consumer_batch = normalise(
        request(process(trace_id=trace_id, parent=producer_id, event_id=None, queue="q", span_id=consumer_id))
    )
    lineage.apply(consumer_batch)
    assert consumer_batch.deliveries[0]["event_id"] is None
    later = lineage.apply(normalise(request(publish(trace_id=trace_id, event_id=None, span_id=producer_id))))
    assert later.delivery_events == {(trace_id, consumer_id): synthesized_event_id(trace_id, producer_id)}


def test_delivery_event_from_a_link() -> None:
    lineage = Lineage()
    producer_trace, producer_id = new_trace(), new_span_id()
    lineage.apply(normalise(request(publish(trace_id=producer_trace, event_id="E", span_id=producer_id))))
    batch = normalise(
        request(
            process(
                trace_id=new_trace(),
                parent=None,
                event_id=None,
                queue="q",
                links=[(producer_trace, producer_id)],
            )
        )
    )
    lineage.apply(batch)
    assert batch.deliveries[0]["event_id"] == "E"


def test_settle_in_the_same_batch_and_in_a_later_one() -> None:
    lineage = Lineage()
    trace_id, consumer_id = new_trace(), new_span_id()
    consumer = process(
        trace_id=trace_id, parent=None, event_id="A", queue="q", outcome=None, span_id=consumer_id
    )
    batch = normalise(
        request(consumer, settle(trace_id=trace_id, delivery=consumer_id, outcome="ack", queue="q"))
    )
    lineage.apply(batch)
    assert batch.deliveries[0]["outcome"] == "ack"

    other = new_span_id()
    unsettled = process(trace_id=trace_id, parent=None, event_id="B", queue="q", outcome=None, span_id=other)
    lineage.apply(normalise(request(unsettled)))
    later = lineage.apply(
        normalise(request(settle(trace_id=trace_id, delivery=other, outcome="nack", queue="q")))
    )
    assert later.settles[(trace_id, other)][0] == "nack"


def test_settle_before_its_delivery_waits() -> None:
    lineage = Lineage()
    trace_id, consumer_id = new_trace(), new_span_id()
    lineage.apply(
        normalise(request(settle(trace_id=trace_id, delivery=consumer_id, outcome="reject", queue="q")))
    )
    assert lineage.waiting == 1
    batch = normalise(
        request(
            process(
                trace_id=trace_id, parent=None, event_id="A", queue="q", outcome=None, span_id=consumer_id
            )
        )
    )
    lineage.apply(batch)
    assert batch.deliveries[0]["outcome"] == "reject" and lineage.waiting == 0


def test_wrapping_producer_spans_are_one_publish() -> None:
    """instrumentation-pika's instrument() emits an outer and an inner PRODUCER span per publish."""
    lineage = Lineage()
    trace_id, outer_id, inner_id = new_trace(), new_span_id(), new_span_id()
    legacy = {"messaging.system": "rabbitmq", "messaging.destination": "x"}
    inner = span("x send", PRODUCER, trace_id=trace_id, span_id=inner_id, parent=outer_id, attributes=legacy)
    outer = span("x send", PRODUCER, trace_id=trace_id, span_id=outer_id, attributes=legacy)
    first = normalise(request(inner))
    lineage.apply(first)
    second = normalise(request(outer))
    lineage.apply(second)
    assert len(first.events) == 1 and second.events == []
    assert (
        second.spans[0]["event_id"] == first.events[0]["event_id"] == synthesized_event_id(trace_id, inner_id)
    )
    again = normalise(request(outer))  # replayed: still one publish
    lineage.apply(again)
    assert again.events == []


def test_bounds_and_expiry() -> None:
    now = [0.0]
    lineage = Lineage(max_spans=10, max_waiting=3, wait_s=60, clock=lambda: now[0])
    for _ in range(5):
        lineage.apply(normalise(request(publish(trace_id=new_trace(), event_id=None, parent=new_span_id()))))
    assert lineage.waiting == 3 and lineage.dropped == 2
    now[0] = 61.0
    lineage.apply(normalise(request(publish(trace_id=new_trace(), event_id="x"))))
    assert lineage.waiting == 0 and lineage.expired == 3
    for _ in range(12):
        lineage.apply(normalise(request(publish(trace_id=new_trace(), event_id="y"))))
    assert lineage.evicted > 0 and lineage.forgot_any
