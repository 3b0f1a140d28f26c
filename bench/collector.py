"""Collector and store figures (issue 3, "Performance"): printed, never asserted.

    .venv/bin/python bench/collector.py                  # ~1M events, about 4 minutes on 2 cores
    .venv/bin/python bench/collector.py --events 100000 --no-e2e
    .venv/bin/python bench/collector.py --json /tmp/collector.json

(a) builds a DuckDB file with ``--events`` events (2 deliveries and 3 spans each, flows of 5
    causally linked events, plus a depth-50 chain and a 1,000-node fan-out) through the real
    write path: :meth:`Store.append` with ``Normalised`` batches of the writer's group size,
    as the writer thread does; reports rows/s;
(b) times the queries the dashboard and API run: ``orphans`` over the whole table and over the
    last 15 minutes, ``chain()`` of depth 50 and of a 1,000-node fan-out, an event lookup;
(c) bytes on disk per event (after CHECKPOINT), and per table;
(d) end to end: ``eventscope collect`` in a subprocess on 127.0.0.1, ``--senders`` processes
    exporting pre-built ReadableSpans (publish + process pairs, the adapter's attributes) with
    the real ``OTLPSpanExporter``; committed spans/s read from the collector's /metrics.

Every figure is the median of ``--repeat`` runs; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any

import duckdb

from eventscope.tracer import contract as A
from eventscope.tracer.ingest.normaliser import Normalised, SpanNode
from eventscope.tracer.ingest.recorder import Recorder
from eventscope.tracer.query import questions as queries
from eventscope.tracer.store.duckdb_store import Store

TARGETS = {
    "e2e_spans_per_s": (">=", 30_000),
    "orphans_recent_ms": ("<=", 50),
    "orphans_all_ms": ("<=", 100),
    "chain_depth50_ms": ("<=", 25),
    "chain_fanout1000_ms": ("<=", 25),
    "bytes_per_event": ("<=", 300),
}
_GROUP_SPANS = 20_000  # the writer's default max_group_spans
_SPAN_SECONDS = 2 * 3600  # events are spread over the last two hours
_RECENT = "INTERVAL 15 MINUTE"
_TYPES = ["order.placed", "payment.captured", "stock.reserved", "invoice.requested", "shipment.sent"]


def _uuid7(ms: int, n: int) -> str:
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0x8 << 60) | (n & 0xFFFFFFFFFFFFFFF)))


def _producer_attrs(event_id: str, event_type: str, causation: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
        A.MESSAGING_OPERATION_TYPE: A.OP_SEND,
        A.MESSAGING_OPERATION_NAME: "publish",
        A.MESSAGING_DESTINATION_NAME: f"shop:{event_type}",
        A.EXCHANGE: "shop",
        A.MESSAGING_ROUTING_KEY: event_type,
        A.EVENT_TYPE: event_type,
        A.PRODUCER: "orders",
        A.MESSAGING_BODY_SIZE: 120,
        A.MESSAGING_MESSAGE_ID: event_id,
    }
    if causation is not None:
        attrs[A.CAUSATION_ID] = causation
        attrs[A.CORRELATION_ID] = causation
    return attrs


def _consumer_attrs(event_id: str, event_type: str, queue: str, outcome: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
        A.MESSAGING_OPERATION_TYPE: A.OP_PROCESS,
        A.MESSAGING_DESTINATION_NAME: f"shop:{event_type}:{queue}",
        A.MESSAGING_CONSUMER_GROUP: queue,
        A.QUEUE: queue,
        A.EXCHANGE: "shop",
        A.REDELIVERED: False,
        A.AUTO_ACK: False,
        A.MESSAGING_MESSAGE_ID: event_id,
    }
    if outcome is not None:
        attrs[A.SETTLE_OUTCOME] = outcome
    return attrs


def wait_healthy(port: int, attempts: int = 300) -> None:
    """Wait until the collector on ``port`` answers ``/healthz`` (0.1 s between attempts)."""
    for _ in range(attempts):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("collector did not start")


def message_spans(messages: int, resource: Any, scope: Any, now: int) -> list[Any]:
    """A publish and its consumer's process span per message, as the adapters record them."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from eventscope.tracer.sdk.propagation import new_event_id

    out = []
    for _ in range(messages):
        trace_id = random.getrandbits(128) or 1
        producer = SpanContext(trace_id, random.getrandbits(64) or 1, False, TraceFlags(1))
        consumer = SpanContext(trace_id, random.getrandbits(64) or 1, False, TraceFlags(1))
        event_id = new_event_id()
        event_type = random.choice(_TYPES)
        queue = f"{event_type}.billing"
        out.append(
            ReadableSpan(
                name="publish shop",
                context=producer,
                parent=None,
                resource=resource,
                attributes=_producer_attrs(event_id, event_type, None),
                kind=SpanKind.PRODUCER,
                start_time=now,
                end_time=now + 300_000,
                instrumentation_scope=scope,
            )
        )
        out.append(
            ReadableSpan(
                name=f"process {queue}",
                context=consumer,
                parent=producer,
                resource=resource,
                attributes=_consumer_attrs(event_id, event_type, queue, "ack"),
                kind=SpanKind.CONSUMER,
                start_time=now + 2_000_000,
                end_time=now + 3_000_000,
                instrumentation_scope=scope,
            )
        )
    return out


