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
(derive.sql), and so are the causation-id edges.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import pyarrow as pa

from eventscope.tracer.store.clickhouse.engine import Engine

__all__ = ["DeriveCounts", "refresh"]

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
    if counts is not None:
        counts.batches += 1
        counts.seconds += time.perf_counter() - started
