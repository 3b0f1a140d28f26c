"""The per-batch derive: after a batch's rows are inserted, what the batch touched is derived
again into ``derived_events``, ``derived_deliveries``, ``derived_fates`` (what the orphan
views read) and ``derived_edges``, so that the questions read tables instead of deriving the
whole history on every query.

Why per batch and not per row: a delivery is paired with its firehose record, an event's span
and broker rows merge, and parentage needs a trace's spans, which arrive in any order and in
any batch. So each batch derives again, from the tables, only the events and traces it
touched: the work follows the batch's size, not the table's (bench/README.md measures it).
Every write carries a version (newer derives win, ReplacingMergeTree), so running a derive
twice, or two instances deriving overlapping batches, gives the same rows.

The per-span part (what a span says) is already done by materialized views on insert
(derive.sql), and so are the causation-id edges; the last step labels the touched events'
edges with their flows (:mod:`.flows`), which ``chain()`` reads.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import pyarrow as pa

from eventscope.tracer.store.clickhouse import flows
from eventscope.tracer.store.clickhouse.engine import Engine
from eventscope.tracer.store.clickhouse.lease import Lease

__all__ = ["DeriveCounts", "Follower", "refresh"]

logger = logging.getLogger(__name__)


def _named_statements() -> dict[str, str]:
    """refresh.sql's statements by their ``-- @name`` line."""
    text = resources.files("eventscope.tracer.store.clickhouse").joinpath("sql/refresh.sql").read_text()
    statements: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines() + ["-- @end"]:
        stripped = line.strip()
        if stripped.startswith("-- @"):
            if name is not None:
                statements[name] = "\n".join(lines).strip().rstrip(";")
            name = stripped[4:].split(":", 1)[0].strip()
            lines = []
        elif not stripped.startswith("--"):
            lines.append(line)
    return statements


_STATEMENTS = _named_statements()


@dataclass
class DeriveCounts:
    """What the derives did since open, for /metrics and the bench."""

    batches: int = 0
    seconds: float = 0.0


_KEYS = pa.schema([("derive_id", pa.uint64()), ("kind", pa.string()), ("id", pa.string())])


def refresh(
    engine: Engine,
    *,
    traces: Iterable[str] = (),
    events: Iterable[str] = (),
    counts: DeriveCounts | None = None,
) -> None:
    """Derive again what a batch touched: the spans of ``traces`` and the broker rows of
    ``events`` (their event ids)."""
    started = time.perf_counter()
    trace_ids = sorted({t for t in traces if t})
    event_ids = sorted({e for e in events if e})
    if not trace_ids and not event_ids:
        return
    derive_id = secrets.randbits(63)
    keys = [("trace", t) for t in trace_ids] + [("event", e) for e in event_ids]
    engine.insert_arrow(
        "derive_keys",
        pa.table(
            {
                "derive_id": [derive_id] * len(keys),
                "kind": [kind for kind, _ in keys],
                "id": [key for _, key in keys],
            },
            schema=_KEYS,
        ),
    )
    scope = {"derive": derive_id}
    if trace_ids:
        engine.command(_STATEMENTS["spans"], scope)
        engine.command(_STATEMENTS["touched"], scope)
        engine.command(_STATEMENTS["parentage"], scope)
    engine.command(_STATEMENTS["events"], {**scope, "version": time.time_ns()})
    engine.command(_STATEMENTS["scope"], scope)
    engine.command(_STATEMENTS["resolve"], scope)
    engine.command(_STATEMENTS["deliveries"], {**scope, "version": time.time_ns()})
    engine.command(_STATEMENTS["fates"], {**scope, "version": time.time_ns()})
    flows.label(engine, derive_id)
    if counts is not None:
        counts.batches += 1
        counts.seconds += time.perf_counter() - started


_PENDING = """
SELECT trace_id, toUnixTimestamp64Micro(max(inserted_at)) AS at
FROM span_tree
WHERE inserted_at > fromUnixTimestamp64Micro({since:Int64}, 'UTC')
GROUP BY trace_id
ORDER BY at
LIMIT {limit:UInt64}
"""
_WATERMARK = "derive.watermark_us"
_DEFAULT_FOLLOW_S = 2.0
_DEFAULT_OVERLAP_S = 5.0
_DEFAULT_MAX_TRACES = 20_000


class Follower:
    """Derives the spans that reach ``otel_traces`` without passing through eventscope (the
    OpenTelemetry Collector's ClickHouse exporter writes them): every ``interval_s``, the
    traces whose spans arrived since the stored watermark (``span_tree.inserted_at``), at most
    ``max_traces`` per round. The last ``overlap_s`` are derived again, so that an insert that
    became visible after a later one is not skipped. Only the holder of the ``derive`` lease
    works, so several collect instances on one ClickHouse derive each batch once.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interval_s: float = _DEFAULT_FOLLOW_S,
        overlap_s: float = _DEFAULT_OVERLAP_S,
        max_traces: int = _DEFAULT_MAX_TRACES,
        lease: Lease | None = None,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.overlap_us = int(overlap_s * 1_000_000)
        self.max_traces = max_traces
        self.lease = lease
        self.counts = DeriveCounts()
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watermark_us(self) -> int:
        rows = self.engine.query_arrow(
            "SELECT argMax(value, updated_at) AS v FROM eventscope_settings WHERE name = {name:String}",
            {"name": _WATERMARK},
        ).to_pylist()
        value = rows[0]["v"] if rows else ""
        return int(value) if value else 0

    def run_once(self) -> int:
        """One round; returns how many traces it derived."""
        watermark = self.watermark_us()
        rows = self.engine.query_arrow(
            _PENDING, {"since": max(0, watermark - self.overlap_us), "limit": self.max_traces}
        ).to_pylist()
        newest = max((int(row["at"]) for row in rows), default=0)
        if newest <= watermark:
            return 0  # nothing new: the overlap was derived already
        refresh(self.engine, traces=[row["trace_id"] for row in rows], counts=self.counts)
        self.engine.command(
            "INSERT INTO eventscope_settings (name, value, updated_at)"
            " VALUES ({name:String}, {value:String}, now64(6))",
            {"name": _WATERMARK, "value": str(newest)},
        )
        return len(rows)

    def start(self) -> Follower:
        self._thread = threading.Thread(target=self._run, name="eventscope-derive", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self.lease is not None and not self._hold():
                    continue
                while self.run_once() >= self.max_traces and not self._stop.is_set():
                    pass  # a backlog: keep going
            except Exception:  # logged and counted; the next round retries
                self.failures += 1
                logger.exception("deriving the spans written to otel_traces failed")

    def _hold(self) -> bool:
        assert self.lease is not None
        return self.lease.renew() if self.lease.held else self.lease.acquire()

    def stop(self, *, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.lease is not None:
            self.lease.release()
