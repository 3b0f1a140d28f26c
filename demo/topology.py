"""The demo shop's exchange, queues and bindings, and the faults built into them.

Healthy flow (choreography): orders publishes ``order.placed``; payments and inventory each
consume it from their own queue; payments publishes ``payment.authorized``, inventory
``stock.reserved``; shipping turns ``payment.authorized`` into ``shipment.created``;
notifications consumes ``shipment.created`` and ``stock.reserved``.

Faults, each producing one kind of orphan:

* ``refund.requested`` — nothing is bound to it: **unroutable**;
* ``demo.audit`` — bound to ``order.*`` but no service reads it: **unconsumed**;
* payments rejects every 7th order without requeue into the dead-letter exchange:
  **failed** / **dead-lettered**.
"""

from __future__ import annotations

from typing import Any

EXCHANGE = "eventscope-demo.shop"
DEAD_LETTER_EXCHANGE = "eventscope-demo.dead-letters"

# queue -> (binding keys, arguments)
QUEUES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "demo.payments": (("order.placed",), {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}),
    "demo.inventory": (("order.placed",), {}),
    "demo.shipping": (("payment.authorized",), {}),
    "demo.notifications": (("shipment.created", "stock.reserved"), {}),
    "demo.audit": (("order.*",), {}),
}
DEAD_LETTER_QUEUE = "demo.dead-letters"


def declare(channel: Any) -> None:
    """Declare everything the shop uses (idempotent)."""
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=False)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=False)
    channel.queue_declare(DEAD_LETTER_QUEUE)
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE)
    for queue, (keys, arguments) in QUEUES.items():
        channel.queue_declare(queue, arguments=arguments or None)
        for key in keys:
            channel.queue_bind(queue, EXCHANGE, key)


def delete(channel: Any) -> None:
    """Remove what ``declare`` made."""
    for queue in (*QUEUES, DEAD_LETTER_QUEUE):
        channel.queue_delete(queue)
    channel.exchange_delete(EXCHANGE)
    channel.exchange_delete(DEAD_LETTER_EXCHANGE)
