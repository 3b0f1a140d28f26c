"""The Python services of the mixed shop (tests/interop/test_mixed_shop.py), one role per process.

Each role is written as its users write it, with its own instrumentation: eventscope's adapter
(`instrument_channel` / `install()`), `opentelemetry-instrumentation-pika`, or
`opentelemetry-instrumentation-aio-pika`, exporting OTLP/HTTP to the collector.

    python -m tests.interop.services ROLE ENDPOINT NAMES_JSON
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import pika

VHOST = os.environ.get("EVENTSCOPE_TEST_VHOST", "/")
PARAMETERS = pika.ConnectionParameters("127.0.0.1", 5672, VHOST)
NODE_WORDS = ("ack", "ack", "ack", "nack", "reject", "nack-requeue", "reject-requeue", "close")


def _until(connection: pika.BlockingConnection, predicate: Any, what: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    assert predicate(), what


def _otel_provider(service: str, endpoint: str) -> Any:
    """A plain OpenTelemetry SDK setup, as a service that never heard of eventscope has it."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    trace.set_tracer_provider(provider)
    return provider


def eventscope_producer(endpoint: str, names: dict[str, Any]) -> Any:
    from eventscope.adapters.pika import instrument_channel
    from eventscope.tracer import setup

    provider = setup(service="es-producer", endpoint=endpoint, schedule_delay_millis=50)
    connection = pika.BlockingConnection(PARAMETERS)
    channel = instrument_channel(connection.channel())
    for word in NODE_WORDS:
        channel.basic_publish(names["shop"], f"node.{word}", word.encode())
    for key in ("otel.basic", "otel.gen", "aio.in", "chain.start"):
        channel.basic_publish(names["shop"], key, b"{}")
    channel.basic_publish(names["ae_main"], "matches.nothing", b"{}")  # the alternate exchange's queue
    channel.basic_publish(names["e2e_src"], "e2e.hop", b"{}")  # exchange → exchange → queue
    channel.basic_publish("", names["missing"], b"{}")  # default exchange, no such queue: a real orphan
    connection.close()
    return provider


def eventscope_consumer(endpoint: str, names: dict[str, Any]) -> Any:
    """Acks everything it is sent; the middle of the chain publishes chain.end on."""
    from eventscope.adapters.pika import instrument_channel
    from eventscope.tracer import setup

    provider = setup(service="es-consumer", endpoint=endpoint, schedule_delay_millis=50)
    connection = pika.BlockingConnection(PARAMETERS)
    channel = instrument_channel(connection.channel())
    handled: dict[str, int] = {}

    def callback(queue: str) -> Any:
        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            if queue == "chain_mid":
                ch.basic_publish(names["shop"], "chain.end", b"{}")
            ch.basic_ack(method.delivery_tag)
            handled[queue] = handled.get(queue, 0) + 1

        return on_message

    expected = {"es_in": 4, "chain_mid": 1, "chain_end": 1, "ae_q": 1, "e2e_q": 1}
    for queue in expected:
        channel.basic_consume(names[queue], callback(queue))
    _until(connection, lambda: all(handled.get(q, 0) >= n for q, n in expected.items()), handled, 45)
    connection.close()
    return provider


