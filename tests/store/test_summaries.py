"""The writer's summaries (tracer/store/summaries.py, schema version 12) say exactly what the
derivation from the tables says, whatever order spans, firehose records, settles and dead
letters arrive in, across restarts, retention and the migration that adds them; and the
questions that read them answer as the derivation does.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.query import questions as queries
from eventscope.tracer.query.topology import CONSISTENCY_PER_EVENT, PER_DELIVERY, PER_FLOW
from eventscope.tracer.store import summaries
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import new_trace, open_store, process, publish, request, sid
from tests.store.test_delivery_state import _scenario
from tests.store.test_store_broker import T0_NS, firehose, record

# summary table → its derivation from the tables (a delivery summary has no key: every column)
_SUMMARIES = {
    "event_consistency": CONSISTENCY_PER_EVENT,
    "delivery_summary": PER_DELIVERY,
    "flow_summary": PER_FLOW,
}


def _both(store: Store) -> tuple[list[list[tuple]], list[list[tuple]]]:
    reader = store.reader()
    kept, derived = [], []
    try:
        for table, derivation in _SUMMARIES.items():
            kept.append(reader.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall())
            derived.append(reader.execute(f"SELECT * FROM ({derivation}) ORDER BY ALL").fetchall())
    finally:
        reader.close()
    return kept, derived


def _assert_same(store: Store) -> int:
    kept, derived = _both(store)
    assert kept == derived
    return min(len(rows) for rows in derived)


@pytest.mark.parametrize("seed", range(6))
def test_event_consistency_equals_the_derivation(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    now_ns = duckdb.connect().execute("SELECT epoch_ns(now())").fetchall()[0][0]
    batches = _scenario(rng, 40, (now_ns - T0_NS) // 1_000_000) + _handled_elsewhere(rng, 10)
    rng.shuffle(batches)
    path = tmp_path / "s.duckdb"
    store = open_store(path, grace_s=0)
    try:
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
            _assert_same(store)
        store.resolve_missing(older_than_s=0)
        assert _assert_same(store) > 0
        store.retain(max_age_s=120)  # drops the 2023 rows, keeps the recent ones
        _assert_same(store)
    finally:
        store.close()


def _pages(reader: duckdb.DuckDBPyConnection) -> tuple:
    """What the overview, orphans, topology, lag and workflows pages ask that the summaries
    serve (workflows with every flow idle and with none: no flow near the boundary that the
    clock moving between two runs could move).
    """
    return (
        queries.slowest(reader, limit=50),
        queries.lag(reader, outliers=50),
        queries.topology(reader),
        queries.fanout_delivered(reader),
        queries.fanout(reader),
        queries.workflows(reader, stuck_after_s=0, limit=1000),
        queries.workflows(reader, stuck_after_s=1e9, limit=1000),
        queries.workflows(reader, stuck_after_s=0, status="stuck", limit=5),
    )


def _handled_elsewhere(rng: random.Random, n: int) -> list:
    """Events the orders service publishes and other services consume (the scenario's spans
    all come from one service): routes to several consumers, who talks to whom, and flows of
    two events; in a shuffled order.
    """
    batches = []
    for i in range(n):
        trace_id = new_trace()
        producer = publish(trace_id=trace_id, event_id=f"X{i}", start_ms=i * 10)
        batches.append(normalise(request(producer)))
        for queue, service in rng.sample(
            [("billing", "payments"), ("audit", "ledger"), ("work", "shipping")], 2
        ):
            start = i * 10 + rng.randint(1, 40)
            consumer = process(
                trace_id=trace_id,
                parent=sid(producer),
                event_id=f"X{i}",
                queue=queue,
                outcome=rng.choice(["ack", "nack", None]),
                start_ms=start,
                end_ms=start + rng.randint(1, 9),
            )
            batches.append(normalise(request(consumer, service=service)))
        if i % 2:  # a flow of two: the payment's event, correlated with the order
            follow = publish(
                trace_id=trace_id,
                event_id=f"Y{i}",
                causation_id=f"X{i}",
                parent=sid(producer),
                start_ms=i * 10 + 50,
            )
            batches.append(normalise(request(follow, service="payments")))
            if rng.random() < 0.5:  # the firehose's row first, without the correlation id
                at_ms = i * 10 + 50
                publish_record = record(
                    "publish",
                    "shop",
                    message_id=f"Y{i}",
                    exchange="shop",
                    routing_key="order.placed",
                    at_ms=at_ms,
                )
                batches.append(firehose(publish_record))
    rng.shuffle(batches)
    return batches


def test_questions_read_the_summaries_as_they_read_the_derivation(tmp_path: Path) -> None:
    path = tmp_path / "q.duckdb"
    store = open_store(path, grace_s=0)
    try:
        for batch in _scenario(random.Random(7), 60, 0) + _handled_elsewhere(random.Random(8), 12):
            store.append([batch])
        reader = store.reader()
        with_summaries = _pages(reader)
        for table in _SUMMARIES:  # as a version 11 file
            reader.execute(f"ALTER TABLE {table} RENAME TO _hidden_{table}")
        derived = _pages(reader)
        reader.execute("ALTER TABLE _hidden_event_consistency RENAME TO event_consistency")  # version 12
        only_consistency = _pages(reader)
        reader.execute("ALTER TABLE _hidden_delivery_summary RENAME TO delivery_summary")
        reader.close()
        slowest, lag, topology, delivered, _, idle, busy, _ = with_summaries
        assert slowest and lag["queues"] and topology["routes"] and topology["collaboration"] and delivered
        assert idle["by_status"].keys() == {"stuck", "complete"} and "in progress" in busy["by_status"]
        assert any(flow["events"] > 1 for flow in idle["flows_shown"])
        assert with_summaries == derived == only_consistency
    finally:
        store.close()


@pytest.mark.parametrize("version", [summaries.VERSION, 13])
def test_an_older_database_gets_its_summaries_on_migration(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version - 1}.duckdb"
    store = open_store(path, grace_s=0)
    try:
        for batch in _scenario(random.Random(42), 30, 0):
            store.append([batch])
        expected = _both(store)[1]
        assert all(expected)
    finally:
        store.close()
    with duckdb.connect(str(path)) as connection:  # back to the version before: without its summaries
        connection.execute("DROP TABLE delivery_summary")
        connection.execute("DROP TABLE flow_summary")
        if version <= summaries.VERSION:
            connection.execute("DROP TABLE event_consistency")
        connection.execute("DELETE FROM schema_version WHERE version >= ?", [version])
    store = open_store(path, grace_s=0)
    try:
        kept, derived = _both(store)
        assert kept == derived == expected
    finally:
        store.close()


# The pages' questions as main asked them before the summaries (schema version 12): joins of
# deliveries with events. The questions must answer exactly as these do.
_WAIT_MS = "(epoch_us(d.received_at) - epoch_us(e.published_at)) / 1000.0"
_BEFORE = {
    "routes": f"""
