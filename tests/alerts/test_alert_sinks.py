"""Sinks: the documented webhook payload, Slack bodies, retries, failures recorded on the alert,
the log line, AMQP publishing, and a slow receiver never holding up ingestion.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from eventscope.tracer.alerts.rules import SinkConfig
from eventscope.tracer.alerts.sinks import Deliverer, DeliveryError, DeliveryResult, LogSink, slack_body
from tests.conftest import AMQP_URL
from tests.spans import new_span_id, new_trace, process, publish

PAYLOAD_KEYS = {
    "alert_id",
    "rule",
    "severity",
    "status",
    "event_id",
    "event_type",
    "exchange",
    "routing_key",
    "queue",
    "reason",
    "detail",
    "producer",
    "age_s",
    "correlation_id",
    "trace_id",
    "group",
    "event_count",
    "fired_at",
    "resolved_at",
    "dashboard_url",
}


def config(url: str, *extra: str) -> str:
    return "\n".join(
        [
            "[alerts]",
            'dashboard_url = "http://127.0.0.1:8501"',
            "[[alerts.rules]]",
            'name = "orders"',
            'within = "5s"',
            'severity = "critical"',
            "[[alerts.sinks]]",
            'type = "webhook"',
            f'url = "{url}"',
            *extra,
        ]
    )


def test_webhook_gets_the_documented_payload_firing_then_resolved(harness: Any, webhook: Any) -> None:
    h = harness(config(webhook.url))
    trace_id, event_id = new_trace(), new_span_id()
    h.ingest(publish(trace_id=trace_id, event_id=event_id, routing_key="order.placed", causation_id="root-1"))
    h.tick(7.5)
    (firing,) = webhook.wait(1)
    assert set(firing) == PAYLOAD_KEYS
    assert firing["status"] == "firing" and firing["resolved_at"] is None
    assert {
        k: firing[k] for k in ("rule", "severity", "event_id", "event_type", "exchange", "routing_key")
    } == {
        "rule": "orders",
        "severity": "critical",
        "event_id": event_id,
        "event_type": "order.placed",
        "exchange": "shop",
        "routing_key": "order.placed",
    }
    assert (firing["reason"], firing["queue"], firing["age_s"]) == ("unconsumed", None, 7.5)
    assert (firing["correlation_id"], firing["trace_id"]) == ("root-1", trace_id)
    assert firing["dashboard_url"] == f"http://127.0.0.1:8501/chain?event={event_id}"
    h.wait_for(lambda: h.alerts()[0]["delivered"])
    (row,) = h.alerts()
    assert (row["attempts"], row["last_error"]) == (1, None)
    assert row["delivered_at"] is not None

    h.ingest(process(trace_id=trace_id, parent=None, event_id=event_id, queue="billing"))
    h.tick(9)
    resolved = webhook.wait(2)[1]
    assert resolved["status"] == "resolved" and resolved["alert_id"] == firing["alert_id"]
    assert resolved["resolved_at"] is not None


def test_failing_webhook_is_retried_and_the_failure_recorded_while_ingestion_goes_on(
    harness: Any, webhook: Any
) -> None:
    webhook.fail = True
    webhook.delay_s = 0.2
    h = harness(config(webhook.url, "retries = 2"), sink_backoff_s=0.05)
    h.ingest(publish(trace_id=new_trace(), event_id=new_span_id()))
    h.tick(6)
    started = time.monotonic()
    for _ in range(5):  # the sink is busy failing meanwhile: ingestion does not wait for it
        h.ingest(publish(trace_id=new_trace(), event_id=new_span_id(), start_ms=6000))
    assert time.monotonic() - started < 1.0
    h.wait_for(lambda: h.alerts()[0]["attempts"] == 3, at=6)
    row = h.alerts()[0]
    assert webhook.requests >= 3
    assert row["delivered"] is False and row["status"] == "firing"
    assert "HTTP 500" in row["last_error"] and row["last_error"].startswith("webhook-0: ")
    assert webhook.bodies == []


def test_slack_format(harness: Any, webhook: Any) -> None:
    h = harness(config(webhook.url, 'format = "slack"'))
    event_id = new_span_id()
    h.ingest(publish(trace_id=new_trace(), event_id=event_id))
    h.tick(6)
    (body,) = webhook.wait(1)
    assert set(body) == {"text", "attachments"}
    assert "[FIRING] orders (critical)" in body["text"] and event_id in body["text"]
    assert body["attachments"][0]["title_link"].endswith(event_id)


def test_log_sink_writes_one_json_line() -> None:
    stream = io.StringIO()
    sink = LogSink(stream=stream)
    payload = {"alert_id": "a", "status": "firing", "rule": "r", "event_id": "e"}
    sink.send(payload)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line) == {**payload, "level": "warning", "logger": "eventscope.alerts"}


def test_slack_body_of_a_resolved_alert_is_green() -> None:
    body = slack_body(
        {"status": "resolved", "rule": "r", "severity": "info", "event_id": "e", "reason": "failed"}
    )
    assert body["text"].startswith(":white_check_mark: [RESOLVED] r (info)")
    assert body["attachments"][0]["color"] == "#2eb886"


def test_a_full_sink_queue_drops_the_newest_and_reports_it() -> None:
    results: list[DeliveryResult] = []

    class Stuck:
        name = "stuck"

        def send(self, payload: dict[str, Any]) -> None:
            time.sleep(0.3)

        def close(self) -> None:
            pass

    deliverer = Deliverer(Stuck(), on_result=results.append, queue_size=1).start()
    accepted = [deliverer.put({"alert_id": str(n), "status": "firing"}) for n in range(4)]
    assert accepted.count(False) >= 2 and deliverer.dropped == accepted.count(False)
    dropped = [r for r in results if not r.ok]
    assert dropped and all("queue full" in (r.error or "") for r in dropped)
    deliverer.close(timeout=2)


def test_client_errors_are_not_retried() -> None:
    results: list[DeliveryResult] = []
    calls = []

    class Refusing:
        name = "refusing"

        def send(self, payload: dict[str, Any]) -> None:
            calls.append(payload)
            raise DeliveryError("HTTP 404", retryable=False)

        def close(self) -> None:
            pass

    deliverer = Deliverer(Refusing(), on_result=results.append, retries=5, backoff_s=0.01).start()
    deliverer.put({"alert_id": "a", "status": "firing"})
    deadline = time.monotonic() + 5
    while not results:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(calls) == 1 and results[0] == DeliveryResult("a", "firing", "refusing", False, 1, "HTTP 404")
    deliverer.close(timeout=1)


@pytest.mark.integration
def test_amqp_sink_publishes_the_payload(amqp: Any) -> None:
    from eventscope.tracer.alerts.sinks import build_sink

    exchange = amqp.exchange(kind="topic")
    queue = amqp.queue()
    amqp.bind(queue, exchange, "eventscope.alert")
    sink = build_sink(SinkConfig(type="amqp", name="bus", url=AMQP_URL, exchange=exchange))
    try:
        sink.send({"alert_id": "a1", "status": "firing", "rule": "r"})
    finally:
        sink.close()
    method, properties, body = amqp.get(queue)
    assert method is not None and json.loads(body) == {"alert_id": "a1", "status": "firing", "rule": "r"}
    assert (properties.content_type, properties.type) == ("application/json", "eventscope.alert.firing")
