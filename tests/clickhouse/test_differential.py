"""DuckDB and chDB stores, the same traffic, the same answers.

Two ``eventscope collect`` processes run side by side on the real broker, each with its own
firehose tap: one on a DuckDB file (the default store), one on ``--store chdb:///DIR``. A shop
flow exports every span to both (one TracerProvider, two exporters) and an uninstrumented
producer publishes what only the firehose sees. Then ``/api/sql`` of each must give the same
``orphans``, the same ``chain()`` for every root event and the same ``deliveries`` outcomes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tests.conftest import AMQP_URL
from tests.processes import CLI, free_port, wait_healthy
from tests.server.test_end_to_end import FLOW

ROOT = Path(__file__).resolve().parents[2]

# The shop flow of the end-to-end test, its spans exported to a second collector as well.
TWO_WAY_FLOW = (
    textwrap.dedent(
        """
    import sys
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    exporter = OTLPSpanExporter(endpoint=sys.argv.pop(1) + "/v1/traces", timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    trace.set_tracer_provider(provider)
    """
    )
    + FLOW
)


def _collector(store_flags: list[str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *CLI,
            "--log-level",
            "warning",
            "collect",
            *store_flags,
            "--listen",
            f"127.0.0.1:{port}",
            "--grace",
            "0",
            "--amqp-url",
            AMQP_URL,
            "--firehose",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def sql(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=60)
    assert response.status_code == 200, response.text
    document = response.json()
    return [dict(zip(document["columns"], row, strict=True)) for row in document["rows"]]


@pytest.fixture
def collectors(tmp_path: Path, tracing: None) -> Iterator[tuple[str, str]]:
    ports = free_port(), free_port()
    duck = _collector(["--db", str(tmp_path / "diff.duckdb")], ports[0])
    chdb = _collector(["--store", f"chdb://{tmp_path / 'chdb'}"], ports[1])
    urls = tuple(f"http://127.0.0.1:{port}" for port in ports)
    try:
        wait_healthy(urls[0], duck)
        wait_healthy(urls[1], chdb, timeout=60)
        yield urls
    finally:
        for process in (duck, chdb):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.communicate()


ORPHANS = "SELECT event_id, coalesce(queue, '') AS queue, reason FROM orphans ORDER BY 1, 2, 3"
DELIVERIES = (
    "SELECT event_id, queue, coalesce(outcome, '') AS outcome, source FROM deliveries "
    "WHERE event_id IS NOT NULL ORDER BY 1, 2, 3, 4"
)
ROOTS = "SELECT event_id FROM events WHERE causation_id IS NULL ORDER BY 1"
EVENTS = "SELECT event_id, source, exchange, routing_key FROM events ORDER BY 1"


def _answers(url: str) -> dict[str, Any]:
    events = sql(url, EVENTS)
    roots = [
        e["event_id"] for e in sql(url, "SELECT event_id FROM events WHERE causation_id IS NULL ORDER BY 1")
    ]
    chains = {}
    for root in roots:
        response = httpx.get(f"{url}/api/chain/{root}", timeout=60)
        assert response.status_code == 200, response.text
        chains[root] = [(c["event_id"], c["depth"], c["cause_event_id"]) for c in response.json()["chain"]]
    return {
        "events": events,
        "orphans": sql(url, ORPHANS),
        "deliveries": sql(url, DELIVERIES),
        "chains": chains,
    }


@pytest.mark.integration
def test_duckdb_and_chdb_give_the_same_answers(collectors: tuple[str, str], amqp: Any) -> None:
    duck, chdb = collectors
    exchange = amqp.exchange()
    billing, shipping, invoices, nobody, payments, plain = (amqp.queue() for _ in range(6))
    amqp.bind(billing, exchange, "order.*")
    amqp.bind(shipping, exchange, "order.*")
    amqp.bind(payments, exchange, "payment.#")
    amqp.bind(plain, exchange, "plain.#")
    flow = subprocess.run(
        [
            sys.executable,
            "-c",
            TWO_WAY_FLOW,
            chdb,
            duck,
            exchange,
            billing,
            shipping,
            invoices,
            nobody,
            payments,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert flow.returncode == 0, flow.stdout + flow.stderr
    channel = amqp.connection.channel()  # uninstrumented: only the firehose sees these
    for n in range(3):
        channel.basic_publish(
            exchange,
            "plain.note",
            f"plain {n}".encode(),
            pika.BasicProperties(message_id=f"plain-{n}-{plain}"),
        )
    channel.basic_publish(
        exchange, "nothing.bound", b"lost", pika.BasicProperties(message_id=f"lost-{plain}")
    )

    deadline = time.monotonic() + 45
    while True:
        expected, got = _answers(duck), _answers(chdb)
        if (expected == got and len(expected["events"]) >= 8) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(expected["events"]) >= 8, expected
    assert {e["source"] for e in expected["events"]} >= {"both", "firehose"}
    assert {o["reason"] for o in expected["orphans"]} >= {"unroutable", "unconsumed", "failed"}
    assert got["orphans"] == expected["orphans"]
    assert got["deliveries"] == expected["deliveries"]
    assert got["chains"] == expected["chains"]
    assert got["events"] == expected["events"]
    assert any(len(chain) > 1 for chain in expected["chains"].values())

    # the command line, as a user types it: `eventscope sql --api URL` against each collector
    printed = [
        subprocess.run(
            [*CLI, "sql", "--api", url, "--format", "csv", ORPHANS],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for url in (duck, chdb)
    ]
    assert printed[0].count("\n") == len(expected["orphans"]) + 1
    assert printed[1] == printed[0]