SELECT e.exchange, d.queue, d.consumer_service AS consumer, count(*) AS deliveries,
       count(*) FILTER (WHERE d.outcome IS DISTINCT FROM 'ack') AS errors,
       quantile_cont({_WAIT_MS}, 0.5) AS wait_p50_ms,
       count(*) / greatest(date_diff('millisecond', min(d.received_at), max(d.received_at)) / 1000.0, 1.0)
           AS deliveries_per_s
FROM deliveries d JOIN events e ON e.event_id = d.event_id
GROUP BY ALL ORDER BY deliveries DESC, e.exchange, d.queue, consumer
""",
    "queues": f"""
WITH per AS (
    SELECT d.queue, d.consumer_service, count(*) AS deliveries,
           quantile_cont({_WAIT_MS}, [0.5, 0.95]) AS wait,
           quantile_cont((epoch_us(d.settled_at) - epoch_us(d.received_at)) / 1000.0, [0.5, 0.95]) AS work
    FROM deliveries d JOIN events e ON e.event_id = d.event_id
    WHERE d.queue IS NOT NULL
    GROUP BY ALL
)
SELECT queue, consumer_service, deliveries, wait[1] AS wait_p50_ms, wait[2] AS wait_p95_ms,
       work[1] AS processing_p50_ms, work[2] AS processing_p95_ms
