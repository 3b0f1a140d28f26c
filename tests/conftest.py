"""Shared fixtures: the real broker, the real OTLP exporter and a receiver on loopback.

One SDK TracerProvider per test process (OpenTelemetry allows setting the global provider
once): ``eventscope.tracer.setup`` with the OTLP/HTTP exporter pointed at an
``OtlpReceiver`` on 127.0.0.1. Tests that need a process of their own (setup variants,
collector down) run a subprocess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest

from eventscope.tracer import setup
from eventscope.tracer.broker.firehose import disable_tracing, enable_tracing, tracing_enabled
from eventscope.tracer.testing import OtlpReceiver

AMQP_HOST = os.environ.get("EVENTSCOPE_TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("EVENTSCOPE_TEST_AMQP_PORT", "5672"))
# Every run gets a vhost of its own (the firehose is switched per vhost), so two runs on one
# broker, or a run and the demo, never turn each other's tracing off. Subprocesses inherit it.
_OWN_VHOST = "EVENTSCOPE_TEST_VHOST" not in os.environ
TEST_VHOST = os.environ.setdefault("EVENTSCOPE_TEST_VHOST", f"eventscope-test-{uuid.uuid4().hex[:10]}")
AMQP_URL = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{quote(TEST_VHOST, safe='')}"


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Declare the run's vhost (everything the run declares lives and dies with it)."""
    if not _OWN_VHOST or shutil.which("rabbitmqctl") is None:
        return
    _rabbitmqctl("add_vhost", TEST_VHOST)
    _rabbitmqctl("set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the run's vhost: its queues, exchanges and tracing go with it."""
    if _OWN_VHOST and shutil.which("rabbitmqctl") is not None:
        _rabbitmqctl("delete_vhost", TEST_VHOST)


def amqp_parameters() -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=AMQP_HOST,
        port=AMQP_PORT,
        virtual_host=TEST_VHOST,
        credentials=pika.PlainCredentials("guest", "guest"),
    )


@pytest.fixture(scope="session")
def broker() -> pika.ConnectionParameters:
    try:
        socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"RabbitMQ is not answering on {AMQP_HOST}:{AMQP_PORT} ({exc}); start it with "
            "`rabbitmq-server -detached` (.ci/run does)"
        )
    return amqp_parameters()


@pytest.fixture(scope="module")
def tracing(broker: pika.ConnectionParameters) -> Iterator[None]:
    """Firehose tracing on for the run's vhost, off again afterwards if it was off."""
    was_on = tracing_enabled(TEST_VHOST)
    enabled, message = enable_tracing(TEST_VHOST)
    assert enabled, message
    try:
        yield
    finally:
        if not was_on:
            assert disable_tracing(TEST_VHOST)


@pytest.fixture(scope="session")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as otlp:
        yield otlp


@pytest.fixture(scope="session")
def provider(receiver: OtlpReceiver) -> Any:
    provider = setup(service="tests", endpoint=receiver.endpoint, schedule_delay_millis=50)
    yield provider
    provider.force_flush()


class Spans:
    """What the receiver got in this test, with the provider flushed first."""

    def __init__(self, receiver: OtlpReceiver, provider: Any) -> None:
        self.receiver = receiver
        self.provider = provider

    def wait(self, predicate: Any, count: int = 1, timeout: float = 10.0) -> list[Any]:
        return self.receiver.wait_for(predicate, count, timeout, flush=self.provider.force_flush)

    def named(self, prefix: str, count: int = 1) -> list[Any]:
        return self.wait(lambda s: s.name.startswith(prefix), count)

    def all(self) -> list[Any]:
        self.provider.force_flush()
        return list(self.receiver.spans)


@pytest.fixture
def spans(receiver: OtlpReceiver, provider: Any) -> Spans:
    receiver.clear()
    return Spans(receiver, provider)


class Amqp:
    """A blocking connection plus unique names; deletes what it declared at teardown."""

    def __init__(self, parameters: pika.ConnectionParameters) -> None:
        self.parameters = parameters
        self.connections: list[pika.BlockingConnection] = []
        self.connection = self.connect()
        self.admin = self.connection.channel()
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def connect(self) -> pika.BlockingConnection:
        connection = pika.BlockingConnection(self.parameters)
        self.connections.append(connection)
        return connection

    def name(self, kind: str) -> str:
        return f"eventscope-test-{kind}-{uuid.uuid4().hex[:10]}"

    def queue(self, name: str | None = None, **arguments: Any) -> str:
        name = name or self.name("q")
        self.admin.queue_declare(name, arguments=arguments or None)
        self.queues.append(name)
        return name

    def exchange(self, name: str | None = None, kind: str = "topic") -> str:
        name = name or self.name("x")
        self.admin.exchange_declare(name, exchange_type=kind)
        self.exchanges.append(name)
        return name

    def bind(self, queue: str, exchange: str, routing_key: str = "#") -> None:
        self.admin.queue_bind(queue, exchange, routing_key)

    def get(self, queue: str, timeout: float = 5.0) -> tuple[Any, Any, Any]:
        """basic_get with a short poll (publishes on another channel are not ordered)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            method, properties, body = self.admin.basic_get(queue, auto_ack=True)
            if method is not None or time.monotonic() > deadline:
                return method, properties, body
            time.sleep(0.02)

    def close(self) -> None:
        cleanup = pika.BlockingConnection(self.parameters)
        channel = cleanup.channel()
        for queue in self.queues:
            channel.queue_delete(queue)
        for exchange in self.exchanges:
            channel.exchange_delete(exchange)
        cleanup.close()
        for connection in self.connections:
            if connection.is_open:
                with contextlib.suppress(Exception):
                    connection.close()


@pytest.fixture
def amqp(broker: pika.ConnectionParameters) -> Iterator[Amqp]:
    helper = Amqp(broker)
    yield helper
    helper.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A fresh DuckDB store (no grace: verdicts are immediate)."""
    from tests.spans import open_store

    opened = open_store(tmp_path / "store.duckdb", grace_s=0)
    yield opened
    opened.close()


@pytest.fixture
def running_collector(tmp_path: Path) -> Iterator[Any]:
    """An in-process collector on a free loopback port (see tests/spans.py)."""
    from eventscope.tracer.server.app import CollectorConfig
    from tests.spans import RunningCollector

    collector = RunningCollector(CollectorConfig(db_path=str(tmp_path / "collector.duckdb"), grace_s=0))
    yield collector.start()
    collector.stop()


_BROKER_FIXTURES = frozenset({"broker", "amqp", "tracing"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that talks to the broker carries the ``integration`` marker (so
    ``-m "not integration"`` runs without RabbitMQ): a test that asks for a broker fixture
    without it is a collection error, not a silent mislabel.
    """
    unmarked = [
        item.nodeid
        for item in items
        if _BROKER_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that use the broker need @pytest.mark.integration:\n  " + "\n  ".join(unmarked)
        )
