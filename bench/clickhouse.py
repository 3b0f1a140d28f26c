"""The same questions on chDB (ClickHouse's engine) next to DuckDB, same machine, same data.

``python bench/clickhouse.py --events 100000 [--events 1000000]`` builds both stores from the
synthetic span batches of ``bench/collector.py`` (adapter-shaped PRODUCER/CONSUMER spans, a
depth-50 chain and a 1,000-event fan-out), then times: loading (rows/s through each store's
``append``), the orphans (whole, and the last 15 minutes), ``chain()`` of the depth-50 root and of
the fan-out root, and what an insert of a fixed 10k-span batch costs at this table size (the
derive cost: span_messages is filled by a materialized view, so it should not grow with the
table). Figures go to bench/README.md. chDB holds one data path per process: one run, one
directory; ``--baseline DIR`` runs another tree's eventscope (a directory holding an
``eventscope`` package) instead of the installed one, so two trees are compared by running
this script twice, interleaved.

Both stores answer the orphans from what their writer maintains: DuckDB's
``maintained_orphans(30)`` (``delivery_state``, what the ``orphans`` view and the dashboard
read) and chDB's ``orphans_after(grace_s = 30)`` (``derived_fates``). DuckDB's
``orphans_after(30)`` re-derives every event's fate on each call (the path for tables edited
by hand), so it is not the question to compare with.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--baseline" in sys.argv:  # before anything imports eventscope
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--baseline") + 1]).resolve()))

from collector import Dataset

from eventscope.tracer.ingest.recorder import Recorder
from eventscope.tracer.query import questions
from eventscope.tracer.store.clickhouse.engine import open_chdb
from eventscope.tracer.store.clickhouse.store import ClickHouseStore
from eventscope.tracer.store.duckdb_store import Store

_REPEAT = 3


def _note(figures: dict[str, float], key: str, value: float) -> None:
    figures[key] = value
    print(f"{key:32} {value:12.1f}", flush=True)


def _best(action: Any) -> float:
    times = []
    for _ in range(_REPEAT):
        t = time.perf_counter()
        action()
        times.append(time.perf_counter() - t)
    return min(times) * 1000


def _load(store: Any, data: Dataset) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process (all its threads), spans."""
    rows = 0
    t, cpu = time.perf_counter(), time.process_time()
    for batch in data.batches():
        store.append([batch])
        rows += len(batch.spans)
    return time.perf_counter() - t, time.process_time() - cpu, rows


