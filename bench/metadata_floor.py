"""What the wire metadata alone costs a publisher: pika + broker, with no tracing code at all.

Publishes the same body three ways, interleaved over rounds: no properties (raw), one
``traceparent`` header (what opentelemetry-instrumentation-pika adds), and the properties
eventscope's metadata contract adds (``message_id``, ``timestamp``, ``type``, ``app_id``,
``x-correlation-id`` and ``traceparent``). The difference is a floor under eventscope's
publish overhead that no tracing optimisation can remove. Prints figures; asserts nothing.

    .venv/bin/python bench/metadata_floor.py [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import pika

_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    channel = connection.channel()
    queue = f"eventscope-bench-floor-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(queue)
    body = b"x" * 100

    def event_id() -> str:
        return str(uuid.UUID(int=random.getrandbits(128)))

    cases = {
        "raw (no properties)": lambda: channel.basic_publish("", queue, body),
        "traceparent header only (OTel pika)": lambda: channel.basic_publish(
            "", queue, body, pika.BasicProperties(headers={"traceparent": _TRACEPARENT})
        ),
        "eventscope's metadata, no tracing": lambda: channel.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(
                message_id=event_id(),
                timestamp=int(time.time()),
                type=queue,
                app_id="orders",
                headers={"x-correlation-id": event_id(), "traceparent": _TRACEPARENT},
            ),
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for round_number in range(args.rounds):
            for name, publish in cases.items():
                channel.queue_purge(queue)
                started = time.perf_counter()
                for _ in range(args.messages):
                    publish()
                results[name].append((time.perf_counter() - started) / args.messages * 1e6)
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    finally:
        channel.queue_delete(queue)
        connection.close()
    raw = statistics.median(results["raw (no properties)"])
    print(f"\n{'publish':40s} {'µs/msg':>8s} {'over raw':>9s}   (min-max)")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:40s} {median:8.1f} {median - raw:9.1f}   ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
