"""The Catalog page (AppTest) on a database the collector filled with contract findings:
declared beside observed producers and consumers, and violations with a link to the chain.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventscope.tracer import contract as A
from eventscope.tracer.alerts import rules
from eventscope.tracer.server.app import CollectorConfig
from tests.contracts.test_documents import V3
from tests.dashboard.dashboard_helpers import metrics, open_page, texts
from tests.spans import _T0, RunningCollector, new_trace, process, publish, request, sid

RECEIVER = """\
asyncapi: 3.0.0
info:
  title: payments
  version: 1.0.0
channels:
  placed:
    address: order.placed
    bindings:
      amqp:
        is: routingKey
        exchange:
          name: shop
    messages:
      placed:
        name: order.placed
operations:
  charge:
    action: receive
    channel:
      $ref: '#/channels/placed'
"""


def post(url: str, service: str, *spans: Any) -> None:
    response = httpx.post(
        f"{url}/v1/traces",
        content=request(*spans, service=service).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200


@pytest.fixture
def catalog_db(tmp_path: Path) -> Path:
    """order.placed: c-ok (orders → payments), c-rogue (rogue → payments), c-lost (orders → nobody)."""
    (tmp_path / "orders.yaml").write_text(V3)
    (tmp_path / "payments.yaml").write_text(RECEIVER)
    (tmp_path / "eventscope.toml").write_text(
        '[alerts]\ninterval = "100ms"\n[contracts]\nasyncapi = ["orders.yaml", "payments.yaml"]\n'
    )
    db = tmp_path / "c.duckdb"
    config = CollectorConfig(db_path=str(db), grace_s=3, alerts=rules.load(tmp_path / "eventscope.toml"))
    running = RunningCollector(config).start()
    try:
        for event_id, producer, consumed in (
            ("c-ok", "orders", True),
            ("c-rogue", "rogue", True),
            ("c-lost", "orders", False),
        ):
            trace, now_ms = new_trace(), int(time.time() * 1000) - _T0 // 1_000_000  # published now
            message = publish(trace_id=trace, event_id=event_id, exchange="shop", start_ms=now_ms)
            for attribute in message.attributes:
                if attribute.key == A.PRODUCER:
                    attribute.value.string_value = producer
            post(running.url, producer, message)
            if consumed:
                post(
                    running.url,
                    "payments",
                    process(
                        trace_id=trace,
                        parent=sid(message),
                        event_id=event_id,
                        queue="payments",
                        start_ms=now_ms + 10,
                        end_ms=now_ms + 20,
                    ),
                )
        deadline = time.monotonic() + 15
        while True:
            found = httpx.post(
                f"{running.url}/api/sql", json={"sql": "SELECT count(*) FROM contract_violations"}
            ).json()
            if found["rows"][0][0] >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        running.stop()
    return db


def test_catalog_shows_declared_beside_observed_and_the_violations(
    catalog_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(catalog_db, "catalog", monkeypatch)
    assert metrics(at) == {
        "Event types declared": "1",
        "Event types observed": "1",
        "Contract violations": "2",
    }
    page = texts(at)
    assert "**order.placed** · declared · 3 events" in page
    producers, consumers, violations = (frame.value for frame in at.dataframe)
    assert dict(zip(producers["service"], producers["status"], strict=True)) == {
        "orders": "✅ match",
        "rogue": "❓ undeclared",
    }
    assert dict(zip(consumers["service"], consumers["status"], strict=True)) == {"payments": "✅ match"}
    assert "Violations: missing_consumer 1, undeclared_producer 1" in page
    assert sorted(zip(violations["event_id"], violations["kind"], violations["service"], strict=True)) == [
        ("c-lost", "missing_consumer", "payments"),
        ("c-rogue", "undeclared_producer", "rogue"),
    ]
    assert any(link.proto.label.startswith("Open its chain:") for link in at.get("page_link"))
