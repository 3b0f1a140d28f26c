"""Broker truth survives a collector restart with ``--tap-queue``: the durable tap queue keeps
what is published while the collector is down (killed with SIGKILL: no goodbye), and the
collector stores it when it comes back.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tests.conftest import AMQP_URL
from tests.processes import collect, free_port, wait_healthy


def _count(url: str, query: str) -> int:
    response = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["rows"][0][0]


def _wait_count(url: str, query: str, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = _count(url, query)
        if n >= expected or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


@pytest.mark.integration
def test_publishes_while_the_collector_is_down_are_stored_when_it_comes_back(
    tmp_path: Path, tracing: None, amqp: Any
) -> None:
    exchange = amqp.exchange()
    queue = amqp.queue()
    amqp.bind(queue, exchange, "#")
    name = f"restart-{queue}"
    flags = ("--amqp-url", AMQP_URL, "--firehose", "--tap-queue", name)
    db = str(tmp_path / "restart.duckdb")
    channel = amqp.connection.channel()

    def publish(prefix: str, count: int) -> None:
        for n in range(count):
            channel.basic_publish(
                exchange, "note", b"x", pika.BasicProperties(message_id=f"{prefix}-{n}-{name}")
            )

    query = "SELECT count(*) FROM events WHERE event_id LIKE '{}-%'"
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        first = collect(db, port, *flags)
        wait_healthy(url, first)
        publish("before", 100)
        assert _wait_count(url, query.format("before"), 100) == 100
        first.send_signal(signal.SIGKILL)
        first.communicate()

        publish("down", 100)  # nobody consumes the tap queue now

        second = collect(db, port, *flags)
        try:
            wait_healthy(url, second)
            publish("after", 100)
            assert _wait_count(url, query.format("after"), 100) == 100
            assert _wait_count(url, query.format("down"), 100) == 100
            assert _count(url, query.format("before")) == 100
            health = httpx.get(f"{url}/healthz", timeout=10).json()
            assert "restart" in str(health) and '"capped": true' not in str(health)
        finally:
            second.terminate()
            second.communicate(timeout=30)
    finally:
        channel.queue_delete(f"eventscope.collector.firehose.{name}")


@pytest.mark.integration
def test_a_durable_tap_queue_is_bounded(broker: Any, amqp: Any) -> None:
    from eventscope.tracer.broker.firehose import FirehoseTap

    tap = FirehoseTap(broker, lambda records: None, durable_name=f"bounded-{amqp.name('t')}", max_length=5)
    channel = amqp.connection.channel()
    try:
        tap._declare_queue(channel)
        for n in range(8):
            channel.basic_publish("", tap.queue, str(n).encode())
        time.sleep(0.3)
        tap._declare_queue(channel)
        assert tap.backlog == 5 and tap.capped  # drop-head: the oldest three went
        _, _, body = channel.basic_get(tap.queue, auto_ack=True)
        assert body == b"3"
    finally:
        channel.queue_delete(tap.queue)
