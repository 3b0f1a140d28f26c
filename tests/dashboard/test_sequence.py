"""The sequence diagram: a demo-like checkout saga whose payment is declined and compensated,
stored from adapter-shaped spans, then read as the dashboard reads it (AppTest, file source).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventscope.dashboard import sequence as sequence_chart
from eventscope.tracer import contract as A
from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.query.client import open_source
from eventscope.tracer.query.sequence import NO_CONSUMER, lifeline_of
from eventscope.tracer.store.duckdb_store import Store
from tests.dashboard.dashboard_helpers import open_page, texts
from tests.spans import new_span_id, new_trace, process, publish, request

ROOT = "0192aaaa-0000-7000-8000-000000000001"


def _set(span: Any, key: str, value: str) -> None:
    for attribute in span.attributes:
        if attribute.key == key:
            attribute.value.string_value = value
            return
    span.attributes.add(key=key).value.string_value = value


def _message(
    writer: Writer,
    *,
    trace_id: str,
    producer: str,
    routing_key: str,
    at_ms: int,
    cause: str | None,
    event_id: str | None = None,
    deliveries: tuple[tuple[str, str, str], ...] = (),  # (service, queue, outcome)
) -> str:
    event_id = event_id or new_span_id()
    span = publish(
        trace_id=trace_id, event_id=event_id, routing_key=routing_key, start_ms=at_ms, causation_id=cause
    )
    _set(span, A.PRODUCER, producer)
    if cause is not None:
        _set(span, A.CORRELATION_ID, ROOT)
    writer.submit(normalise(request(span, service=producer))).result(10)
    for offset, (service, queue, outcome) in enumerate(deliveries, start=1):
        delivery = process(
            trace_id=trace_id,
            parent=None,
            event_id=event_id,
            queue=queue,
            outcome=outcome,
            start_ms=at_ms + 3 * offset,
            end_ms=at_ms + 3 * offset + 1,
        )
        writer.submit(normalise(request(delivery, service=service))).result(10)
    return event_id


SAGA = [  # (producer, routing key, deliveries) in publish order; every one caused by the one before
    ("gateway", "checkout.requested", (("checkout-saga", "demo.checkout", "ack"),)),
    ("checkout-saga", "stock.reserve", (("inventory", "demo.inventory-commands", "ack"),)),
    ("inventory", "stock.reserve.ok", (("checkout-saga", "demo.saga-replies", "ack"),)),
    (
        "checkout-saga",
        "payment.authorize",
        (("payments-1", "demo.payment-commands", "requeue"), ("payments-2", "demo.payment-commands", "ack")),
    ),
    ("payments-2", "payment.authorize.declined", (("checkout-saga", "demo.saga-replies", "ack"),)),
    ("checkout-saga", "stock.release", (("inventory", "demo.inventory-commands", "ack"),)),
    ("inventory", "stock.release.ok", (("checkout-saga", "demo.saga-replies", "ack"),)),
    ("checkout-saga", "checkout.cancelled", ()),  # nobody listens: an orphan
]


@pytest.fixture(scope="module")
def saga_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    db = tmp_path_factory.mktemp("sequence") / "saga.duckdb"
    store = Store.open(db, grace_s=0)
    writer = Writer(store).start()
    try:
        trace_id, cause, ids = new_trace(), None, []
        for step, (producer, key, deliveries) in enumerate(SAGA):
            cause = _message(
                writer,
                trace_id=trace_id,
                producer=producer,
                routing_key=key,
                at_ms=step * 20,
                cause=cause,
                event_id=ROOT if cause is None else None,
                deliveries=deliveries,
            )
            ids.append(cause)
        # a long conversation of its own: "first 200 of 250"
        long_trace = new_trace()
        first = _message(
            writer, trace_id=long_trace, producer="ticker", routing_key="tick", at_ms=0, cause=None
        )
        for n in range(1, 250):
            span = publish(
                trace_id=long_trace,
                event_id=new_span_id(),
                routing_key="tick",
                start_ms=n,
                causation_id=first,
            )
            _set(span, A.CORRELATION_ID, first)
            writer.submit(normalise(request(span, service="ticker"))).result(10)
        ids.append(first)
    finally:
        writer.close()
        store.close()
    yield db, ids


def data_of(db: Path, event_id: str) -> dict[str, Any]:
    source = open_source(db=str(db))
    try:
        return source.ask("sequence", event_id=event_id)
    finally:
        source.close()


def test_lifelines_fold_numbered_members_of_a_consumer_group() -> None:
    assert [lifeline_of(s) for s in ("payments-1", "payments_2", "payments.3", "checkout-saga", None)] == [
        "payments",
        "payments",
        "payments",
        "checkout-saga",
        "(unknown service)",
    ]


def test_the_saga_reads_as_lifelines_and_ordered_arrows(saga_db: tuple[Path, list[str]]) -> None:
    db, ids = saga_db
    source = open_source(db=str(db))
    try:
        by_event = source.ask("sequence", event_id=ids[3])  # any event of the conversation
        by_correlation = source.ask("sequence", correlation_id=ROOT)
    finally:
        source.close()
    assert by_event == by_correlation and by_event["correlation_id"] == ROOT
    lifelines = {line["lifeline"]: line for line in by_event["lifelines"]}
    assert list(lifelines) == ["gateway", "checkout-saga", "inventory", "payments", NO_CONSUMER]
    assert lifelines["payments"]["members"] == 2
    assert lifelines["payments"]["services"] == ["payments-1", "payments-2"]
    arrows = [(m["event_type"], m["source"], m["target"]) for m in by_event["messages"]]
    assert arrows == [
        ("checkout.requested", "gateway", "checkout-saga"),
        ("stock.reserve", "checkout-saga", "inventory"),
        ("stock.reserve.ok", "inventory", "checkout-saga"),
        ("payment.authorize", "checkout-saga", "payments"),
        ("payment.authorize", "checkout-saga", "payments"),
        ("payment.authorize.declined", "payments", "checkout-saga"),
        ("stock.release", "checkout-saga", "inventory"),
        ("stock.release.ok", "inventory", "checkout-saga"),
        ("checkout.cancelled", "checkout-saga", NO_CONSUMER),
    ]
    assert by_event["total"] == 9 and [m["seq"] for m in by_event["messages"]] == list(range(1, 10))
    marks = {
        (m["event_type"], m["consumer_service"]): (m["failed"], m["compensation"])
        for m in by_event["messages"]
    }
    assert marks[("payment.authorize", "payments-1")] == (True, False)  # requeued: not handled there
    assert marks[("payment.authorize", "payments-2")] == (False, False)
    assert marks[("stock.release", "inventory")] == (False, True)
    assert marks[("stock.release.ok", "checkout-saga")] == (False, True)
    assert marks[("checkout.cancelled", None)] == (True, True)  # compensation that nobody consumed
    cancelled = by_event["messages"][-1]
    assert (cancelled["orphan"], cancelled["queue"]) == ("unconsumed", None)
    assert all(m["wait_ms"] is not None and m["wait_ms"] >= 0 for m in by_event["messages"][:-1])


def test_the_event_page_draws_the_conversation(saga_db: tuple[Path, list[str]], monkeypatch: Any) -> None:
    db, ids = saga_db
    at = open_page(db, "chain", monkeypatch, event=ids[5])
    assert f"Conversation {ROOT}: 9 messages, in publish order" in texts(at)
    charts = [c.proto for c in at.get("vega_lite_chart")]
    (diagram,) = [c for c in charts if '"seq"' in c.spec and '"x2"' in c.spec]
    assert all(mark in diagram.spec for mark in ('"rule"', '"point"', '"text"'))
    # what it draws: the same frames the page built from the same answer
    lifelines, messages = sequence_chart.frames(data_of(db, ids[5]))
    assert list(lifelines["title"]) == [
        "gateway",
        "checkout-saga",
        "inventory",
        "payments (2 members)",
        NO_CONSUMER,
    ]
    assert list(messages["kind"]) == ["ok"] * 3 + [
        "failed",
        "ok",
        "ok",
        "compensation",
        "compensation",
        "failed",
    ]
    assert (
        messages["label"].iloc[6]
        == "7. stock.release via demo.inventory-commands · 3 ms in queue · ↺ compensation"
    )
    assert messages["label"].iloc[8] == "9. checkout.cancelled · ✗ unconsumed · ↺ compensation"
    assert list(messages["head"].iloc[:3]) == ["triangle-right", "triangle-right", "triangle-left"]
    assert "Consumer groups folded into one lifeline: payments = payments-1 + payments-2" in texts(at)


def test_a_long_conversation_shows_the_first_200(saga_db: tuple[Path, list[str]], monkeypatch: Any) -> None:
    db, ids = saga_db
    at = open_page(db, "conversation", monkeypatch, correlation=ids[-1])
    assert "first 200 of 250 messages" in texts(at)
    assert len(at.dataframe[0].value) == 200
