"""The DuckDB store: the collector is its single writer, everything else reads.

What callers can rely on:

* :meth:`Store.open` creates or migrates the file (``schema_version`` records each applied
  version), recreates the views and macros of the public SQL surface, and then *locks the
  database configuration*: external access (files, network, ``ATTACH``, ``COPY``,
  ``INSTALL``) is off for every connection of the process, extensions are neither installed
  nor loaded on demand, and no statement can change that afterwards. Read connections from
  :meth:`Store.reader` (the SQL API) run under that sandbox.
* :meth:`Store.append` writes batches in one transaction with Arrow appends, never
  row-by-row, and is idempotent on ``(trace_id, span_id)`` and on firehose record identity:
  the same batch twice is stored once. When it returns, the batch is committed.
* Span and broker rows of the same message merge (docs/sql.md, "Broker truth"): one
  ``events`` row per event id (``source`` span → both ← firehose; routing from the broker,
  the rest from the producer span), and one ``deliveries`` row per delivery attempt, the
  consumer span's and the firehose deliver record's of the same (event, queue, redelivered)
  paired in time order.
* Only the writer thread calls :meth:`append`, :meth:`resolve_missing` and :meth:`retain`.
"""

from __future__ import annotations

import functools
import logging
import operator
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from eventscope.tracer.store import flows, summaries
from eventscope.tracer.store.batches import BrokerBatch, Key, Resolution, Topology
from eventscope.tracer.store.duck import Written, registered, time_clusters, transaction

if TYPE_CHECKING:
    from eventscope.tracer.ingest.normaliser import Normalised

    Batch = Normalised | BrokerBatch

__all__ = ["SCHEMA_VERSION", "Batch", "Store", "StoreLocked", "connect_read_only"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 13  # the highest of _MIGRATIONS (numbers may skip: assigned per branch)
_DEFAULT_GRACE_S = 30.0
_DEFAULT_MEMORY_LIMIT = "1GB"
_CHECKPOINT_THRESHOLD = "256MB"
_MIGRATIONS = {
    1: "schema.sql",
    2: "schema_v2.sql",
    3: "schema_v3_alerts.sql",
    4: "schema_v4_perf.sql",
    5: "schema_v5_flows.sql",
    6: "schema_v6_payloads.sql",
    7: "schema_v7_spans.sql",
    8: "schema_v8_events.sql",
    9: "schema_v9_incidents.sql",
    10: "schema_v10_redrives.sql",
    11: "schema_v11_contracts.sql",
    12: "schema_v12_summaries.sql",
    13: "schema_v13_summaries.sql",
}  # version → file, in order
_VIEWS = "views.sql"
_STATE = "delivery_state.sql"
_STATE_CANDIDATES = "delivery_state_candidates.sql"
_STATE_VERSION = 4  # the migration that adds delivery_state: fill it for the rows already there
_SANDBOX = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}

