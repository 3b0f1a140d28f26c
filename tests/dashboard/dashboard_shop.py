"""A small shop for the dashboard's fixture database: one process per service, real adapters.

``python dashboard_shop.py ROLE ENDPOINT EXCHANGE PREFIX``. Every role handles a known number of
messages and exits, so the fixture's numbers are exact:

* orders publishes 12 ``order.placed``, 2 ``refund.requested`` (bound to nothing) and 3
  ``invoice.requested`` (into ``PREFIX.billing``, which nobody reads), then collects the 22
  replies (``payment.authorized`` and ``stock.reserved``) on ``PREFIX.orders``: it commands
  two services and hears back from both, an orchestrator;
* payments nacks (no requeue, no dead-letter exchange) orders 6 and 12 and authorizes the rest;
* inventory reserves stock for every order; shipping ships every authorized payment;
  notifications acknowledges every shipment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pika

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer import setup

ORDERS = 12
DECLINED = (6, 12)
REFUNDS = 2
INVOICES = 3
# queue suffix -> binding keys
QUEUES = {
    "payments": ("order.placed",),
    "inventory": ("order.placed",),
    "shipping": ("payment.authorized",),
    "notifications": ("shipment.created",),
    "orders": ("payment.authorized", "stock.reserved"),
    "billing": ("invoice.requested",),
}
EXPECTED = {
    "payments": ORDERS,
    "inventory": ORDERS,
    "shipping": ORDERS - len(DECLINED),
    "notifications": ORDERS - len(DECLINED),
    "orders": 2 * ORDERS - len(DECLINED),
}


def declare(channel: Any, exchange: str, prefix: str) -> None:
    channel.exchange_declare(exchange, exchange_type="topic", auto_delete=False)
    for suffix, keys in QUEUES.items():
        channel.queue_declare(f"{prefix}.{suffix}")
        for key in keys:
            channel.queue_bind(f"{prefix}.{suffix}", exchange, key)


def delete(channel: Any, exchange: str, prefix: str) -> None:
    for suffix in QUEUES:
        channel.queue_delete(f"{prefix}.{suffix}")
    channel.exchange_delete(exchange)


def main(role: str, endpoint: str, exchange: str, prefix: str) -> int:
    provider = setup(service=role, endpoint=endpoint, schedule_delay_millis=100)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, os.environ.get("EVENTSCOPE_TEST_VHOST", "/"))
    )
    channel = instrument_channel(connection.channel())
    json_props = pika.BasicProperties(content_type="application/json")

    def publish(key: str, body: dict[str, Any]) -> None:
        channel.basic_publish(exchange, key, json.dumps(body).encode(), json_props)

    if role == "orders":
        for number in range(1, ORDERS + 1):
            publish("order.placed", {"order_id": number})
        for number in range(1, REFUNDS + 1):
            publish("refund.requested", {"order_id": number})
        for number in range(1, INVOICES + 1):
            publish("invoice.requested", {"order_id": number})

    handled = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal handled
        order = json.loads(body)
        handled += 1
        if role == "payments":
            if order["order_id"] in DECLINED:
                ch.basic_nack(method.delivery_tag, requeue=False)
                return
            publish("payment.authorized", order)
        elif role == "inventory":
            publish("stock.reserved", order)
        elif role == "shipping":
            publish("shipment.created", order)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(f"{prefix}.{role}", on_message)
    deadline = time.monotonic() + 45
    while handled < EXPECTED[role] and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    connection.process_data_events(time_limit=0.2)
    connection.close()
    flushed = provider.force_flush(10_000)
    provider.shutdown()
    print(f"{role} handled {handled}", flush=True)
    return 0 if flushed and handled == EXPECTED[role] else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
