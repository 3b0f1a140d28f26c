"""The shop's AsyncAPI documents (tests/contracts/shop, one per service) held against the
shop's real traffic: services in processes of their own on the real broker, spans over OTLP,
bodies from the firehose. Every violation kind lands exactly where a deliberate fault puts
it, and nowhere on the healthy traffic around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from eventscope.tracer.alerts import rules
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.server.app import CollectorConfig
from tests.conftest import AMQP_URL
from tests.processes import CLI
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


# -- export → validate → import → check -----------------------------------------------------------
@pytest.fixture(scope="session")
def asyncapi_parser(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``@asyncapi/parser`` (the reference validator) installed into a temporary directory."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed: the reference AsyncAPI parser cannot run")
    where = tmp_path_factory.mktemp("npm")
    done = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(where), "@asyncapi/parser"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"npm install @asyncapi/parser failed (offline?): {done.stderr[-300:]}")
    return where / "node_modules"


def reference_validate(node_modules: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(Path(__file__).with_name("validate_asyncapi.js")), *map(str, files)],
        env={**os.environ, "NODE_PATH": str(node_modules)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_shop_documents_pass_the_reference_parser(asyncapi_parser: Path) -> None:
    done = reference_validate(asyncapi_parser, *sorted(SHOP.glob("*.yaml")))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_export_validate_import_check_round_trip(
    amqp: Any, tracing: None, tmp_path: Path, asyncapi_parser: Path
) -> None:
    amqp.exchange(EXCHANGE)
    orders_queue, payments_queue = amqp.queue(), amqp.queue()
    amqp.bind(orders_queue, EXCHANGE, "order.placed")
    amqp.bind(payments_queue, EXCHANGE, "payment.authorized")
    db = tmp_path / "c.duckdb"
    config = CollectorConfig(
        db_path=str(db),
        grace_s=1,
        amqp_url=AMQP_URL,
        firehose=True,
        trace_on=False,
        capture=PayloadCapture(),
        broker_flush_s=0.05,
    )
    running = RunningCollector(config).start()
    try:
        assert running.collector.receivers is not None and running.collector.receivers.firehose is not None
        assert running.collector.receivers.firehose.connected.wait(10)
        endpoint = f"{running.url}/v1/traces"
        consumers = [
            subprocess.Popen([*SERVICE, "payments", endpoint, EXCHANGE, orders_queue, "3"]),
            subprocess.Popen([*SERVICE, "consume", "shipping", endpoint, payments_queue, "3"]),
        ]
        publish(
            running.url,
            "orders",
            "order.placed",
            ("r-1", {"order_id": "r-1", "amount": 10, "items": [{"sku": "a"}]}),
            ("r-2", {"order_id": "r-2", "amount": 2.5}),
            ("r-3", {"order_id": "r-3", "amount": 0, "items": []}),
        )
        for process in consumers:
            assert process.wait(60) == 0
        deadline = time.monotonic() + 20
        while sql(running.url, "SELECT count(*) AS n FROM deliveries WHERE outcome = 'ack'") != [{"n": 6}]:
            assert time.monotonic() < deadline, "the shop's acks did not arrive"
            time.sleep(0.2)
        while sql(running.url, "SELECT count(*) AS n FROM payloads") != [{"n": 6}]:
            assert time.monotonic() < deadline, "the shop's bodies were not captured"
            time.sleep(0.2)
    finally:
        running.stop()
    out = tmp_path / "exported"
    done = subprocess.run(
        [*CLI, "contracts", "export", "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    files = sorted(out.glob("*.yaml"))
    assert [f.name for f in files] == ["orders.yaml", "payments.yaml", "shipping.yaml"]
    checked = reference_validate(asyncapi_parser, *files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    orders = yaml.safe_load((out / "orders.yaml").read_text())
    (channel,) = orders["channels"].values()
    assert channel["bindings"]["amqp"]["exchange"]["name"] == EXCHANGE
    schema = channel["messages"]["message"]["payload"]
    assert schema["required"] == ["amount", "order_id"] and schema["properties"]["amount"]["type"] == "number"
    (tmp_path / "eventscope.toml").write_text('[contracts]\nasyncapi = ["exported/*.yaml"]\n')
    imported = rules.load(tmp_path / "eventscope.toml").contracts
    assert imported is not None and sorted(d.service for d in imported.documents) == [
        "orders",
        "payments",
        "shipping",
    ]
    done = subprocess.run(
        [*CLI, "contracts", "check", "--db", str(db), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("6 event(s) judged: no violations")
    # and the hand-written shop documents judge the same traffic clean too
    done = subprocess.run(
        [*CLI, "contracts", "check", "--db", str(db), *map(str, sorted(SHOP.glob("*.yaml")))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "no violations" in done.stdout, done.stdout + done.stderr
