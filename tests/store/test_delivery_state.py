"""The maintained delivery state (delivery_state, kept by the writer with each batch) says
exactly what orphans_after re-derives from the tables, whatever order the spans, firehose
records, settles and dead letters arrive in, across restarts, migration and retention.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from eventscope.tracer.broker.management import queue_row
from eventscope.tracer.broker.records import BrokerBatch, Topology
from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import new_trace, open_store, process, publish, request, settle, sid
from tests.store.test_store_broker import T0_NS, dead_letter, firehose, record

_COLUMNS = "event_id, event_type, exchange, routing_key, queue, reason, published_at"
_QUEUES = ["work", "billing", "audit"]


def _both(store: Store, grace_s: float) -> tuple[list[tuple], list[tuple]]:
    reader = store.reader()
    try:
        # one transaction, so both read the same now(): an event whose queue TTL runs out
        # between two statements is 'unconsumed' to one and 'expired' to the other (a slow
        # machine made this test flaky before)
        reader.execute("BEGIN TRANSACTION READ ONLY")
        maintained = reader.execute(f"SELECT {_COLUMNS} FROM maintained_orphans(?)", [grace_s]).fetchall()
        derived = reader.execute(f"SELECT {_COLUMNS} FROM orphans_after(?)", [grace_s]).fetchall()
        reader.execute("ROLLBACK")
    finally:
        reader.close()
    return maintained, derived


def _assert_same(store: Store) -> int:
    found = 0
    for grace_s in (0, 30, 10**10):
        maintained, derived = _both(store, grace_s)
        assert maintained == derived, f"grace {grace_s}"
        found = max(found, len(derived))
    return found


def _scenario(rng: random.Random, n: int, now_ms: int) -> list:
    """Batches for ``n`` events with random fates, in a shuffled order."""
    batches: list = []
    for i in range(n):
        event_id = None if rng.random() < 0.15 else f"E{i}"
        trace_id = new_trace()
        default = rng.random() < 0.5
        queues = rng.sample(_QUEUES, rng.randint(0, 2)) if not default else ["work"]
        exchange, key = ("", "work") if default else ("shop", "order.placed")
        at_ms = rng.choice([i * 10, now_ms - rng.randint(0, 60_000)])
        producer = publish(
            trace_id=trace_id, event_id=event_id, exchange=exchange, routing_key=key, start_ms=at_ms
        )
        spans = [producer]
        if rng.random() < 0.7:
            batches.append(normalise(request(producer)))
            spans = []
        if event_id is not None and rng.random() < 0.5:
            batches.append(
                firehose(
                    record(
                        "publish",
                        exchange,
                        message_id=event_id,
                        exchange=exchange,
                        routing_key=key,
                        routed=queues,
                        at_ms=at_ms,
                    )
                )
            )
        for queue in queues if rng.random() < 0.8 else []:
            for attempt in range(rng.randint(0, 2)):
                outcome = rng.choice(["ack", "ack", "nack", "reject", "requeue", "error", None])
                start = at_ms + 10 + attempt * 100
                consumer = process(
                    trace_id=trace_id,
                    parent=sid(producer),
                    event_id=event_id if rng.random() < 0.7 else None,
                    queue=queue,
                    outcome=None if outcome == "error" else outcome,
                    start_ms=start,
                    end_ms=start + 5,
                    error=outcome == "error",
                    redelivered=attempt > 0,
                )
                spans.append(consumer)
                if outcome is None and rng.random() < 0.5:
                    batches.append(
                        normalise(
                            request(
                                settle(
                                    trace_id=trace_id,
                                    delivery=sid(consumer),
                                    outcome=rng.choice(["ack", "nack", "requeue"]),
                                    queue=queue,
                                )
                            )
                        )
                    )
                if event_id is not None and rng.random() < 0.3:
                    batches.append(
                        firehose(
                            record(
                                "deliver",
                                queue,
                                message_id=event_id,
                                exchange=exchange,
                                routing_key=key,
                                redelivered=int(attempt > 0),
                                at_ms=start + 1,
                            )
                        )
                    )
            if event_id is not None and rng.random() < 0.2:
                batches.append(
                    dead_letter(event_id, queue, rng.choice(["rejected", "expired"]), at_ms=at_ms + 50)
                )
        if event_id is not None and rng.random() < 0.05:
            batches.append(dead_letter(event_id, "elsewhere", "expired", at_ms=at_ms + 70))
        if spans:
            batches.append(normalise(request(*spans)))
    rng.shuffle(batches)
    return batches


@pytest.mark.parametrize("seed", range(6))
def test_maintained_orphans_equal_the_derived_ones(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    now_ns = duckdb.connect().execute("SELECT epoch_ns(now())").fetchall()[0][0]
    batches = _scenario(rng, 40, (now_ns - T0_NS) // 1_000_000)
    path = tmp_path / "s.duckdb"
    store = open_store(path, grace_s=0)
    try:
        polled = now_ns // 1000
        queues = [queue_row({"name": "work", "vhost": "/", "arguments": {"x-message-ttl": 1000}}, polled)]
        store.append([BrokerBatch(topology=Topology("/", polled, queues=queues))])
        half = len(batches) // 2
        for start in range(0, half, 3):  # groups of batches, as the writer commits them
            store.append(batches[start : min(start + 3, half)])
            _assert_same(store)
    finally:
        store.close()
    store = open_store(path, grace_s=0)  # the rest after a restart: lineage looks spans up
    try:
        for batch in batches[half:]:
            store.append([batch])
        store.resolve_missing(older_than_s=0)
        assert _assert_same(store) > 0
        store.retain(max_age_s=120)  # drops the 2023 rows, keeps the recent ones
        _assert_same(store)
    finally:
        store.close()


def test_a_version_3_database_gets_its_state_on_migration(tmp_path: Path) -> None:
    path = tmp_path / "v3.duckdb"
    store = open_store(path, grace_s=0)
    try:
        for batch in _scenario(random.Random(42), 30, 0):
            store.append([batch])
        expected = _both(store, 0)[1]
        assert expected
    finally:
        store.close()
    with duckdb.connect(str(path)) as connection:  # back to version 3: no state table
        connection.execute("DROP TABLE delivery_state")
        connection.execute("ALTER TABLE causal_edges DROP COLUMN flow_id")  # and version 4 on
        connection.execute("DELETE FROM schema_version WHERE version >= 4")
    store = open_store(path, grace_s=0)
    try:
        maintained, derived = _both(store, 0)
        assert maintained == derived == expected
    finally:
        store.close()


def test_an_acked_event_without_state_gets_one_when_a_later_write_makes_it_an_orphan(
    tmp_path: Path,
) -> None:
    """The writer re-derives the state only of events that can have one: every delivery acked,
    no routing known and no dead letter means none. What comes later for such an event counts."""
    store = open_store(tmp_path / "a.duckdb", grace_s=0)
    try:
        trace_id = new_trace()
        spans = []
        for event_id in "NDR":
            sent = publish(trace_id=trace_id, event_id=event_id)
            spans += [sent, process(trace_id=trace_id, parent=sid(sent), event_id=event_id, queue="work")]
        store.append([normalise(request(*spans))])
        assert _assert_same(store) == 0
        # N: redelivered and nacked; D: dead-lettered from its queue after the delivery;
        # R: the broker says it was routed to a second queue too, which never delivered it
        nacked = process(
            trace_id=trace_id, parent=None, event_id="N", queue="work", outcome="nack", start_ms=50
        )
        store.append([normalise(request(nacked))])
        store.append([dead_letter("D", "work", "rejected", at_ms=60)])
        store.append([firehose(record("publish", "shop", message_id="R", routed=["work", "billing"]))])
        assert _assert_same(store) == 3
        reader = store.reader()
        try:
            found = reader.execute("SELECT event_id, queue, reason FROM orphans ORDER BY event_id").fetchall()
        finally:
            reader.close()
        assert found == [
            ("D", "work", "dead_lettered"),
            ("N", "work", "failed"),
            ("R", "billing", "unconsumed"),
        ]
    finally:
        store.close()
