"""The ClickHouse DDL and views on chDB, differential against the DuckDB store: the same span
batches (and firehose rows) through both stores give the same events, deliveries, causal
edges, chains and orphans. Also: the loader writes otel_traces as the Collector's exporter
does, and the read connection refuses writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from eventscope.tracer.broker.records import BrokerBatch
from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.query import questions
from eventscope.tracer.store.clickhouse import derive, loader
from eventscope.tracer.store.clickhouse import store as store_module
from eventscope.tracer.store.urls import parse_store_url
from tests.spans import new_span_id, new_trace, open_store, process, publish, request, settle, sid


def _shop() -> list[Any]:
    """Requests of a small shop: ack, settle span after processing, nack, error, requeue,
    a delivery resolved through its link (no message id), a chain by causation and by parentage,
    and an event nobody received.
    """
    t1, t2, t3, t4 = (new_trace() for _ in range(4))
    order = publish(trace_id=t1, event_id="order-1", routing_key="order.placed")
    billing = process(trace_id=t1, parent=sid(order), event_id="order-1", queue="billing", outcome=None)
    billed = settle(trace_id=t1, delivery=sid(billing), outcome="ack", queue="billing")
    invoice = publish(
        trace_id=t1, event_id="invoice-1", routing_key="invoice", parent=sid(billing), causation_id="order-1"
    )
    mail = publish(trace_id=t1, event_id="mail-1", routing_key="mail", parent=sid(billing))  # parentage
    failing = process(trace_id=t1, parent=sid(invoice), event_id="invoice-1", queue="invoices", error=True)
    payment = publish(trace_id=t2, event_id="pay-1", routing_key="payment")
    nacked = process(trace_id=t2, parent=sid(payment), event_id="pay-1", queue="payments", outcome="nack")
    requeued = process(trace_id=t2, parent=sid(payment), event_id="pay-1", queue="audit", outcome="requeue")
    anonymous = publish(trace_id=t3, event_id=None, routing_key="note")
    linked = process(
        trace_id=t4,
        parent=None,
        event_id=None,
        queue="notes",
        links=[(t3, sid(anonymous))],
        span_id=new_span_id(),
    )
    lonely = publish(trace_id=t4, event_id="lonely-1", exchange="", routing_key="nobody")
    return [
        request(order, invoice, mail, payment, anonymous, lonely, service="orders"),
        request(billing, billed, failing, nacked, requeued, linked, service="billing"),
    ]


def _firehose() -> BrokerBatch:
    """Broker truth for two events: one routed to a queue nobody read, one unroutable."""
    now_us = 1_700_000_000_000_000
    batch = BrokerBatch()
    for event_id, routed in (("fh-1", ["unread"]), ("fh-2", [])):
        batch.events.append(
            {
                "event_id": event_id,
                "event_type": "fh",
                "exchange": "shop",
                "routing_key": "fh",
                "producer_service": None,
                "published_at": now_us,
                "trace_id": None,
                "span_id": None,
                "causation_id": "order-1" if event_id == "fh-1" else None,
                "correlation_id": None,
                "routed_queues": routed,
                "payload_size": 3,
                "source": "firehose",
            }
        )
    batch.edges.append(("order-1", "fh-1", "causation_id"))
    batch.deliveries.append(
        {
            "event_id": "order-1",
            "queue": "billing",
            "consumer_service": None,
            "received_at": now_us,
            "settled_at": None,
            "outcome": None,
            "redelivered": False,
            "error": None,
            "trace_id": None,
            "span_id": None,
            "source": "firehose",
            "record_id": "record-1",
        }
    )
    return batch


def _duck(tmp_path: Path, requests: list[Any], broker: BrokerBatch) -> Any:
    store = open_store(tmp_path / "diff.duckdb", grace_s=0)
    store.append([normalise(r) for r in requests] + [broker])
    store.resolve_missing(older_than_s=0)
    return store


QUERIES = {
    "events": "SELECT event_id, event_type, exchange, routing_key, producer_service, causation_id, "
    "correlation_id, payload_size, source FROM events ORDER BY event_id",
    "deliveries": "SELECT event_id, queue, consumer_service, outcome, redelivered, error, source, record_id "
    "FROM deliveries ORDER BY event_id, queue, source",
    "edges": "SELECT cause_event_id, effect_event_id, via FROM causal_edges ORDER BY 1, 2",
}


def _rows(reader: Any, sql: str) -> list[tuple]:
    result = questions.run_sql(reader, sql, max_rows=None, timeout_s=None)
    return [tuple(row) for row in result.rows]


def test_the_same_answers_from_duckdb_and_chdb(tmp_path: Path, chstore: Any) -> None:
    requests, broker = _shop(), _firehose()
    duck = _duck(tmp_path, requests, broker)
    chstore.append([normalise(r) for r in requests] + [broker])
    ch, dk = chstore.reader(), duck.reader()
    try:
        for name, sql in QUERIES.items():
            expected = _rows(dk, sql)
            assert expected, name
            assert _rows(ch, sql) == expected, name
        expected = [(o["event_id"], o["queue"], o["reason"]) for o in questions.orphans(dk, grace_s=0)]
        assert {reason for _, _, reason in expected} >= {"failed", "unconsumed", "unroutable"}
        assert sorted(
            (o["event_id"], o["queue"], o["reason"]) for o in questions.orphans(ch, grace_s=0)
        ) == sorted(expected)
        for root in ("order-1", "pay-1", "lonely-1"):
            expected = [(c["event_id"], c["depth"], c["cause_event_id"]) for c in questions.chain(dk, root)]
            assert [
                (c["event_id"], c["depth"], c["cause_event_id"]) for c in questions.chain(ch, root)
            ] == expected
        assert len(questions.chain(dk, "order-1")) == 4  # invoice (causation), mail (parentage), fh-1
        assert questions.event(ch, "fh-2")["event"]["routed_queues"] == []  # unroutable
        assert questions.event(ch, "order-1")["event"]["routed_queues"] is None  # unknown
        assert questions.event(dk, "order-1")["event"]["routed_queues"] is None
    finally:
        duck.close()


def _one_span_per_request(requests: list[Any]) -> list[Any]:
    """The shop's spans, one request each (each service's spans keep their service)."""
    out = []
    for message in requests:
        for resource_spans in message.resource_spans:
            service = resource_spans.resource.attributes[0].value.string_value
            for scope_spans in resource_spans.scope_spans:
                out += [request(one, service=service) for one in scope_spans.spans]
    return out


@pytest.mark.parametrize("order", ["reversed, broker first", "interleaved, broker last"])
def test_the_derive_follows_batches_in_any_order(tmp_path: Path, chstore: Any, order: str) -> None:
    """Spans and broker rows arriving one batch at a time, children before parents, the link
    target after the linked delivery, records before or after their spans: the derived
    tables end up as the one-shot DuckDB store's answers."""
    requests, broker = _shop(), _firehose()
    duck = _duck(tmp_path, requests, broker)
    singles = _one_span_per_request(requests)
    if order.startswith("reversed"):
        batches = [broker] + [normalise(r) for r in reversed(singles)]
    else:
        batches = [normalise(r) for r in singles[1::2] + singles[0::2]] + [broker]
    for batch in batches:
        chstore.append([batch])
    ch, dk = chstore.reader(), duck.reader()
    try:
        for name, sql in QUERIES.items():
            assert _rows(ch, sql) == _rows(dk, sql), name
        fates = [
            sorted((o["event_id"], o["queue"], o["reason"]) for o in questions.orphans(r, grace_s=0))
            for r in (ch, dk)
        ]
        assert fates[0] == fates[1]
        for root in ("order-1", "pay-1"):
            assert [(c["event_id"], c["depth"]) for c in questions.chain(ch, root)] == [
                (c["event_id"], c["depth"]) for c in questions.chain(dk, root)
            ]
        deleted = _rows(ch, "SELECT count() FROM derived_deliveries FINAL WHERE event_id IS NULL")
        assert deleted == [(0,)]  # the linked delivery's unresolved row is gone once resolved
    finally:
        duck.close()


