"""The shop's services. Each runs as ``python -m eventscope.demo.services NAME`` in its own process.

They use the public API exactly as a user's service would: ``setup()`` once, then
``instrument_channel`` on the channel. See ``topology`` for the flows and the faults.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer import setup

from . import gateway, saga
from .topology import AUDIT_STREAM, EXCHANGE

_JSON = pika.BasicProperties(content_type="application/json")
Stop = Callable[[], bool]

# How often each fault strikes (one in N orders, checkouts or messages). Every orphan reason
# shows within a minute at the default rate, and together they stay a few percent of the events,
# so that real faults stand out instead of the dashboard looking as if everything were broken.
DECLINED_EVERY = 41  # payments: dead-lettered
REJECTED_EVERY = 43  # notifications: failed
CRASHED_EVERY = 47  # fraud: unacked
LOST_EVERY = 23  # inventory: a stuck saga
UNROUTABLE_EVERY = 30  # customers: refund.requested, unroutable
UNCONSUMED_EVERY = 25  # customers: order.flagged, unconsumed
EXPIRED_EVERY = 25  # customers: order.reminder, expired


def _publish(channel: Any, routing_key: str, payload: dict[str, Any]) -> None:
    channel.basic_publish(EXCHANGE, routing_key, json.dumps(payload).encode(), _JSON)


def _serve(channel: Any, stop: Stop, consumers: dict[str, Callable[..., None]], prefetch: int = 50) -> None:
    """Consume each ``queue: handler(ch, method, body_as_json)`` until ``stop()``."""
    channel.basic_qos(prefetch_count=prefetch)
    for queue, handle in consumers.items():

        def on_message(ch: Any, method: Any, properties: Any, body: bytes, handle: Any = handle) -> None:
            handle(ch, method, json.loads(body))

        channel.basic_consume(queue, on_message)
    while not stop():
        channel.connection.process_data_events(time_limit=0.2)


# -- choreography ------------------------------------------------------------------------------
def payments(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    """Two of these compete for ``demo.payments``; they also answer the saga's commands."""

    def order_placed(ch: Any, method: Any, order: dict[str, Any]) -> None:
        if order["order_id"] % DECLINED_EVERY == 0:  # card declined: rejected into the dead-letter exchange
            ch.basic_reject(method.delivery_tag, requeue=False)
            return
        _publish(ch, "payment.authorized", {"order_id": order["order_id"], "amount": order["amount"]})
        ch.basic_ack(method.delivery_tag)

    def authorize(ch: Any, method: Any, command: dict[str, Any]) -> None:
        outcome = "declined" if command["amount"] > 80 else "ok"
        _publish(ch, f"payment.authorize.{outcome}", {"checkout_id": command["checkout_id"]})
        ch.basic_ack(method.delivery_tag)

    _serve(channel, stop, {"demo.payments": order_placed, "demo.payment-commands": authorize})


