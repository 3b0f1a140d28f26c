"""One service of the contracts test shop, run as its own process (its own service.name):

    python shop_service.py publish SERVICE ENDPOINT EXCHANGE ROUTING_KEY MESSAGES_JSON
    python shop_service.py payments ENDPOINT EXCHANGE QUEUE COUNT
    python shop_service.py consume SERVICE ENDPOINT QUEUE COUNT [REJECT_MESSAGE_ID]

``publish`` sends ``[[message_id, body], ...]`` as JSON; ``payments`` acks each order and
announces ``payment.authorized`` (message id ``pay-<order id>``); ``consume`` acks (rejects
one message id without requeue). Consumers stop after COUNT messages or 30 s.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pika

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer import setup


def _channel(service: str, endpoint: str) -> tuple[object, pika.BlockingConnection, object]:
    provider = setup(service=service, endpoint=endpoint, schedule_delay_millis=50)
    vhost = os.environ["EVENTSCOPE_TEST_VHOST"]
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, vhost))
    return provider, connection, instrument_channel(connection.channel(), service=service)


def _consume(channel: object, connection: pika.BlockingConnection, queue: str, count: int, handle) -> None:
    seen = {"n": 0}

    def on_message(ch, method, properties, body):
        handle(ch, method, properties, body)
        seen["n"] += 1

    channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + 30
    while seen["n"] < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
    connection.process_data_events(time_limit=0.2)


def main(argv: list[str]) -> None:
    role = argv[0]
    if role == "publish":
        service, endpoint, exchange, routing_key, messages = argv[1:6]
        provider, connection, channel = _channel(service, endpoint)
        for message_id, body in json.loads(messages):
            properties = pika.BasicProperties(message_id=message_id, content_type="application/json")
            channel.basic_publish(exchange, routing_key, json.dumps(body).encode(), properties)
    elif role == "payments":
        endpoint, exchange, queue, count = argv[1:5]
        provider, connection, channel = _channel("payments", endpoint)

        def handle(ch, method, properties, body):
            order = json.loads(body)
            payment = {"order_id": order["order_id"], "payment_id": f"p-{order['order_id']}"}
            props = pika.BasicProperties(
                message_id=f"pay-{properties.message_id}", content_type="application/json"
            )
            ch.basic_publish(exchange, "payment.authorized", json.dumps(payment).encode(), props)
            ch.basic_ack(method.delivery_tag)

        _consume(channel, connection, queue, int(count), handle)
    else:
        service, endpoint, queue, count = argv[1:5]
        reject = argv[5] if len(argv) > 5 else None
        provider, connection, channel = _channel(service, endpoint)

        def handle(ch, method, properties, body):
            if properties.message_id == reject:
                ch.basic_reject(method.delivery_tag, requeue=False)
            else:
                ch.basic_ack(method.delivery_tag)

        _consume(channel, connection, queue, int(count), handle)
    connection.close()
    assert provider.force_flush(10_000)
    print(f"{role} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