def test_spans_the_collector_wrote_are_derived_by_the_follower(tmp_path: Path, chstore: Any) -> None:
    """At scale the OpenTelemetry Collector writes otel_traces, eventscope is not in the span
    path: the follower derives what arrived since its watermark, with the same answers."""
    requests, broker = _shop(), _firehose()
    duck = _duck(tmp_path, requests, broker)
    chstore.append([broker])
    follower = derive.Follower(chstore.engine, overlap_s=0)
    for message in requests:  # as the exporter inserts: rows only, no derive
        chstore.engine.insert_arrow("otel_traces", loader.to_arrow(loader.rows_from_request(message)))
    ch = chstore.reader()
    assert _rows(ch, "SELECT count() FROM events WHERE event_id = 'order-1'") == [(0,)]  # not yet
    assert follower.run_once() == 4  # the shop's four traces
    assert follower.run_once() == 0  # nothing new since
    try:
        for name, sql in QUERIES.items():
            assert _rows(ch, sql) == _rows(duck.reader(), sql), name
    finally:
        duck.close()


def test_a_replayed_batch_is_counted_once(chstore: Any) -> None:
    requests, broker = _shop(), _firehose()
    for _ in range(2):
        chstore.append([normalise(r) for r in requests] + [broker])
    reader = chstore.reader()
    assert _rows(reader, "SELECT count() FROM events WHERE event_id = 'order-1'") == [(1,)]
    assert _rows(reader, "SELECT count() FROM deliveries WHERE event_id = 'order-1'") == [(1,)]


