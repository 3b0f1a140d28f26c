"""The shop's async service, on aio-pika: ``python -m eventscope.demo.async_services loyalty``.

It uses the public API as a user's async service would: ``setup()`` once, then
``eventscope.adapters.aio_pika.instrument_channel`` on the channel. Its chain crosses both
clients: pika's shipping publishes ``shipment.created``; **loyalty** (aio-pika, a
``queue.iterator()`` loop with ``message.process()``) awards points for every shipment as
``order.rewarded``; pika's auditor reads that from the audit stream (bound to ``order.*``).

Its queue (``demo.loyalty``) is declared here, auto-deleted when the service stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

import aio_pika

from eventscope.adapters.aio_pika import instrument_channel
from eventscope.tracer import setup

from .topology import EXCHANGE

LOYALTY_QUEUE = "demo.loyalty"
_POINTS_PER_ORDER = 10


async def loyalty(channel: Any, stop: asyncio.Event) -> None:
    """``shipment.created`` → ``order.rewarded``, one message at a time from an iterator."""
    await channel.set_qos(prefetch_count=20)
    exchange = await channel.get_exchange(EXCHANGE)
    queue = await channel.declare_queue(LOYALTY_QUEUE, auto_delete=True)
    await queue.bind(exchange, "shipment.created")
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process(requeue=False):
                shipment = json.loads(message.body)
                reward = {"order_id": shipment.get("order_id"), "points": _POINTS_PER_ORDER}
                await exchange.publish(
                    aio_pika.Message(json.dumps(reward).encode(), content_type="application/json"),
                    routing_key="order.rewarded",
                )
            if stop.is_set():
                break


SERVICES = {"loyalty": loyalty}


async def _run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect_robust(args.amqp_url)
    try:
        channel = instrument_channel(await connection.channel())
        worker = asyncio.create_task(SERVICES[args.service](channel, stop))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopped}, return_when=asyncio.FIRST_COMPLETED)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        stopped.cancel()
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run an async service of the eventscope demo shop.")
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--name", help="service name to report (default: the service)")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL of the collector")
    # the runner passes every service the same options
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args(argv)
    provider = setup(service=args.name or args.service, endpoint=args.endpoint, schedule_delay_millis=500)
    try:
        asyncio.run(_run(args))
    finally:
        provider.force_flush()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
