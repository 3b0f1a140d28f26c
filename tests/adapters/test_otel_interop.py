"""Interop with opentelemetry-instrumentation-pika 0.66b1, in both directions (issue 2).

Either side may be traced by OpenTelemetry's pika instrumentation and the other by
eventscope: the trace continues across the broker. Where both trace the same channel (per
channel, or OTel's process-wide ``instrument()``), each publish and each delivery yields
exactly one span. OTel's spans are named ``"<dest> send"`` / ``"<dest> receive"``;
eventscope's ``"publish <exchange>"``, ``"process <queue>"``, ``"receive <queue>"``.

Process-wide patching (``PikaInstrumentor().instrument()``, ``install()``) runs in a
subprocess that exports to this test's OTLP receiver, so no other test sees a patched pika.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.pika import PikaInstrumentor
from pika.spec import BasicProperties

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer.sdk import failures

pytestmark = pytest.mark.integration

MESSAGE_ID = "messaging.message.id"  # the same key in OTel's pika spans and in eventscope's


# -- helpers ------------------------------------------------------------------------------
def _consume_callback(connection: Any, channel: Any, queue: str, count: int) -> list[Any]:
    got: list[Any] = []

    def on_message(ch: Any, method: Any, properties: Any, body: Any) -> None:
        got.append((properties, body, trace.get_current_span().get_span_context()))
        ch.basic_ack(method.delivery_tag)

    tag = channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    channel.basic_cancel(tag)
    return got


def _consume_generator(connection: Any, channel: Any, queue: str, count: int) -> list[Any]:
    got: list[Any] = []
    messages = channel.consume(queue, inactivity_timeout=5)
    for method, properties, body in messages:
        if method is None:
            break
        got.append((properties, body, trace.get_current_span().get_span_context()))
        channel.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    messages.close()
    channel.cancel()
    return got


def _consume_get(connection: Any, channel: Any, queue: str, count: int) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.02)
            continue
        got.append((properties, body, None))
    return got


CONSUMERS: dict[str, Callable[..., list[Any]]] = {
    "callback": _consume_callback,
    "generator": _consume_generator,
    "get": _consume_get,
}


def _about(queue: str) -> Callable[[Any], bool]:
    """Spans of either instrumentation that concern ``queue`` (published to the default exchange)."""

    def predicate(span: Any) -> bool:
        return queue in span.name or queue in (str(value) for value in span.attributes.values())

    return predicate


def _kinds(found: list[Any]) -> Counter[str]:
    return Counter(span.kind for span in found)


def _describe(found: list[Any]) -> list[tuple[str, str, Any]]:
    return [(span.name, span.kind, span.attributes.get(MESSAGE_ID)) for span in found]


# -- (a) OTel producer -> eventscope consumer -----------------------------------------------
@pytest.mark.parametrize("api", list(CONSUMERS))
def test_eventscope_consumer_continues_otel_producer_trace(amqp: Any, spans: Any, api: str) -> None:
    queue = amqp.queue()
    producer = amqp.connection.channel()
    PikaInstrumentor.instrument_channel(producer)
    producer.basic_publish("", queue, b"from otel", BasicProperties(message_id=f"otel-{queue}"))

    consumer_connection = amqp.connect()
    channel = instrument_channel(consumer_connection.channel())
    got = CONSUMERS[api](consumer_connection, channel, queue, 1)
    assert [body for _, body, _ in got] == [b"from otel"]

    [sent] = spans.wait(lambda s: s.name == f"{queue} send")
    assert sent.kind == "PRODUCER"
    name = f"receive {queue}" if api == "get" else f"process {queue}"
    [received] = spans.wait(lambda s: s.name == name)
    assert received.kind == "CONSUMER"
    assert received.trace_id == sent.trace_id
    assert received.parent_span_id == sent.span_id
    if api != "get":  # inside the handler, eventscope's span is the current one
        current = got[0][2]
        assert (f"{current.trace_id:032x}", f"{current.span_id:016x}") == (
            received.trace_id,
            received.span_id,
        )


# -- (b) eventscope producer -> OTel consumer -----------------------------------------------
def test_otel_consumer_continues_eventscope_producer_trace(amqp: Any, spans: Any) -> None:
    queue = amqp.queue()
    instrument_channel(amqp.connection.channel()).basic_publish("", queue, b"from eventscope")

    consumer_connection = amqp.connect()
    channel = consumer_connection.channel()
    PikaInstrumentor.instrument_channel(channel)
    got = _consume_callback(consumer_connection, channel, queue, 1)
    assert [body for _, body, _ in got] == [b"from eventscope"]

    [sent] = spans.wait(
        lambda s: (
            s.kind == "PRODUCER" and s.attributes.get("messaging.rabbitmq.destination.routing_key") == queue
        )
    )
    assert sent.name == "publish amq.default"
    [received] = spans.wait(lambda s: s.name == f"{queue} receive")
    assert received.kind == "CONSUMER"
    assert received.trace_id == sent.trace_id
    assert received.parent_span_id == sent.span_id


# -- (c) one channel, both instrumentations -------------------------------------------------
def _otel_then_eventscope(channel: Any) -> Any:
    PikaInstrumentor.instrument_channel(channel)
    return instrument_channel(channel)


def _eventscope_then_otel(channel: Any) -> Any:
    traced = instrument_channel(channel)
    PikaInstrumentor.instrument_channel(traced)
    return traced


@pytest.mark.parametrize(
    "instrument", [_otel_then_eventscope, _eventscope_then_otel], ids=["otel-first", "eventscope-first"]
)
def test_doubly_instrumented_channel_yields_one_span_per_operation(
    amqp: Any, spans: Any, instrument: Callable[[Any], Any]
) -> None:
    queue = amqp.queue()
    connection = amqp.connect()
    channel = instrument(connection.channel())
    per_api = 2
    counted = failures.counts()
    for api in CONSUMERS:
        for i in range(per_api):
            channel.basic_publish("", queue, f"{api}-{i}".encode(), BasicProperties(message_id=f"{api}-{i}"))
        got = CONSUMERS[api](connection, channel, queue, per_api)
        assert [body for _, body, _ in got] == [f"{api}-{i}".encode() for i in range(per_api)]
    assert failures.counts() == counted

    total = per_api * len(CONSUMERS)
    found = spans.wait(_about(queue), 2 * total)
    found = [s for s in found if s.kind in ("PRODUCER", "CONSUMER")]
    by_message = Counter((s.kind, s.attributes.get(MESSAGE_ID)) for s in found)
    assert _kinds(found) == {"PRODUCER": total, "CONSUMER": total}, _describe(found)
    assert set(by_message.values()) == {1}, _describe(found)


def test_consumer_registered_before_eventscope_takes_over_still_yields_one_span(
    amqp: Any, spans: Any
) -> None:
    """A consumer OTel already wraps must not lose its span when eventscope takes the channel over."""
    queue = amqp.queue()
    connection = amqp.connect()
    channel = connection.channel()
    PikaInstrumentor.instrument_channel(channel)
    got: list[bytes] = []
    channel.basic_consume(queue, lambda ch, method, props, body: got.append(body), auto_ack=True)
    traced = instrument_channel(channel)
    for i in range(2):
        traced.basic_publish(
            "", queue, f"early-{i}".encode(), BasicProperties(message_id=f"early-{queue}-{i}")
        )
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    assert got == [b"early-0", b"early-1"]

    found = spans.wait(lambda s: _about(queue)(s) and s.kind == "CONSUMER", 2, timeout=2)
    producers = spans.wait(lambda s: _about(queue)(s) and s.kind == "PRODUCER", 2)
    assert len(producers) == 2, _describe(producers)
    assert len(found) == 2, _describe(found)
    parents = {(p.trace_id, p.span_id) for p in producers}
    assert {(s.trace_id, s.parent_span_id) for s in found} == parents


# -- (d) OTel's process-wide instrument() plus eventscope (in a subprocess) -----------------
_GLOBAL = textwrap.dedent(
    """
    import json, os, sys, time
    import pika
    from eventscope.adapters import pika as es_pika
    from eventscope.tracer import setup
    from eventscope.tracer.sdk import failures
    from opentelemetry import trace

    endpoint, service, queue, mode, count = sys.argv[1:6]
    count = int(count)
    provider = setup(service=service, endpoint=endpoint, schedule_delay_millis=50)
    params = pika.ConnectionParameters(
        "127.0.0.1",
        5672,
        virtual_host=os.environ.get("EVENTSCOPE_TEST_VHOST", "/"),
        credentials=pika.PlainCredentials("guest", "guest"),
    )
    otel = None
    result = {}
    try:
        if mode == "late-import":  # OTel's module is imported only after eventscope traced the channel
            connection = pika.BlockingConnection(params)
            channel = es_pika.instrument_channel(connection.channel())
            from opentelemetry.instrumentation.pika import PikaInstrumentor
            PikaInstrumentor.instrument_channel(channel)
        else:
            from opentelemetry.instrumentation.pika import PikaInstrumentor
            otel = PikaInstrumentor()
            if mode == "install-then-otel":
                es_pika.install()
                otel.instrument()
            else:
                otel.instrument()
                if mode == "otel-then-install":
                    es_pika.install()
            connection = pika.BlockingConnection(params)
            channel = connection.channel()
            if mode == "otel-then-channel":
                channel = es_pika.instrument_channel(channel)
        result["channel_type"] = type(channel).__name__

        def publish(prefix):
            for i in range(count):
                channel.basic_publish(
                    "", queue, f"{prefix}-{i}".encode(),
                    pika.BasicProperties(message_id=f"{prefix}-{i}"),
                )

        publish("callback")
        bodies, current = [], []

        def on_message(ch, method, properties, body):
            bodies.append(body.decode())
            current.append(trace.get_current_span().get_span_context().is_valid)
            ch.basic_ack(method.delivery_tag)

        tag = channel.basic_consume(queue, on_message)
        deadline = time.monotonic() + 10
        while len(bodies) < count and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
        channel.basic_cancel(tag)

        publish("generator")
        messages = channel.consume(queue, inactivity_timeout=5)
        inside = []
        for method, properties, body in messages:
            if method is None:
                break
            bodies.append(body.decode())
            inside.append(trace.get_current_span().get_span_context().span_id)
            channel.basic_ack(method.delivery_tag)
            if len(inside) == count:
                break
        messages.close()
        channel.cancel()
        result["after_generator_span_valid"] = trace.get_current_span().get_span_context().is_valid

        publish("get")
        got = 0
        deadline = time.monotonic() + 10
        while got < count and time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue)
            if method is None:
                time.sleep(0.02)
                continue
            bodies.append(body.decode())
            channel.basic_ack(method.delivery_tag)
            got += 1
        result.update(
            bodies=bodies, callback_span_valid=current, generator_span_ids=[f"{i:016x}" for i in inside],
            failures=failures.counts(),
        )
        connection.close()
    finally:
        if otel is not None:
            otel.uninstrument()
        es_pika.uninstall()
        provider.force_flush()
    print(json.dumps(result), flush=True)
    """
)

_MODES = ["otel-then-install", "install-then-otel", "otel-then-channel", "late-import"]


@pytest.mark.parametrize("mode", _MODES)
def test_otel_global_instrumentation_and_eventscope_yield_one_span_each(
    amqp: Any, spans: Any, mode: str
) -> None:
    queue = amqp.queue()
    service = f"interop-{mode}-{uuid.uuid4().hex[:8]}"
    count = 2
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c", _GLOBAL, spans.receiver.endpoint, service, queue, mode, str(count)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    apis = ("callback", "generator", "get")
    expected_ids = [f"{api}-{i}" for api in apis for i in range(count)]
    assert result["channel_type"] == "TracedBlockingChannel"
    assert result["bodies"] == expected_ids
    assert result["failures"] == {}
    assert result["callback_span_valid"] == [True] * count
    assert not result["after_generator_span_valid"]

    found = spans.receiver.find(lambda s: s.service == service and s.kind in ("PRODUCER", "CONSUMER"))
    by_message = Counter((s.kind, s.attributes.get(MESSAGE_ID)) for s in found)
    assert set(by_message) <= {(kind, mid) for kind in ("PRODUCER", "CONSUMER") for mid in expected_ids}, (
        _describe(found)
    )
    for api in ("callback", "get", "generator"):  # one failing API does not hide the others' results
        ids = [f"{api}-{i}" for i in range(count)]
        assert [by_message[("PRODUCER", mid)] for mid in ids] == [1] * count, (api, _describe(found))
        assert [by_message[("CONSUMER", mid)] for mid in ids] == [1] * count, (api, _describe(found))

    producers = {s.attributes[MESSAGE_ID]: s for s in found if s.kind == "PRODUCER"}
    consumers = {s.attributes[MESSAGE_ID]: s for s in found if s.kind == "CONSUMER"}
    for mid, consumer in consumers.items():
        assert (consumer.trace_id, consumer.parent_span_id) == (
            producers[mid].trace_id,
            producers[mid].span_id,
        )
    generator_spans = [consumers[f"generator-{i}"].span_id for i in range(count)]
    assert result["generator_span_ids"] == generator_spans  # the loop body ran in eventscope's span
