"""The shop's AsyncAPI documents (tests/contracts/shop, one per service) held against the
shop's real traffic: services in processes of their own on the real broker, spans over OTLP,
bodies from the firehose. Every violation kind lands exactly where a deliberate fault puts
it, and nowhere on the healthy traffic around it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventscope.tracer.alerts import rules
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.server.app import CollectorConfig
from tests.conftest import AMQP_URL
from tests.spans import RunningCollector

SHOP = Path(__file__).with_name("shop")
SERVICE = [sys.executable, str(Path(__file__).with_name("shop_service.py"))]
EXCHANGE = "contracts-shop"  # the exchange the documents' bindings name (in the run's own vhost)
TOML = """
[alerts]
interval = "200ms"

[contracts]
asyncapi = ["shop/*.yaml"]
"""


def sql(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30)
    assert response.status_code == 200, response.text
    document = response.json()
    return [dict(zip(document["columns"], row, strict=True)) for row in document["rows"]]


def publish(url: str, service: str, routing_key: str, *messages: tuple[str, dict[str, Any]]) -> None:
    subprocess.run(
        [*SERVICE, "publish", service, f"{url}/v1/traces", EXCHANGE, routing_key, json.dumps(messages)],
        check=True,
        timeout=60,
    )


def shop_config(tmp_path: Path) -> rules.AlertsConfig:
    """An eventscope.toml beside a copy of the documents: relative paths start from it."""
    shutil.copytree(SHOP, tmp_path / "shop")
    (tmp_path / "eventscope.toml").write_text(TOML)
    return rules.load(tmp_path / "eventscope.toml")


@pytest.mark.integration
def test_every_violation_kind_lands_exactly_where_a_fault_puts_it(
    amqp: Any, tracing: None, tmp_path: Path
) -> None:
    amqp.exchange(EXCHANGE)
    orders_queue, payments_queue = amqp.queue(), amqp.queue()
    amqp.bind(orders_queue, EXCHANGE, "order.placed")
    amqp.bind(payments_queue, EXCHANGE, "payment.authorized")
    config = CollectorConfig(
        db_path=str(tmp_path / "c.duckdb"),
        grace_s=2,
        amqp_url=AMQP_URL,
        firehose=True,
        trace_on=False,
        capture=PayloadCapture(),
        broker_flush_s=0.05,
        alerts=shop_config(tmp_path),
    )
    running = RunningCollector(config).start()
    url, endpoint = running.url, f"{running.url}/v1/traces"
    consumers = []
    try:
        assert running.collector.receivers is not None and running.collector.receivers.firehose is not None
        assert running.collector.receivers.firehose.connected.wait(10)
        consumers = [
            subprocess.Popen([*SERVICE, "payments", endpoint, EXCHANGE, orders_queue, "6"]),
            # shipping turns one payment away: its declared consumption never happens
            subprocess.Popen(
                [*SERVICE, "consume", "shipping", endpoint, payments_queue, "6", "pay-o-missing"]
            ),
        ]
        publish(
            url, "orders", "order.placed", ("o-1", {"order_id": "o-1", "amount": 10, "items": [{"sku": "a"}]})
        )
        publish(url, "orders", "order.placed", ("o-2", {"order_id": "o-2", "amount": 0}))
        publish(url, "orders", "order.placed", ("o-missing", {"order_id": "o-missing", "amount": 3}))
        publish(url, "orders", "order.placed", ("o-bad", {"order_id": "o-bad", "amount": -5}))  # schema
        publish(url, "rogue", "order.placed", ("o-rogue", {"order_id": "o-rogue", "amount": 1}))  # producer
        publish(url, "orders", "order.cancelled", ("o-cancel", {"order_id": "o-1"}))  # no document: type
        audit_queue = amqp.queue()  # bound only now: the audit service sees o-audit alone
        amqp.bind(audit_queue, EXCHANGE, "order.placed")
        auditor = subprocess.Popen([*SERVICE, "consume", "audit", endpoint, audit_queue, "1"])
        publish(url, "orders", "order.placed", ("o-audit", {"order_id": "o-audit", "amount": 2}))
        for process in [*consumers, auditor]:
            assert process.wait(60) == 0
        expected = {
            ("o-bad", "schema_violation", "orders"),
            ("o-rogue", "undeclared_producer", "rogue"),
            ("o-cancel", "undeclared_type", "orders"),
            ("pay-o-missing", "missing_consumer", "shipping"),
            ("o-audit", "undeclared_consumer", "audit"),
        }
        deadline = time.monotonic() + 30
        while True:
            found = sql(url, "SELECT event_id, kind, service, detail, document FROM contract_violations")
            if len(found) >= len(expected) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(config.grace_s + 1)  # late findings would show up by now
        found = sql(url, "SELECT event_id, kind, service, detail, document FROM contract_violations")
        assert {(r["event_id"], r["kind"], r["service"]) for r in found} == expected
        details = {r["kind"]: r for r in found}
        assert details["schema_violation"]["detail"] == "$.amount: fails minimum 0"
        assert details["schema_violation"]["document"].endswith("orders.yaml")
        assert details["missing_consumer"]["document"].endswith("shipping.yaml")
        assert details["undeclared_producer"]["detail"] == "declared senders: orders"
        # the healthy traffic around the faults: events, payloads and acks, and no finding
        healthy = sql(url, "SELECT count(*) AS n FROM events WHERE event_id IN ('o-1', 'o-2', 'pay-o-1')")
        assert healthy == [{"n": 3}]
        assert sql(url, "SELECT count(*) AS n FROM payloads WHERE event_id = 'o-1'") == [{"n": 1}]
        alerts = sql(
            url,
            "SELECT a.event_id, a.reason, d.detail FROM alerts a JOIN alert_details d USING (alert_id) "
            "WHERE a.rule = 'contracts'",
        )
        assert {(a["event_id"], a["reason"]) for a in alerts} == {(e, k) for e, k, _ in expected}
        assert all("-5" not in (a["detail"] or "") for a in alerts)  # never a payload value
        declared = sql(url, "SELECT service, role, event_type FROM contract_declarations ORDER BY ALL")
        assert declared == [
            {"service": "orders", "role": "send", "event_type": "order.placed"},
            {"service": "payments", "role": "receive", "event_type": "order.placed"},
            {"service": "payments", "role": "send", "event_type": "payment.authorized"},
            {"service": "shipping", "role": "receive", "event_type": "payment.authorized"},
        ]
    finally:
        for process in consumers:
            if process.poll() is None:
                process.kill()
        running.stop()