class Dataset:
    """Synthetic Normalised batches shaped like what the normaliser makes of the adapter's spans."""

    def __init__(self, events: int, *, seed: int = 7) -> None:
        self.n = events
        self.rng = random.Random(seed)
        self.now_us = int(time.time() * 1e6) - 60_000_000
        self.t0_us = self.now_us - _SPAN_SECONDS * 1_000_000
        self.step_us = _SPAN_SECONDS * 1_000_000 / max(events, 1)
        self.depth_root = _uuid7(self.t0_us // 1000, 0xD0000000)
        self.fan_root = _uuid7(self.t0_us // 1000, 0xF0000000)
        self.expected_orphans = 0
        self.middle: str | None = None  # a flow's root in the middle of the table (--queries-on)

    def batches(self):
        events_per_batch = _GROUP_SPANS // 3
        yield self._special()
        for start in range(0, self.n, events_per_batch):
            yield self._batch(range(start, min(self.n, start + events_per_batch)))

    def _special(self) -> Normalised:
        """The depth-50 chain and the 1,000-node fan-out (all consumed)."""
        out = Normalised()
        ids = [self.depth_root] + [_uuid7(self.t0_us // 1000, 0xD0000000 + i) for i in range(1, 51)]
        self.depth_leaf = ids[-1]
        for i, event_id in enumerate(ids):
            self._event(out, event_id, self.t0_us + i, ids[i - 1] if i else None, routed=True, fate="ok")
        self._event(out, self.fan_root, self.t0_us, None, routed=True, fate="ok")
        for i in range(1000):
            event_id = _uuid7(self.t0_us // 1000, 0xF0000001 + i)
            self._event(out, event_id, self.t0_us + 1 + i, self.fan_root, routed=True, fate="ok")
        return out

    def _batch(self, indices: range) -> Normalised:
        out = Normalised()
        rng = self.rng
        for i in indices:
            at = int(self.t0_us + i * self.step_us)
            event_id = _uuid7(at // 1000, i)
            cause = _uuid7(int(self.t0_us + (i - 1) * self.step_us) // 1000, i - 1) if i % 5 else None
            r = rng.random()
            fate = (
                "ok"
                if r < 0.97
                else "missing"
                if r < 0.98
                else "nack"
                if r < 0.985
                else "unacked"
                if r < 0.99
                else "unroutable"
                if r < 0.995
                else "spans_only"
            )
            self._event(out, event_id, at, cause, routed=fate != "spans_only", fate=fate)
        return out

    def _event(
        self, out: Normalised, event_id: str, at: int, cause: str | None, *, routed: bool, fate: str
    ) -> None:
        trace_id = os.urandom(16).hex()
        span_id = os.urandom(8).hex()
        event_type = _TYPES[hash(event_id) % len(_TYPES)]
        queues = [f"{event_type}.billing", f"{event_type}.audit"]
        attrs = _producer_attrs(event_id, event_type, cause)
        out.spans.append(
            _span_row(
                trace_id, span_id, None, "publish shop", "PRODUCER", "orders", at, at + 300, attrs, event_id
            )
        )
        out.nodes.append(SpanNode(trace_id, span_id, None, 4, event_id))
        out.events.append(
            {
                "event_id": event_id,
                "event_type": event_type,
                "exchange": "shop",
                "routing_key": event_type,
                "producer_service": "orders",
                "published_at": at,
                "trace_id": trace_id,
                "span_id": span_id,
                "causation_id": cause,
                "correlation_id": cause or event_id,
                "routed_queues": ([] if fate == "unroutable" else queues) if routed else None,
                "payload_size": 120,
                "source": "both" if routed else "span",
            }
        )
        if cause is not None:
            out.edges.append((cause, event_id, "causation_id"))
        if fate in ("unroutable", "spans_only"):
            self.expected_orphans += 1
            return
        for n, queue in enumerate(queues):
            outcome: str | None = "ack"
            if n == 1 and fate == "missing":
                self.expected_orphans += 1
                continue
            if n == 1 and fate == "nack":
                outcome = "nack"
                self.expected_orphans += 1
            if n == 1 and fate == "unacked":
                outcome = None
                self.expected_orphans += 1
            consumer_id = os.urandom(8).hex()
            received = at + 2000 + n * 500
            out.spans.append(
                _span_row(
                    trace_id,
                    consumer_id,
                    span_id,
                    f"process {queue}",
                    "CONSUMER",
                    queue.split(".")[-1],
                    received,
                    received + 1500,
                    _consumer_attrs(event_id, event_type, queue, outcome),
                    event_id,
                )
            )
            out.nodes.append(SpanNode(trace_id, consumer_id, span_id, 5, event_id))
            out.deliveries.append(
                {
                    "event_id": event_id,
                    "queue": queue,
                    "consumer_service": queue.split(".")[-1],
                    "received_at": received,
                    "settled_at": received + 1500 if outcome else None,
                    "outcome": outcome,
                    "redelivered": False,
                    "error": None,
                    "trace_id": trace_id,
                    "span_id": consumer_id,
                    "source": "span",
                    "record_id": None,
                }
            )


def _span_row(trace_id, span_id, parent, name, kind, service, start, end, attrs, event_id) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kind,
        "service": service,
        "start_time": start,
        "end_time": end,
        "duration_ms": (end - start) / 1000,
        "status": "UNSET",
        "attributes": json.dumps(attrs, separators=(",", ":")),
        "links": None,
        "event_id": event_id,
    }


# -- (a) ingest through the store ----------------------------------------------------------------
def build(path: Path, events: int) -> tuple[dict[str, float], Dataset]:
    data = Dataset(events)
    store = Store.open(path)
    recorder = Recorder(store)  # as the writer appends: lineage resolved first
    build_s = append_s = 0.0
    rows = spans = 0
    try:
        t = time.perf_counter()
        for batch in data.batches():
            t1 = time.perf_counter()
            build_s += t1 - t
            recorder.append([batch])
            t = time.perf_counter()
            append_s += t - t1
            spans += len(batch.spans)
            rows += len(batch.spans) + len(batch.events) + len(batch.deliveries) + len(batch.edges)
    finally:
        store.close()
    return {
        "ingest_rows_per_s": rows / append_s,
        "ingest_spans_per_s": spans / append_s,
        "ingest_append_s": append_s,
        "ingest_build_python_s": build_s,
        "spans": spans,
    }, data


# -- (b) queries ----------------------------------------------------------------------------------
_FULL_WALK = """
WITH RECURSIVE walk(event_id, depth, cause_event_id) AS (
    SELECT CAST(? AS VARCHAR), 0, NULL::VARCHAR
    UNION
    SELECT ce.effect_event_id, walk.depth + 1, ce.cause_event_id
    FROM walk JOIN causal_edges ce ON ce.cause_event_id = walk.event_id
    WHERE walk.depth < 256
)
SELECT event_id, min(depth) AS depth, arg_min(cause_event_id, depth) AS cause_event_id
FROM walk GROUP BY event_id ORDER BY depth, event_id
"""


def _timed(
    connection: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, repeat: int = 5
) -> tuple[float, int]:
    times, n = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = connection.execute(sql, params or []).to_arrow_table().num_rows
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), n


def time_queries(path: Path, data: Dataset, repeat: int) -> dict[str, float]:
    store = Store.open(path)  # as the collector serves them: the writer's process, a reader cursor
    try:
        reader = store.reader()
        out: dict[str, float] = {}
        out["orphans_all_ms"], out["orphans_all_rows"] = _timed(
            reader, "SELECT * FROM orphans", repeat=repeat
        )
        out["orphans_recent_ms"], out["orphans_recent_rows"] = _timed(
            reader, f"SELECT * FROM orphans WHERE published_at >= now() - {_RECENT}", repeat=repeat
        )
        out["orphan_counts_ms"], _ = _timed(
            reader, "SELECT reason, count(*) FROM orphans GROUP BY reason", repeat=repeat
        )
        t = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            queries.orphans(reader, limit=1000)
            t.append((time.perf_counter() - t0) * 1000)
        out["api_orphans_1000_ms"] = statistics.median(t)
        out["chain_depth50_ms"], out["chain_depth50_rows"] = _timed(
            reader, "SELECT * FROM chain(?)", [data.depth_root], repeat=repeat
        )
        out["chain_fanout1000_ms"], out["chain_fanout1000_rows"] = _timed(
            reader, "SELECT * FROM chain(?)", [data.fan_root], repeat=repeat
        )
        # the walk over every edge that chain() was before flow ids (schema v5): the baseline
        out["chain_full_walk_ms"], _ = _timed(reader, _FULL_WALK, [data.fan_root], repeat=repeat)
        middle = (data.n // 2) // 5 * 5  # the first event of a flow of 5 in the middle of the table
        out["chain_flow_of_5_ms"], out["chain_flow_of_5_rows"] = _timed(
            reader,
            "SELECT * FROM chain(?)",
            [data.middle or _uuid7(int(data.t0_us + middle * data.step_us) // 1000, middle)],
            repeat=repeat,
        )
        t = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            found_upstream = queries.upstream(reader, data.depth_leaf)
            t.append((time.perf_counter() - t0) * 1000)
        out["upstream_depth50_ms"], out["upstream_depth50_rows"] = statistics.median(t), len(found_upstream)
        probe = data.middle or _uuid7(int(data.t0_us + (data.n // 2) * data.step_us) // 1000, data.n // 2)
        t = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            found = queries.event(reader, probe)
            t.append((time.perf_counter() - t0) * 1000)
        out["event_lookup_ms"] = statistics.median(t)
        out["event_lookup_found"] = found is not None
        reader.close()
    finally:
        store.close()
    return out


def queries_on(path: Path, repeat: int, json_path: str | None) -> None:
    """(b) and (c) on an existing store: append the special flows, then time and measure."""
    data = Dataset(0)
    store = Store.open(path)
    try:
        Recorder(store).append([data._special()])
        reader = store.reader()
        events, middle = reader.execute(
            "SELECT count(*), (SELECT cause_event_id FROM causal_edges "
            "ORDER BY cause_event_id LIMIT 1 OFFSET (SELECT count(*) // 2 FROM causal_edges)) FROM events"
        ).fetchall()[0]
        reader.close()
    finally:
        store.close()
    data.middle = middle
    figures: dict[str, Any] = {"load_before": os.getloadavg(), "events": events}
    figures.update(disk(path, events))
    figures.update(time_queries(path, data, repeat))
    figures["load_after"] = os.getloadavg()
    for key, value in figures.items():
        print(f"  {key:<28} {value}")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2, default=str))


# -- (c) bytes on disk ----------------------------------------------------------------------------
def disk(path: Path, events: int) -> dict[str, Any]:
    with duckdb.connect(str(path)) as connection:
        connection.execute("CHECKPOINT")
        block = connection.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]
        tables = [
            r[0]
            for r in connection.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
            ).fetchall()
        ]
        per_table = {}
        for table in tables:
            (blocks,) = connection.execute(
                f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0"
            ).fetchall()[0]
            per_table[table] = blocks * block
    size = path.stat().st_size
    wal = Path(str(path) + ".wal")
    return {
        "file_bytes": size + (wal.stat().st_size if wal.exists() else 0),
        "bytes_per_event": size / events,
        "table_bytes": {k: v for k, v in sorted(per_table.items(), key=lambda kv: -kv[1]) if v},
    }


# -- (d) end to end -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    match = re.search(rf"^eventscope_{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sender(
    port: int, seconds: float, batch: int, index: int, result: Any, exporter_kind: str, pool: int = 100
) -> None:
    """One sender process: the real OTLPSpanExporter posting pre-built publish + process spans.

    Every span is exported once (a replay would be ignored by the store, and cheap): a pool of
    batches is built before the window, and more on the fly if the pool runs out. Event ids
    are UUIDv7, as the adapter's. ``exporter_kind`` ``sdk`` is the SDK's exporter as it is;
    ``lean`` the same exporter with eventscope's encoder (``LeanOtlpSpanExporter``), which is
    what ``eventscope.tracer.setup()`` installs.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    resource = Resource.create({"service.name": f"bench-{index}"})
    scope = InstrumentationScope("eventscope.tracer", "0")
    from eventscope.tracer.sdk.otlp_encoder import LeanOtlpSpanExporter

    kind = LeanOtlpSpanExporter if exporter_kind == "lean" else OTLPSpanExporter
    exporter = kind(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=60)

    def spans() -> list[ReadableSpan]:
        return message_spans(batch // 2, resource, scope, time.time_ns())

    prepared = [spans() for _ in range(pool)]
    sent = failed = 0
    cpu = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if exporter.export(prepared.pop() if prepared else spans()) is SpanExportResult.SUCCESS:
            sent += batch
        else:
            failed += 1
    cpu = time.process_time() - cpu
    exporter.shutdown()
    result.put((sent, failed, cpu))


def end_to_end(senders: int, seconds: float, batch: int, exporter: str = "sdk") -> dict[str, float]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "e2e.duckdb"
        collector = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "eventscope"),
                "--log-level",
                "warning",
                "collect",
                "--db",
                str(db),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_healthy(port)
            ctx = mp.get_context("spawn")
            results = ctx.Queue()
            procs = [
                ctx.Process(target=_sender, args=(port, seconds + 8, batch, i, results, exporter))
                for i in range(senders)
            ]
            for p in procs:
                p.start()
            time.sleep(8)  # senders import, build their pool of spans and warm up
            a0, t0, c0 = _metric(port, "spans_accepted_total"), time.monotonic(), _cpu_s(collector.pid)
            time.sleep(seconds)
            a1, t1, c1 = _metric(port, "spans_accepted_total"), time.monotonic(), _cpu_s(collector.pid)
            sent = failed = 0
            sender_cpu = 0.0
            for _ in procs:
                s, f, c = results.get(timeout=120)
                sent += s
                failed += f
                sender_cpu += c
            for p in procs:
                p.join(30)
            refused = _metric(port, "requests_refused_total")
        finally:
            collector.terminate()
            try:
                collector.wait(30)
            except subprocess.TimeoutExpired:
                collector.kill()
    return {
        "e2e_spans_per_s": (a1 - a0) / (t1 - t0),
        "e2e_collector_cpu": (c1 - c0) / (t1 - t0),  # cores the collector used
        "e2e_collector_cpu_us_per_span": (c1 - c0) / max(a1 - a0, 1) * 1e6,
        "e2e_sender_cpu_us_per_span": sender_cpu / max(sent, 1) * 1e6,  # building + exporting
        "e2e_export_failures": failed,
        "e2e_refused_503": refused,
    }


# -- report ---------------------------------------------------------------------------------------
def _verdict(key: str, value: float) -> str:
    op, target = TARGETS[key]
    ok = value >= target if op == ">=" else value <= target
    return f"{'PASS' if ok else 'MISS'} ({op} {target:,})"


def main() -> None:
    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="query timings: median of this many runs")
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="end-to-end measurement window")
    parser.add_argument("--e2e-rounds", type=int, default=3)
    parser.add_argument(
        "--batch", type=int, default=512, help="spans per export (BatchSpanProcessor's default)"
    )
    parser.add_argument(
        "--exporter",
        choices=("sdk", "lean"),
        default="sdk",
        help="end to end: the SDK's OTLPSpanExporter, or it with eventscope's encoder (what setup() uses)",
    )
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--e2e-only", action="store_true", help="only (d): no store build, queries or disk")
    parser.add_argument("--db", help="keep the built database here (default: a temp dir)")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument(
        "--queries-on",
        help="(b) and (c) on this existing store instead of building one (e.g. a copy of the 10M file "
        "of bench/dashboard_pages.py): the depth-50 chain and the fan-out are appended to it first, "
        "through Store.append; the flow of the middle is that file's middle root event",
    )
    args = parser.parse_args()
    if args.queries_on:
        queries_on(Path(args.queries_on), args.repeat, args.json)
        return

    figures: dict[str, Any] = {"load_before": os.getloadavg()}
    if not args.e2e_only:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(args.db) if args.db else Path(tmp) / "bench.duckdb"
            if path.exists():
                path.unlink()
            print(f"building {args.events:,} events ...", flush=True)
            ingest, data = build(path, args.events)
            figures.update(ingest)
            figures["expected_orphan_events"] = data.expected_orphans
            print(
                f"  {ingest['ingest_rows_per_s']:,.0f} rows/s ({ingest['ingest_spans_per_s']:,.0f} spans/s)"
                f" in Store.append; {ingest['ingest_build_python_s']:.1f} s building rows in Python",
                flush=True,
            )
            figures.update(disk(path, args.events))
            figures.update(time_queries(path, data, args.repeat))
    if not args.no_e2e:
        rates = []
        figures["e2e_exporter"] = args.exporter
        figures["e2e_details"] = []
        for r in range(args.e2e_rounds):
            result = end_to_end(args.senders, args.seconds, args.batch, args.exporter)
            rates.append(result["e2e_spans_per_s"])
            figures["e2e_details"].append(result)
            print(
                f"  e2e round {r + 1}: {result['e2e_spans_per_s']:,.0f} spans/s, collector "
                f"{result['e2e_collector_cpu']:.2f} cores = "
                f"{result['e2e_collector_cpu_us_per_span']:.0f} µs CPU/span; senders "
                f"{result['e2e_sender_cpu_us_per_span']:.0f} µs CPU/span "
                f"(export failures {result['e2e_export_failures']}, 503s {result['e2e_refused_503']:g})",
                flush=True,
            )
        figures["e2e_rounds"] = rates
        figures["e2e_spans_per_s"] = statistics.median(rates)
    figures["load_after"] = os.getloadavg()

    print(
        f"\nload average before {figures['load_before'][0]:.2f}, after {figures['load_after'][0]:.2f} "
        f"(2 cores shared)"
    )
    if "spans" in figures:
        print(
            f"events {args.events:,}, spans {figures['spans']:,}, orphan rows whole table "
            f"{figures['orphans_all_rows']:,}, last 15 min {figures['orphans_recent_rows']:,}"
        )
    for key, label, unit in [
        ("e2e_spans_per_s", "end-to-end spans/s (OTLP/HTTP, 200 after commit)", ",.0f"),
        ("orphans_recent_ms", "orphans, last 15 minutes (ms)", ".1f"),
        ("orphans_all_ms", "orphans, whole table (ms)", ".1f"),
        ("chain_depth50_ms", "chain() depth 50 (ms)", ".1f"),
        ("chain_fanout1000_ms", "chain() 1,000-node fan-out (ms)", ".1f"),
        ("bytes_per_event", "bytes on disk per event", ",.0f"),
    ]:
        if key in figures:
            print(f"  {label:<52} {figures[key]:>10{unit}}  {_verdict(key, figures[key])}")
    for key in (
        "chain_full_walk_ms",
        "chain_flow_of_5_ms",
        "upstream_depth50_ms",
        "orphan_counts_ms",
        "api_orphans_1000_ms",
        "event_lookup_ms",
    ):
        if key in figures:
            print(f"  {key:<52} {figures[key]:>10.1f}")
    if "table_bytes" in figures:
        print(
            "  bytes by table: "
            + ", ".join(f"{k} {v / args.events:.0f}" for k, v in figures["table_bytes"].items())
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
