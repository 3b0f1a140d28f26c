"""The store with broker truth: span/firehose merges, delivery pairing, replays, dead letters,
management snapshots, the orphan reasons they make possible, and the v1 → v2 migration.

No broker here: firehose records are decoded from the header tables RabbitMQ sends
(``parse_record``), dead-lettered copies and snapshots are built as the taps build them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from eventscope.tracer.broker.firehose import parse_record
from eventscope.tracer.broker.management import queue_row
from eventscope.tracer.broker.records import (
    BrokerBatch,
    DeadLetter,
    Death,
    Topology,
    normalise_dead_letters,
    normalise_firehose,
)
from eventscope.tracer.ingest.normaliser import normalise, synthesized_event_id
from eventscope.tracer.query import questions as queries
from eventscope.tracer.store.duckdb_store import SCHEMA_VERSION, Store
from tests.spans import new_span_id, new_trace, open_store, process, publish, request, rows, sid

T0_NS = 1_700_000_000_000_000_000  # the span helpers' epoch (2023)
MS = 1_000_000


def orphans(store: Store, grace_s: float = 0) -> set[tuple]:
    reader = store.reader()
    try:
        found = queries.orphans(reader, grace_s=grace_s)
    finally:
        reader.close()
    return {(row["event_id"], row["queue"], row["reason"]) for row in found}


def record(
    kind: str,
    name: str,
    *,
    message_id: str | None,
    exchange: str = "shop",
    routing_key: str = "order.placed",
    routed: list[str] | None = None,
    redelivered: int = 0,
    at_ms: int = 5,
    headers: dict[str, Any] | None = None,
    body: bytes = b"{}",
) -> Any:
    """A firehose record as RabbitMQ sends it (``publish.<exchange>`` / ``deliver.<queue>``)."""
    properties: dict[str, Any] = {"headers": dict(headers or {})}
    if message_id is not None:
        properties["message_id"] = message_id
    table: dict[str, Any] = {
        "exchange_name": exchange,
        "routing_keys": [routing_key],
        "properties": properties,
        "connection": "127.0.0.1:1 -> 127.0.0.1:5672",
        "channel": 1,
    }
    if kind == "publish":
        table["routed_queues"] = routed or []
    else:
        table["redelivered"] = redelivered
    return parse_record(f"{kind}.{name}", table, body, T0_NS + at_ms * MS)


def firehose(*records: Any) -> BrokerBatch:
    return normalise_firehose(records)


def test_firehose_then_span_and_span_then_firehose_make_one_event(store: Store) -> None:
    trace_id, span_id = new_trace(), new_span_id()
    seen = record("publish", "shop", message_id="A", routed=["billing", "shipping"])
    store.append([firehose(seen)])
    assert rows(store, "SELECT source, routed_queues, trace_id FROM events") == [
        ("firehose", ["billing", "shipping"], None)
    ]
    store.append([normalise(request(publish(trace_id=trace_id, event_id="A", span_id=span_id)))])
    store.append([normalise(request(publish(trace_id=trace_id, event_id="B")))])
    store.append([firehose(record("publish", "shop", message_id="B", routed=[]))])
    store.append([firehose(seen)])  # a replay changes nothing
    got = rows(
        store,
        "SELECT event_id, source, routed_queues, trace_id, span_id, producer_service, exchange "
        "FROM events ORDER BY event_id",
    )
    assert len(got) == 2  # one row per event id (events has no primary key since schema v8)
    assert got[0] == ("A", "both", ["billing", "shipping"], trace_id, span_id, "orders", "shop")
    assert got[1][:3] == ("B", "both", [])
    # both sides in one write, then both replayed in one write: still one merged row
    span_c = normalise(request(publish(trace_id=new_trace(), event_id="C")))
    seen_c = firehose(record("publish", "shop", message_id="C", routed=["billing"]))
    store.append([span_c, seen_c])
    store.append([seen_c, span_c])
    assert rows(store, "SELECT source, routed_queues FROM events WHERE event_id = 'C'") == [
        ("both", ["billing"])
    ]
    # the producer span's time wins: it is when the publish happened
    assert rows(store, "SELECT epoch_us(published_at) FROM events WHERE event_id = 'A'") == [(T0_NS // 1000,)]


def test_deliveries_pair_span_and_firehose_attempts_and_replays_are_stored_once(store: Store) -> None:
    trace_id = new_trace()
    producer = publish(trace_id=trace_id, event_id="A", routing_key="work", exchange="")
    first = process(trace_id=trace_id, parent=sid(producer), event_id="A", queue="work", outcome=None)
    again = process(
        trace_id=trace_id,
        parent=sid(producer),
        event_id="A",
        queue="work",
        start_ms=50,
        end_ms=60,
        redelivered=True,
    )
    publish_record = record("publish", "", message_id="A", exchange="", routing_key="work", routed=["work"])
    deliver_1 = record("deliver", "work", message_id="A", exchange="", routing_key="work", at_ms=11)
    deliver_2 = record(
        "deliver", "work", message_id="A", exchange="", routing_key="work", redelivered=1, at_ms=51
    )
    store.append([firehose(publish_record, deliver_1)])  # the broker first
    store.append([normalise(request(producer, first, again))])  # then both consumer spans
    store.append([firehose(deliver_2), firehose(deliver_2)])  # the redelivery, twice in one write
    store.append([firehose(publish_record, deliver_1, deliver_2)])  # and a replay of everything
    got = rows(
        store,
        "SELECT redelivered, outcome, source, trace_id IS NOT NULL, record_id IS NOT NULL "
        "FROM deliveries ORDER BY received_at",
    )
    assert got == [(False, None, "both", True, True), (True, "ack", "both", True, True)]
    assert orphans(store) == set()  # the latest attempt was acked


def test_a_delivery_only_the_firehose_saw_is_consumed_with_an_unknown_settle(store: Store) -> None:
    store.append(
        [
            firehose(
                record("publish", "", message_id=None, exchange="", routing_key="legacy", routed=["legacy"]),
                record("deliver", "legacy", message_id=None, exchange="", routing_key="legacy"),
            )
        ]
    )
    ((event_id, source),) = rows(store, "SELECT event_id, source FROM events")
    assert event_id.startswith("amqp-") and source == "firehose"
    assert rows(store, "SELECT event_id, queue, outcome, source, trace_id FROM deliveries") == [
        (event_id, "legacy", None, "firehose", None)
    ]
    assert orphans(store) == set()


def test_trace_context_joins_a_publish_without_message_id_to_its_spans(store: Store) -> None:
    """opentelemetry-instrumentation-pika: no message id, but a traceparent of the producer span."""
    trace_id, producer_id, consumer_id = new_trace(), new_span_id(), new_span_id()
    traceparent = {"traceparent": f"00-{trace_id}-{producer_id}-01"}
    store.append(
        [
            firehose(
                record(
                    "publish",
                    "",
                    message_id=None,
                    exchange="",
                    routing_key="q",
                    routed=["q"],
                    headers=traceparent,
                ),
                record("deliver", "q", message_id=None, exchange="", routing_key="q", headers=traceparent),
            )
        ]
    )
    # the consumer span comes before its producer span: lineage resolves it a batch later
    consumer = process(trace_id=trace_id, parent=producer_id, event_id=None, queue="q", span_id=consumer_id)
    store.append([normalise(request(consumer))])
    store.append([normalise(request(publish(trace_id=trace_id, event_id=None, span_id=producer_id)))])
    event_id = synthesized_event_id(trace_id, producer_id)
    assert rows(store, "SELECT event_id, source FROM events") == [(event_id, "both")]
    assert rows(store, "SELECT event_id, source, outcome, span_id FROM deliveries") == [
        (event_id, "both", "ack", consumer_id)
    ]


def dead_letter(event_id: str, queue: str, reason: str, *, at_ms: int, count: int = 1) -> BrokerBatch:
    death = Death(queue, reason, count, None, "shop", ("order.placed",))
    return normalise_dead_letters([DeadLetter(event_id, "dlx", T0_NS + at_ms * MS, (death,))])


def test_dead_lettered_is_one_row_per_queue_and_a_later_delivery_wins(store: Store) -> None:
    trace_id = new_trace()
    spans = [publish(trace_id=trace_id, event_id=e, exchange="", routing_key="work") for e in "NRE"]
    spans += [
        process(trace_id=trace_id, parent=None, event_id="N", queue="work", outcome="nack"),
        # R: rejected, dead-lettered, retried through a delay queue, then acked
        process(trace_id=trace_id, parent=None, event_id="R", queue="work", outcome="reject"),
        process(
            trace_id=trace_id,
            parent=None,
            event_id="R",
            queue="work",
            start_ms=500,
            end_ms=510,
            redelivered=True,
        ),
    ]
    store.append([normalise(request(*spans))])
    store.append([dead_letter("N", "work", "rejected", at_ms=25)])
    store.append(
        [dead_letter("R", "work", "rejected", at_ms=25), dead_letter("R", "delay", "expired", at_ms=400)]
    )
    store.append([dead_letter("N", "work", "rejected", at_ms=25)])  # a replay
    # E: spans only, never received, died of a TTL in a queue we now know
    store.append([dead_letter("E", "timed", "expired", at_ms=300)])
    assert rows(store, "SELECT count(*) FROM dead_letters") == [(4,)]
    assert orphans(store) == {("N", "work", "dead_lettered"), ("E", "timed", "dead_lettered")}


def test_expired_needs_the_queue_ttl_and_its_time(store: Store) -> None:
    now_ns = duckdb.connect().execute("SELECT epoch_ns(now())").fetchall()[0][0]
    publish_at = (now_ns - T0_NS) // MS - 5_000  # five seconds ago
    for message_id, queue in (("X", "short"), ("Y", "long"), ("Z", "plain")):
        store.append(
            [
                firehose(
                    record(
                        "publish",
                        "",
                        message_id=message_id,
                        exchange="",
                        routing_key=queue,
                        routed=[queue],
                        at_ms=publish_at,
                    )
                )
            ]
        )
    polled = now_ns // 1000
    queues = [
        queue_row({"name": "short", "vhost": "/", "arguments": {"x-message-ttl": 1000}}, polled),
        queue_row(
            {
                "name": "long",
                "vhost": "/",
                "arguments": {},
                "effective_policy_definition": {"message-ttl": 60_000},
            },
            polled,
        ),
        queue_row({"name": "plain", "vhost": "/", "arguments": {}}, polled),
    ]
    store.append([BrokerBatch(topology=Topology("/", polled, queues=queues))])
    assert orphans(store) == {
        ("X", "short", "expired"),
        ("Y", "long", "unconsumed"),
        ("Z", "plain", "unconsumed"),
    }


def test_snapshots_upsert_and_mark_what_is_gone(store: Store) -> None:
    first = Topology(
        "/",
        1_000_000,
        queues=[queue_row({"name": n, "vhost": "/", "messages": 3}, 1_000_000) for n in ("a", "b")],
    )
    second = Topology(
        "/", 2_000_000, queues=[queue_row({"name": "a", "vhost": "/", "messages": 0}, 2_000_000)]
    )
    store.append([BrokerBatch(topology=first)])
    store.append([BrokerBatch(topology=second)])
    got = rows(
        store,
        "SELECT name, messages, present, epoch(first_seen_at), epoch(last_seen_at) FROM queues ORDER BY 1",
    )
    assert got == [("a", 0, True, 1.0, 2.0), ("b", 3, False, 1.0, 1.0)]


def test_a_version_1_database_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.duckdb"
    from importlib import resources

    v1 = resources.files("eventscope.tracer.store").joinpath("sql", "schema.sql").read_text()
    with duckdb.connect(str(path)) as connection:
        connection.execute(v1)
        connection.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        connection.execute("INSERT INTO schema_version VALUES (1, now())")
        connection.execute(
            "INSERT INTO deliveries VALUES ('A', 'q', 's', now(), now(), 'ack', false, NULL, 't', 's')"
        )
    store = open_store(path)
    try:
        assert rows(store, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
        assert rows(store, "SELECT event_id, outcome, source, record_id FROM deliveries") == [
            ("A", "ack", "span", None)
        ]
        assert rows(store, "SELECT count(*) FROM dead_letters") == [(0,)]
    finally:
        store.close()
