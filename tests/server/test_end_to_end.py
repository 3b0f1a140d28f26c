"""End to end: the real OTLP/HTTP exporter, the real broker, the collector, the SQL surface.

* in-process: a collector served by uvicorn in a thread, fed by a TracerProvider of the
  test's own (the session's global provider is left alone) — gzip, as exporters send it;
* spans from ``opentelemetry-instrumentation-pika`` alone (no eventscope adapter);
* the whole product: ``eventscope collect`` as a subprocess, a small shop flow in another
  subprocess with ``eventscope.tracer.setup`` + ``instrument_channel`` on the real broker,
  exact events / deliveries / causal_edges / chain() / orphans, then SIGTERM → exit 0 and the
  file readable with ``eventscope sql --db``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tests.processes import collect, free_port, wait_healthy
from tests.spans import RunningCollector, new_span_id, new_trace, open_store, publish, request

ROOT = Path(__file__).resolve().parents[2]


def sql(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30)
    assert response.status_code == 200, response.text
    document = response.json()
    return [dict(zip(document["columns"], row, strict=True)) for row in document["rows"]]


def wait_for(url: str, query: str, expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        (row,) = sql(url, query)
        if next(iter(row.values())) >= expected or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def own_provider(url: str, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip, timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    return provider


def test_real_exporter_in_process(running_collector: RunningCollector) -> None:
    provider = own_provider(running_collector.url, "checkout")
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span(
            "publish shop",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.message.id": "e2e-1",
                "eventscope.exchange": "shop",
                "messaging.rabbitmq.destination.routing_key": "cart.checked_out",
            },
        ):
            pass
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    rows = sql(running_collector.url, "SELECT event_id, event_type, exchange, producer_service FROM events")
    assert rows == [
        {
            "event_id": "e2e-1",
            "event_type": "cart.checked_out",
            "exchange": "shop",
            "producer_service": "checkout",
        }
    ]
    metrics = httpx.get(f"{running_collector.url}/metrics").text
    assert 'eventscope_http_responses_total{code="200"} 1' in metrics


@pytest.mark.integration
def test_spans_of_instrumentation_pika_alone(running_collector: RunningCollector, amqp: Any) -> None:
    """No eventscope adapter and no message_id: events still join their deliveries."""
    from opentelemetry.instrumentation.pika import PikaInstrumentor

    queue = amqp.queue()
    provider = own_provider(running_collector.url, "legacy")
    try:
        channel = amqp.connect().channel()
        PikaInstrumentor.instrument_channel(channel, tracer_provider=provider)
        channel.basic_publish("", queue, b"hello")
        got: list[bytes] = []

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            got.append(body)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(queue, on_message)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            channel.connection.process_data_events(time_limit=0.1)
        assert got == [b"hello"]
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    url = running_collector.url
    events = sql(url, "SELECT event_id, exchange, producer_service FROM events")
    assert len(events) == 1 and events[0]["event_id"].startswith("otel-")
    assert events[0]["exchange"] == queue and events[0]["producer_service"] == "legacy"
    deliveries = sql(url, "SELECT event_id, queue, outcome FROM deliveries")
    # that library names no queue and traces no settle: 'unknown', which is no orphan without
    # broker truth saying the message is still unacknowledged (issue 18: it was acked)
    assert deliveries == [{"event_id": events[0]["event_id"], "queue": None, "outcome": "unknown"}]
    assert sql(url, "SELECT reason FROM orphans") == []


FLOW = textwrap.dedent(
    """
    import os, sys, time
    import pika
    from eventscope.tracer import setup
    from eventscope.adapters.pika import instrument_channel

    endpoint, exchange, billing, shipping, invoices, nobody, payments = sys.argv[1:]
    provider = setup(service="shop", endpoint=endpoint, schedule_delay_millis=50)
    vhost = os.environ.get("EVENTSCOPE_TEST_VHOST", "/")
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, vhost))
    channel = instrument_channel(connection.channel())

    def on_billing(ch, method, properties, body):
        ch.basic_publish("", invoices, b"invoice")  # caused by order.placed
        ch.basic_ack(method.delivery_tag)

    def on_invoice(ch, method, properties, body):
        ch.basic_ack(method.delivery_tag)

    def on_payment(ch, method, properties, body):
        ch.basic_nack(method.delivery_tag, requeue=False)

    channel.basic_publish(exchange, "order.placed", b"{}")
    channel.basic_publish(exchange, "payment.failed", b"{}")
    channel.basic_publish("", nobody, b"nobody reads this queue")
    channel.basic_consume(billing, on_billing)
    channel.basic_consume(invoices, on_invoice)
    channel.basic_consume(payments, on_payment)
    handled = {"shipping": False}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)
        if not handled["shipping"]:
            method, properties, body = channel.basic_get(shipping)
            if method is not None:
                channel.basic_ack(method.delivery_tag)  # after the receive span ended: a settle span
                handled["shipping"] = True
        queues = (billing, invoices, payments)
        counts = [channel.queue_declare(q, passive=True).method.message_count for q in queues]
        if handled["shipping"] and not any(counts):
            connection.process_data_events(time_limit=0.3)
            break
    connection.close()
    assert provider.force_flush(10_000)
    print("flow done", flush=True)
    """
)


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    db = tmp_path / "e2e.duckdb"
    port = free_port()
    process = collect(str(db), port, "--grace", "0")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process)
    yield url, db, process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.mark.integration
def test_shop_flow_end_to_end(collector_process: tuple[str, Path, subprocess.Popen[str]], amqp: Any) -> None:
    url, db, collector = collector_process
    exchange = amqp.exchange()
    billing, shipping, invoices, nobody, payments = (amqp.queue() for _ in range(5))
    amqp.bind(billing, exchange, "order.*")
    amqp.bind(shipping, exchange, "order.*")
    amqp.bind(payments, exchange, "payment.#")
    flow = subprocess.run(
        [sys.executable, "-c", FLOW, url, exchange, billing, shipping, invoices, nobody, payments],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    assert flow.returncode == 0, flow.stdout + flow.stderr
    wait_for(url, "SELECT count(*) FROM deliveries WHERE outcome IS NOT NULL", 5)

    events = sql(
        url,
        "SELECT event_id, event_type, exchange, routing_key, producer_service, causation_id, correlation_id "
        "FROM events ORDER BY published_at",
    )
    assert [(e["event_type"], e["exchange"], e["routing_key"]) for e in events] == [
        ("order.placed", exchange, "order.placed"),
        ("payment.failed", exchange, "payment.failed"),
        (nobody, "", nobody),
        (invoices, "", invoices),
    ]
    order, payment, lonely, invoice = (e["event_id"] for e in events)
    assert {e["producer_service"] for e in events} == {"shop"}
    assert invoice_row(events, invoice)["causation_id"] == order
    assert invoice_row(events, invoice)["correlation_id"] == order
    # the adapter sends no `type` and no correlation header on a root event: the collector infers both
    assert [e["correlation_id"] for e in events if e["event_id"] != invoice] == [order, payment, lonely]

    deliveries = sql(url, "SELECT event_id, queue, outcome, settled_at IS NOT NULL AS s FROM deliveries")
    assert sorted((d["event_id"], d["queue"], d["outcome"], d["s"]) for d in deliveries) == sorted(
        [
            (order, billing, "ack", True),
            (order, shipping, "ack", True),
            (invoice, invoices, "ack", True),
            (payment, payments, "nack", True),
        ]
    )
    assert sql(url, "SELECT cause_event_id, effect_event_id FROM causal_edges") == [
        {"cause_event_id": order, "effect_event_id": invoice}
    ]
    assert sql(url, f"SELECT event_id, depth, cause_event_id FROM chain('{order}')") == [
        {"event_id": order, "depth": 0, "cause_event_id": None},
        {"event_id": invoice, "depth": 1, "cause_event_id": order},
    ]
    orphans = sql(url, "SELECT event_id, queue, reason FROM orphans")
    assert sorted((o["event_id"], o["queue"], o["reason"]) for o in orphans) == sorted(
        [(lonely, nobody, "unconsumed"), (payment, payments, "failed")]
    )
    api_chain = httpx.get(f"{url}/api/chain/{order}").json()["chain"]
    assert [row["event_id"] for row in api_chain] == [order, invoice]

    collector.send_signal(signal.SIGTERM)
    output, _ = collector.communicate(timeout=30)
    assert collector.returncode == 0, output

    cli = [sys.executable, "-c", "from eventscope.tracer.cli.main import main; raise SystemExit(main())"]
    read = subprocess.run(
        [*cli, "sql", "--db", str(db), "--format", "json", "SELECT count(*) AS n FROM events"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == [{"n": 4}]


def invoice_row(events: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    return next(e for e in events if e["event_id"] == event_id)


@pytest.mark.integration
def test_sql_cli_points_to_the_api_when_the_collector_holds_the_file(
    collector_process: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, db, _ = collector_process
    cli = [sys.executable, "-c", "from eventscope.tracer.cli.main import main; raise SystemExit(main())"]
    held = subprocess.run(
        [*cli, "sql", "--db", str(db), "SELECT 1"], capture_output=True, text=True, timeout=30
    )
    assert held.returncode == 1 and "--api" in held.stderr
    via_api = subprocess.run(
        [*cli, "sql", "--api", url, "--format", "csv", "SELECT 1 AS one, 'x' AS two"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert via_api.returncode == 0, via_api.stderr
    assert via_api.stdout == "one,two\n1,x\n"


def test_kill_9_keeps_every_batch_that_got_a_200(
    collector_process: tuple[str, Path, subprocess.Popen[str]],
) -> None:

    url, db, collector = collector_process
    acknowledged = 0
    for _ in range(20):
        trace_id = new_trace()
        body = request(*(publish(trace_id=trace_id, event_id=new_span_id()) for _ in range(50)))
        response = httpx.post(
            f"{url}/v1/traces",
            content=body.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200
        acknowledged += 50
    collector.send_signal(signal.SIGKILL)
    collector.communicate(timeout=30)
    store = open_store(db)  # replays the write-ahead log
    try:
        reader = store.reader()
        assert reader.execute("SELECT count(*) FROM events").fetchall() == [(acknowledged,)]
    finally:
        store.close()
