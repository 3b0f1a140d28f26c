"""Publish and consume throughput of one configuration, in a process of its own; prints JSON.

``python bench/throughput.py --config eventscope --queue NAME --messages N --endpoint URL``

What is timed, and why:

* **publish**: ``N`` ``basic_publish`` calls of a ~100-byte body (no properties, no publisher
  confirms) on a ``BlockingConnection``, then one round trip to the broker (a passive
  ``queue_declare``, so the publishes have left the client) and ``force_flush()`` of the
  span processor. The flush is inside the time: in a sustained load the exporter has to
  send every span, and the spans still queued at the end are work the publishes caused.
  ``loop_s`` (the publish calls alone) is reported too.
* **consume**: the ``N`` messages just published (by this same configuration, so a traced
  consumer sees the headers its own producer writes) are consumed by a ``basic_consume``
  callback on a new channel with ``prefetch_count=500`` that acks each with ``basic_ack``;
  timed from opening that channel to closing it after the ``N``-th ack, plus the flush of
  the spans (two channel round trips: well under 1 ms of the ~2-4 s measured).
* ``cpu_us_per_msg``: CPU time of the whole process (all threads, user + system) over the
  same interval, per message: less sensitive than wall time to what else the two cores run
  (the broker, the sink), and it counts the export thread's work.

First a warm-up: ``W`` messages published and consumed the same way, untimed. The
exported span count is read before and after each measurement: ``spans`` is how many arrived, so a
processor that dropped spans (full queue) shows as fewer spans per message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import configs

_BODY = (b'{"order_id": 4242, "sku": "WIDGET-7", "quantity": 3, "note": "' + b"x" * 100)[:99] + b"}"
_PREFETCH = 500


def _flush(provider: Any) -> None:
    if provider is not None:
        provider.force_flush()


def publish(channel: Any, queue: str, count: int) -> None:
    """``count`` publishes of the benchmark body to ``queue`` through the default exchange."""
    send = channel.basic_publish
    body = _BODY
    for _ in range(count):
        send("", queue, body)


def _sync(admin: Any, queue: str) -> int:
    """One round trip on the admin channel; the broker's message count for ``queue``."""
    return admin.queue_declare(queue, passive=True).method.message_count


def _wait_for_count(admin: Any, queue: str, count: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        ready = _sync(admin, queue)
        if ready >= count or time.monotonic() > deadline:
            return ready
        time.sleep(0.01)


def _consume(config: configs.Config, connection: Any, queue: str, count: int) -> None:
    """Consume and ack ``count`` messages with a fresh consumer channel of this configuration."""
    consumer = config.open_channel(connection)
    consumer.basic_qos(prefetch_count=_PREFETCH)
    seen = 0

    def on_message(channel: Any, method: Any, properties: Any, body: Any) -> None:
        nonlocal seen
        channel.basic_ack(method.delivery_tag)
        seen += 1
        if seen == count:
            channel.stop_consuming()

    consumer.basic_consume(queue, on_message)
    consumer.start_consuming()
    consumer.close()


class _Timer:
    """Wall and process CPU time of one measurement, and the spans exported during it."""

    def __init__(self, endpoint: str | None, messages: int) -> None:
        self.endpoint = endpoint
        self.messages = messages
        self.spans = configs.exported_spans(endpoint)
        self.cpu = time.process_time()
        self.start = time.perf_counter()
        self.loop_end = self.start

    def loop_done(self) -> None:
        self.loop_end = time.perf_counter()

    def result(self) -> dict[str, Any]:
        end = time.perf_counter()
        cpu = time.process_time() - self.cpu
        messages = self.messages
        return {
            "messages": messages,
            "loop_s": self.loop_end - self.start,
            "total_s": end - self.start,
            "msg_per_s": messages / (end - self.start),
            "loop_msg_per_s": messages / (self.loop_end - self.start),
            "cpu_us_per_msg": cpu / messages * 1e6,
            "spans": configs.exported_spans(self.endpoint) - self.spans,
        }


def measure(
    config: configs.Config,
    provider: Any,
    endpoint: str | None,
    queue: str,
    *,
    messages: int,
    warmup: int,
    consume: bool = True,
) -> dict[str, Any]:
    """Warm both paths up, then time ``messages`` publishes, then consuming those messages."""
    result: dict[str, Any] = {"config": config.name}
    connection = configs.connect()
    try:
        admin = connection.channel()
        producer = config.open_channel(connection)
        publish(producer, queue, warmup)
        _wait_for_count(admin, queue, warmup)
        if consume:
            _consume(config, connection, queue, warmup)
        _flush(provider)
        admin.queue_purge(queue)

        timer = _Timer(endpoint, messages)
        publish(producer, queue, messages)
        timer.loop_done()
        _sync(admin, queue)
        _flush(provider)
        result["publish"] = timer.result()
        result["publish"]["queued"] = _wait_for_count(admin, queue, messages)

        if consume:
            timer = _Timer(endpoint, messages)
            _consume(config, connection, queue, messages)
            timer.loop_done()
            _flush(provider)
            result["consume"] = timer.result()
        admin.queue_purge(queue)
    finally:
        connection.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, choices=[c.name for c in configs.CONFIGS])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--endpoint", help="base URL of bench/sink.py (traced configurations)")
    parser.add_argument("--skip-consume", action="store_true")
    args = parser.parse_args()

    config = configs.get(args.config)
    provider = config.prepare(args.endpoint)
    endpoint = args.endpoint if config.traced else None
    setup_connection = configs.connect()
    setup_connection.channel().queue_declare(args.queue)
    setup_connection.close()
    try:
        result = measure(
            config,
            provider,
            endpoint,
            args.queue,
            messages=args.messages,
            warmup=args.warmup,
            consume=not args.skip_consume,
        )
    finally:
        cleanup = configs.connect()
        cleanup.channel().queue_delete(args.queue)
        cleanup.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