def run(events: int, root: Path, *, reuse: bool = False) -> dict[str, float]:
    """The figures of one store size; with ``reuse``, the stores ``root`` holds from an earlier
    run (``--data``) are asked again, without loading (and without the extra insert)."""
    figures: dict[str, float] = {"events": events}
    _note(figures, "load_average_1m_at_start", os.getloadavg()[0])
    meta_path = root / "meta.json"  # one store size per --data directory (one chDB path per process)
    duck_path, ch_path = root / f"bench-{events}.duckdb", root / "chdb"
    if reuse:
        meta = json.loads(meta_path.read_text())
        duck = Store.open(duck_path)
        ch = ClickHouseStore(open_chdb(str(ch_path)), f"chdb://{ch_path}")
    else:
        duck_data, ch_data = Dataset(events), Dataset(events)
        duck = Store.open(duck_path)
        seconds, cpu, spans = _load(Recorder(duck), duck_data)  # as the writer appends: lineage first
        _note(figures, "duckdb_load_spans_per_s", spans / seconds)
        _note(figures, "duckdb_load_spans_per_cpu_s", spans / cpu)
        ch = ClickHouseStore(open_chdb(str(ch_path)), f"chdb://{ch_path}")
        tables = ch.engine.query_arrow(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree%'"
        ).to_pylist()
        for table in tables:  # one data path per process: a second --events starts from empty tables
            ch.engine.command(f"TRUNCATE TABLE {table['name']}")
        seconds, cpu, spans = _load(ch, ch_data)
        _note(figures, "chdb_load_spans_per_s", spans / seconds)
        _note(figures, "chdb_load_spans_per_cpu_s", spans / cpu)
        _note(figures, "chdb_derive_share_of_load_pct", 100 * ch.derived.seconds / seconds)
        meta = {"events": events, "depth_root": duck_data.depth_root, "fan_root": duck_data.fan_root}
        meta["now_us"] = duck_data.now_us
        meta_path.write_text(json.dumps(meta))
    con = duck.reader()
    q = ch.engine.query_arrow
    orphans = "SELECT count(*) FROM maintained_orphans(30)"
    ch_orphans = "SELECT count() FROM orphans_after(grace_s = 30)"
    # the data's last 15 minutes (a fixed instant, not now(): a long load, or a later --data
    # run, would otherwise ask about a window past the data's newest event)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(meta["now_us"] / 1e6 - 15 * 60))
    recent = f" WHERE published_at > TIMESTAMP '{since}'"
    ch_recent = f" WHERE published_at > toDateTime64('{since}', 6, 'UTC')"
    _note(figures, "duckdb_orphans_ms", _best(lambda: con.execute(orphans).fetchall()))
    _note(figures, "chdb_orphans_ms", _best(lambda: q(ch_orphans)))
    _note(figures, "duckdb_orphans_recent_ms", _best(lambda: con.execute(orphans + recent).fetchall()))
    _note(figures, "chdb_orphans_recent_ms", _best(lambda: q(ch_orphans + ch_recent)))
    # round 1's window, now() - 15 min: after a long load (or with --data) it holds few or no rows
    now15 = " WHERE published_at > now() - INTERVAL 15 MINUTE"
    _note(figures, "duckdb_orphans_now15_ms", _best(lambda: con.execute(orphans + now15).fetchall()))
    _note(figures, "chdb_orphans_now15_ms", _best(lambda: q(ch_orphans + now15)))
    # the orphans page's question (the first 1,000 rows, newest first), through the query layer
    ch_con = ch.reader()
    _note(figures, "duckdb_orphans_page_ms", _best(lambda: questions.orphans(con, limit=1000)))
    _note(figures, "chdb_orphans_page_ms", _best(lambda: questions.orphans(ch_con, limit=1000)))
    for name, root_id in (("depth50", meta["depth_root"]), ("fanout1000", meta["fan_root"])):
        _note(
            figures,
            f"duckdb_chain_{name}_ms",
            _best(lambda r=root_id: con.execute("SELECT count(*) FROM chain(?)", [r]).fetchall()),
        )
        _note(
            figures,
            f"chdb_chain_{name}_ms",
            _best(lambda r=root_id: q("SELECT count() FROM chain(event_id = {r:String})", {"r": r})),
        )
        # the chain page's question: the chain with each event's facts and delivery count
        _note(figures, f"duckdb_chain_page_{name}_ms", _best(lambda r=root_id: questions.chain(con, r)))
        _note(figures, f"chdb_chain_page_{name}_ms", _best(lambda r=root_id: questions.chain(ch_con, r)))
    if not reuse:
        extra_batches = list(Dataset(3400, seed=11).batches())[1:]  # ~10k spans
        derived_before = ch.derived.seconds
        t = time.perf_counter()
        for batch in extra_batches:
            ch.append([batch])
        _note(figures, "chdb_insert_10k_spans_ms", (time.perf_counter() - t) * 1000)
        _note(figures, "chdb_derive_10k_spans_ms", (ch.derived.seconds - derived_before) * 1000)
    _note(figures, "load_average_1m_at_end", os.getloadavg()[0])
    con.close()
    duck.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    global _REPEAT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, action="append", help="events per store (repeatable)")
    parser.add_argument(
        "--repeat", type=int, default=_REPEAT, help="timed runs per question (the best is kept)"
    )
    parser.add_argument("--baseline", help="a directory holding the eventscope package to run")
    parser.add_argument(
        "--data",
        help="keep the stores in this directory; when it already holds them (an earlier run with"
        " the same --events), ask them again without loading",
    )
    args = parser.parse_args(argv)
    import eventscope.tracer

    print(f"{'eventscope from':32} {Path(eventscope.tracer.__file__).resolve().parents[1]}", flush=True)
    _REPEAT = max(1, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        for events in args.events or [100_000]:
            root = Path(args.data or tmp)
            root.mkdir(parents=True, exist_ok=True)
            meta = root / "meta.json"
            reuse = meta.exists() and json.loads(meta.read_text())["events"] == events
            figures = run(events, root, reuse=reuse)
            ratios = [
                figures[f"chdb_{k}_ms"] / max(figures[f"duckdb_{k}_ms"], 1e-3)
                for k in ("orphans", "orphans_recent", "orphans_page", "chain_depth50", "chain_fanout1000")
            ]
            print(f"{'chdb/duckdb (median of questions)':32} {statistics.median(ratios):12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
