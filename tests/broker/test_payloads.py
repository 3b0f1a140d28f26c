"""Payload capture: redaction before the size cap, what is kept of non-JSON bodies, the
payloads table with its filter and retention, and the real broker's firehose end to end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer.broker import payloads
from eventscope.tracer.broker.firehose import parse_record
from eventscope.tracer.broker.payloads import REDACTED, PayloadCapture, capture
from eventscope.tracer.broker.records import normalise_firehose
from eventscope.tracer.query import questions as queries
from eventscope.tracer.server.app import CollectorConfig
from tests.conftest import AMQP_URL
from tests.spans import RunningCollector, open_store

POLICY = PayloadCapture.with_fields(["email"], max_bytes=200)


def _capture(body: bytes, content_type: str | None = "application/json", encoding: str | None = None):
    return capture(body, content_type=content_type, content_encoding=encoding, policy=POLICY)


def test_json_fields_are_redacted_at_any_depth_before_the_cap() -> None:
    body = {
        "order_id": 42,
        "Password": "hunter2",
        "customer": {"email": "a@b.c", "cards": [{"card_number": "4111", "brand": "visa"}]},
    }
    row = _capture(json.dumps(body).encode())
    assert row["is_json"] and not row["truncated"] and row["redacted"] == 3
    kept = json.loads(row["body"])
    assert kept == {
        "order_id": 42,
        "Password": REDACTED,
        "customer": {"email": REDACTED, "cards": [{"card_number": REDACTED, "brand": "visa"}]},
    }
    assert row["size"] == len(json.dumps(body).encode())


def test_the_cap_cuts_on_a_character_boundary_and_a_cut_body_is_not_json() -> None:
    body = json.dumps({"note": "é" * 300, "token": "x" * 500}).encode()
    row = _capture(body)
    assert row["truncated"] and not row["is_json"]
    assert len(row["body"].encode("utf-8")) <= 200
    assert "x" * 50 not in row["body"]  # the secret was replaced before the cut
    row["body"].encode("utf-8")  # valid text


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "expected_body"),
    [
        (b"plain words", "text/plain", None, "plain words"),
        (b"plain words", None, None, "plain words"),
        (b"{not json", "application/json", None, None),  # looks like JSON, is not: fail closed
        (b'{"password":"p","card_number":"4111",}', None, None, None),  # trailing comma
        (b'{"order_id":1,"amount":NaN}', "application/json", None, None),  # not strict JSON
        (b'{"password":"p","n":' + b"1" * 5000 + b"}", "application/json", None, None),  # int too long
        (b'{"note":"\\ud800"}', "application/json", None, None),  # a lone surrogate
        (b"[" * 100_000 + b"]" * 100_000, "application/json", None, None),  # too deep
        (b"user=a&password=hunter2", "application/x-www-form-urlencoded", None, None),  # names a secret
        (b"my api-key is 42", "text/plain", None, None),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png", None, None),  # binary
        (b"still text", "application/octet-stream", None, None),  # declared as not text
        (b"\x1f\x8b\x08\x00", "application/json", "gzip", None),  # encoded
    ],
)
def test_what_is_kept_of_bodies_that_are_not_json(
    body: bytes, content_type: str | None, encoding: str | None, expected_body: str | None
) -> None:
    row = _capture(body, content_type, encoding)
    assert row["body"] == expected_body
    assert not row["is_json"] and row["size"] == len(body)


def test_secret_names_match_without_case_separators_and_by_suffix() -> None:
    body = {
        "accessToken": "t",
        "clientSecret": "s",
        "x-api-key": "k",
        "cardNumber": "4111",
        "db_password": "p",
        "EMAIL": "a@b.c",  # from --redact email
        "tokens_used": 3,  # a name that merely contains a secret's name stays
        "order_id": 42,
    }
    row = _capture(json.dumps(body).encode())
    kept = json.loads(row["body"])
    assert row["redacted"] == 6
    assert {key for key, value in kept.items() if value == REDACTED} == {
        "accessToken",
        "clientSecret",
        "x-api-key",
        "cardNumber",
        "db_password",
        "EMAIL",
    }


def test_a_huge_body_is_not_parsed_on_the_taps_thread() -> None:
    body = json.dumps({"items": ["x" * 100] * 5_000}).encode()  # ~500 kB, above 64 x 200 bytes
    row = _capture(body)
    assert row["body"] is None and row["size"] == len(body)


def test_capture_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(payloads, "_redact", broken)
    row = _capture(b'{"a": 1}')
    assert row["body"] is None and row["size"] == 8 and payloads.failures >= 1


def test_a_capture_policy_needs_a_positive_cap() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        PayloadCapture(max_bytes=0)


def _record(event_id: str, body: bytes, *, kind: str = "publish", at_ns: int | None = None) -> Any:
    headers = {
        "exchange_name": "shop",
        "routing_keys": ["order.placed"],
        "routed_queues": ["billing"],
        "properties": {"message_id": event_id, "content_type": "application/json"},
    }
    key = "publish.shop" if kind == "publish" else "deliver.billing"
    return parse_record(key, headers, body, at_ns or time.time_ns(), capture=POLICY)


def test_payloads_are_stored_once_filtered_shown_and_retained(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.duckdb", grace_s=0)
    try:
        first = _record("A", b'{"order_id": 42, "customer": {"id": 7}, "password": "p"}')
        replay = _record("A", b'{"order_id": 99}')  # the same id again: the first capture stays
        other = _record("B", b'{"order_id": 43}')
        delivered = _record("A", b'{"order_id": 42}', kind="deliver")
        assert delivered.payload is None  # only publish records carry it
        store.append([normalise_firehose([first]), normalise_firehose([replay, other, delivered])])
        store.append([normalise_firehose([replay])])
        reader = store.reader()
        try:
            assert reader.execute("SELECT event_id, redacted FROM payloads ORDER BY 1").fetchall() == [
                ("A", 1),
                ("B", 0),
            ]
            found = queries.events_page(reader, payload="order_id=42")
            assert [row["event_id"] for row in found["rows"]] == ["A"] and found["total"] == 1
            nested = queries.events_page(reader, payload="customer.id = 7")
            assert [row["event_id"] for row in nested["rows"]] == ["A"]
            assert queries.events_page(reader, payload="order_id=1")["total"] == 0
            for bad in ("order_id", "$.x=1", "a..b=1", "x') OR 1=1 --=1"):
                with pytest.raises(queries.SqlRejected, match="field=value"):
                    queries.events_page(reader, payload=bad)
            detail = queries.event(reader, "A")
            assert detail is not None and json.loads(detail["payload"]["body"])["password"] == REDACTED
            assert queries.event(reader, "B")["payload"]["size"] == len(b'{"order_id": 43}')
            chain = queries.chain_detail(reader, "A")
            assert [row["event_id"] for row in chain["payloads"]] == ["A"]
        finally:
            reader.close()
        store.retain(max_age_s=0)
        reader = store.reader()
        try:
            assert reader.execute("SELECT count(*) FROM payloads").fetchall() == [(0,)]
        finally:
            reader.close()
    finally:
        store.close()


def test_capture_needs_the_firehose(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="firehose"):
        CollectorConfig(db_path=str(tmp_path / "x.duckdb"), capture=POLICY)


# -- the real broker ------------------------------------------------------------------------------
@pytest.mark.integration
def test_published_bodies_are_captured_from_the_firehose(amqp: Any, tracing: None, tmp_path: Path) -> None:
    exchange, queue = amqp.exchange(), amqp.queue()
    amqp.bind(queue, exchange, "order.placed")
    config = CollectorConfig(
        db_path=str(tmp_path / "c.duckdb"),
        grace_s=0,
        amqp_url=AMQP_URL,
        firehose=True,
        trace_on=False,
        capture=POLICY,
        broker_flush_s=0.05,
    )
    running = RunningCollector(config).start()
    try:
        assert running.collector.receivers is not None and running.collector.receivers.firehose is not None
        assert running.collector.receivers.firehose.connected.wait(10)
        channel = instrument_channel(amqp.connect().channel(), service="orders")
        body = {"order_id": 42, "customer": {"email": "a@b.c"}, "password": "hunter2"}
        channel.basic_publish(exchange, "order.placed", json.dumps(body).encode())
        with httpx.Client(base_url=running.url, timeout=10) as client:
            deadline = time.monotonic() + 15
            while True:
                page = client.get("/api/events_page", params={"payload": "order_id=42"}).json()["result"]
                if page["total"] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert page["total"] == 1
            event_id = page["rows"][0]["event_id"]
            detail = client.get(f"/api/events/{event_id}").json()
            stored = json.loads(detail["payload"]["body"])
            assert stored == {"order_id": 42, "customer": {"email": REDACTED}, "password": REDACTED}
            assert detail["payload"]["redacted"] == 2 and detail["payload"]["is_json"]
            bad = client.get("/api/events_page", params={"payload": "no equals sign"})
            assert bad.status_code == 400 and "field=value" in bad.text
    finally:
        running.stop()
