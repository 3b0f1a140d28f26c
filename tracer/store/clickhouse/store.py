"""The ClickHouse store: what ``eventscope collect --store chdb://…|clickhouse://…`` writes through.

Same duties as the DuckDB store for the collector (:meth:`append`, :meth:`reader`,
:meth:`close`, called by the writer thread and the server), different division of work:

* spans go into ``otel_traces`` exactly as the OpenTelemetry Collector's ClickHouse exporter
  writes them (:mod:`.loader`); at scale the Collector writes that table and eventscope is not
  in the span path at all;
* broker truth (firehose, dead-letter tap, management poller) goes into the ``broker_*``
  ReplacingMergeTree tables, keyed by each row's identity, so several collect instances can
  consume one tap queue and a replayed record is stored once;
* what needs more than one row (events merged from span and broker rows, deliveries paired
  with their records, parentage) is derived after each batch for what the batch touched
  (:mod:`.derive`), into tables the public views (sql/views.sql) read.

Applying the DDL is idempotent (``IF NOT EXISTS`` tables, ``CREATE OR REPLACE`` views), so
every instance applies it on open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from eventscope.tracer.store import duckdb_store
from eventscope.tracer.store.batches import BrokerBatch, Key, Resolution, Topology
from eventscope.tracer.store.clickhouse import derive, flows, loader
from eventscope.tracer.store.clickhouse.engine import Engine
from eventscope.tracer.store.clickhouse.lease import Lease

if TYPE_CHECKING:
    from eventscope.tracer.ingest.normaliser import Normalised

__all__ = ["DDL_FILES", "ClickHouseStore", "apply_schema"]

logger = logging.getLogger(__name__)

DDL_FILES = ("otel_traces.sql", "broker.sql", "derive.sql", "views.sql")
_TS = pa.timestamp("us", tz="UTC")
# The DuckDB store's row shapes, so both stores take exactly the same rows.
_BROKER_EVENTS = pa.schema([f for f in duckdb_store._EVENTS if f.name != "source"])
_BROKER_DELIVERIES = pa.schema(
    [
        duckdb_store._DELIVERIES.field(name)
        for name in ("record_id", "event_id", "queue", "received_at", "redelivered")
    ]
)
_DEAD_LETTERS = duckdb_store._DEAD_LETTERS
# What retention (the TTL) reads in each table: the time its row happened.
_TTL_COLUMNS = (
    ("otel_traces", "toDateTime(Timestamp)"),
    ("span_messages", "toDateTime(start_time)"),
    ("span_tree", "toDateTime(start_time)"),
    ("span_keys", "toDateTime(start_time)"),
    ("span_links", "toDateTime(start_time)"),
    ("derived_events", "toDateTime(published_at)"),
    ("derived_deliveries", "toDateTime(assumeNotNull(received_at))"),
    ("derived_fates", "toDateTime(published_at)"),
    ("derived_edges", "derived_at"),
    ("edge_flows", "labelled_at"),
    ("event_flows", "labelled_at"),
    ("broker_events", "toDateTime(published_at)"),
    ("broker_deliveries", "toDateTime(received_at)"),
    ("broker_dead_letters", "toDateTime(observed_at)"),
    ("broker_payloads", "toDateTime(captured_at)"),
)
_PAYLOADS = duckdb_store._PAYLOADS


def statements(name: str) -> list[str]:
    """The statements of one DDL file of this package, comments dropped."""
    text = resources.files("eventscope.tracer.store.clickhouse").joinpath("sql").joinpath(name).read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in text.split(";\n") if statement.strip().rstrip(";")]


def apply_schema(engine: Engine) -> None:
    """Create the tables and (re)create the views; safe on every open, by every instance."""
    for name in DDL_FILES:
        for statement in statements(name):
            engine.command(statement.rstrip(";"))


@dataclass
class Counts:
    """Rows written since open, for /metrics."""

    spans: int = 0
    batches: int = 0
    broker_rows: int = 0


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(
        [{name: row.get(name) for name in schema.names} for row in rows], schema=schema
    )


class ReadConnection:
    """What :meth:`ClickHouseStore.reader` hands out: the engine, for the read questions
    (:mod:`eventscope.tracer.query.clickhouse`) to ask in ClickHouse SQL.
    """

    def __init__(self, engine: Engine) -> None:
        self.clickhouse_engine = engine

    def close(self) -> None:
        """Nothing to release: the engine belongs to the store."""


class ClickHouseStore:
    """Writes spans and broker truth to ClickHouse (or chDB); the views answer the questions."""

    def __init__(self, engine: Engine, url: str, *, grace_s: float = 30.0, follow: bool = False) -> None:
        self.engine = engine
        self.url = url
        self.path = url
        self.counts = Counts()
        self.derived = derive.DeriveCounts()
        self.had_rows_at_open = False  # lineage is SQL here: nothing to look up after a restart
        self._close_lock = threading.Lock()
        self._closed = False
        self._ttl_s: int | None = None
        apply_schema(engine)
        if flows.rebuild_if_missing(engine):
            logger.info("labelled the stored causal edges with their flows (a store derived before flow ids)")
        self.set_setting("grace_s", repr(float(grace_s)))
        # On a ClickHouse server the OpenTelemetry Collector writes spans too: a follower (one
        # per deployment, by lease) derives every span that arrives, this store's own included.
        self.follower: derive.Follower | None = None
        if follow:
            self.follower = derive.Follower(engine, lease=Lease(engine, name="derive")).start()

    def set_setting(self, name: str, value: str) -> None:
        data = pa.table(
            {"name": [name], "value": [value], "updated_at": [time.time_ns() // 1000]},
            schema=pa.schema([("name", pa.string()), ("value", pa.string()), ("updated_at", _TS)]),
        )
        self.engine.insert_arrow("eventscope_settings", data)

    def reader(self) -> Any:
        return ReadConnection(self.engine)

    def append(
        self, batches: Sequence[Normalised | BrokerBatch], resolution: Resolution | None = None
    ) -> None:
        """Insert the batches' rows; idempotent by each table's key (ReplacingMergeTree).

        ``resolution`` (what in-memory lineage resolved about older rows) is not needed: the
        views join what arrives in any order.
        """
        spans: list[dict[str, Any]] = []
        for batch in batches:
            if not isinstance(batch, BrokerBatch):
                errors = {(row["trace_id"], row["span_id"]): row["error"] for row in batch.deliveries}
                spans += loader.rows_from_normalised(batch.spans, errors)
        broker = [batch for batch in batches if isinstance(batch, BrokerBatch)]
        if spans:
            self.engine.insert_arrow("otel_traces", loader.to_arrow(spans))
        events = [row for batch in broker for row in batch.events]
        deliveries = [row for batch in broker for row in batch.deliveries]
        dead_letters = [row for batch in broker for row in batch.dead_letters]
        captured = [row for batch in broker for row in batch.payloads]
        self.engine.insert_arrow("broker_events", _table(events, _BROKER_EVENTS))
        self.engine.insert_arrow("broker_deliveries", _table(deliveries, _BROKER_DELIVERIES))
        self.engine.insert_arrow("broker_dead_letters", _table(dead_letters, _DEAD_LETTERS))
        self.engine.insert_arrow("broker_payloads", _table(captured, _PAYLOADS))
        for batch in broker:
            if batch.topology is not None:
                self._write_topology(batch.topology)
        derive.refresh(
            self.engine,
            traces=() if self.follower is not None else (row["TraceId"] for row in spans),
            events=[row["event_id"] for row in events + deliveries + dead_letters],
            counts=self.derived,
        )
        self.counts.spans += len(spans)
        self.counts.batches += len(batches)
        self.counts.broker_rows += sum(batch.accepted for batch in broker)

    def _write_topology(self, topology: Topology) -> None:
        """A snapshot's rows (newest version wins), and what it no longer lists as absent."""
        for table, schema, key in duckdb_store._TOPOLOGY:
            rows = getattr(topology, table)
            listed = {tuple(row[k] for k in key) for row in rows}
            stored = self.engine.query_arrow(
                f"SELECT * FROM broker_{table} FINAL WHERE vhost = {{vhost:String}} AND present",
                {"vhost": topology.vhost},
            ).to_pylist()
            gone = [
                dict(row, present=False, last_seen_at=topology.polled_at_us)
                for row in stored
                if tuple(row[k] for k in key) not in listed
            ]
            for row in gone:
                for name in ("first_seen_at",):
                    value = row[name]
                    row[name] = (
                        value if isinstance(value, int) or value is None else int(value.timestamp() * 1e6)
                    )
            data = _table(list(rows) + gone, schema)
            self.engine.insert_arrow(f"broker_{table}", data)

    def lookup_spans(self, keys: Sequence[Key]) -> list[tuple[str, str, str | None, str, str | None]]:
        """Lineage is SQL here (the views join what arrives in any order): nothing to look up."""
        return []

    def write_resolution(self, resolution: Resolution) -> None:
        """Nothing to write: the views derive what lineage resolves."""

    def retain(self, *, max_age_s: float) -> None:
        """Keep ``max_age_s`` of history: each table's TTL (ClickHouse drops what expired in its
        merges, docs/scaling.md "Retention"); set once per value, the writer calls this often."""
        seconds = max(1, int(max_age_s))
        if seconds == self._ttl_s:
            return
        for table, column in _TTL_COLUMNS:
            self.engine.command(f"ALTER TABLE {table} MODIFY TTL {column} + toIntervalSecond({seconds})")
        self._ttl_s = seconds

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                if self.follower is not None:
                    self.follower.stop()
                self.engine.close()
