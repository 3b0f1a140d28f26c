"""The demo shop's exchange, queues and bindings, and the faults built into them.

Choreography (services react to each other's events): the gateway takes ``POST /orders``,
stores the order and an ``order.placed`` event in one local transaction (outbox) and a relay
publishes it with the stored trace context; payments (two competing workers on one queue)
and inventory react; payments' ``payment.authorized`` makes shipping publish
``shipment.created``; notifications takes ``shipment.created`` and ``stock.reserved``; an
auditor reads the business events from a stream queue, from its start.

Orchestration (a saga): ``POST /checkout`` publishes ``checkout.requested``; the checkout
orchestrator commands inventory (``stock.reserve``), then payments (``payment.authorize``),
and confirms — or, when the payment is declined, compensates (``stock.release``) and cancels.

Faults, each producing one kind of orphan:

* ``refund.requested`` — nothing is bound to it: **unroutable**;
* ``demo.analytics`` — bound to ``order.flagged`` (some orders), nobody reads it: **unconsumed**;
* ``demo.reminders`` — bound to ``order.reminder`` (some orders), a queue with a 3 s message
  TTL and no dead-letter exchange, nobody reads it: **expired**;
* payments rejects some orders without requeue into the dead-letter exchange:
  **dead-lettered** (with spans only: **failed**);
* notifications rejects some ``stock.reserved`` without requeue, and its queue has no
  dead-letter exchange: **failed**;
* the fraud check's handler crashes on some orders before acking (the worker lives
  on): **unacked**;
* inventory never answers some ``stock.reserve`` commands: a **stuck saga**.

How often each strikes is in ``services`` (``*_EVERY``): a few percent of the events in all.
"""

from __future__ import annotations

from typing import Any

EXCHANGE = "eventscope-demo.shop"
DEAD_LETTER_EXCHANGE = "eventscope-demo.dead-letters"
DEAD_LETTER_QUEUE = "demo.dead-letters"
AUDIT_STREAM = "demo.audit"
REPLIES = "demo.checkout-replies"

# queue -> (binding keys, arguments)
QUEUES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "demo.payments": (("order.placed",), {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}),
    "demo.inventory": (("order.placed",), {}),
    "demo.shipping": (("payment.authorized",), {}),
    "demo.notifications": (("shipment.created", "stock.reserved"), {}),
    "demo.fraud": (("order.placed",), {}),
    "demo.analytics": (("order.flagged",), {}),
    "demo.reminders": (("order.reminder",), {"x-message-ttl": 3000}),
    "demo.checkout": (("checkout.requested",), {}),
    "demo.inventory-commands": (("stock.reserve", "stock.release"), {}),
    "demo.payment-commands": (("payment.authorize",), {}),
    REPLIES: (("stock.reserve.*", "payment.authorize.*", "stock.release.*"), {}),
}
# the auditor keeps the business events, not the saga's commands, nor the unroutable refunds
STREAMS: dict[str, tuple[str, ...]] = {
    AUDIT_STREAM: ("order.*", "payment.authorized", "shipment.*", "stock.reserved", "checkout.*")
}


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
    for stream, keys in STREAMS.items():
        channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
        for key in keys:
            channel.queue_bind(stream, EXCHANGE, key)


def delete(channel: Any) -> None:
    """Remove what ``declare`` made."""
    for queue in (*QUEUES, *STREAMS, DEAD_LETTER_QUEUE):
        channel.queue_delete(queue)
    channel.exchange_delete(EXCHANGE)
    channel.exchange_delete(DEAD_LETTER_EXCHANGE)
