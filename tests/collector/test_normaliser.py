"""Spans → events, deliveries, settles and causes; legacy attribute names; invalid spans."""

from __future__ import annotations

from collector_helpers import (
    CONSUMER,
    PRODUCER,
    new_span_id,
    new_trace,
    process,
    publish,
    request,
    settle,
    sid,
    span,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from eventscope.tracer import attributes as A
from eventscope.tracer.normaliser import normalise, synthesized_event_id


def test_publish_becomes_an_event() -> None:
    trace_id = new_trace()
    producer = publish(trace_id=trace_id, event_id="evt-1", causation_id="evt-0")
    out = normalise(request(producer, service="orders-svc"))
    assert out.rejected == 0 and len(out.spans) == 1
    (event,) = out.events
    assert event["event_id"] == "evt-1"
    assert event["exchange"] == "shop" and event["routing_key"] == "order.placed"
    assert event["event_type"] == "order.placed" and event["producer_service"] == "orders"
    assert event["causation_id"] == "evt-0" and event["payload_size"] == 42
    assert event["source"] == "span" and event["routed_queues"] is None
    assert out.edges == [("evt-0", "evt-1", "causation_id")]
    assert out.cause_needs == []  # an explicit cause wins over parentage
    assert out.spans[0]["event_id"] == "evt-1" and out.spans[0]["kind"] == "PRODUCER"
    assert out.spans[0]["service"] == "orders-svc"


def test_publish_without_message_id_gets_a_stable_id() -> None:
    trace_id, span_id = new_trace(), new_span_id()
    producer = publish(trace_id=trace_id, event_id=None, span_id=span_id)
    first = normalise(request(producer)).events[0]["event_id"]
    again = normalise(request(producer)).events[0]["event_id"]
    assert first == again == synthesized_event_id(trace_id, span_id)


def test_delivery_with_outcome_error_and_redelivery() -> None:
    trace_id = new_trace()
    consumer = process(
        trace_id=trace_id,
        parent=new_span_id(),
        event_id="evt-1",
        queue="billing",
        outcome=None,
        error=True,
        redelivered=True,
    )
    out = normalise(request(consumer, service="billing-svc"))
    (delivery,) = out.deliveries
    assert delivery["event_id"] == "evt-1" and delivery["queue"] == "billing"
    assert delivery["consumer_service"] == "billing-svc"
    assert delivery["outcome"] == "error" and delivery["error"] == "ValueError: boom"
    assert delivery["redelivered"] is True and delivery["settled_at"] is not None
    assert out.delivery_needs == []


def test_delivery_without_message_id_needs_its_producer() -> None:
    trace_id, producer_id = new_trace(), new_span_id()
    link_trace, link_span = new_trace(), new_span_id()
    consumer = process(
        trace_id=trace_id, parent=producer_id, event_id=None, queue="q", links=[(link_trace, link_span)]
    )
    out = normalise(request(consumer))
    assert out.deliveries[0]["event_id"] is None
    (need,) = out.delivery_needs
    assert need.producers == [(link_trace, link_span), (trace_id, producer_id)]


def test_settle_span() -> None:
    trace_id, delivery = new_trace(), new_span_id()
    out = normalise(request(settle(trace_id=trace_id, delivery=delivery, outcome="reject", queue="q")))
    (need,) = out.settle_needs
    assert need.delivery == (trace_id, delivery) and need.outcome == "reject"
    assert out.deliveries == [] and out.events == []


def test_non_messaging_spans_are_only_spans() -> None:
    out = normalise(request(span("GET /orders", 2, trace_id=new_trace(), attributes={"http.method": "GET"})))
    assert len(out.spans) == 1 and not out.events and not out.deliveries and not out.settle_needs


def test_legacy_instrumentation_pika_names() -> None:
    """opentelemetry-instrumentation-pika: messaging.destination/operation, "<dest> send"."""
    trace_id, producer_id = new_trace(), new_span_id()
    producer = span(
        "orders send",
        PRODUCER,
        trace_id=trace_id,
        span_id=producer_id,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.temp_destination": True,
            "messaging.destination": "orders",
            "net.peer.name": "127.0.0.1",
        },
    )
    consumer = span(
        "orders receive",
        CONSUMER,
        trace_id=trace_id,
        parent=producer_id,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation": "receive",
            "messaging.destination": "orders",
        },
        start_ms=5,
    )
    out = normalise(request(producer, consumer))
    (event,) = out.events
    assert event["event_id"] == synthesized_event_id(trace_id, producer_id)
    assert event["exchange"] == "orders"
    (delivery,) = out.deliveries
    assert delivery["queue"] == "orders" and delivery["event_id"] is None
    assert out.delivery_needs[0].producers == [(trace_id, producer_id)]


def test_invalid_spans_are_rejected_one_by_one() -> None:
    good = publish(trace_id=new_trace(), event_id="ok")
    bad_trace = publish(trace_id=new_trace(), event_id="x")
    bad_trace.trace_id = b"\x01\x02"
    zero_span = publish(trace_id=new_trace(), event_id="y")
    zero_span.span_id = b"\0" * 8
    many = publish(trace_id=new_trace(), event_id="z")
    many.attributes.extend(KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(100_000))
    out = normalise(request(good, bad_trace, zero_span, many), max_attributes=1024)
    assert out.accepted == 1 and out.rejected == 3
    assert [event["event_id"] for event in out.events] == ["ok"]
    message = out.error_message()
    assert "3 span(s) rejected" in message and "attributes" in message and "trace_id" in message


def test_settle_outcome_from_operation_name_when_attribute_is_missing() -> None:
    trace_id, delivery = new_trace(), new_span_id()
    foreign = span(
        "nack q",
        3,
        trace_id=trace_id,
        parent=delivery,
        attributes={
            A.MESSAGING_SYSTEM: "rabbitmq",
            A.MESSAGING_OPERATION_TYPE: "settle",
            A.MESSAGING_OPERATION_NAME: "nack",
            A.SETTLE_REQUEUE: True,
        },
    )
    assert normalise(request(foreign)).settle_needs[0].outcome == "requeue"


def test_sid_helper_matches_rows() -> None:
    producer = publish(trace_id=new_trace(), event_id="e")
    assert normalise(request(producer)).spans[0]["span_id"] == sid(producer)


def test_values_the_adapter_leaves_out_are_implied() -> None:
    # a root event carries no correlation attribute (it is its own flow); a delivery that was
    # not redelivered carries no redelivered attribute
    trace = new_trace()
    root = publish(trace_id=trace, event_id="root-1")
    delivered = process(trace_id=trace, parent=sid(root), event_id="root-1", queue="q")
    for key in (A.CORRELATION_ID, A.REDELIVERED):
        for message in (root, delivered):
            kept = [kv for kv in message.attributes if kv.key != key]
            del message.attributes[:]
            message.attributes.extend(kept)
    out = normalise(request(root, delivered))
    assert out.events[0]["correlation_id"] == "root-1"
    assert out.deliveries[0]["redelivered"] is False
    child = publish(trace_id=trace, event_id="child-1", causation_id="root-1")
    kept = [kv for kv in child.attributes if kv.key != A.CORRELATION_ID]
    del child.attributes[:]
    child.attributes.extend(kept)
    assert normalise(request(child)).events[0]["correlation_id"] is None  # caused by something: unknown