FROM per ORDER BY wait_p95_ms DESC NULLS LAST, queue
""",
    "delivered": """
WITH typed AS (SELECT event_type, count(*) AS events FROM events GROUP BY 1)
SELECT e.event_type, d.queue, count(*) FILTER (WHERE NOT coalesce(d.redelivered, false)) AS delivered,
       count(*) FILTER (WHERE d.outcome = 'ack') AS acked, any_value(t.events) AS events
FROM deliveries d JOIN events e ON e.event_id = d.event_id JOIN typed t ON t.event_type = e.event_type
WHERE d.queue IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
""",
    "talks": """
SELECT DISTINCT e.producer_service AS sender, d.consumer_service AS receiver
FROM deliveries d JOIN events e ON e.event_id = d.event_id
WHERE e.producer_service IS NOT NULL AND d.consumer_service IS NOT NULL
  AND e.producer_service <> d.consumer_service ORDER BY ALL
""",
    "flows": """
WITH flows AS (SELECT coalesce(correlation_id, event_id) AS flow_id, event_id FROM events)
SELECT f.flow_id, count(DISTINCT f.event_id) AS events,
       max(coalesce(d.settled_at, d.received_at)) AS last_handled_at,
       count(d.event_id) FILTER (WHERE d.event_id IS NOT NULL AND d.outcome IS NULL) AS unsettled
FROM flows f LEFT JOIN deliveries d ON d.event_id = f.event_id
GROUP BY 1 ORDER BY 1
""",
}


def test_the_questions_answer_as_the_joins_before_the_summaries(tmp_path: Path) -> None:
    store = open_store(tmp_path / "b.duckdb", grace_s=0)
    try:
        for batch in _scenario(random.Random(11), 60, 0) + _handled_elsewhere(random.Random(12), 12):
            store.append([batch])
        reader = store.reader()
        before = {name: reader.execute(sql).fetchall() for name, sql in _BEFORE.items()}
        topology, lag = queries.topology(reader), queries.lag(reader)
        delivered = queries.fanout_delivered(reader)
        flows = reader.execute(
            "SELECT flow_id, events, last_activity_at, unsettled FROM flow_summary ORDER BY flow_id"
        ).fetchall()
        published = dict(
            reader.execute(
                "SELECT coalesce(correlation_id, event_id), max(published_at) FROM events GROUP BY 1"
            ).fetchall()
        )
        reader.close()
        assert all(before.values())
        assert [tuple(row.values()) for row in topology["routes"]] == before["routes"]
        assert [tuple(row.values()) for row in lag["queues"]] == before["queues"]
        assert [
            (r["event_type"], r["queue"], r["delivered"], r["acked"], r["events"]) for r in delivered
        ] == before["delivered"]
        talks = sorted((r["service"], r["sends_to"]) for r in topology["collaboration"])
        senders = {sender for sender, _ in before["talks"]}
        assert talks == sorted(
            (s, sum(1 for sender, _ in before["talks"] if sender == s))
            for s in senders | {receiver for _, receiver in before["talks"]}
        )
        expected_flows = [
            (flow_id, events, max(t for t in (published[flow_id], handled) if t is not None), unsettled)
            for flow_id, events, handled, unsettled in before["flows"]
        ]
        assert [tuple(row) for row in flows] == expected_flows
    finally:
        store.close()