def test_retention_is_each_tables_ttl(chstore: Any) -> None:
    requests, broker = _shop(), _firehose()  # the spans are from 2023-11 (tests/spans.py)
    for row in broker.events + broker.deliveries:  # the firehose rows from 2020-09
        row["published_at" if "published_at" in row else "received_at"] = 1_600_000_000_000_000
    chstore.append([normalise(r) for r in requests] + [broker])
    max_age_s = int(time.time()) - 1_650_000_000  # keep what happened since 2022-04
    chstore.retain(max_age_s=max_age_s)
    try:
        for table in ("otel_traces", "derived_events", "derived_deliveries", "derived_edges"):
            ddl = chstore.engine.query_arrow(f"SHOW CREATE TABLE {table}").column(0)[0].as_py()
            assert "TTL" in ddl and str(max_age_s) in ddl, table
        for table in ("broker_events", "broker_deliveries", "derived_events", "derived_deliveries"):
            chstore.engine.command(f"OPTIMIZE TABLE {table} FINAL")
        reader = chstore.reader()
        assert _rows(reader, "SELECT count() FROM broker_events") == [(0,)]  # expired
        assert _rows(reader, "SELECT count() FROM events WHERE event_id LIKE 'fh-%'") == [(0,)]
        assert _rows(reader, "SELECT count() FROM events WHERE event_id = 'order-1'") == [(1,)]  # kept
    finally:
        chstore._ttl_s = None
        for table, _ in store_module._TTL_COLUMNS:
            chstore.engine.command(f"ALTER TABLE {table} REMOVE TTL")


def test_the_loader_writes_what_the_exporter_writes(chstore: Any) -> None:
    (orders, _) = _shop()
    assert loader.load_request(chstore.engine, orders) == 6
    rows = chstore.engine.query_arrow(
        "SELECT SpanKind, StatusCode, ServiceName, SpanAttributes['messaging.message.body.size'] AS size, "
        "length(TraceId) AS t, ParentSpanId FROM otel_traces "
        "WHERE SpanAttributes['messaging.message.id'] = 'mail-1'"
    ).to_pylist()
    assert rows == [
        {
            "SpanKind": "Producer",
            "StatusCode": "Unset",
            "ServiceName": "orders",
            "size": "42",
            "t": 32,
            "ParentSpanId": rows[0]["ParentSpanId"],
        }
    ]
    assert len(rows[0]["ParentSpanId"]) == 16


def test_sql_on_clickhouse_is_read_only(chstore: Any) -> None:
    reader = chstore.reader()
    with pytest.raises(questions.SqlRejected):
        questions.run_sql(reader, "INSERT INTO broker_events (event_id) VALUES ('x')")
    with pytest.raises(questions.SqlRejected):
        questions.run_sql(reader, "SELECT 1; DROP TABLE otel_traces")
    result = questions.run_sql(reader, "SELECT number FROM numbers(20)", max_rows=5)
    assert result.truncated and len(result.rows) == 5


def test_store_urls() -> None:
    assert parse_store_url("events.duckdb").kind == "duckdb"
    assert parse_store_url("duckdb:///tmp/a.duckdb").path == "/tmp/a.duckdb"
    assert parse_store_url("chdb:///var/lib/es").path == "/var/lib/es"
    url = parse_store_url("clickhouse://u:p%40ss@ch.example:9000/events")
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "ch.example",
        9000,
        "events",
        "u",
        "p@ss",
    )
    assert parse_store_url("clickhouses://ch.example/x").port == 8443
    with pytest.raises(ValueError, match="unknown store"):
        parse_store_url("postgres://x/y")
