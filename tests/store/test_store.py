"""The DuckDB store: migrations, idempotent appends, orphans, chain(), restart, sandbox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from eventscope.tracer.ingest.normaliser import normalise, synthesized_event_id
from eventscope.tracer.query import questions as queries
from eventscope.tracer.store import duckdb_store
from eventscope.tracer.store.duckdb_store import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    Store,
    StoreLocked,
    connect_read_only,
)
from tests.spans import new_span_id, new_trace, open_store, process, publish, request, rows, settle


def test_open_migrates_once_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    open_store(path).close()
    store = open_store(path, grace_s=12.5)
    try:
        versions = rows(store, "SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in sorted(_MIGRATIONS)] and max(_MIGRATIONS) == SCHEMA_VERSION
        names = {name for (name,) in rows(store, "SELECT table_name FROM information_schema.tables")}
        assert {
            "spans",
            "events",
            "deliveries",
            "causal_edges",
            "orphans",
            "alerts",
            "schema_version",
        } <= names
        assert rows(store, "SELECT value FROM collector_settings WHERE name = 'grace_s'") == [("12.5",)]
        assert rows(store, "SELECT count(*) FROM alerts") == [(0,)]
    finally:
        store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    open_store(path).close()
    with duckdb.connect(str(path)) as connection:
        connection.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(RuntimeError, match="newer"):
        open_store(path)


def test_same_batch_twice_is_stored_once(store: Store) -> None:
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    message = request(
        publish(trace_id=trace_id, event_id="A", span_id=producer_id),
        process(trace_id=trace_id, parent=producer_id, event_id="A", queue="q", span_id=consumer_id),
        publish(trace_id=trace_id, event_id="B", parent=consumer_id, causation_id="A", start_ms=12),
    )
    store.append([normalise(message)])
    store.append([normalise(message)])
    store.append([normalise(message), normalise(message)])  # twice in one transaction too
    assert rows(store, "SELECT count(*) FROM spans") == [(3,)]
    assert rows(store, "SELECT count(*) FROM events") == [(2,)]
    assert rows(store, "SELECT count(*) FROM deliveries") == [(1,)]
    assert rows(store, "SELECT cause_event_id, effect_event_id FROM causal_edges") == [("A", "B")]


def test_chain_crosses_traces_and_handles_cycles(store: Store) -> None:
    first, second = new_trace(), new_trace()
    store.append(
        [
            normalise(
                request(
                    publish(trace_id=first, event_id="A"),
                    publish(trace_id=first, event_id="B", causation_id="A"),
                    publish(trace_id=second, event_id="C", causation_id="B"),
                    publish(trace_id=second, event_id="D", causation_id="A"),
                )
            )
        ]
    )
    assert rows(store, "SELECT * FROM chain('A')") == [
        ("A", 0, None),
        ("B", 1, "A"),
        ("D", 1, "A"),
        ("C", 2, "B"),
    ]
    # A republished with C as its cause (the event row stays the first one; the edge is new): a cycle
    store.append([normalise(request(publish(trace_id=second, event_id="A", causation_id="C")))])
    assert rows(store, "SELECT count(*) FROM events WHERE event_id = 'A'") == [(1,)]
    assert rows(store, "SELECT event_id, depth FROM chain('A')") == [("A", 0), ("B", 1), ("D", 1), ("C", 2)]
    assert rows(store, "SELECT * FROM chain('nope')") == [("nope", 0, None)]


def _orphans(store: Store, grace_s: float = 0) -> set[tuple]:
    reader = store.reader()
    try:
        found = queries.orphans(reader, grace_s=grace_s)
    finally:
        reader.close()
    return {(row["event_id"], row["queue"], row["reason"]) for row in found}


def test_orphan_reasons_from_spans(store: Store) -> None:
    trace_id = new_trace()
    spans = [publish(trace_id=trace_id, event_id=e, exchange="", routing_key="work") for e in "ABCDEFG"]
    ids = [new_span_id() for _ in range(7)]
    spans += [
        process(trace_id=trace_id, parent=None, event_id="A", queue="work"),  # acked
        process(trace_id=trace_id, parent=None, event_id="C", queue="work", outcome=None, span_id=ids[2]),
        process(trace_id=trace_id, parent=None, event_id="D", queue="work", outcome=None, error=True),
        process(trace_id=trace_id, parent=None, event_id="E", queue="work", outcome="nack"),
        process(trace_id=trace_id, parent=None, event_id="F", queue="work", outcome="requeue"),
        # G: failed once, then redelivered and acked: fine
        process(trace_id=trace_id, parent=None, event_id="G", queue="work", outcome=None, error=True),
        process(
            trace_id=trace_id,
            parent=None,
            event_id="G",
            queue="work",
            start_ms=50,
            end_ms=60,
            redelivered=True,
        ),
    ]
    store.append([normalise(request(*spans))])
    assert _orphans(store) == {
        ("B", "work", "unconsumed"),  # default exchange: the routing key is the queue
        ("C", "work", "unacked"),
        ("D", "work", "failed"),
        ("E", "work", "failed"),
        ("F", "work", "unconsumed"),
    }
    # the settle that came later fixes C; a grace in the future hides everything
    store.append(
        [normalise(request(settle(trace_id=trace_id, delivery=ids[2], outcome="ack", queue="work")))]
    )
    assert ("C", "work", "unacked") not in _orphans(store)
    assert _orphans(store, grace_s=10**10) == set()
    assert rows(store, "SELECT count(*) FROM orphans") == [(4,)]  # the view uses the collector's grace (0)


def test_unknown_exchange_routing_leaves_queue_null(store: Store) -> None:
    store.append([normalise(request(publish(trace_id=new_trace(), event_id="X", exchange="shop")))])
    assert _orphans(store) == {("X", None, "unconsumed")}


def test_routed_queues_when_known(store: Store) -> None:
    trace_id = new_trace()
    store.append([normalise(request(publish(trace_id=trace_id, event_id="R", exchange="shop")))])
    reader = store.reader()
    reader.execute("BEGIN")
    reader.execute("UPDATE events SET routed_queues = ['a', 'b'], source = 'both' WHERE event_id = 'R'")
    reader.execute("INSERT INTO events SELECT * REPLACE ('U' AS event_id, [] AS routed_queues) FROM events")
    reader.execute(
        "INSERT INTO deliveries (event_id, queue, consumer_service, received_at, settled_at, outcome, "
        "redelivered, error, trace_id, span_id) VALUES ('R', 'a', 's', now() - INTERVAL 1 HOUR, "
        "now() - INTERVAL 1 HOUR, 'ack', false, NULL, 't', 's')"
    )
    found = {
        (r[0], r[4], r[5])
        for r in reader.execute("SELECT * FROM orphans_after(0) WHERE event_id IN ('R', 'U')").fetchall()
    }
    reader.execute("ROLLBACK")
    assert found == {("R", "b", "unconsumed"), ("U", None, "unroutable")}


def test_settle_and_producer_resolved_across_batches_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    store = open_store(path)
    store.append([normalise(request(publish(trace_id=trace_id, event_id=None, span_id=producer_id)))])
    store.close()
    # after a restart the producer is only in the database: the lookup finds it
    store = open_store(path)
    try:
        consumer = process(
            trace_id=trace_id, parent=producer_id, event_id=None, queue="q", span_id=consumer_id, outcome=None
        )
        store.append([normalise(request(consumer))])
        assert rows(store, "SELECT event_id FROM deliveries") == [(None,)]
        assert store.resolve_missing(older_than_s=0) == 1
        event_id = synthesized_event_id(trace_id, producer_id)
        assert rows(store, "SELECT event_id FROM deliveries") == [(event_id,)]
        assert rows(store, f"SELECT event_id FROM spans WHERE span_id = '{consumer_id}'") == [(event_id,)]
        store.append(
            [normalise(request(settle(trace_id=trace_id, delivery=consumer_id, outcome="ack", queue="q")))]
        )
        assert rows(store, "SELECT outcome FROM deliveries") == [("ack",)]
    finally:
        store.close()


def test_retention_deletes_old_rows(store: Store) -> None:
    store.append([normalise(request(publish(trace_id=new_trace(), event_id="old")))])  # 2023
    store.retain(max_age_s=3600)
    assert rows(store, "SELECT count(*) FROM spans") == [(0,)]
    assert rows(store, "SELECT count(*) FROM events") == [(0,)]


def test_external_access_is_off_for_every_connection(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    reader = store.reader()
    for sql in (
        f"SELECT * FROM read_csv('{secret}')",
        f"COPY spans TO '{tmp_path / 'out.csv'}'",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
    ):
        with pytest.raises(duckdb.Error):
            reader.execute(sql)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()


def test_read_only_open_and_lock_message(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    open_store(path).close()
    connection = connect_read_only(path)
    assert connection.execute("SELECT count(*) FROM events").fetchall() == [(0,)]
    connection.close()
    with pytest.raises(FileNotFoundError):
        connect_read_only(tmp_path / "missing.duckdb")
    code = (
        f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLocked, match="--api"):
            connect_read_only(path)
        with pytest.raises(StoreLocked):
            open_store(path)
    finally:
        holder.communicate("\n")


def test_replayed_spans_are_found_whatever_else_their_batch_holds(store: Store) -> None:
    """Idempotency without a primary key on spans: a replay is found among the stored spans of
    its batch's time range, also when the replay comes with new spans far away in time.
    """
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    producer = publish(trace_id=trace_id, event_id="A", span_id=producer_id)
    consumer = process(trace_id=trace_id, parent=producer_id, event_id="A", queue="q", span_id=consumer_id)
    store.append([normalise(request(producer))])
    later = publish(trace_id=new_trace(), event_id="B", start_ms=3_600_000)
    earlier = publish(trace_id=new_trace(), event_id="C", start_ms=-3_600_000)
    store.append([normalise(request(later, producer, consumer, earlier))])
    store.append([normalise(request(consumer)), normalise(request(producer, later))])
    assert rows(store, "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans") == [(4, 4)]
    assert rows(store, "SELECT count(*) FROM deliveries") == [(1,)]
    assert rows(store, "SELECT event_id FROM events ORDER BY event_id") == [("A",), ("B",), ("C",)]


def test_a_span_id_stored_in_another_trace_is_not_a_replay(store: Store) -> None:
    """The replay lookup asks the stored spans by span id: a span with the id of a stored span
    of another trace, in the same instant, is new (found pairs are matched by both ids).
    """
    shared = new_span_id()
    first = publish(trace_id=new_trace(), event_id="A", span_id=shared)
    second = publish(trace_id=new_trace(), event_id="B", span_id=shared)
    store.append([normalise(request(first))])
    store.append([normalise(request(second, first))])
    assert rows(store, "SELECT count(*), count(DISTINCT trace_id) FROM spans") == [(2, 2)]
    assert rows(store, "SELECT event_id FROM events ORDER BY event_id") == [("A",), ("B",)]


def test_rows_become_the_arrow_table_from_pylist_makes() -> None:
    """The writer's transposed rows-to-Arrow against pyarrow's own ``from_pylist``, on rows with
    every column kind: NULLs, links, errors, legacy names, a settle, a span without messaging.
    """
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    batch = normalise(
        request(
            publish(trace_id=trace_id, event_id=None, span_id=producer_id),
            publish(trace_id=trace_id, event_id="B", parent=consumer_id, causation_id="A", start_ms=12),
            process(trace_id=trace_id, parent=producer_id, event_id=None, queue="q", span_id=consumer_id),
            process(trace_id=trace_id, parent=producer_id, event_id="A", queue="q", outcome=None),
            settle(trace_id=trace_id, delivery=consumer_id, outcome="nack", queue="q"),
        )
    )
    for rows_, schema in (
        (batch.spans, duckdb_store._SPANS),
        (batch.events, duckdb_store._EVENTS),
        (batch.deliveries, duckdb_store._DELIVERIES),
        ([], duckdb_store._SPANS),
    ):
        assert duckdb_store._arrow(rows_, schema).equals(pa.Table.from_pylist(rows_, schema=schema))
    assert {row["event_id"] for row in batch.deliveries} == {None, "A"}


@pytest.mark.parametrize(("table", "version"), [("spans", 7), ("events", 8)])
def test_a_table_rebuilt_without_its_primary_key_keeps_its_rows(
    tmp_path: Path, table: str, version: int
) -> None:
    """Migrations 7 (spans) and 8 (events) rebuild a table without its primary key: the same
    rows and column order, and still one row per span / event.
    """
    path = tmp_path / "keyed.duckdb"
    trace_id, producer_id = new_trace(), new_span_id()
    first = publish(trace_id=trace_id, event_id="A", span_id=producer_id, causation_id="Z")
    store = open_store(path, grace_s=0)
    try:
        store.append([normalise(request(first))])
        before = rows(store, f"SELECT * FROM {table}")
        columns = rows(
            store, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
        )
    finally:
        store.close()
    with duckdb.connect(str(path)) as connection:  # back to the version before: the keyed table
        connection.execute(f"CREATE TABLE {table}_keyed AS SELECT * FROM {table}")
        connection.execute(f"DROP TABLE {table}")
        connection.execute(_read_schema_v1(table))
        connection.execute(f"INSERT INTO {table} SELECT * FROM {table}_keyed")
        connection.execute(f"DROP TABLE {table}_keyed")
        connection.execute(f"DELETE FROM schema_version WHERE version >= {version}")
    store = open_store(path, grace_s=0)
    try:
        assert rows(store, f"SELECT * FROM {table}") == before
        assert (
            rows(store, f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'")
            == columns
        )
        assert rows(
            store,
            f"SELECT count(*) FROM duckdb_constraints() WHERE table_name = '{table}' "
            "AND constraint_type = 'PRIMARY KEY'",
        ) == [(0,)]
        store.append([normalise(request(first))])  # a replay
        store.append([normalise(request(publish(trace_id=new_trace(), event_id="A")))])  # same id, new span
        assert rows(store, "SELECT count(*), any_value(causation_id) FROM events") == [(1, "Z")]
        assert rows(store, f"SELECT count(*) FROM spans WHERE span_id = '{producer_id}'") == [(1,)]
    finally:
        store.close()


def _read_schema_v1(table: str) -> str:
    from importlib import resources

    text = (
        resources.files("eventscope.tracer.store").joinpath("sql", "schema.sql").read_text(encoding="utf-8")
    )
    start = text.index(f"CREATE TABLE IF NOT EXISTS {table} ")
    return text[start : text.index(");", start) + 2]


def test_replay_lookups_read_one_range_per_cluster_of_start_times() -> None:
    from eventscope.tracer.store.duck import CLUSTER_GAP_US, time_clusters

    hour, minute = 3_600_000_000, 60_000_000
    stray = 0  # an unset start time
    times = [hour, hour + 5, stray, hour + minute, hour + minute + CLUSTER_GAP_US + 1]
    assert time_clusters(times) == [(0, 0), (hour, hour + minute), (times[-1], times[-1])]


def test_written_says_new_only_above_its_floor_and_never_for_what_it_added() -> None:
    """What lets the writer skip its replay lookups: a key is surely new only when its order
    is above the floor (the highest stored at open) and it was not added since; past its
    memory the floor rises to the highest order added, so nothing added is ever said new.
    """
    from eventscope.tracer.store.duck import Written

    assert Written(None).new(0, "anything")  # an empty table
    written: Written[int] = Written(10, memory=3)
    assert written.new(11, "a") and not written.new(10, "b") and not written.new(5, "c")
    written.add([(12, "a"), (11, "b")])
    assert not written.new(12, "a") and not written.new(11, "b")
    assert written.new(11, "x")  # below the highest added, but never stored
    written.add([(14, "c"), (13, "d")])  # past the memory: the floor rises
    assert (written.floor, written.top) == (14, 14)
    assert not any(written.new(order, key) for order, key in ((12, "a"), (11, "b"), (14, "c"), (13, "d")))
    assert not written.new(13, "y") and written.new(15, "y")


def test_replays_after_a_restart_are_stored_once_even_with_start_times_ahead_of_the_clock(
    tmp_path: Path,
) -> None:
    """After a restart the writer remembers nothing it wrote: a replay must still be found in
    the file, also one whose start time lies after the restart (a sender's clock ahead).
    """
    path = tmp_path / "restart.duckdb"
    trace_id, producer_id = new_trace(), new_span_id()
    producer = publish(trace_id=trace_id, event_id="A", span_id=producer_id)
    consumer = process(trace_id=trace_id, parent=producer_id, event_id="A", queue="q")
    ahead = publish(trace_id=new_trace(), event_id="F", start_ms=10 * 365 * 86_400_000)  # ten years on
    store = open_store(path, grace_s=0)
    try:
        store.append([normalise(request(producer, consumer, ahead))])
    finally:
        store.close()
    store = open_store(path, grace_s=0)
    try:
        fresh = publish(trace_id=new_trace(), event_id="G", start_ms=10 * 365 * 86_400_000 + 1)
        store.append([normalise(request(ahead, fresh)), normalise(request(consumer, producer))])
        assert rows(store, "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans") == [(4, 4)]
        assert rows(store, "SELECT count(*) FROM deliveries") == [(1,)]
        assert rows(store, "SELECT event_id FROM events ORDER BY event_id") == [("A",), ("F",), ("G",)]
    finally:
        store.close()


def test_replays_are_stored_once_after_the_writer_forgot_what_it_wrote(tmp_path: Path) -> None:
    """A writer whose memory of written spans and events overflows (the floor rises) still
    finds every replay in the file, earlier ones and the latest alike.
    """
    from eventscope.tracer.store.duck import Written

    store = open_store(tmp_path / "forget.duckdb", grace_s=0)
    try:
        inner = store.store
        inner._spans_written, inner._events_written = Written(None, memory=2), Written(None, memory=2)
        spans = [publish(trace_id=new_trace(), event_id=f"E{n}", start_ms=n) for n in range(5)]
        for message in spans:
            store.append([normalise(request(message))])
        assert inner._spans_written.floor is not None and inner._events_written.floor is not None
        store.append([normalise(request(*reversed(spans)))])
        store.append([normalise(request(spans[-1]))])
        assert rows(store, "SELECT count(*), count(DISTINCT span_id) FROM spans") == [(5, 5)]
        assert rows(store, "SELECT count(*), count(DISTINCT event_id) FROM events") == [(5, 5)]
    finally:
        store.close()
