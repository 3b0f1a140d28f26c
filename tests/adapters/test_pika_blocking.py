"""Round trips through BlockingChannel with the real broker and the real OTLP exporter."""

from __future__ import annotations

import copy
import time
import uuid

import pika
import pytest
from opentelemetry import trace
from pika.adapters.blocking_connection import BlockingChannel

from eventscope.adapters.pika import install, instrument_channel, uninstall
from eventscope.tracer import contract as A

pytestmark = pytest.mark.integration  # the real broker on 127.0.0.1:5672


def _consume_one(channel, queue, handler, timeout=5.0):
    """Run ``handler`` for one message delivered to a basic_consume callback."""
    seen = []

    def callback(ch, method, properties, body):
        seen.append((ch, method, properties, body))
        handler(ch, method, properties, body)
        ch.stop_consuming()

    channel.basic_consume(queue, callback)
    channel.connection.call_later(timeout, channel.stop_consuming)
    channel.start_consuming()
    assert seen, f"nothing delivered from {queue} within {timeout}s"
    return seen[0]


def test_publish_fills_missing_metadata_and_emits_a_producer_span(amqp, spans):
    queue = amqp.queue()
    channel = instrument_channel(amqp.connection.channel(), service="orders")
    before = time.time()
    channel.basic_publish("", queue, b"hello")

    _method, props, body = amqp.get(queue)
    assert body == b"hello"
    assert uuid.UUID(props.message_id).version == 7
    assert props.app_id == "orders"
    assert props.type is None  # left to the application; the collector falls back to the routing key
    assert before - 1 <= props.timestamp <= time.time() + 1
    assert "x-correlation-id" not in props.headers  # a root event is its own flow: implied
    assert "x-causation-id" not in props.headers  # nothing was being handled

    (span,) = spans.named("publish")
    assert span.kind == "PRODUCER"
    assert span.name == "publish amq.default"
    assert props.headers["traceparent"].split("-")[1:3] == [span.trace_id, span.span_id]
    attributes = span.attributes
    assert attributes[A.MESSAGING_SYSTEM] == "rabbitmq"
    assert attributes[A.MESSAGING_OPERATION_TYPE] == "send"
    assert attributes[A.MESSAGING_OPERATION_NAME] == "publish"
    assert attributes[A.MESSAGING_DESTINATION_NAME] == queue
    assert attributes[A.MESSAGING_ROUTING_KEY] == queue
    assert attributes[A.MESSAGING_MESSAGE_ID] == props.message_id
    assert attributes[A.MESSAGING_BODY_SIZE] == 5
    assert attributes[A.SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[A.SERVER_PORT] == 5672
    # implied values are left out (each exported attribute costs): the type is the routing
    # key, a root event is its own flow, and nothing caused it
    assert A.EVENT_TYPE not in attributes
    assert A.CORRELATION_ID not in attributes
    assert A.CAUSATION_ID not in attributes


def test_publish_keeps_what_the_application_set_and_never_mutates_its_objects(amqp, spans):
    exchange = amqp.exchange()
    queue = amqp.queue()
    amqp.bind(queue, exchange, "order.*")
    channel = instrument_channel(amqp.connection.channel(), service="orders")
    headers = {"tenant": "acme", "x-correlation-id": "flow-7", "nested": {"a": 1}}
    properties = pika.BasicProperties(
        message_id="evt-1",
        type="order.placed.v2",
        app_id="orders-api",
        timestamp=1_700_000_000,
        correlation_id="rpc-9",
        reply_to="replies",
        content_type="application/json",
        headers=headers,
    )
    snapshot = copy.deepcopy(properties.__dict__)
    headers_snapshot = copy.deepcopy(headers)

    channel.basic_publish(exchange, "order.placed", b"{}", properties)

    assert properties.__dict__ == snapshot
    assert properties.headers is headers and headers == headers_snapshot
    _method, got, _body = amqp.get(queue)
    assert (got.message_id, got.type, got.app_id, got.timestamp) == (
        "evt-1",
        "order.placed.v2",
        "orders-api",
        1_700_000_000,
    )
    assert (got.correlation_id, got.reply_to, got.content_type) == ("rpc-9", "replies", "application/json")
    assert got.headers["tenant"] == "acme" and got.headers["nested"] == {"a": 1}
    assert got.headers["x-correlation-id"] == "flow-7"
    (span,) = spans.named("publish")
    assert span.name == f"publish {exchange}"
    assert span.attributes[A.MESSAGING_DESTINATION_NAME] == f"{exchange}:order.placed"
    assert span.attributes[A.MESSAGING_CONVERSATION_ID] == "rpc-9"
    assert span.attributes[A.EVENT_TYPE] == "order.placed.v2"
    assert span.attributes[A.CORRELATION_ID] == "flow-7"
    assert span.attributes[A.PRODUCER] == "orders-api"


def test_a_traceparent_supplied_by_the_application_is_kept_and_joined(amqp, spans):
    queue = amqp.queue()
    channel = instrument_channel(amqp.connection.channel())
    supplied = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    channel.basic_publish("", queue, b"x", pika.BasicProperties(headers={"traceparent": supplied}))
    _method, got, _body = amqp.get(queue)
    assert got.headers["traceparent"] == supplied
    (span,) = spans.named("publish")
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "b7ad6b7169203331"


def test_consumer_span_is_a_child_of_the_producer_and_current_in_the_callback(amqp, spans):
    queue = amqp.queue()
    producer = instrument_channel(amqp.connection.channel(), service="orders")
    consumer = instrument_channel(amqp.connect().channel(), service="payments")
    producer.basic_publish("", queue, b"pay me")
    inside = {}

    def handler(ch, method, properties, body):
        inside["channel"] = ch
        inside["span"] = trace.get_current_span().get_span_context()
        ch.basic_ack(method.delivery_tag)

    _consume_one(consumer, queue, handler)
    (publish,) = spans.named("publish")
    (process,) = spans.named("process")
    assert inside["channel"] is consumer  # acks and publishes in the callback are traced too
    assert process.kind == "CONSUMER"
    assert process.name == f"process {queue}"
    assert process.trace_id == publish.trace_id
    assert process.parent_span_id == publish.span_id
    assert f"{inside['span'].span_id:016x}" == process.span_id
    attributes = process.attributes
    assert attributes[A.MESSAGING_OPERATION_TYPE] == "process"
    assert attributes[A.QUEUE] == queue
    assert attributes[A.MESSAGING_MESSAGE_ID] == publish.attributes[A.MESSAGING_MESSAGE_ID]
    assert attributes[A.SETTLE_OUTCOME] == "ack"
    assert A.REDELIVERED not in attributes  # written only when true
    assert A.AUTO_ACK not in attributes
    # the event's own facts are on the producer span only
    assert A.PRODUCER not in attributes and A.EXCHANGE not in attributes
    assert publish.attributes[A.PRODUCER] == "orders"
    assert isinstance(attributes[A.MESSAGING_DELIVERY_TAG], int)


def test_four_services_form_one_trace_with_causation_and_correlation(amqp, spans):
    # A publishes; B, C and D each consume the previous event and publish the next (D ends it).
    queues = [amqp.queue() for _ in range(3)]
    channels = {name: instrument_channel(amqp.connect().channel(), service=name) for name in "abcd"}
    channels["a"].basic_publish("", queues[0], b"start")
    received = []

    for index, name in enumerate("bcd"):

        def handler(ch, method, properties, body, index=index):
            received.append(properties)
            if index + 1 < len(queues):
                ch.basic_publish("", queues[index + 1], body + b">")
            ch.basic_ack(method.delivery_tag)

        _consume_one(channels[name], queues[index], handler)

    publishes = spans.named("publish", 3)
    processes = spans.named("process", 3)
    assert len({span.trace_id for span in publishes + processes}) == 1
    event_ids = [props.message_id for props in received]
    root = event_ids[0]
    assert [props.app_id for props in received] == ["a", "b", "c"]
    assert received[0].headers.get("x-causation-id") is None
    for index in (1, 2):
        assert received[index].headers["x-causation-id"] == event_ids[index - 1]
        assert received[index].headers["x-correlation-id"] == root
    by_id = {span.attributes[A.MESSAGING_MESSAGE_ID]: span for span in publishes}
    process_by_queue = {span.attributes[A.QUEUE]: span for span in processes}
    assert by_id[root].parent_span_id is None
    for index in (1, 2):
        publish = by_id[event_ids[index]]
        assert publish.parent_span_id == process_by_queue[queues[index - 1]].span_id
        assert publish.attributes[A.CAUSATION_ID] == event_ids[index - 1]
        assert publish.attributes[A.CORRELATION_ID] == root
    for index, queue in enumerate(queues):
        assert process_by_queue[queue].parent_span_id == by_id[event_ids[index]].span_id


def test_link_mode_starts_a_new_trace_linked_to_the_producer(amqp, spans):
    queue = amqp.queue()
    producer = instrument_channel(amqp.connection.channel())
    consumer = instrument_channel(amqp.connect().channel(), link_mode="link")
    producer.basic_publish("", queue, b"x")
    _consume_one(consumer, queue, lambda ch, m, p, b: ch.basic_ack(m.delivery_tag))
    (publish,) = spans.named("publish")
    (process,) = spans.named("process")
    assert process.trace_id != publish.trace_id
    assert process.parent_span_id is None
    assert process.links == [(publish.trace_id, publish.span_id)]


def test_handler_exception_is_recorded_and_reraised_unchanged(amqp, spans):
    queue = amqp.queue()
    amqp.admin.basic_publish("", queue, b"boom")
    consumer = instrument_channel(amqp.connect().channel())

    class Boom(Exception):
        pass

    def callback(ch, method, properties, body):
        raise Boom("handler failed")

    consumer.basic_consume(queue, callback)
    with pytest.raises(Boom, match="handler failed"):
        consumer.start_consuming()
    (process,) = spans.named("process")
    assert process.status == 2  # ERROR
    assert process.attributes[A.ERROR_TYPE] == Boom.__qualname__
    assert process.attributes[A.SETTLE_OUTCOME] == "error"
    assert "exception" in process.events


@pytest.mark.parametrize(
    ("settle", "outcome", "requeue", "operation"),
    [
        (lambda ch, tag: ch.basic_ack(tag), "ack", None, "ack"),
        (lambda ch, tag: ch.basic_nack(tag, requeue=False), "nack", False, "nack"),
        (lambda ch, tag: ch.basic_nack(tag, requeue=True), "requeue", True, "nack"),
        (lambda ch, tag: ch.basic_reject(tag, requeue=False), "reject", False, "reject"),
    ],
)
def test_settle_outcomes_inside_and_after_processing(amqp, spans, settle, outcome, requeue, operation):
    queue = amqp.queue()
    amqp.admin.basic_publish("", queue, b"1")
    amqp.admin.basic_publish("", queue, b"2")
    consumer = instrument_channel(amqp.connect().channel())
    consumer.basic_qos(prefetch_count=1)
    _consume_one(consumer, queue, lambda ch, m, p, b: settle(ch, m.delivery_tag))
    (inside,) = spans.named("process")
    assert inside.attributes[A.SETTLE_OUTCOME] == outcome
    assert inside.attributes.get(A.SETTLE_REQUEUE) == requeue

    # settled after the callback returned: a settle span, child of the delivery's span
    late = instrument_channel(amqp.connect().channel())
    method, _props, _body = late.basic_get(queue)
    assert method is not None
    settle(late, method.delivery_tag)
    (receive,) = spans.wait(lambda s: s.name.startswith("receive"))
    assert A.SETTLE_OUTCOME not in receive.attributes
    (settle_span,) = spans.wait(lambda s: s.attributes.get(A.MESSAGING_OPERATION_TYPE) == "settle")
    assert settle_span.kind == "CLIENT"
    assert settle_span.name == f"{operation} {queue}"
    assert settle_span.parent_span_id == receive.span_id
    assert settle_span.attributes[A.SETTLE_OUTCOME] == outcome
    assert settle_span.attributes[A.MESSAGING_OPERATION_NAME] == operation


def test_multiple_ack_settles_every_earlier_delivery(amqp, spans):
    queue = amqp.queue()
    for index in range(3):
        amqp.admin.basic_publish("", queue, str(index).encode())
    consumer = instrument_channel(amqp.connect().channel())
    tags = []
    for _ in range(3):
        deadline = time.monotonic() + 5
        method = None
        while method is None and time.monotonic() < deadline:
            method, _p, _b = consumer.basic_get(queue)
        tags.append(method.delivery_tag)
    consumer.basic_ack(tags[-1], multiple=True)
    settles = spans.wait(lambda s: s.attributes.get(A.MESSAGING_OPERATION_TYPE) == "settle", count=3)
    assert sorted(s.attributes[A.MESSAGING_DELIVERY_TAG] for s in settles) == sorted(tags)


def test_consume_generator_span_covers_processing_and_ends_on_ack(amqp, spans):
    queue = amqp.queue()
    for index in range(3):
        amqp.admin.basic_publish("", queue, str(index).encode())
    consumer = instrument_channel(amqp.connect().channel())
    publisher = instrument_channel(amqp.connect().channel())
    out = amqp.queue()
    for handled, (method, _properties, body) in enumerate(consumer.consume(queue, inactivity_timeout=5), 1):
        assert method is not None, "timed out waiting for messages"
        time.sleep(0.2)  # the application's processing
        if body == b"0":
            publisher.basic_publish("", out, b"effect")  # made while handling message 0
        consumer.basic_ack(method.delivery_tag)
        time.sleep(0.3)  # after the ack: not part of the message's processing
        if handled == 3:
            break
    consumer.cancel()
    processes = spans.named("process", 3)
    assert len(processes) == 3
    for span in processes:
        assert 0.19 <= span.duration_s < 0.45, span.duration_s
        assert span.attributes[A.SETTLE_OUTCOME] == "ack"
    (effect,) = spans.named("publish")
    first = next(span for span in processes if span.attributes[A.MESSAGING_DELIVERY_TAG] == 1)
    assert effect.parent_span_id == first.span_id


def test_consume_generator_ends_the_span_when_the_generator_closes(amqp, spans):
    queue = amqp.queue()
    amqp.admin.basic_publish("", queue, b"only")
    consumer = instrument_channel(amqp.connect().channel())
    messages = consumer.consume(queue, auto_ack=True, inactivity_timeout=5)
    _method, _props, body = next(messages)
    assert body == b"only"
    time.sleep(0.1)
    messages.close()
    consumer.cancel()
    (span,) = spans.named("process")
    assert span.attributes[A.SETTLE_OUTCOME] == "ack"
    assert span.attributes[A.AUTO_ACK] is True
    assert span.duration_s >= 0.09


def test_basic_get_emits_a_receive_span_continuing_the_producer_trace(amqp, spans):
    queue = amqp.queue()
    producer = instrument_channel(amqp.connection.channel())
    producer.basic_publish("", queue, b"pull me")
    consumer = instrument_channel(amqp.connect().channel())
    assert consumer.basic_get(amqp.queue()) == (None, None, None)  # empty queue: no span
    deadline = time.monotonic() + 5
    method = None
    while method is None and time.monotonic() < deadline:
        method, _props, body = consumer.basic_get(queue, auto_ack=True)
    assert body == b"pull me"
    (publish,) = spans.named("publish")
    receives = spans.named("receive")
    assert len(receives) == 1
    (receive,) = receives
    assert receive.kind == "CONSUMER"
    assert receive.parent_span_id == publish.span_id
    assert receive.attributes[A.MESSAGING_OPERATION_TYPE] == "receive"
    assert receive.attributes[A.SETTLE_OUTCOME] == "ack"


def test_redelivered_and_x_death_count_are_recorded(amqp, spans):
    dlx = amqp.exchange(kind="fanout")
    dead = amqp.queue()
    amqp.bind(dead, dlx, "")
    work = amqp.queue(**{"x-dead-letter-exchange": dlx})
    amqp.admin.basic_publish("", work, b"poison")
    consumer = instrument_channel(amqp.connect().channel())

    _consume_one(consumer, work, lambda ch, m, p, b: ch.basic_nack(m.delivery_tag, requeue=True))
    consumer.cancel()
    second = instrument_channel(amqp.connect().channel())
    _consume_one(second, work, lambda ch, m, p, b: ch.basic_reject(m.delivery_tag, requeue=False))
    third = instrument_channel(amqp.connect().channel())
    _consume_one(third, dead, lambda ch, m, p, b: ch.basic_ack(m.delivery_tag))

    processes = spans.named("process", 3)
    by_queue = {}
    for span in processes:
        by_queue.setdefault(span.attributes[A.QUEUE], []).append(span)
    first, again = sorted(by_queue[work], key=lambda s: s.start_ns)
    assert A.REDELIVERED not in first.attributes
    assert again.attributes[A.REDELIVERED] is True
    (dead_span,) = by_queue[dead]
    assert dead_span.attributes[A.DEATH_COUNT] == 1
    assert dead_span.attributes[A.DEATH_REASON] == "rejected"


def test_traced_channel_behaves_like_the_original(amqp):
    raw = amqp.connection.channel()
    channel = instrument_channel(raw)
    assert isinstance(channel, BlockingChannel)
    assert channel.channel_number == raw.channel_number
    assert channel.is_open and channel.connection is raw.connection
    assert instrument_channel(channel) is channel
    assert channel == raw and hash(channel) == hash(raw)
    queue = amqp.queue()
    declared = channel.queue_declare(queue, passive=True)
    assert declared.method.queue == queue
    with channel as entered:
        assert entered is channel
    assert raw.is_closed


def test_install_traces_channels_opened_afterwards_and_uninstall_stops(amqp, spans):
    queue = amqp.queue()
    install(service="installed")
    try:
        install(service="ignored")  # idempotent
        connection = amqp.connect()
        channel = connection.channel()
        assert isinstance(channel, BlockingChannel)
        channel.basic_publish("", queue, b"x")
    finally:
        uninstall()
    (span,) = spans.named("publish")
    assert span.attributes[A.PRODUCER] == "installed"
    plain = amqp.connect().channel()
    plain.basic_publish("", queue, b"y")
    time.sleep(0.1)
    assert len(spans.named("publish")) == 1
