"""Alert evaluation cost per tick against the table size (issue 4); prints figures.

``python bench/alerts.py [--sizes 100000 1000000] [--per-tick 1000] [--ticks 10]``

For each size, a fresh store (the real schema, in a temporary directory) is filled with that
many events and as many acked deliveries through Arrow appends, event ids time-ordered as the
adapter's UUIDv7 are. Then the real writer and :class:`AlertEngine` run tick by tick on a
simulated clock, one second apart: before each tick ``--per-tick`` new events are committed
through the writer (``--orphan-share`` of them never consumed), and each tick evaluates the
events of the previous second, whose ``within`` (1 s) has just passed. Only :meth:`tick` is
timed. For contrast it also times one full-table orphan scan (``orphans_after(0)``), what a
naive evaluator would run per tick.

A second part measures the latency the issue bounds: from the end of an event's ``within`` to
a webhook receiver (127.0.0.1) getting its POST, with the engine's own thread ticking every
second on the real clock while ``--rate`` events/s are ingested.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa

from eventscope.tracer.alerts import rules
from eventscope.tracer.alerts.engine import AlertEngine
from eventscope.tracer.ingest.normaliser import Normalised
from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.store.duckdb_store import _DELIVERIES, _EVENTS, Store

_TS = pa.timestamp("us", tz="UTC")
_CHUNK = 200_000
_CONFIG = """
[alerts]
interval = "1s"
[[alerts.rules]]
name = "bench"
within = "1s"
"""


def _ids(start_ms: int, count: int, salt: int) -> list[str]:
    """UUIDv7-shaped ids: 48 bits of milliseconds first, so they sort by time."""
    return [f"{start_ms + n // 1000:012x}-7{salt:03x}-8{n % 1000:03x}-{n:012x}"[:36] for n in range(count)]


def _fill(store: Store, size: int, *, start_s: float) -> None:
    connection = store.reader()
    try:
        for offset in range(0, size, _CHUNK):
            count = min(_CHUNK, size - offset)
            ids = _ids(int(start_s * 1000) + offset // 1000, count, 1)
            times = pa.array([int((start_s + (offset + n) / 1000) * 1e6) for n in range(count)], _TS)
            events = pa.table(
                {
                    "event_id": ids,
                    "event_type": ["order.placed"] * count,
                    "exchange": ["shop"] * count,
                    "routing_key": ["order.placed"] * count,
                    "producer_service": ["orders"] * count,
                    "published_at": times,
                    "trace_id": ids,
                    "span_id": ids,
                    "causation_id": pa.nulls(count, pa.string()),
                    "correlation_id": pa.nulls(count, pa.string()),
                    "routed_queues": pa.array([["billing"]] * count, pa.list_(pa.string())),
                    "payload_size": [100] * count,
                    "source": ["both"] * count,
                },
                schema=_EVENTS,
            )
            deliveries = pa.table(
                {
                    "event_id": ids,
                    "queue": ["billing"] * count,
                    "consumer_service": ["billing"] * count,
                    "received_at": times,
                    "settled_at": times,
                    "outcome": ["ack"] * count,
                    "redelivered": [False] * count,
                    "error": pa.nulls(count, pa.string()),
                    "trace_id": ids,
                    "span_id": [f"d{n:015x}" for n in range(offset, offset + count)],
                    "source": ["span"] * count,
                    "record_id": pa.nulls(count, pa.string()),
                },
                schema=_DELIVERIES,
            )
            for table, data in (("events", events), ("deliveries", deliveries)):
                connection.register("_bench", data)
                connection.execute(f"INSERT INTO {table} SELECT * FROM _bench")
                connection.unregister("_bench")
        connection.execute("CHECKPOINT")
    finally:
        connection.close()


def _batch(at_s: float, count: int, orphan_share: float, salt: int) -> Normalised:
    """``count`` events published at ``at_s``, all but ``orphan_share`` acked, as span rows."""
    ids = _ids(int(at_s * 1000), count, salt)
    at_us = int(at_s * 1e6)
    batch = Normalised()
    consumed = int(count * (1 - orphan_share))
    for n, event_id in enumerate(ids):
        span = {
            "trace_id": event_id,
            "span_id": f"p{n:015x}",
            "parent_span_id": None,
            "name": "publish shop",
            "kind": "PRODUCER",
            "service": "orders",
            "start_time": at_us,
            "end_time": at_us + 100,
            "duration_ms": 0.1,
            "status": "UNSET",
            "attributes": "{}",
            "links": "[]",
            "event_id": event_id,
        }
        batch.spans.append(span)
        batch.events.append(
            {
                "event_id": event_id,
                "event_type": "order.placed",
                "exchange": "shop",
                "routing_key": "order.placed",
                "producer_service": "orders",
                "published_at": at_us,
                "trace_id": event_id,
                "span_id": span["span_id"],
                "causation_id": None,
                "correlation_id": None,
                "routed_queues": None,
                "payload_size": 100,
                "source": "span",
            }
        )
        if n < consumed:
            delivery = {**span, "span_id": f"c{n:015x}", "kind": "CONSUMER", "service": "billing"}
            batch.spans.append(delivery)
            batch.deliveries.append(
                {
                    "event_id": event_id,
                    "queue": "billing",
                    "consumer_service": "billing",
                    "received_at": at_us + 200,
                    "settled_at": at_us + 300,
                    "outcome": "ack",
                    "redelivered": False,
                    "error": None,
                    "trace_id": event_id,
                    "span_id": delivery["span_id"],
                    "source": "span",
                    "record_id": None,
                }
            )
    return batch


def tick_cost(size: int, *, per_tick: int, ticks: int, orphan_share: float) -> dict[str, Any]:
    config = rules.parse(_CONFIG)
    with tempfile.TemporaryDirectory(prefix="eventscope-bench-alerts-") as folder:
        store = Store.open(Path(folder) / "bench.duckdb", grace_s=0)
        writer = Writer(store).start()
        clock = {"now": time.time()}
        started = time.perf_counter()
        _fill(store, size, start_s=clock["now"] - size / 1000 - 60)
        fill_s = time.perf_counter() - started
        engine = AlertEngine(config, store=store, writer=writer, clock=lambda: clock["now"]).start(
            thread=False
        )
        costs, candidates, fired = [], [], []
        try:
            for n in range(ticks + 2):
                writer.submit(_batch(clock["now"], per_tick, orphan_share, salt=n + 2)).result(60)
                clock["now"] += 1.0
                stats = engine.tick()
                if n >= 2:  # the first ticks have nothing due yet / warm caches
                    costs.append(stats.seconds * 1000)
                    candidates.append(stats.candidates)
                    fired.append(stats.fired)
            reader = store.reader()
            scan = []
            for _ in range(3):
                began = time.perf_counter()
                reader.execute("SELECT count(*) FROM orphans_after(0)").fetchall()
                scan.append((time.perf_counter() - began) * 1000)
            reader.close()
        finally:
            engine.stop(timeout=1)
            writer.close()
            store.close()
    return {
        "stored_events": size,
        "fill_s": round(fill_s, 1),
        "new_per_tick": per_tick,
        "candidates_per_tick": statistics.median(candidates),
        "fired_per_tick": statistics.median(fired),
        "tick_ms_median": round(statistics.median(costs), 1),
        "tick_ms_max": round(max(costs), 1),
        "full_scan_ms": round(statistics.median(scan), 1),
    }


class _Receiver(BaseHTTPRequestHandler):
    arrivals: list[tuple[float, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        _Receiver.arrivals.append((time.time(), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def latency(*, rate: int, seconds: int, orphans_per_s: int) -> dict[str, Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    config = rules.parse(_CONFIG + f'[[alerts.sinks]]\ntype = "webhook"\nurl = "{url}"\n')
    _Receiver.arrivals = []
    published: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="eventscope-bench-alerts-") as folder:
        store = Store.open(Path(folder) / "latency.duckdb", grace_s=0)
        writer = Writer(store).start()
        engine = AlertEngine(config, store=store, writer=writer).start()
        try:
            step = 0.1  # ingest in 100 ms batches
            began = time.time()
            for n in range(int(seconds / step)):
                at = time.time()
                count = int(rate * step)
                share = orphans_per_s * step / count
                batch = _batch(at, count, share, salt=n + 2)
                for row in batch.events[int(count * (1 - share)) :]:
                    published[row["event_id"]] = at
                writer.submit(batch).result(30)
                time.sleep(max(0.0, began + (n + 1) * step - time.time()))
            deadline = time.time() + 5
            while len(_Receiver.arrivals) < len(published) and time.time() < deadline:
                time.sleep(0.05)
        finally:
            engine.stop(timeout=2)
            writer.close()
            store.close()
            server.shutdown()
    delays = [arrived - (published[body["event_id"]] + 1.0) for arrived, body in _Receiver.arrivals]
    delays.sort()
    return {
        "ingest_events_per_s": rate,
        "orphans": len(published),
        "webhooks": len(delays),
        "delay_after_within_s_median": round(statistics.median(delays), 3) if delays else None,
        "delay_after_within_s_p99": round(delays[int(len(delays) * 0.99) - 1], 3) if delays else None,
        "delay_after_within_s_max": round(max(delays), 3) if delays else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--per-tick", type=int, default=1000, help="new events per tick (default 1000)")
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--orphan-share", type=float, default=0.1, help="share never consumed (default 0.1)")
    parser.add_argument(
        "--rate", type=int, default=1000, help="latency part: events/s ingested (default 1000)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="latency part: how long (default 10)")
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args(argv)
    print(
        f"# alert evaluation per tick ({os.cpu_count()} cores, Python {sys.version.split()[0]})", flush=True
    )
    for size in args.sizes:
        figures = tick_cost(size, per_tick=args.per_tick, ticks=args.ticks, orphan_share=args.orphan_share)
        print(json.dumps(figures), flush=True)
    if not args.no_latency:
        print("# end of within → webhook received, engine ticking every 1 s on the real clock", flush=True)
        print(json.dumps(latency(rate=args.rate, seconds=args.seconds, orphans_per_s=10)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
