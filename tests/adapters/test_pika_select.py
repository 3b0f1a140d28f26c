"""SelectConnection (async) channels: publish, push consume, basic_get and settles."""

from __future__ import annotations

import pika
import pytest
from opentelemetry import trace

from eventscope.adapters.pika import TracedChannel, install, instrument_channel, uninstall
from eventscope.tracer import contract as A

pytestmark = pytest.mark.integration  # the real broker on 127.0.0.1:5672


def _run(parameters, on_channel, timeout=5.0):
    """Open a SelectConnection and a channel, hand the channel to ``on_channel(ch, done)``."""
    state = {"error": None}

    def on_open(connection):
        def opened(channel):
            try:
                on_channel(channel, lambda: connection.close())
            except Exception as exc:  # surfaced after the loop ends
                state["error"] = exc
                connection.close()

        connection.channel(on_open_callback=opened)

    connection = pika.SelectConnection(
        parameters,
        on_open_callback=on_open,
        on_open_error_callback=lambda c, e: state.update(error=e),
        on_close_callback=lambda c, reason: c.ioloop.stop(),
    )
    connection.ioloop.call_later(timeout, lambda: connection.close() if connection.is_open else None)
    connection.ioloop.start()
    if state["error"]:
        raise state["error"]
    return state


def test_select_connection_round_trip(amqp, spans, broker):
    queue = amqp.queue()
    seen = {}

    def on_channel(raw, done):
        channel = instrument_channel(raw, service="async-svc")
        assert isinstance(channel, pika.channel.Channel)
        channel.basic_publish("", queue, b"async hello")

        def on_message(ch, method, properties, body):
            seen["channel"] = ch
            seen["body"] = body
            seen["props"] = properties
            seen["span"] = trace.get_current_span().get_span_context()
            ch.basic_publish("", queue + "-none", b"effect")  # unroutable, still a child span
            ch.basic_ack(method.delivery_tag)
            done()

        channel.basic_consume(queue, on_message)

    _run(broker, on_channel)
    assert seen["body"] == b"async hello"
    assert seen["props"].app_id == "async-svc"
    publishes = spans.named("publish", 2)
    (process,) = spans.named("process")
    first = next(s for s in publishes if s.attributes[A.MESSAGING_ROUTING_KEY] == queue)
    effect = next(s for s in publishes if s is not first)
    assert process.parent_span_id == first.span_id
    assert f"{seen['span'].span_id:016x}" == process.span_id
    assert effect.parent_span_id == process.span_id
    assert effect.attributes[A.CAUSATION_ID] == seen["props"].message_id
    assert process.attributes[A.SETTLE_OUTCOME] == "ack"


def test_select_basic_get_and_late_nack(amqp, spans, broker):
    queue = amqp.queue()
    amqp.admin.basic_publish("", queue, b"pull")
    got = {}

    def on_channel(raw, done):
        channel = instrument_channel(raw)

        def on_get(ch, method, properties, body):
            got["body"] = body
            got["tag"] = method.delivery_tag
            ch.connection.ioloop.call_later(0.05, lambda: (ch.basic_nack(got["tag"], requeue=False), done()))

        channel.basic_get(queue, on_get)

    _run(broker, on_channel)
    assert got["body"] == b"pull"
    (receive,) = spans.named("receive")
    assert receive.attributes[A.MESSAGING_OPERATION_TYPE] == "receive"
    (settle,) = spans.wait(lambda s: s.attributes.get(A.MESSAGING_OPERATION_TYPE) == "settle")
    assert settle.parent_span_id == receive.span_id
    assert settle.attributes[A.SETTLE_OUTCOME] == "nack"
    assert settle.attributes[A.SETTLE_REQUEUE] is False


def test_install_hands_traced_channels_to_on_open_callback(amqp, spans, broker):
    queue = amqp.queue()
    channels = []

    def on_channel(channel, done):
        channels.append(channel)
        channel.basic_publish("", queue, b"x")
        channel.connection.ioloop.call_later(0.05, done)

    install(service="select-installed")
    try:
        _run(broker, on_channel)
    finally:
        uninstall()
    assert type(channels[0]) is TracedChannel
    (span,) = spans.named("publish")
    assert span.attributes[A.PRODUCER] == "select-installed"