def inventory(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    def order_placed(ch: Any, method: Any, order: dict[str, Any]) -> None:
        _publish(ch, "stock.reserved", {"order_id": order["order_id"]})
        ch.basic_ack(method.delivery_tag)

    def command(ch: Any, method: Any, body: dict[str, Any]) -> None:
        if method.routing_key == "stock.reserve":
            if body["checkout_id"] % LOST_EVERY != 0:  # some commands are lost: a stuck saga
                _publish(ch, "stock.reserve.ok", {"checkout_id": body["checkout_id"]})
        else:
            _publish(ch, "stock.release.ok", {"checkout_id": body["checkout_id"]})
        ch.basic_ack(method.delivery_tag)

    _serve(channel, stop, {"demo.inventory": order_placed, "demo.inventory-commands": command})


def shipping(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    def authorized(ch: Any, method: Any, payment: dict[str, Any]) -> None:
        _publish(ch, "shipment.created", {"order_id": payment["order_id"]})
        ch.basic_ack(method.delivery_tag)

    _serve(channel, stop, {"demo.shipping": authorized})


def notifications(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    """Sends the mails; a template bug makes it reject some ``stock.reserved`` (no DLX: lost)."""

    def send(ch: Any, method: Any, event: dict[str, Any]) -> None:
        if method.routing_key == "stock.reserved" and event.get("order_id", 0) % REJECTED_EVERY == 0:
            ch.basic_reject(method.delivery_tag, requeue=False)
            return
        ch.basic_ack(method.delivery_tag)

    _serve(channel, stop, {"demo.notifications": send})


def fraud(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    """Checks every order; its handler crashes on some before acking (the worker lives on)."""

    def check(ch: Any, method: Any, order: dict[str, Any]) -> None:
        if order["order_id"] % CRASHED_EVERY == 0:
            return  # "crashed": the message stays delivered and unacknowledged
        ch.basic_ack(method.delivery_tag)

    _serve(channel, stop, {"demo.fraud": check}, prefetch=1000)


def auditor(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    """Reads the audit stream from its first event (streams keep what was read)."""
    channel.basic_qos(prefetch_count=100)
    channel.basic_consume(
        AUDIT_STREAM,
        lambda ch, method, properties, body: ch.basic_ack(method.delivery_tag),
        arguments={"x-stream-offset": "first"},
    )
    while not stop():
        channel.connection.process_data_events(time_limit=0.2)


# -- the edge: gateway, customers, saga ---------------------------------------------------------
def gateway_service(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    with tempfile.TemporaryDirectory(prefix="eventscope-demo-") as state:
        gateway.serve(channel, args.gateway_port, Path(state), stop)


def checkout(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    saga.run(channel, stop)


def customers(channel: Any, args: argparse.Namespace, stop: Stop) -> None:
    """Load: ``rate`` orders a second over HTTP; every 3rd also a checkout; now and then a refund
    request (bound to nothing), an order flagged for analytics (which nobody reads) and a
    reminder (into a queue whose TTL runs out).
    """
    base = f"http://127.0.0.1:{args.gateway_port}"
    number = 0
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    while not stop():
        number += 1
        amount = 10 + (number * 37) % 90
        _post(f"{base}/orders", {"amount": amount})
        if number % 3 == 0:
            _post(f"{base}/checkout", {"amount": amount})
        if number % UNROUTABLE_EVERY == 0:  # nothing is bound to refund.requested: unroutable
            _publish(channel, "refund.requested", {"order_id": number})
        if number % UNCONSUMED_EVERY == 0:  # into demo.analytics, which nobody reads: unconsumed
            _publish(channel, "order.flagged", {"order_id": number})
        if number % EXPIRED_EVERY == EXPIRED_EVERY // 2:  # into demo.reminders (TTL, no DLX): expired
            _publish(channel, "order.reminder", {"order_id": number})
        next_at += interval
        channel.connection.sleep(max(0.0, next_at - time.monotonic()))


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    except OSError as exc:  # the gateway may still be starting or already stopping
        print(f"customers: {url}: {exc}", file=sys.stderr)


SERVICES: dict[str, Callable[[Any, argparse.Namespace, Stop], None]] = {
    "gateway": gateway_service,
    "checkout": checkout,
    "payments": payments,
    "inventory": inventory,
    "shipping": shipping,
    "notifications": notifications,
    "fraud": fraud,
    "auditor": auditor,
    "customers": customers,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one service of the eventscope demo shop.")
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--name", help="service name to report (default: the service; e.g. payments-2)")
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL of the collector")
    parser.add_argument("--gateway-port", type=int, default=8080)
    parser.add_argument("--rate", type=float, default=5.0, help="orders per second (customers only)")
    args = parser.parse_args(argv)

    stopping = False

    def request_stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    provider = setup(service=args.name or args.service, endpoint=args.endpoint, schedule_delay_millis=500)
    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    channel = instrument_channel(connection.channel())
    try:
        SERVICES[args.service](channel, args, lambda: stopping)
    finally:
        if connection.is_open:
            connection.close()
        provider.force_flush()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
