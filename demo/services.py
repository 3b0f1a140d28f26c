"""The shop's services. Each runs as ``python -m eventscope.demo.services NAME`` in its own process.

They use the public API exactly as a user's service would: ``setup()`` once, then
``instrument_channel`` on the channel.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pika

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer import setup

from .topology import EXCHANGE

_JSON = pika.BasicProperties(content_type="application/json")


def _publish(channel: Any, routing_key: str, payload: dict[str, Any]) -> None:
    channel.basic_publish(EXCHANGE, routing_key, json.dumps(payload).encode(), _JSON)


def run_orders(channel: Any, rate: float, stop: Callable[[], bool]) -> None:
    """Places ``rate`` orders a second; every 10th order also asks for a refund (unroutable)."""
    number = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop():
        number += 1
        _publish(channel, "order.placed", {"order_id": number, "amount": 10 + number % 90})
        if number % 10 == 0:
            _publish(channel, "refund.requested", {"order_id": number})
        next_at += interval
        channel.connection.sleep(max(0.0, next_at - time.monotonic()))


def _consumer(queue: str, handle: Callable[[Any, Any, dict[str, Any]], None]) -> Callable[..., None]:
    def run(channel: Any, rate: float, stop: Callable[[], bool]) -> None:
        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            handle(ch, method, json.loads(body))

        channel.basic_qos(prefetch_count=50)
        channel.basic_consume(queue, on_message)
        while not stop():
            channel.connection.process_data_events(time_limit=0.2)

    return run


def _payments(ch: Any, method: Any, order: dict[str, Any]) -> None:
    if order["order_id"] % 7 == 0:  # card declined: rejected into the dead-letter exchange
        ch.basic_reject(method.delivery_tag, requeue=False)
        return
    _publish(ch, "payment.authorized", {"order_id": order["order_id"], "amount": order["amount"]})
    ch.basic_ack(method.delivery_tag)


def _inventory(ch: Any, method: Any, order: dict[str, Any]) -> None:
    _publish(ch, "stock.reserved", {"order_id": order["order_id"]})
    ch.basic_ack(method.delivery_tag)


def _shipping(ch: Any, method: Any, payment: dict[str, Any]) -> None:
    _publish(ch, "shipment.created", {"order_id": payment["order_id"]})
    ch.basic_ack(method.delivery_tag)


def _notifications(ch: Any, method: Any, event: dict[str, Any]) -> None:
    ch.basic_ack(method.delivery_tag)


SERVICES: dict[str, Callable[[Any, float, Callable[[], bool]], None]] = {
    "orders": run_orders,
    "payments": _consumer("demo.payments", _payments),
    "inventory": _consumer("demo.inventory", _inventory),
    "shipping": _consumer("demo.shipping", _shipping),
    "notifications": _consumer("demo.notifications", _notifications),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one service of the eventscope demo shop.")
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL of the collector")
    parser.add_argument("--rate", type=float, default=5.0, help="orders per second (orders only)")
    args = parser.parse_args(argv)

    stopping = False

    def request_stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    provider = setup(service=args.service, endpoint=args.endpoint, schedule_delay_millis=500)
    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    channel = instrument_channel(connection.channel())
    try:
        SERVICES[args.service](channel, args.rate, lambda: stopping)
    finally:
        if connection.is_open:
            connection.close()
        provider.force_flush()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
