"""Round trips through the collector: pika → aio-pika → pika, and a FastStream app (issue 13).

A subprocess (its own TracerProvider, exporting to a collector on loopback) runs the flows;
the test reads what the collector stored: events, deliveries with their outcomes, causal
edges and ``chain()``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AMQP_URL
from tests.server.test_end_to_end import sql, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

FLOW = textwrap.dedent(
    """
    import asyncio, sys, time
    import aio_pika, pika
    from faststream.rabbit import RabbitBroker, RabbitQueue
    from eventscope.tracer import setup
    from eventscope.adapters import aio_pika as es_aio_pika
    from eventscope.adapters.pika import instrument_channel

    url, amqp_url, first, second, fs_in, fs_out = sys.argv[1:7]
    provider = setup(service="shop", endpoint=url, schedule_delay_millis=50)

    params = pika.URLParameters(amqp_url)
    connection = pika.BlockingConnection(params)
    orders = instrument_channel(connection.channel(), service="orders")
    orders.basic_publish("", first, b"order")  # the root, from pika

    async def billing():  # aio-pika: iterator, publish inside the loop body, ack
        conn = await aio_pika.connect_robust(amqp_url)
        channel = es_aio_pika.instrument_channel(await conn.channel(), service="billing")
        queue = await channel.get_queue(first)
        async with queue.iterator() as messages:
            async for message in messages:
                await channel.default_exchange.publish(aio_pika.Message(b"invoice"), routing_key=second)
                await message.ack()
                break
        await conn.close()

    async def faststream():  # traced by install() alone
        es_aio_pika.install(service="fastshop")
        broker = RabbitBroker(amqp_url)
        done = asyncio.Event()

        @broker.subscriber(RabbitQueue(fs_in, auto_delete=True))
        async def handle(body: str) -> None:
            await broker.publish("shipped", queue=fs_out)

        @broker.subscriber(RabbitQueue(fs_out, auto_delete=True))
        async def handle_out(body: str) -> None:
            done.set()

        await broker.start()
        await broker.publish("placed", queue=fs_in)
        await asyncio.wait_for(done.wait(), 20)
        await asyncio.sleep(0.3)  # the ack after the handler returned
        await broker.stop()

    asyncio.run(billing())
    mailer = instrument_channel(connection.channel(), service="mailer")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        method, properties, body = mailer.basic_get(second)
        if method is not None:
            mailer.basic_ack(method.delivery_tag)
            break
        time.sleep(0.05)
    connection.close()
    asyncio.run(faststream())
    assert provider.force_flush(10_000)
    print("flow done", flush=True)
    """
)


def test_chains_cross_pika_and_aio_pika_and_faststream(running_collector: Any, amqp: Any) -> None:
    url = running_collector.url
    first, second = amqp.queue(), amqp.queue()
    fs_in, fs_out = amqp.name("fs-in"), amqp.name("fs-out")
    flow = subprocess.run(
        [sys.executable, "-c", FLOW, url, AMQP_URL, first, second, fs_in, fs_out],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert flow.returncode == 0, flow.stdout + flow.stderr
    wait_for(url, "SELECT count(*) FROM deliveries WHERE outcome IS NOT NULL", 4)

    events = sql(
        url,
        "SELECT event_id, event_type, routing_key, producer_service, causation_id, correlation_id "
        "FROM events ORDER BY published_at",
    )
    by_key = {e["routing_key"]: e for e in events}
    assert set(by_key) == {first, second, fs_in, fs_out}
    order, invoice = by_key[first], by_key[second]
    assert (order["producer_service"], invoice["producer_service"]) == ("orders", "billing")
    assert order["event_type"] == first and order["correlation_id"] == order["event_id"]
    assert (invoice["causation_id"], invoice["correlation_id"]) == (order["event_id"], order["event_id"])
    placed, shipped = by_key[fs_in], by_key[fs_out]
    # FastStream stamps its own app_id ("faststream-<version>"); the adapter keeps what the app set
    assert {placed["producer_service"], shipped["producer_service"]} == {
        f"faststream-{version('faststream')}"
    }
    assert shipped["causation_id"] == placed["event_id"]

    # a consumer is named by its process's service (the resource of setup()), whichever adapter
    deliveries = sql(url, "SELECT event_id, queue, consumer_service, outcome FROM deliveries")
    assert sorted(
        (d["event_id"], d["queue"], d["consumer_service"], d["outcome"]) for d in deliveries
    ) == sorted(
        [
            (order["event_id"], first, "shop", "ack"),
            (invoice["event_id"], second, "shop", "ack"),
            (placed["event_id"], fs_in, "shop", "ack"),
            (shipped["event_id"], fs_out, "shop", "ack"),
        ]
    )
    chain = sql(url, f"SELECT event_id, depth FROM chain('{order['event_id']}') ORDER BY depth")
    assert [(c["event_id"], c["depth"]) for c in chain] == [(order["event_id"], 0), (invoice["event_id"], 1)]
    assert sql(url, "SELECT count(*) AS n FROM orphans")[0]["n"] == 0


OTEL = textwrap.dedent(
    """
    import asyncio, sys
    import aio_pika
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from eventscope.tracer import setup
    from eventscope.adapters.aio_pika import instrument_channel

    endpoint, amqp_url, traced_queue, plain_queue, iter_queue = sys.argv[1:6]
    provider = setup(service="otel-mix", endpoint=endpoint, schedule_delay_millis=50)
    AioPikaInstrumentor().instrument()  # process-wide, before eventscope

    async def main():
        conn = await aio_pika.connect_robust(amqp_url)
        traced = instrument_channel(await conn.channel())
        plain = await conn.channel()
        done = asyncio.Event()

        async def on_message(message):
            async with message.process():
                done.set()

        await (await traced.get_queue(traced_queue)).consume(on_message)
        await traced.default_exchange.publish(aio_pika.Message(b"t"), routing_key=traced_queue)
        await plain.default_exchange.publish(aio_pika.Message(b"p"), routing_key=plain_queue)
        await asyncio.wait_for(done.wait(), 10)
        await traced.default_exchange.publish(aio_pika.Message(b"i"), routing_key=iter_queue)
        async with (await traced.get_queue(iter_queue)).iterator() as messages:
            async for message in messages:
                await message.ack()
                break
        await conn.close()

    asyncio.run(main())
    assert provider.force_flush(10_000)
    """
)


def test_with_opentelemetry_instrumentation_aio_pika_each_operation_has_one_span(
    receiver: Any, amqp: Any
) -> None:
    traced_queue, plain_queue, iter_queue = amqp.queue(), amqp.queue(), amqp.queue()
    receiver.clear()
    run = subprocess.run(
        [sys.executable, "-c", OTEL, receiver.endpoint, AMQP_URL, traced_queue, plain_queue, iter_queue],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    receiver.wait_for(lambda s: s.service == "otel-mix", 4, 10.0)
    time.sleep(0.3)  # a duplicate would arrive in the same flush
    names = sorted(s.name for s in receiver.spans if s.service == "otel-mix")
    # the traced channel: eventscope's spans only (its iterator too); the plain channel keeps OTel's,
    # which older OpenTelemetry aio-pika releases (0.55b0 with aio-pika 10) do not emit at all
    expected = ["publish amq.default"] * 2 + [f"process {traced_queue}", f"process {iter_queue}"]
    otel_plain = [name for name in names if name == f",{plain_queue} send"]
    assert sorted(name for name in names if name not in otel_plain) == sorted(expected), names
    assert len(otel_plain) <= 1, names


COLLECTOR_DOWN = textwrap.dedent(
    """
    import asyncio, sys, time
    import aio_pika
    from eventscope.tracer import setup
    from eventscope.adapters.aio_pika import instrument_channel

    endpoint, amqp_url, queue_name = sys.argv[1:4]
    setup(service="lonely", endpoint=endpoint, schedule_delay_millis=50, export_timeout_millis=500)

    async def main():
        conn = await aio_pika.connect_robust(amqp_url)
        channel = instrument_channel(await conn.channel())
        started = time.monotonic()
        for index in range(200):
            await channel.default_exchange.publish(aio_pika.Message(b"%d" % index), routing_key=queue_name)
        seen = 0
        async with (await channel.get_queue(queue_name)).iterator() as messages:
            async for message in messages:
                async with message.process():
                    seen += 1
                if seen == 200:
                    break
        print(f"handled {seen} in {time.monotonic() - started:.2f}s", flush=True)
        await conn.close()

    asyncio.run(main())
    """
)


def test_a_collector_that_is_down_never_blocks_or_raises(amqp: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    queue = amqp.queue()
    run = subprocess.run(
        [sys.executable, "-c", COLLECTOR_DOWN, endpoint, AMQP_URL, queue],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "handled 200 in" in run.stdout
    assert "Traceback" not in run.stderr
