"""The whole product with alerts: `eventscope collect --config` as a subprocess, services
using the eventscope pika adapter on the real broker, a webhook receiver in this test.

An event routed to a queue nobody consumes fires exactly one webhook once its `within`
passed; a healthy event fires nothing; consuming the event late resolves the alert.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import CLI, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]

PRODUCE = textwrap.dedent(
    """
    import os, sys, time
    import pika
    from eventscope.tracer import setup
    from eventscope.adapters.pika import instrument_channel

    endpoint, exchange, healthy_queue = sys.argv[1:]
    provider = setup(service="shop", endpoint=endpoint, schedule_delay_millis=50)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, os.environ.get("EVENTSCOPE_TEST_VHOST", "/"))
    )
    channel = instrument_channel(connection.channel())
    channel.basic_publish(exchange, "order.placed", b"{}")        # nobody consumes its queue
    channel.basic_publish("", healthy_queue, b"{}")               # consumed right away
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(healthy_queue)
        if method is not None:
            channel.basic_ack(method.delivery_tag)
            break
        time.sleep(0.02)
    connection.close()
    assert provider.force_flush(10_000)
    """
)

CONSUME = textwrap.dedent(
    """
    import os, sys, time
    import pika
    from eventscope.tracer import setup
    from eventscope.adapters.pika import instrument_channel

    endpoint, queue = sys.argv[1:]
    provider = setup(service="billing", endpoint=endpoint, schedule_delay_millis=50)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, os.environ.get("EVENTSCOPE_TEST_VHOST", "/"))
    )
    channel = instrument_channel(connection.channel())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is not None:
            channel.basic_ack(method.delivery_tag)
            break
        time.sleep(0.02)
    else:
        raise SystemExit("nothing to consume")
    connection.close()
    assert provider.force_flush(10_000)
    """
)


def run(script: str, *args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def sql(url: str, query: str) -> list[dict[str, Any]]:
    document = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30).json()
    return [dict(zip(document["columns"], row, strict=True)) for row in document["rows"]]


def start_collector(tmp_path: Path, config: Path) -> tuple[str, Path, subprocess.Popen[str]]:
    """`eventscope collect --config` on a free loopback port, once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / "alerts.duckdb"
    collector = subprocess.Popen(
        [*CLI, "--log-level", "warning", "collect", "--db", str(db), "--listen", f"127.0.0.1:{port}"]
        + ["--grace", "0", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_healthy(url, collector)
    return url, db, collector


@pytest.mark.integration
def test_unconsumed_event_fires_one_webhook_and_late_consumption_resolves_it(
    tmp_path: Path, amqp: Any, webhook: Any
) -> None:
    exchange = amqp.exchange()
    forgotten, healthy = amqp.queue(), amqp.queue()
    amqp.bind(forgotten, exchange, "order.*")
    config = tmp_path / "eventscope.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [alerts]
            interval = "200ms"

            [[alerts.rules]]
            name = "everything is consumed"
            within = "1s"
            severity = "critical"

            [[alerts.sinks]]
            type = "webhook"
            url = "{webhook.url}"

            [[alerts.sinks]]
            type = "log"
            """
        )
    )
    url, db, collector = start_collector(tmp_path, config)
    try:
        run(PRODUCE, url, exchange, healthy)
        (firing,) = webhook.wait(1, timeout=15)
        (event,) = sql(url, "SELECT event_id FROM events WHERE routing_key = 'order.placed'")
        assert (firing["status"], firing["event_id"], firing["queue"], firing["reason"]) == (
            "firing",
            event["event_id"],
            None,  # spans only: the queue is unknown without the firehose
            "unconsumed",
        )
        assert (firing["exchange"], firing["routing_key"], firing["severity"]) == (
            exchange,
            "order.placed",
            "critical",
        )
        assert firing["age_s"] >= 1.0
        metrics = httpx.get(f"{url}/metrics").text
        assert 'eventscope_alerts_firing{rule="everything is consumed",severity="critical"} 1' in metrics

        run(CONSUME, url, forgotten)
        resolved = webhook.wait(2, timeout=15)[1]
        assert (resolved["status"], resolved["alert_id"]) == ("resolved", firing["alert_id"])
        time.sleep(0.5)  # nothing else arrives: the healthy event fired nothing
        assert len(webhook.bodies) == 2

        listed = subprocess.run([*CLI, "alerts", "--api", url], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        assert (
            "resolved" in listed.stdout and event["event_id"] in listed.stdout and "(1 row)" in listed.stdout
        )
        firing_only = subprocess.run(
            [*CLI, "alerts", "--api", url, "--firing"], capture_output=True, text=True, timeout=30
        )
        assert "(0 rows)" in firing_only.stdout
    finally:
        collector.send_signal(signal.SIGTERM)
        output, _ = collector.communicate(timeout=30)
    assert collector.returncode == 0, output
    assert output.count('"logger": "eventscope.alerts"') == 2  # the log sink: firing + resolved lines
    delivered = subprocess.run(
        [*CLI, "sql", "--db", str(db), "--format", "csv", "SELECT delivered FROM alerts"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert delivered.stdout == "delivered\nTrue\n", delivered.stderr


SERVICES = textwrap.dedent(
    """
    import os, sys, time
    import pika
    from eventscope.tracer import setup
    from eventscope.adapters.pika import instrument_channel

    endpoint, exchange, billing, jobs = sys.argv[1:]
    provider = setup(service="billing", endpoint=endpoint, schedule_delay_millis=50)
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, os.environ.get("EVENTSCOPE_TEST_VHOST", "/"))
    )
    channel = instrument_channel(connection.channel())
    channel.basic_publish(exchange, "order.placed", b"{}")  # routed to billing only
    channel.basic_publish("", jobs, b"poison")
    state = {"billing": False, "attempts": 0}

    def on_order(ch, method, properties, body):
        ch.basic_ack(method.delivery_tag)
        state["billing"] = True

    def on_job(ch, method, properties, body):
        state["attempts"] += 1
        ch.basic_nack(method.delivery_tag, requeue=True)  # a poison message loops
        if state["attempts"] == 5:
            ch.basic_cancel(method.consumer_tag)

    channel.basic_consume(billing, on_order)
    channel.basic_consume(jobs, on_job)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (state["billing"] and state["attempts"] >= 5):
        connection.process_data_events(time_limit=0.05)
    connection.close()
    assert provider.force_flush(10_000)
    assert state == {"billing": True, "attempts": 5}, state
    """
)


@pytest.mark.integration
def test_missing_consumer_and_poison_on_the_broker(tmp_path: Path, amqp: Any, webhook: Any) -> None:
    exchange = amqp.exchange()
    billing, jobs = amqp.queue(), amqp.queue()
    amqp.bind(billing, exchange, "order.*")
    config = tmp_path / "eventscope.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [alerts]
            interval = "200ms"
            redelivery_limit = 3

            [[alerts.rules]]
            name = "declared consumers and poison"
            reasons = ["missing_consumer", "poison"]
            within = "1s"

            [alerts.expect]
            "order.placed" = ["billing", "payments"]

            [[alerts.sinks]]
            type = "webhook"
            url = "{webhook.url}"
            """
        )
    )
    url, _, collector = start_collector(tmp_path, config)
    try:
        run(SERVICES, url, exchange, billing, jobs)
        bodies = webhook.wait(2, timeout=15)
        events = {
            row["routing_key"]: row["event_id"]
            for row in sql(url, "SELECT event_id, routing_key FROM events")
        }
        assert sorted((b["event_id"], b["reason"], b["queue"], b["detail"]) for b in bodies) == sorted(
            [
                (events["order.placed"], "missing_consumer", None, "expected: payments"),
                (events[jobs], "poison", jobs, None),
            ]
        )
        time.sleep(0.5)
        assert len(webhook.bodies) == 2  # once each
    finally:
        collector.send_signal(signal.SIGTERM)
        output, _ = collector.communicate(timeout=30)
    assert collector.returncode == 0, output
