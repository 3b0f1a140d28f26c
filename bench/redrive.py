"""Redrive throughput (issue 14): eventscope's redrive vs a plain pika shovel, in one run.

``python bench/redrive.py [--messages 10000] [--rounds 3]``

In a vhost of its own (created with ``rabbitmqctl`` and deleted at the end) a dead-letter queue
(DLQ) is filled with ``--messages`` really dead-lettered messages (per-message TTL 0 into a
fanout DLX: ``x-death`` reason ``expired``, a message id each; not timed). Then, alternating
the order each round, the same DLQ is emptied into a target queue by:

* **shovel** — the baseline: plain pika, one ``BlockingConnection``, ``confirm_delivery``,
  consume with the same prefetch, publish each message with ``mandatory`` and ack it from the
  DLQ once confirmed (the same confirm-then-ack guarantee);
* **redrive** — :class:`RedriveService` as the collector runs it for ``POST /api/redrive``
  ``{"queue": DLQ, "to_queue": TARGET}``: event id, loop guard and redrive headers per message,
  then one ``redrives`` row per message committed to a real DuckDB store through the writer.

The target is purged between runs and the DLQ refilled. Prints messages/s per run, the
medians and redrive / shovel (target >= 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pika

from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.redrive.mover import _DEFAULT_PREFETCH
from eventscope.tracer.redrive.service import RedriveRequest, RedriveService
from eventscope.tracer.store.duckdb_store import Store

_HOST = "127.0.0.1"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True)


def _fill(
    channel: pika.adapters.blocking_connection.BlockingChannel, source: str, dlq: str, count: int
) -> None:
    for _ in range(count):
        channel.basic_publish(
            "",
            source,
            b'{"order":1,"lines":[1,2,3]}',
            pika.BasicProperties(message_id=str(uuid.uuid4()), expiration="0"),
        )
    deadline = time.monotonic() + 120
    while channel.queue_declare(dlq, passive=True).method.message_count < count:
        if time.monotonic() > deadline:
            sys.exit("the DLQ did not fill")
        time.sleep(0.05)


def _shovel(parameters: pika.URLParameters, dlq: str, target: str, count: int) -> float:
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_qos(prefetch_count=_DEFAULT_PREFETCH)
    moved = 0
    started = time.perf_counter()
    for method, properties, body in channel.consume(dlq, inactivity_timeout=2.0):
        if method is None:
            break
        channel.basic_publish("", target, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)
        moved += 1
        if moved == count:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    connection.close()
    assert moved == count, moved
    return count / elapsed


def _redrive(service: RedriveService, dlq: str, target: str, count: int) -> float:
    request = RedriveRequest(actor="bench", queue=dlq, to_queue=target)
    started = time.perf_counter()
    answer = service.run(request)
    elapsed = time.perf_counter() - started
    assert answer["sent"] == count, {k: answer[k] for k in ("sent", "refused", "failed")}
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    vhost = f"eventscope-bench-redrive-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"amqp://guest:guest@{_HOST}:5672/{quote(vhost, safe='')}"
        parameters = pika.URLParameters(url)
        connection = pika.BlockingConnection(parameters)
        channel = connection.channel()
        channel.exchange_declare("dlx", exchange_type="fanout")
        channel.queue_declare("dlq")
        channel.queue_bind("dlq", "dlx", "")
        channel.queue_declare("source", arguments={"x-dead-letter-exchange": "dlx"})
        channel.queue_declare("target")
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.duckdb", grace_s=0)
            writer = Writer(store).start()
            service = RedriveService(amqp_url=url, store=store, writer=writer)
            figures: dict[str, list[float]] = {"shovel": [], "redrive": []}
            for round_no in range(args.rounds):
                order = ["shovel", "redrive"] if round_no % 2 == 0 else ["redrive", "shovel"]
                for name in order:
                    _fill(channel, "source", "dlq", args.messages)
                    if name == "shovel":
                        rate = _shovel(parameters, "dlq", "target", args.messages)
                    else:
                        rate = _redrive(service, "dlq", "target", args.messages)
                    channel.queue_purge("target")
                    figures[name].append(rate)
                    print(
                        f"round {round_no + 1} {name:<8} {args.messages:,} messages: {rate:,.0f} msg/s",
                        flush=True,
                    )
            (rows,) = store.reader().execute("SELECT count(*) FROM redrives").fetchall()[0]
            writer.close()
            store.close()
        connection.close()
        shovel, redrive = statistics.median(figures["shovel"]), statistics.median(figures["redrive"])
        print(f"median shovel  {shovel:,.0f} msg/s")
        print(f"median redrive {redrive:,.0f} msg/s ({rows:,} redrives rows written)")
        print(f"redrive / shovel = {redrive / shovel:.2f} (target >= 0.8)")
    finally:
        _rabbitmqctl("delete_vhost", vhost)


if __name__ == "__main__":
    main()