_TS = pa.timestamp("us", tz="UTC")
_SPANS = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("service", pa.string()),
        ("start_time", _TS),
        ("end_time", _TS),
        ("duration_ms", pa.float64()),
        ("status", pa.string()),
        ("attributes", pa.string()),
        ("links", pa.string()),
        ("event_id", pa.string()),
    ]
)
_EVENTS = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("exchange", pa.string()),
        ("routing_key", pa.string()),
        ("producer_service", pa.string()),
        ("published_at", _TS),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("causation_id", pa.string()),
        ("correlation_id", pa.string()),
        ("routed_queues", pa.list_(pa.string())),
        ("payload_size", pa.int64()),
        ("source", pa.string()),
    ]
)
_DELIVERIES = pa.schema(
    [
        ("event_id", pa.string()),
        ("queue", pa.string()),
        ("consumer_service", pa.string()),
        ("received_at", _TS),
        ("settled_at", _TS),
        ("outcome", pa.string()),
        ("redelivered", pa.bool_()),
        ("error", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("source", pa.string()),
        ("record_id", pa.string()),
    ]
)
_DEAD_LETTERS = pa.schema(
    [
        ("event_id", pa.string()),
        ("queue", pa.string()),
        ("reason", pa.string()),
        ("count", pa.int64()),
        ("died_at", _TS),
        ("observed_at", _TS),
        ("exchange", pa.string()),
        ("routing_keys", pa.list_(pa.string())),
        ("dead_letter_exchange", pa.string()),
    ]
)
_PAYLOADS = pa.schema(
    [
        ("event_id", pa.string()),
        ("captured_at", _TS),
        ("content_type", pa.string()),
        ("size", pa.int64()),
        ("is_json", pa.bool_()),
        ("truncated", pa.bool_()),
        ("redacted", pa.int32()),
        ("body", pa.string()),
    ]
)
_SEEN = [("first_seen_at", _TS), ("last_seen_at", _TS), ("present", pa.bool_())]
_QUEUES = pa.schema(
    [
        ("vhost", pa.string()),
        ("name", pa.string()),
        ("type", pa.string()),
        ("durable", pa.bool_()),
        ("auto_delete", pa.bool_()),
        ("exclusive", pa.bool_()),
        ("arguments", pa.string()),
        ("policy", pa.string()),
        ("message_ttl_ms", pa.int64()),
        ("dead_letter_exchange", pa.string()),
        ("dead_letter_routing_key", pa.string()),
        ("max_length", pa.int64()),
        ("overflow", pa.string()),
        ("messages", pa.int64()),
        ("messages_ready", pa.int64()),
        ("messages_unacknowledged", pa.int64()),
        ("consumers", pa.int64()),
        ("state", pa.string()),
        *_SEEN,
    ]
)
_EXCHANGES = pa.schema(
    [
        ("vhost", pa.string()),
        ("name", pa.string()),
        ("type", pa.string()),
        ("durable", pa.bool_()),
        ("auto_delete", pa.bool_()),
        ("internal", pa.bool_()),
        ("arguments", pa.string()),
        *_SEEN,
    ]
)
_BINDINGS = pa.schema(
    [
        ("vhost", pa.string()),
        ("source", pa.string()),
        ("destination", pa.string()),
        ("destination_type", pa.string()),
        ("routing_key", pa.string()),
        ("arguments", pa.string()),
        ("properties_key", pa.string()),
        *_SEEN,
    ]
)
_TOPOLOGY = (
    ("queues", _QUEUES, ("vhost", "name")),
    ("exchanges", _EXCHANGES, ("vhost", "name")),
    ("bindings", _BINDINGS, ("vhost", "source", "destination", "destination_type", "properties_key")),
)
_KEYS = pa.schema([("trace_id", pa.string()), ("span_id", pa.string())])
_EVENT_IDS = pa.schema([("event_id", pa.string())])
_STATE_SCOPE = "event_id IN (SELECT event_id FROM _eventscope_touched) AND event_id BETWEEN $lo AND $hi"
_PAIR_WINDOW_US = 3600 * 1_000_000  # how far before a write's oldest row its partners are looked for
# The batch's spans already stored (replays): only stored spans in the batch's time range. The
# batch's ids come as list parameters (no Arrow table to register and drop), span ids only: the
# writer keeps the (trace_id, span_id) pairs of the batch among those found.
_AT_OPEN = "SELECT count(*), epoch_us(max(start_time)), (SELECT max(event_id) FROM events) FROM spans"
_STORED_SPANS = """
SELECT trace_id, span_id FROM spans
WHERE start_time BETWEEN $lo AND $hi AND span_id IN (SELECT unnest($span_ids))
"""

# The stored events of a batch's ids, and where each came from (events has no primary key
# since schema version 8: the writer keeps one row per id). The range lets DuckDB skip row
# groups by their min/max when ids grow with time (UUIDv7).
_STORED_EVENTS = """
SELECT event_id, source FROM events
WHERE event_id BETWEEN $lo AND $hi AND event_id IN (SELECT unnest($event_ids))
"""
# A span's event meets a firehose row: the producer span's facts win, the broker's routing stays.
_MERGE_SPAN_EVENT = """
UPDATE events SET
    event_type = coalesce(b.event_type, events.event_type),
    producer_service = coalesce(b.producer_service, events.producer_service),
    published_at = b.published_at,
    trace_id = b.trace_id,
    span_id = b.span_id,
    causation_id = coalesce(b.causation_id, events.causation_id),
    correlation_id = coalesce(b.correlation_id, events.correlation_id),
    payload_size = coalesce(events.payload_size, b.payload_size),
    source = 'both'
FROM _eventscope_batch b
WHERE events.event_id = b.event_id AND events.source = 'firehose' AND events.event_id BETWEEN $lo AND $hi
"""
# A firehose publish record meets a span's event: the broker's routing fills what spans cannot know.
_MERGE_FIREHOSE_EVENT = """
UPDATE events SET
    exchange = b.exchange,
    routing_key = b.routing_key,
    routed_queues = b.routed_queues,
    event_type = coalesce(events.event_type, b.event_type),
    producer_service = coalesce(events.producer_service, b.producer_service),
    trace_id = coalesce(events.trace_id, b.trace_id),
    span_id = coalesce(events.span_id, b.span_id),
    causation_id = coalesce(events.causation_id, b.causation_id),
    correlation_id = coalesce(events.correlation_id, b.correlation_id),
    payload_size = coalesce(events.payload_size, b.payload_size),
    source = 'both'
FROM _eventscope_batch b
WHERE events.event_id = b.event_id AND events.source = 'span' AND events.event_id BETWEEN $lo AND $hi
"""
_MERGES = {"span": ("firehose", _MERGE_SPAN_EVENT), "firehose": ("span", _MERGE_FIREHOSE_EVENT)}
# Attempts of one (event, queue) without a partner yet: the consumer span's and the firehose
# record's, paired by redelivered flag and order of arrival (1st with 1st, 2nd with 2nd). $since
# bounds the scan to recent rows (row groups are skipped by their min/max: rows arrive in time
# order), since a consumer span and its firehose record arrive within minutes of each other.
_DELIVERY_PAIRS = """
WITH candidates AS (
    SELECT rowid AS rid, event_id, queue, trace_id IS NOT NULL AS traced, record_id, redelivered,
           coalesce(redelivered, false) AS again, received_at
    FROM deliveries
    WHERE event_id IN (SELECT event_id FROM _eventscope_touched)
      AND (trace_id IS NULL OR record_id IS NULL)
      AND received_at >= $since
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY event_id, queue, again, traced ORDER BY received_at, rid) AS n
    FROM candidates
)
SELECT s.rid AS span_rid, f.rid AS firehose_rid, f.record_id, f.redelivered
FROM ranked s
JOIN ranked f ON f.event_id = s.event_id AND f.queue = s.queue AND f.again = s.again AND f.n = s.n
WHERE s.traced AND NOT f.traced
"""


class StoreLocked(RuntimeError):
    """Another process (a running collector) holds the database file."""


@dataclass
class Counts:
    """Rows written since open, for /metrics."""

    spans: int = 0
    batches: int = 0
    broker_rows: int = 0


def _arrow(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """``rows`` as an Arrow table, built column by column (~9x faster than ``from_pylist``):
    the rows are transposed in C (``itemgetter`` + ``zip``), ~2.5x faster than a list per
    column over the dicts (``field.name`` per row made a new string each time).
    """
    if not rows or len(schema) < 2:  # itemgetter of one name gives the value, not a tuple
        return pa.Table.from_pylist(list(rows), schema=schema)
    columns = zip(*map(operator.itemgetter(*schema.names), rows), strict=True)
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _id_table(event_ids: Iterable[str]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(list(event_ids), pa.string())], schema=_EVENT_IDS)


def _ts(us: int) -> Any:
    return pa.scalar(us, _TS).as_py()


@functools.cache
def _read_sql(name: str) -> str:
    return (
        resources.files("eventscope.tracer.store").joinpath("sql").joinpath(name).read_text(encoding="utf-8")
    )


def _is_lock_error(exc: BaseException) -> bool:
    return "lock" in str(exc).lower()


def connect_read_only(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a database file read-only (post-mortem, no collector running), sandboxed.

    Raises :class:`StoreLocked` when a running collector holds the file: DuckDB lets no other
    process open it then, not even read-only; ask the collector's ``/api/sql`` instead.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"no eventscope database at {path}")
    try:
        return duckdb.connect(str(path), read_only=True, config=dict(_SANDBOX))
    except duckdb.IOException as exc:
        if _is_lock_error(exc):
            raise StoreLocked(
                f"{path} is held by another process (a running collector?): DuckDB allows one "
                "process per file. Query the collector instead, e.g. --api http://127.0.0.1:4318"
            ) from exc
        raise


class Store:
    """The database of one collector. Create with :meth:`open`."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str) -> None:
        self._connection = connection
        self.path = path
        self.counts = Counts()
        self.had_rows_at_open = False
        self._has_firehose_deliveries = False
        # spans (by start time) and events (by id) the writer knows are not stored: no lookup
        self._spans_written: Written[int] = Written(None)
        self._events_written: Written[str] = Written(None)
        self._close_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        grace_s: float = _DEFAULT_GRACE_S,
        memory_limit: str = _DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
    ) -> Store:
        """Open (creating or migrating) the database at ``path`` for writing.

        ``memory_limit`` and ``threads`` bound the whole process's DuckDB, the SQL API's
        queries included. Raises :class:`StoreLocked` if another process holds the file.
        """
        if grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        config: dict[str, Any] = dict(
            _SANDBOX, memory_limit=memory_limit, checkpoint_threshold=_CHECKPOINT_THRESHOLD
        )
        if threads is not None:
            config["threads"] = threads
        try:
            connection = duckdb.connect(str(path), config=config)
        except duckdb.IOException as exc:
            if _is_lock_error(exc):
                raise StoreLocked(f"{path} is held by another process (another collector?)") from exc
            raise
        try:
            applied = _migrate(connection)
            connection.execute(
                "CREATE OR REPLACE VIEW delivery_fates AS " + _read_state_sql().replace("{scope}", "true")
            )
            connection.execute(_read_sql(_VIEWS))
            if _STATE_VERSION in applied:
                _rebuild_state(connection)
            elif set(summaries.VERSIONS) & set(applied):
                summaries.rebuild(connection)
            if flows.has_unflowed(connection):  # migrated to v5 (also if a later step failed)
                flows.rebuild(connection)
            connection.execute(
                "INSERT OR REPLACE INTO collector_settings VALUES ('grace_s', ?)", [repr(float(grace_s))]
            )
            connection.execute("SET lock_configuration = true")
            store = cls(connection, str(path))
            (count, top, top_event) = connection.execute(_AT_OPEN).fetchall()[0]
            store.had_rows_at_open = count > 0
            store._spans_written, store._events_written = Written(top), Written(top_event)
            (found,) = connection.execute(
                "SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE record_id IS NOT NULL LIMIT 1)"
            ).fetchall()[0]
            store._has_firehose_deliveries = found > 0
        except BaseException:
            connection.close()
            raise
        logger.info("store %s open (schema version %d)", path, SCHEMA_VERSION)
        return store

    # -- reading --------------------------------------------------------------------------
    def reader(self) -> duckdb.DuckDBPyConnection:
        """A new connection to this database for one reader (a thread or one query).

        It shares the process's locked, sandboxed configuration; it is *not* read-only by
        itself: :mod:`eventscope.tracer.query.questions` only runs single SELECT statements on it, in
        a transaction it rolls back.
        """
        return self._connection.cursor()

    # -- writing (writer thread only) ---------------------------------------------------
    def append(self, batches: Sequence[Batch], resolution: Resolution | None = None) -> None:
        """Store ``batches`` (span batches and broker truth) and what lineage resolved about
        older rows (``resolution``: :class:`eventscope.tracer.ingest.recorder.Recorder` passes
        it) in one transaction; committed when this returns.
        """
        normalised = [batch for batch in batches if not isinstance(batch, BrokerBatch)]
        broker = [batch for batch in batches if isinstance(batch, BrokerBatch)]
        resolution = resolution or Resolution()
        spans = [row for batch in normalised for row in batch.spans]
        events = [row for batch in normalised for row in batch.events]
        deliveries = [row for batch in normalised for row in batch.deliveries]
        by_key = {(row["trace_id"], row["span_id"]): row for row in spans}
        for row in deliveries:
            if row["event_id"] is not None:
                by_key[(row["trace_id"], row["span_id"])]["event_id"] = row["event_id"]
        broker_events = [row for batch in broker for row in batch.events]
        broker_deliveries = [row for batch in broker for row in batch.deliveries]
        dead_letters = [row for batch in broker for row in batch.dead_letters]
        for batch in broker:
            resolution.edges.update(batch.edges)
        touched = {
            row["event_id"] for row in (*deliveries, *broker_deliveries) if row["event_id"] is not None
        }
        state_ids = touched | {row["event_id"] for row in (*events, *broker_events, *dead_letters)}
        since = None
        if self._has_firehose_deliveries or broker_deliveries:  # else nothing is paired: skip the cost
            times = [row["received_at"] for row in (*deliveries, *broker_deliveries)]
            times += [row["start_time"] for row in spans if row["kind"] == "PRODUCER"]  # resolved deliveries
            since = min(times) - _PAIR_WINDOW_US if times else None
        con = self._connection
        new_events: set[str] = set()  # inserted in this transaction
        with transaction(con):
            new_spans = self._insert_spans(spans)
            self._write_events(events, "span", new_events)
            self._write_events(broker_events, "firehose", new_events)
            self._insert_span_deliveries(deliveries, new_spans)
            self._insert_firehose_deliveries(broker_deliveries)
            self._insert("dead_letters", dead_letters, _DEAD_LETTERS)
            captured = [row for batch in broker for row in batch.payloads]
            first = {row["event_id"]: row for row in reversed(captured)}  # the first capture stays
            self._insert("payloads", list(first.values()), _PAYLOADS)
            if broker_deliveries:
                self._has_firehose_deliveries = True
            state_ids |= self._write_resolution(resolution, touched, since)
            self._refresh_state(state_ids)
            for batch in broker:
                if batch.topology is not None:
                    self._write_topology(batch.topology)
        self._spans_written.add((by_key[key]["start_time"], key) for key in new_spans)  # committed
        self._events_written.add((event_id, event_id) for event_id in new_events)
        self.counts.spans += len(spans)
        self.counts.batches += len(batches)
        self.counts.broker_rows += sum(batch.accepted for batch in broker)

    def _write_events(self, rows: list[dict[str, Any]], side: str, inserted: set[str]) -> None:
        """Store the events of one side (``span`` or ``firehose``): an id not stored yet is
        inserted, an id stored from the other side merges (``_MERGES``), an id stored from the
        same side (a replay, or a second span with the same message id) keeps the first row.
        Only ids not surely new (``Written``, not in ``inserted``) are looked up; the ids
        inserted are added to ``inserted``.
        """
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:  # the first row of an id wins, as in the stored table
            unique.setdefault(row["event_id"], row)
        new = self._events_written.new
        asked = [event_id for event_id in unique if event_id in inserted or not new(event_id, event_id)]
        stored: dict[str, str] = {}
        con = self._connection
        if asked:
            params = {"lo": min(asked), "hi": max(asked), "event_ids": asked}
            stored = dict(con.execute(_STORED_EVENTS, params).fetchall())
        other, merge = _MERGES[side]
        if other in stored.values():
            with registered(con, "_eventscope_batch", _arrow(list(unique.values()), _EVENTS)):
                con.execute(merge, {"lo": min(unique), "hi": max(unique)})
        rows = [row for event_id, row in unique.items() if event_id not in stored]
        if rows:  # the rows as Arrow once: only the ids for the lookup above
            self._insert_arrow("events", _arrow(rows, _EVENTS), plain=True)
            inserted.update(row["event_id"] for row in rows)

    def _reconcile_deliveries(self, event_ids: set[str], since_us: int | None) -> None:
        """Merge each firehose-only delivery into the consumer span's row of the same attempt
        (rows received since ``since_us``; ``None``: all).
        """
        if not event_ids or not self._has_firehose_deliveries:
            return
        con = self._connection
        touched = pa.Table.from_arrays([pa.array(list(event_ids), pa.string())], schema=_EVENT_IDS)
        with registered(con, "_eventscope_touched", touched):
            # a plain comparison (no "$since IS NULL OR"), so the scan can skip row groups
            since = pa.scalar(since_us if since_us is not None else 0, _TS).as_py()
            pairs = con.sql(_DELIVERY_PAIRS, params={"since": since}).to_arrow_table()
        if pairs.num_rows == 0:
            return
        with registered(con, "_eventscope_pairs", pairs):
            # delete first: the record id moves to the span's row and is unique
            con.execute("DELETE FROM deliveries WHERE rowid IN (SELECT firehose_rid FROM _eventscope_pairs)")
            con.execute(
                "UPDATE deliveries SET record_id = p.record_id, source = 'both', "
                "redelivered = coalesce(deliveries.redelivered, p.redelivered) "
                "FROM _eventscope_pairs p WHERE deliveries.rowid = p.span_rid"
            )

    def _write_topology(self, topology: Topology) -> None:
        """Upsert a management snapshot; what it no longer lists is marked ``present = false``."""
        con = self._connection
        polled_at = pa.scalar(topology.polled_at_us, _TS)
        for table, schema, key in _TOPOLOGY:
            rows = getattr(topology, table)
            if rows:
                unique = {tuple(row[k] for k in key): row for row in rows}
                data = pa.Table.from_pylist(list(unique.values()), schema=schema)
                updates = ", ".join(
                    f"{name} = excluded.{name}"
                    for name in schema.names
                    if name not in key and name != "first_seen_at"
                )
                with registered(con, "_eventscope_topology", data):
                    con.execute(
                        f"INSERT INTO {table} SELECT * FROM _eventscope_topology "
                        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
                    )
            con.execute(
                f"UPDATE {table} SET present = false WHERE vhost = ? AND present AND last_seen_at < ?",
                [topology.vhost, polled_at.as_py()],
            )

    def _insert_spans(self, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
        """Insert spans not stored yet; returns the keys of those inserted.

        spans has no primary key since schema version 7 (schema_v7_spans.sql): a span is a
        replay when a stored span has its (trace_id, span_id), looked up among the stored
        spans that start within this batch's time ranges (a replay has the same start time),
        so the scan reads only the row groups of those ranges: one range per cluster of start
        times, so that one stray span (a start time of 0, a day-old retry) does not make the
        lookup read the whole table. Only spans not surely new (``Written``) are looked up.
        """
        unique: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            unique.setdefault((row["trace_id"], row["span_id"]), row)
        if not unique:
            return set()
        con = self._connection
        new = self._spans_written.new
        asked = [row for key, row in unique.items() if not new(row["start_time"], key)]
        span_ids = [row["span_id"] for row in asked]
        for lo, hi in time_clusters(row["start_time"] for row in asked):
            params = {"lo": _ts(lo), "hi": _ts(hi), "span_ids": span_ids}
            for key in con.execute(_STORED_SPANS, params).fetchall():
                unique.pop(key, None)
        if not unique:
            return set()
        self._insert_arrow("spans", _arrow(list(unique.values()), _SPANS), plain=True)
        return set(unique)

    def _insert_span_deliveries(self, rows: list[dict[str, Any]], new_spans: set[tuple[str, str]]) -> None:
        """Insert the deliveries of the spans just inserted (a span seen before is a replay):
        deliveries has no unique constraint since schema version 4 (schema_v4_perf.sql).
        """
        unique: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            key = (row["trace_id"], row["span_id"])
            if key in new_spans:
                unique.setdefault(key, row)
        if unique:
            data = _arrow(list(unique.values()), _DELIVERIES)
            self._insert_arrow("deliveries", data, plain=True)

    def _insert_firehose_deliveries(self, rows: list[dict[str, Any]]) -> None:
        """Insert firehose deliveries whose record is not stored yet (replays are stored once)."""
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["record_id"], row)
        if not unique:
            return
        con = self._connection
        with registered(con, "_eventscope_batch", _arrow(list(unique.values()), _DELIVERIES)):
            con.execute(
                "INSERT INTO deliveries SELECT * FROM _eventscope_batch b "
                "WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.record_id = b.record_id)"
            )

    def _insert(self, table: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
        if not rows:
            return
        self._insert_arrow(table, _arrow(rows, schema))

    def _insert_arrow(self, table: str, data: pa.Table, *, plain: bool = False) -> None:
        """Insert ``data``: ``plain`` for rows the caller knows are new, else ``OR IGNORE``
        against the table's primary key.
        """
        con = self._connection
        if plain:  # a relation insert: no view to register and drop (~0.5 ms each)
            con.from_arrow(data).insert_into(table)
            return
        with registered(con, "_eventscope_batch", data):
            con.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM _eventscope_batch")

    def _refresh_state(self, event_ids: set[str]) -> None:
        """Re-derive the delivery state (delivery_state.sql) of ``event_ids``, in the caller's
        transaction: the orphans view then only filters it. Only the events that can have a
        state go through the state query, and only those that had one lose their rows
        (delivery_state_candidates.sql): often none of either.
        """
        event_ids.discard(None)  # type: ignore[arg-type]
        if not event_ids:
            return
        con = self._connection
        params = {"lo": min(event_ids), "hi": max(event_ids)}
        with registered(con, "_eventscope_touched", _id_table(event_ids)):
            found = con.execute(_read_sql(_STATE_CANDIDATES), params).fetchall()
            if any(what == "stored" for _, what in found):
                con.execute(
                    "DELETE FROM delivery_state WHERE event_id IN (SELECT event_id FROM _eventscope_touched)"
                )
            # Every touched event's summary, fine or not (an acked event has no state, but has
            # a time to consistency).
            summaries.refresh(con, _STATE_SCOPE, params)
        candidates = [event_id for event_id, what in found if what == "derive"]
        if not candidates:
            return
        params = {"lo": min(candidates), "hi": max(candidates)}
        with registered(con, "_eventscope_touched", _id_table(candidates)):
            con.execute(
                "INSERT INTO delivery_state " + _read_state_sql().replace("{scope}", _STATE_SCOPE), params
            )

    def _write_resolution(
        self, resolution: Resolution, touched: set[str] | None = None, since_us: int | None = None
    ) -> set[str]:
        """Write what lineage resolved; returns the event ids whose deliveries changed."""
        con = self._connection
        changed = set(resolution.delivery_events.values())
        flows.write_edges(con, resolution.edges)
        if resolution.delivery_events:
            updates = pa.table(
                {
                    "trace_id": [key[0] for key in resolution.delivery_events],
                    "span_id": [key[1] for key in resolution.delivery_events],
                    "event_id": list(resolution.delivery_events.values()),
                }
            )
            with registered(con, "_eventscope_updates", updates):
                for table in ("deliveries", "spans"):
                    con.execute(
                        f"UPDATE {table} SET event_id = u.event_id FROM _eventscope_updates u "
                        f"WHERE {table}.trace_id = u.trace_id AND {table}.span_id = u.span_id"
                    )
        if resolution.settles:
            settles = pa.table(
                {
                    "trace_id": [key[0] for key in resolution.settles],
                    "span_id": [key[1] for key in resolution.settles],
                    "outcome": [value[0] for value in resolution.settles.values()],
                    "settled_at": pa.array([value[1] for value in resolution.settles.values()], _TS),
                }
            )
            with registered(con, "_eventscope_settles", settles):
                settled = con.execute(
                    "UPDATE deliveries SET outcome = s.outcome, settled_at = s.settled_at "
                    "FROM _eventscope_settles s "
                    "WHERE deliveries.trace_id = s.trace_id AND deliveries.span_id = s.span_id "
                    "AND (deliveries.outcome IS NULL OR deliveries.outcome = 'error') "
                    "RETURNING deliveries.event_id"
                ).fetchall()
                changed.update(event_id for (event_id,) in settled)
        self._reconcile_deliveries((touched or set()) | set(resolution.delivery_events.values()), since_us)
        return changed

    def lookup_spans(self, keys: Sequence[Key]) -> list[tuple[str, str, str | None, str, str | None]]:
        """``(trace_id, span_id, parent_span_id, kind, event_id)`` of the stored spans among
        ``keys``: what lineage asks for once it has forgotten a span it still waits on.
        """
        con = self._connection
        wanted = pa.Table.from_pylist([{"trace_id": t, "span_id": s} for t, s in keys], schema=_KEYS)
        with registered(con, "_eventscope_keys", wanted):
            return con.execute(
                "SELECT s.trace_id, s.span_id, s.parent_span_id, s.kind, coalesce(s.event_id, d.event_id) "
                "FROM _eventscope_keys k "
                "JOIN spans s ON s.trace_id = k.trace_id AND s.span_id = k.span_id "
                "LEFT JOIN deliveries d ON d.trace_id = s.trace_id AND d.span_id = s.span_id"
            ).fetchall()

    def write_resolution(self, resolution: Resolution) -> None:
        """Write, in a transaction of its own, what lineage resolved outside a batch."""
        with transaction(self._connection):
            self._refresh_state(self._write_resolution(resolution))

    def retain(self, *, max_age_s: float) -> None:
        """Delete what is older than ``max_age_s`` (spans, events, deliveries, dead letters,
        orphaned edges, queues/exchanges/bindings gone that long).
        """
        con = self._connection
        cutoff = "now() - to_microseconds(CAST(CAST(? AS DOUBLE) * 1000000 AS BIGINT))"
        with transaction(con):
            con.execute(f"DELETE FROM spans WHERE end_time < {cutoff}", [max_age_s])
            con.execute(f"DELETE FROM events WHERE published_at < {cutoff}", [max_age_s])
            con.execute(f"DELETE FROM deliveries WHERE received_at < {cutoff}", [max_age_s])
            con.execute(f"DELETE FROM dead_letters WHERE observed_at < {cutoff}", [max_age_s])
            con.execute(f"DELETE FROM payloads WHERE captured_at < {cutoff}", [max_age_s])
            for table in ("queues", "exchanges", "bindings"):
                con.execute(f"DELETE FROM {table} WHERE NOT present AND last_seen_at < {cutoff}", [max_age_s])
            con.execute(
                "DELETE FROM causal_edges ce WHERE NOT EXISTS "
                "(SELECT 1 FROM events e WHERE e.event_id IN (ce.cause_event_id, ce.effect_event_id))"
            )
            con.execute(
                f"DELETE FROM alerts WHERE resolved_at IS NOT NULL AND resolved_at < {cutoff}", [max_age_s]
            )
            con.execute("DELETE FROM alert_details WHERE alert_id NOT IN (SELECT alert_id FROM alerts)")
            con.execute(f"DELETE FROM incidents WHERE resolved_at < {cutoff}", [max_age_s])
            _rebuild_state(con)

    def append_redrives(self, rows: pa.Table) -> None:
        """Record redrives (rows built by ``eventscope.tracer.redrive.records``); writer thread only."""
        self._insert_arrow("redrives", rows, plain=True)

    def close(self) -> None:
        """Checkpoint and close; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._connection.execute("CHECKPOINT")
            except duckdb.Error as exc:
                logger.warning("checkpoint on close failed: %s", exc)
            self._connection.close()


@functools.cache
def _read_state_sql() -> str:
    return _read_sql(_STATE)


def _rebuild_state(connection: duckdb.DuckDBPyConnection) -> None:
    """Derive delivery_state and the summaries for every event (after the migrations that add
    them, after retention).
    """
    connection.execute("DELETE FROM delivery_state")
    connection.execute("INSERT INTO delivery_state SELECT * FROM delivery_fates")
    summaries.rebuild(connection)


def _migrate(connection: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply the scripts of ``_MIGRATIONS`` the file has not seen, each in a transaction;
    returns the versions applied.
    """
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    done = {version for (version,) in connection.execute("SELECT version FROM schema_version").fetchall()}
    current = max(done, default=0)
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {current} is newer than this eventscope ({SCHEMA_VERSION}): upgrade"
        )
    # every version not applied yet, in order: numbers are assigned to branches in advance, so a
    # file may have a later one (created before an earlier one merged) and still lack that one
    applied = [version for version in sorted(_MIGRATIONS) if version not in done]
    for version in applied:
        with transaction(connection):
            connection.execute(_read_sql(_MIGRATIONS[version]))
            connection.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
        logger.info("migrated database to schema version %d", version)
    return applied
