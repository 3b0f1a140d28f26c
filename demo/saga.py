"""The checkout saga's orchestrator: one service commands the others and reacts to replies.

Steps: reserve stock (inventory) → authorize payment (payments) → ``checkout.confirmed``.
A declined payment is compensated: release the stock, then ``checkout.cancelled``. The
orchestrator publishes ``checkout.step`` events as it goes, so a saga stuck at a step (a
command that was never answered) shows up as a flow whose last event is that step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika

from .topology import EXCHANGE, REPLIES

_JSON = pika.BasicProperties(content_type="application/json")


@dataclass
class Saga:
    checkout_id: int
    amount: int
    step: str


def _send(channel: Any, routing_key: str, payload: dict[str, Any]) -> None:
    channel.basic_publish(EXCHANGE, routing_key, json.dumps(payload).encode(), _JSON)


def run(channel: Any, stop: Callable[[], bool]) -> None:
    sagas: dict[int, Saga] = {}

    def step(saga: Saga, name: str) -> None:
        saga.step = name
        _send(channel, "checkout.step", {"checkout_id": saga.checkout_id, "step": name})

    def on_request(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        request = json.loads(body)
        saga = sagas[request["checkout_id"]] = Saga(request["checkout_id"], request["amount"], "started")
        step(saga, "reserve-stock")
        _send(ch, "stock.reserve", {"checkout_id": saga.checkout_id})
        ch.basic_ack(method.delivery_tag)

    def on_reply(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        reply = json.loads(body)
        saga = sagas.get(reply["checkout_id"])
        if saga is not None:
            if method.routing_key == "stock.reserve.ok":
                step(saga, "authorize-payment")
                _send(ch, "payment.authorize", {"checkout_id": saga.checkout_id, "amount": saga.amount})
            elif method.routing_key == "payment.authorize.ok":
                _send(ch, "checkout.confirmed", {"checkout_id": saga.checkout_id})
                del sagas[saga.checkout_id]
            elif method.routing_key == "payment.authorize.declined":
                step(saga, "compensate: release-stock")
                _send(ch, "stock.release", {"checkout_id": saga.checkout_id})
            elif method.routing_key == "stock.release.ok":
                _send(
                    ch, "checkout.cancelled", {"checkout_id": saga.checkout_id, "reason": "payment declined"}
                )
                del sagas[saga.checkout_id]
        ch.basic_ack(method.delivery_tag)

    channel.basic_qos(prefetch_count=50)
    channel.basic_consume("demo.checkout", on_request)
    channel.basic_consume(REPLIES, on_reply)
    while not stop():
        channel.connection.process_data_events(time_limit=0.2)