def otel_pika(endpoint: str, names: dict[str, Any]) -> Any:
    """A service traced only by opentelemetry-instrumentation-pika: the middle of a chain, a
    ``basic_consume`` and a ``consume()`` consumer, and a producer without message ids.
    """
    from opentelemetry.instrumentation.pika import PikaInstrumentor

    provider = _otel_provider("otel-pika", endpoint)
    PikaInstrumentor().instrument(tracer_provider=provider)
    connection = pika.BlockingConnection(PARAMETERS)
    channel = connection.channel()
    channel.basic_publish(names["shop"], "from.otel", b"{}")
    done: dict[str, bool] = {}

    def on_chain(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.basic_publish(
            names["shop"], "chain.mid", b"{}", pika.BasicProperties(message_id=f"mid-{os.getpid()}")
        )
        ch.basic_ack(method.delivery_tag)
        done["chain"] = True

    def on_basic(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.basic_ack(method.delivery_tag)
        done["basic"] = True

    channel.basic_consume(names["chain_in"], on_chain)
    channel.basic_consume(names["otel_basic"], on_basic)
    _until(connection, lambda: len(done) == 2, done)
    for method, _properties, _body in channel.consume(names["otel_gen"], inactivity_timeout=30):
        assert method is not None, "nothing arrived for consume()"
        channel.basic_ack(method.delivery_tag)
        break
    channel.cancel()
    connection.close()
    return provider


def otel_aio_pika(endpoint: str, names: dict[str, Any]) -> Any:
    """A service traced only by opentelemetry-instrumentation-aio-pika: producer and consumer."""
    import aio_pika
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    provider = _otel_provider("otel-aio-pika", endpoint)
    AioPikaInstrumentor().instrument(tracer_provider=provider)

    async def main() -> None:
        connection = await aio_pika.connect(host="127.0.0.1", port=5672, virtualhost=VHOST)
        async with connection:
            channel = await connection.channel()
            shop = await channel.get_exchange(names["shop"], ensure=False)
            message = aio_pika.Message(b"{}", message_id=f"aio-{os.getpid()}")
            await shop.publish(message, routing_key="from.aio")
            # with an id of its own: without one, aiormq assigns it after the instrumentation built
            # its span, and the span's event cannot be joined to its delivery (docs/collector.md)
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", message_id=f"aio-default-{os.getpid()}"), routing_key=names["es_in"]
            )
            queue = await channel.get_queue(names["aio_in"], ensure=False)
            got = asyncio.Event()

            async def on_message(message: Any) -> None:
                async with message.process():
                    got.set()

            await queue.consume(on_message)
            await asyncio.wait_for(got.wait(), 30)

    asyncio.run(main())
    return provider


def rpc(endpoint: str, names: dict[str, Any]) -> Any:
    """pika's examples/direct_reply_to.py under ``install()``, then a client that leaves before
    its reply: that reply has nowhere to go (a real orphan).
    """
    from eventscope.adapters.pika import install
    from eventscope.tracer import setup

    provider = setup(service="rpc", endpoint=endpoint, schedule_delay_millis=50)
    install(service="rpc")
    connection = pika.BlockingConnection(PARAMETERS)
    channel = connection.channel()
    replies: list[bytes] = []

    def on_server_rx_rpc_request(ch: Any, method_frame: Any, properties: Any, body: bytes) -> None:
        ch.basic_publish("", routing_key=properties.reply_to, body=b"Polo")
        ch.basic_ack(delivery_tag=method_frame.delivery_tag)

    def on_client_rx_reply_from_server(ch: Any, method_frame: Any, properties: Any, body: bytes) -> None:
        replies.append(body)

    channel.basic_consume(names["rpc"], on_server_rx_rpc_request)
    channel.basic_consume("amq.rabbitmq.reply-to", on_client_rx_reply_from_server, auto_ack=True)
    channel.basic_publish(
        exchange="",
        routing_key=names["rpc"],
        body=b"Marco",
        properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"),
    )
    _until(connection, lambda: replies, "no RPC reply")

    gone = pika.BlockingConnection(PARAMETERS)
    client = gone.channel()
    client.basic_consume("amq.rabbitmq.reply-to", lambda *args: None, auto_ack=True)
    client.basic_publish(
        "", names["rpc_late"], b"Marco?", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")
    )
    gone.close()  # the client leaves before the server answers
    late: list[bool] = []

    def on_late_request(ch: Any, method_frame: Any, properties: Any, body: bytes) -> None:
        ch.basic_publish("", routing_key=properties.reply_to, body=b"Polo!")
        ch.basic_ack(delivery_tag=method_frame.delivery_tag)
        late.append(True)

    channel.basic_consume(names["rpc_late"], on_late_request)
    _until(connection, lambda: late, "the late request never came")
    connection.process_data_events(time_limit=0.3)
    connection.close()
    return provider


ROLES = {
    "eventscope_producer": eventscope_producer,
    "eventscope_consumer": eventscope_consumer,
    "otel_pika": otel_pika,
    "otel_aio_pika": otel_aio_pika,
    "rpc": rpc,
}

if __name__ == "__main__":
    role, endpoint, names_json = sys.argv[1:4]
    provider = ROLES[role](endpoint, json.loads(names_json))
    assert provider.force_flush(10_000)
    print(role, "done", flush=True)
