"""How long each dashboard page takes with a million events stored (issue 5: ≤ 2 s a page).

Builds (or reuses) a DuckDB file of synthesised shop traffic written into the real schema
(``Store.open`` creates it; rows go in as Arrow appends, not through the collector), then for
every page: the seconds its data functions take (the questions of ``queries``, asked through
``FileSource`` as the dashboard asks them, no cache), and the seconds a cold ``AppTest`` render
of the page takes (caches cleared first). Prints the figures; asserts nothing.

    .venv/bin/python bench/dashboard_pages.py        # 1M events in /tmp/eventscope-bench-1m.duckdb
    .venv/bin/python bench/dashboard_pages.py --events 200000 --db /tmp/small.duckdb --rebuild

The shop: each flow is order.placed (orders) → payments + inventory; inventory publishes
stock.reserved → notifications; payments publishes payment.authorized → shipping, which publishes
shipment.created → notifications; orders also publishes invoice.requested → billing. 2 % of
payments are declined (nack, no payment or shipment follows), 1 % of invoices are never consumed,
0.5 % of stock reservations are never acked. Flows start one after the other over the hour
before the build, and ids are UUIDv7-shaped (time first), as the writer would store them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_DB = str(Path(tempfile.gettempdir()) / "eventscope-bench-1m.duckdb")
_CHUNK_FLOWS = 50_000
_TS = pa.timestamp("us", tz="UTC")


def _ids(kind: int, flows: np.ndarray, started_us: np.ndarray) -> list[str]:
    """UUIDv7-shaped ids, as the adapters send: the flow's start (ms) first, so ids grow with
    time like the writer's rows; ``kind`` (0-4) and the flow number make them unique.
    """
    return [
        str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0x8 << 60) | (k << 3 | kind)))
        for ms, k in zip((started_us // 1000).tolist(), flows.tolist(), strict=True)
    ]


def _chunk(
    first: int, count: int, start_us: int, step_us: float, rng: np.random.Generator
) -> dict[str, pa.Table]:
    """Rows of flows ``first`` .. ``first + count`` as Arrow tables of the real schema. Flows
    start in order (``step_us`` apart on average), so rows are stored in time order as the
    writer stores them.
    """
    k = np.arange(first, first + count)
    t0 = start_us + (k * step_us).astype(np.int64) + rng.integers(0, max(1, int(step_us)), count)
    declined = rng.random(count) < 0.02
    unconsumed = rng.random(count) < 0.01
    unacked = rng.random(count) < 0.005
    ok = ~declined
    trace = [f"{x:032x}" for x in (k * 7919 + 12345).tolist()]
    order, stock, pay, ship, invoice = (_ids(kind, k, t0) for kind in range(5))
    wait = lambda: rng.gamma(2.0, 4_000.0, count).astype(np.int64)  # noqa: E731  µs in queue
    work = lambda: rng.gamma(2.0, 1_500.0, count).astype(np.int64)  # noqa: E731  µs processing

    events: dict[str, list[Any]] = {
        c: [] for c in ("event_id", "event_type", "producer", "at", "trace", "cause", "flow")
    }
    deliveries: dict[str, list[Any]] = {
        c: [] for c in ("event_id", "queue", "consumer", "received", "settled", "outcome", "trace", "span")
    }
    edges: dict[str, list[Any]] = {"cause_event_id": [], "effect_event_id": [], "via": [], "flow_id": []}
    flow_of = order  # the writer's flow id (tracer/store/flows.py): the flow's smallest event id

    def add_events(
        ids: list[str],
        kind: str,
        producer: str,
        at: np.ndarray,
        cause: list[str] | None,
        mask: np.ndarray | None = None,
    ) -> None:
        sel = np.ones(count, bool) if mask is None else mask
        idx = np.flatnonzero(sel)
        events["event_id"] += [ids[i] for i in idx]
        events["event_type"] += [kind] * len(idx)
        events["producer"] += [producer] * len(idx)
        events["at"] += at[idx].tolist()
        events["trace"] += [trace[i] for i in idx]
        events["cause"] += [None] * len(idx) if cause is None else [cause[i] for i in idx]
        events["flow"] += [order[i] for i in idx]
        if cause is not None:
            edges["cause_event_id"] += [cause[i] for i in idx]
            edges["effect_event_id"] += [ids[i] for i in idx]
            edges["via"] += ["causation_id"] * len(idx)
            edges["flow_id"] += [flow_of[i] for i in idx]

    def add_deliveries(
        ids: list[str],
        queue: str,
        consumer: str,
        published: np.ndarray,
        outcome: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> np.ndarray:
        sel = np.ones(count, bool) if mask is None else mask
        idx = np.flatnonzero(sel)
        received = published + wait()
        settled = received + work()
        deliveries["event_id"] += [ids[i] for i in idx]
        deliveries["queue"] += [queue] * len(idx)
        deliveries["consumer"] += [consumer] * len(idx)
        deliveries["received"] += received[idx].tolist()
        out = outcome[idx].tolist()
        deliveries["outcome"] += out
        deliveries["settled"] += [
            None if o is None else s for o, s in zip(out, settled[idx].tolist(), strict=True)
        ]
        deliveries["trace"] += [trace[i] for i in idx]
        base = first * 8 + len(deliveries["span"])
        deliveries["span"] += [f"d{base + n:015x}" for n in range(len(idx))]
        return settled

    acks = np.array(["ack"] * count, dtype=object)
    add_events(order, "order.placed", "orders", t0, None)
    pay_out = np.where(declined, "nack", "ack").astype(object)
    paid_at = add_deliveries(order, "bench.payments", "payments", t0, pay_out)
    stocked_at = add_deliveries(order, "bench.inventory", "inventory", t0, acks)
    add_events(stock, "stock.reserved", "inventory", stocked_at, order)
    add_deliveries(
        stock,
        "bench.notifications",
        "notifications",
        stocked_at,
        np.where(unacked, None, "ack").astype(object),
    )
    add_events(pay, "payment.authorized", "payments", paid_at, order, ok)
    shipped_at = add_deliveries(pay, "bench.shipping", "shipping", paid_at, acks, ok)
    add_events(ship, "shipment.created", "shipping", shipped_at, pay, ok)
    add_deliveries(ship, "bench.notifications", "notifications", shipped_at, acks, ok)
    invoiced_at = t0 + 50
    add_events(invoice, "invoice.requested", "orders", invoiced_at, None)
    add_deliveries(invoice, "bench.billing", "billing", invoiced_at, acks, ~unconsumed)

    n = len(events["event_id"])
    routing = {
        "order.placed": ["bench.payments", "bench.inventory"],
        "stock.reserved": ["bench.notifications"],
        "payment.authorized": ["bench.shipping"],
        "shipment.created": ["bench.notifications"],
        "invoice.requested": ["bench.billing"],
    }
    at = pa.array(events["at"], pa.int64()).cast(_TS)
    span_ids = [f"e{i + first * 8:015x}" for i in range(n)]
    event_table = pa.table(
        {
            "event_id": events["event_id"],
            "event_type": events["event_type"],
            "exchange": ["bench.shop"] * n,
            "routing_key": events["event_type"],
            "producer_service": events["producer"],
            "published_at": at,
            "trace_id": events["trace"],
            "span_id": span_ids,
            "causation_id": events["cause"],
            "correlation_id": [
                f if c is not None else e
                for e, c, f in zip(events["event_id"], events["cause"], events["flow"], strict=True)
            ],
            "routed_queues": pa.array([routing[t] for t in events["event_type"]], pa.list_(pa.string())),
            "payload_size": pa.array(rng.integers(40, 400, n), pa.int64()),
            "source": ["both"] * n,
        }
    )
    m = len(deliveries["event_id"])
    delivery_table = pa.table(
        {
            "event_id": deliveries["event_id"],
            "queue": deliveries["queue"],
            "consumer_service": deliveries["consumer"],
            "received_at": pa.array(deliveries["received"], pa.int64()).cast(_TS),
            "settled_at": pa.array(deliveries["settled"], pa.int64()).cast(_TS),
            "outcome": deliveries["outcome"],
            "redelivered": [False] * m,
            "error": [None if o != "nack" else "card declined" for o in deliveries["outcome"]],
            "trace_id": deliveries["trace"],
            "span_id": deliveries["span"],
        }
    )
    span_table = pa.table(
        {
            "trace_id": events["trace"],
            "span_id": span_ids,
            "parent_span_id": pa.nulls(n, pa.string()),
            "name": ["publish bench.shop"] * n,
            "kind": ["PRODUCER"] * n,
            "service": events["producer"],
            "start_time": at,
            "end_time": at,
            "duration_ms": pa.array(np.full(n, 0.05)),
            "status": ["UNSET"] * n,
            "attributes": ["{}"] * n,
            "links": ["[]"] * n,
            "event_id": events["event_id"],
        }
    )
    return {
        "events": event_table,
        "deliveries": delivery_table,
        "causal_edges": pa.table(edges),
        "spans": span_table,
    }


def build(path: Path, events: int) -> None:
    from eventscope.tracer.store import summaries
    from eventscope.tracer.store.duckdb_store import Store

    flows = max(1, round(events / 4.96))
    rng = np.random.default_rng(5)
    now_us = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1_000_000)
    span_us = 3600 * 1_000_000
    started = time.perf_counter()
    store = Store.open(path)
    try:
        writer = store.reader()
        for first in range(0, flows, _CHUNK_FLOWS):
            tables = _chunk(
                first, min(_CHUNK_FLOWS, flows - first), now_us - span_us - 60_000_000, span_us / flows, rng
            )
            for name, table in tables.items():
                columns = [c[0] for c in writer.execute(f"DESCRIBE {name}").fetchall()]
                writer.register("_bench_rows", table)
                selected = ", ".join(c if c in table.column_names else f"NULL AS {c}" for c in columns)
                if name == "deliveries":
                    selected = selected.replace("NULL AS source", "'span' AS source")
                writer.execute(f"INSERT INTO {name} SELECT {selected} FROM _bench_rows")
                writer.unregister("_bench_rows")
            print(f"  {min(first + _CHUNK_FLOWS, flows):,} / {flows:,} flows", flush=True)
        # what the writer keeps per batch, derived once for every row (as retention does)
        writer.execute("DELETE FROM delivery_state")
        writer.execute("INSERT INTO delivery_state SELECT * FROM delivery_fates")
        summaries.rebuild(writer)
        writer.execute("CHECKPOINT")
        writer.close()
    finally:
        store.close()
    print(f"built {path} in {time.perf_counter() - started:.0f} s")


# page → the questions it asks (as data.py asks them)
def _questions(source: Any, root: str) -> dict[str, list[tuple[str, Any]]]:
    return {
        "overview": [
            ("summary", lambda: source.ask("summary")),
            ("rates", lambda: source.ask("rates")),
            ("orphan_report", lambda: source.ask("orphan_report")),
            ("slowest", lambda: source.ask("slowest", limit=10)),
        ],
        "events": [
            ("facets", lambda: source.ask("facets")),
            ("events_page count", lambda: source.ask("events_page", limit=0, offset=0)),
            ("events_page", lambda: source.ask("events_page", limit=100, offset=0)),
            (
                "events_page filtered",
                lambda: source.ask(
                    "events_page", event_type="order.placed", outcome="nack", limit=100, offset=0
                ),
            ),
            ("events_page page 5000", lambda: source.ask("events_page", limit=100, offset=500_000)),
        ],
        "chain": [
            ("chain_detail", lambda: source.ask("chain_detail", event_id=root)),
            ("upstream", lambda: source.ask("upstream", event_id=root)),
        ],
        "orphans": [
            ("summary", lambda: source.ask("summary")),
            ("orphan_report", lambda: source.ask("orphan_report")),
            ("fanout_delivered", lambda: source.ask("fanout_delivered")),
            ("event_types", lambda: source.ask("event_types")),
        ],
        "topology": [
            ("summary", lambda: source.ask("summary")),
            ("topology", lambda: source.ask("topology")),
        ],
        "lag": [("summary", lambda: source.ask("summary")), ("lag", lambda: source.ask("lag", outliers=20))],
        "workflows": [
            ("summary", lambda: source.ask("summary")),
            ("workflows", lambda: source.ask("workflows", stuck_after_s=60.0, limit=200)),
        ],
        "sql": [
            ("schema", lambda: source.ask("schema")),
            (
                "example query",
                lambda: source.sql(
                    "SELECT reason, count(*) AS n FROM orphans GROUP BY reason ORDER BY n DESC", arrow=True
                ),
            ),
        ],
        "alerts": [("alerts", lambda: source.ask("alerts"))],
    }


def measure(
    path: Path, rounds: int, pages: list[str] | None = None, cpu_parts: dict[str, float] | None = None
) -> list[tuple[str, float, float, dict[str, float]]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from eventscope.tracer.query.client import open_source

    source = open_source(db=str(path))
    root = source.sql(
        "SELECT event_id FROM events WHERE event_type = 'order.placed' ORDER BY published_at DESC LIMIT 1"
    ).rows[0][0]
    results = []
    cpu_parts = {} if cpu_parts is None else cpu_parts
    os.environ["EVENTSCOPE_DB"] = str(path)
    app = str(ROOT / "dashboard" / "app.py")
    for page, asks in _questions(source, root).items():
        if pages and page not in pages:
            continue
        parts: dict[str, float] = {}
        for name, ask in asks:
            times, cpu = [], []
            for _ in range(rounds):
                started, started_cpu = time.perf_counter(), time.process_time()
                try:
                    ask()
                except Exception as exc:  # a question that fails (the 10 s limit) is a figure too
                    print(f"  {page}/{name} FAILED: {exc}", flush=True)
                    times.append(math.inf)
                    cpu.append(math.inf)
                    break
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
            parts[name] = statistics.median(times)
            cpu_parts[f"{page}/{name}"] = statistics.median(cpu)
        renders = []
        for _ in range(rounds):
            st.cache_data.clear()
            at = AppTest.from_file(app, default_timeout=120)
            if page == "chain":
                at.query_params["event"] = root
            at.switch_page(f"app_pages/{page}.py")
            started = time.perf_counter()
            at.run()
            if page == "sql":
                at.button[0].click().run()
            renders.append(time.perf_counter() - started)
            if at.exception:
                print(f"  {page} render FAILED: {at.exception[0].value}", flush=True)
                renders[-1] = math.inf
                break
        results.append((page, sum(parts.values()), statistics.median(renders), parts))
        print(
            f"  {page:<10} data {sum(parts.values()):6.2f} s   render {statistics.median(renders):6.2f} s",
            flush=True,
        )
    source.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default=_DEFAULT_DB)
    parser.add_argument("--rebuild", action="store_true", help="build the file again even if it exists")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many runs (default 3)")
    parser.add_argument("--pages", help="comma-separated pages to measure (default: all)")
    parser.add_argument("--json", help="write every figure (wall and CPU seconds) to this file")
    parser.add_argument("--build-only", action="store_true", help="build the file (if needed) and stop")
    args = parser.parse_args(argv)
    path = Path(args.db)
    if args.rebuild and path.exists():
        path.unlink()
    if not path.exists():
        print(f"building {path} with about {args.events:,} events")
        build(path, args.events)
    if args.build_only:
        return 0
    from eventscope.tracer.query.client import open_source

    source = open_source(db=str(path))
    counts = source.sql(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries), "
        "(SELECT count(*) FROM causal_edges), (SELECT count(*) FROM spans)"
    ).rows[0]
    source.close()
    print(
        f"{path}: {counts[0]:,} events, {counts[1]:,} deliveries, {counts[2]:,} causal edges, "
        f"{counts[3]:,} spans"
    )
    print(f"cores: {os.cpu_count()}; median of {args.rounds} runs; render = cold AppTest run of the page")
    cpu_parts: dict[str, float] = {}
    load_before = os.getloadavg()
    results = measure(path, args.rounds, args.pages.split(",") if args.pages else None, cpu_parts)
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "load": [load_before[0], os.getloadavg()[0]],
                    "pages": {p: {"data_s": d, "render_s": r, "parts": parts} for p, d, r, parts in results},
                    "cpu_s": cpu_parts,
                },
                indent=2,
            )
        )
    print()
    print("| page | data functions (s) | page render, cold (s) | ≤ 2 s | slowest question |")
    print("|---|---:|---:|---|---|")
    for page, data_s, render_s, parts in results:
        name, worst = max(parts.items(), key=lambda item: item[1])
        print(
            f"| {page} | {data_s:.2f} | {render_s:.2f} | {'yes' if render_s <= 2.0 else 'NO'} "
            f"| {name} {worst:.2f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
