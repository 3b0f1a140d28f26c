"""Spans → events, deliveries, settles and causes; legacy attribute names; invalid spans."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from eventscope.tracer import contract as A
from eventscope.tracer.ingest.normaliser import (
    Normalised,
    normalise,
    normalise_protobuf,
    synthesized_event_id,
)
from tests.spans import (
    CLIENT,
    CONSUMER,
    INTERNAL,
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


# -- the wire reader: the same rows as the protobuf runtime, or it gives up ------------------
def _same(request_message: Any, *, max_attributes: int = 1024) -> None:
    body = request_message.SerializeToString()
    expected = normalise(ExportTraceServiceRequest.FromString(body), max_attributes=max_attributes)
    read = normalise_protobuf(body, max_attributes=max_attributes)
    assert read is not None
    for name in ("spans", "events", "deliveries", "edges", "nodes", "rejected", "reasons"):
        assert getattr(read, name) == getattr(expected, name), name
    for name in ("delivery_needs", "cause_needs", "settle_needs"):
        assert getattr(read, name) == getattr(expected, name), name


def test_wire_reader_reads_what_the_runtime_reads() -> None:
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    producer = publish(trace_id=trace_id, event_id="evt-1", span_id=producer_id, causation_id="c-0")
    consumer = process(trace_id=trace_id, parent=producer_id, event_id=None, queue="q", span_id=consumer_id)
    failed = process(trace_id=trace_id, parent=producer_id, event_id="evt-1", queue="q", error=True)
    odd = span("odd \u00e9\u2603", CLIENT, trace_id=trace_id, links=[(new_trace(), new_span_id())])
    odd.attributes.extend(
        [
            KeyValue(
                key="list", value=AnyValue(array_value={"values": [AnyValue(int_value=-5), AnyValue()]})
            ),
            KeyValue(
                key="map", value=AnyValue(kvlist_value={"values": [KeyValue(key="k", value=AnyValue())]})
            ),
            KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")),
            KeyValue(key="f", value=AnyValue(double_value=float("nan"))),
            KeyValue(key="neg", value=AnyValue(int_value=-(2**63))),
            KeyValue(key="t", value=AnyValue(bool_value=True)),
            KeyValue(key="empty", value=AnyValue()),
            KeyValue(key='\u00fcnicode "quoted"', value=AnyValue(string_value="line\nbreak \u2603")),
            KeyValue(key="list", value=AnyValue(string_value="twice: the last wins")),
            KeyValue(key=A.MESSAGING_MESSAGE_ID, value=AnyValue(string_value="x" * 300)),
        ]
    )
    odd.kind = 17  # an enum value the runtime keeps as a number
    odd.status.code = 2
    legacy = span(
        "legacy send",
        PRODUCER,
        trace_id=trace_id,
        parent=consumer_id,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination": "shop",
            "messaging.message_id": "m",
        },
    )
    settled = settle(trace_id=trace_id, delivery=consumer_id, outcome="nack", queue="q")
    bad = span("bad", INTERNAL, trace_id=new_trace())
    bad.span_id = b"\x00" * 8
    many = span("many", INTERNAL, trace_id=new_trace(), attributes={f"a{i}": i for i in range(5)})
    message = request(producer, consumer, failed, odd, legacy, settled, bad, many, service="shop-svc")
    message.resource_spans.add()  # no resource: no service
    message.resource_spans[-1].scope_spans.add().spans.append(producer)
    _same(message)
    _same(message, max_attributes=4)


def test_wire_reader_gives_up_on_what_it_does_not_vouch_for() -> None:
    body = request(publish(trace_id=new_trace(), event_id="e")).SerializeToString()
    assert normalise_protobuf(body[:-3]) is None  # truncated
    assert normalise_protobuf(body + b"\x0a\x05abc") is None  # a field longer than the body
    assert normalise_protobuf(b"\x0b\x00") is None  # a group
    bad_text = request(span("n", INTERNAL, trace_id=new_trace(), attributes={"k": "v"})).SerializeToString()
    assert normalise_protobuf(bad_text.replace(b"\x01v", b"\x01\xff")) is None  # invalid UTF-8
    assert normalise_protobuf(b"") == Normalised()


def test_wire_reader_never_accepts_what_the_runtime_refuses() -> None:
    """Random corruptions: whenever the wire reader answers, the runtime decodes the body to
    the same rows; whenever the runtime refuses it, the wire reader gives up.
    """
    trace_id, producer_id = new_trace(), new_span_id()
    body = request(
        publish(trace_id=trace_id, event_id="evt-1", span_id=producer_id),
        process(trace_id=trace_id, parent=producer_id, event_id="evt-1", queue="q"),
    ).SerializeToString()
    rng = random.Random(5)
    for _ in range(3000):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(mutated))
            if rng.random() < 0.5:
                mutated[position] = rng.randrange(256)
            else:
                del mutated[position]
        data = bytes(mutated)
        read = normalise_protobuf(data)
        try:
            decoded = ExportTraceServiceRequest.FromString(data)
        except Exception:
            assert read is None
            continue
        if read is not None:
            expected = normalise(decoded)
            assert (read.spans, read.events, read.deliveries, read.rejected) == (
                expected.spans,
                expected.events,
                expected.deliveries,
                expected.rejected,
            )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_PAYLOADS = {0: _varint(7), 1: b"\x01" * 8, 2: _varint(3) + b"abc", 5: b"\x02" * 4}


def test_wire_reader_agrees_with_the_runtime_on_every_span_field_and_wire_type() -> None:
    """Each span field number (and one beyond) sent with each wire type, after a valid span's
    fields: the wire reader gives up, or reads what the runtime reads (a wrong wire type is an
    unknown field to the runtime: it must never change what the wire reader keeps, as a fixed32
    ``kind`` once did).
    """
    trace_id = new_trace()
    spans = [
        publish(trace_id=trace_id, event_id="evt-1", span_id=new_span_id()),
        process(trace_id=trace_id, parent=new_span_id(), event_id="evt-1", queue="q"),
    ]
    answered = 0
    for message in spans:
        for number in range(1, 18):
            for wire_type, payload in _PAYLOADS.items():
                extra = _varint(number << 3 | wire_type) + payload
                span_bytes = message.SerializeToString() + extra
                body = _len_field(1, _len_field(2, _len_field(2, span_bytes)))
                read = normalise_protobuf(body)
                try:
                    decoded = ExportTraceServiceRequest.FromString(body)
                except Exception:
                    assert read is None, (number, wire_type)
                    continue
                if read is None:
                    continue
                answered += 1
                expected = normalise(decoded)
                for name in ("spans", "events", "deliveries", "nodes", "rejected", "settle_needs"):
                    assert getattr(read, name) == getattr(expected, name), (number, wire_type, name)
    assert answered >= 2 * 8  # the fields it knows, with their own wire type, are read
