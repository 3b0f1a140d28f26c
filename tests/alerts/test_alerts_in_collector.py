"""The engine inside an in-process collector: OTLP in, /api/alert_details and /metrics out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from eventscope.tracer.alerts import rules
from eventscope.tracer.server.app import CollectorConfig
from tests.spans import _T0, RunningCollector, new_span_id, new_trace, publish, request

CONFIG = """
[alerts]
interval = "100ms"

[[alerts.rules]]
name = "handled"
within = "0s"
severity = "info"

[[alerts.rules]]
name = "refunds"
event_type = "refund.*"
within = "0s"

[[alerts.sinks]]
type = "webhook"
url = "{url}"
rules = ["refunds"]
"""


def post(url: str, *spans: Any) -> None:
    response = httpx.post(
        f"{url}/v1/traces",
        content=request(*spans).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200


def test_alerts_api_metrics_and_sink_rule_filter(tmp_path: Path, webhook: Any) -> None:
    config = CollectorConfig(
        db_path=str(tmp_path / "c.duckdb"),
        grace_s=0,
        alerts=rules.parse(CONFIG.format(url=webhook.url)),
    )
    running = RunningCollector(config).start()
    try:
        order, refund = new_span_id(), new_span_id()
        post(running.url, publish(trace_id=new_trace(), event_id=order, routing_key="order.placed"))
        post(running.url, publish(trace_id=new_trace(), event_id=refund, routing_key="refund.issued"))
        deadline = time.monotonic() + 10
        while True:
            found = httpx.get(f"{running.url}/api/alert_details", params={"firing": "true"}).json()["result"]
            if len(found) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted((a["rule"], a["event_id"], a["severity"], a["status"]) for a in found) == sorted(
            [
                ("handled", order, "info", "firing"),
                ("handled", refund, "info", "firing"),
                ("refunds", refund, "warning", "firing"),
            ]
        )
        (body,) = webhook.wait(1)  # only the refunds rule goes to this sink
        assert (body["rule"], body["event_id"]) == ("refunds", refund)
        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'eventscope_alerts_firing{rule="handled",severity="info"} 2' in metrics
        assert 'eventscope_alerts_firing{rule="refunds",severity="warning"} 1' in metrics
        assert 'eventscope_alert_notifications_total{sink="webhook-0",result="sent"} 1' in metrics
        time.sleep(0.3)
        assert len(webhook.bodies) == 1
    finally:
        running.stop()


def test_the_implicit_expect_rule_fires_after_the_collectors_grace(tmp_path: Path) -> None:
    """``collect --grace 2`` with ``[alerts.expect]`` and no rule: the alert comes ~2 s after the
    publish. It used to wait a fixed 30 s, so this test timed out.
    """
    grace_s = 2.0
    config = CollectorConfig(
        db_path=str(tmp_path / "c.duckdb"),
        grace_s=grace_s,
        alerts=rules.parse(
            '[alerts]\ninterval = "100ms"\n\n[alerts.expect]\n"order.placed" = ["payments"]\n'
        ),
    )
    running = RunningCollector(config).start()
    try:
        event_id = new_span_id()
        now_ms = (time.time_ns() - _T0) // 1_000_000
        post(running.url, publish(trace_id=new_trace(), event_id=event_id, start_ms=now_ms))
        deadline = time.monotonic() + 10
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            found = httpx.get(f"{running.url}/api/alert_details", params={"firing": "true"}).json()["result"]
            time.sleep(0.05)
        assert [(a["rule"], a["event_id"], a["reason"]) for a in found] == [
            ("expected consumers", event_id, "missing_consumer")
        ]
        ((waited,),) = httpx.post(
            f"{running.url}/api/sql",
            json={
                "sql": "SELECT epoch(a.fired_at) - epoch(e.published_at) FROM alerts a "
                f"JOIN events e USING (event_id) WHERE e.event_id = '{event_id}'"
            },
        ).json()["rows"]
        assert grace_s <= waited < grace_s + 5
    finally:
        running.stop()
