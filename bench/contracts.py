"""Contracts bench: what payload schema validation costs the collector at 1,000 payloads/s.

Issue 15's target: schema validation on the tap at 1,000 payloads/s costs <= 10 % of the
collector's CPU. One process runs the collector's write side as ``Collector.open`` builds it
(a DuckDB store, the writer thread, the alert engine with ``[contracts]``) and feeds it, 100
events every 100 ms for ``--seconds``, what it gets for instrumented producers: each event's
PRODUCER span (an OTLP protobuf request, read by the same wire reader as ``POST /v1/traces``)
and what the firehose tap hands the writer (the published event with its captured body). The
inputs are built before the clock starts: the CPU measured is the collector's.

Two phases in the same run, alternating, differ only in ``sample_rate``: 0 (no payload
validated: the baseline) and 1 (every payload validated). The process CPU of each phase (all
threads: writer, engine, the feeding loop) is compared; the difference is what validation
costs, its share is of the validating phase's CPU.

The HTTP layer (uvicorn, Starlette) is left out, so the real collector spends more CPU per event
than this one and the printed share is an upper bound.

Then micro-costs per payload: the compiled validator (jsonschema-rs, cached per schema), the
reference validator (jsonschema), and ``json.loads`` + validation (what a check would cost
without the value payload capture already parsed).

    .venv/bin/python bench/contracts.py [--seconds 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from eventscope.tracer import contract as A
from eventscope.tracer.alerts.engine import AlertEngine
from eventscope.tracer.alerts.rules import AlertsConfig
from eventscope.tracer.broker import payloads
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.broker.records import BrokerBatch
from eventscope.tracer.contracts import asyncapi
from eventscope.tracer.contracts.checks import ContractChecks, SchemaCheck
from eventscope.tracer.contracts.config import ContractsConfig
from eventscope.tracer.ingest.normaliser import normalise_protobuf
from eventscope.tracer.ingest.writer import WriteQueueFull, Writer
from eventscope.tracer.store.duckdb_store import Store

DOCUMENT = """\
asyncapi: 3.0.0
info: {title: orders, version: 1.0.0}
channels:
  placed:
    address: order.placed
    bindings: {amqp: {is: routingKey, exchange: {name: bench-shop}}}
    messages:
      placed:
        name: order.placed
        payload:
          type: object
          required: [order_id, customer, amount, currency, items]
          properties:
            order_id: {type: string}
            customer:
              type: object
              required: [id]
              properties: {id: {type: string}, tier: {enum: [gold, basic]}}
            amount: {type: number, minimum: 0}
            currency: {type: string, pattern: '^[A-Z]{3}$'}
            items:
              type: array
              items:
                type: object
                required: [sku, qty]
                properties: {sku: {type: string}, qty: {type: integer, minimum: 1}, price: {type: number}}
operations:
  announce: {action: send, channel: {$ref: '#/channels/placed'}}
"""
CAPTURE = PayloadCapture()
RATE = 1000  # payloads per second
BATCH = 100


def body(n: int) -> str:
    items = [{"sku": f"sku-{(n + i) % 97}", "qty": 1 + i, "price": 9.5 * (i + 1)} for i in range(3)]
    order = {
        "order_id": f"o-{n}",
        "customer": {"id": f"c-{n % 1000}", "tier": "gold" if n % 3 else "basic"},
        "amount": 28.5 + n % 10,
        "currency": "EUR",
        "items": items,
    }
    return json.dumps(order)


def _attribute(key: str, value: Any) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def spans(ids: list[str], now_ns: int) -> bytes:
    """An OTLP request of one PRODUCER span per event, as the pika adapter exports them."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(_attribute("service.name", "orders"))
    scope = resource.scope_spans.add()
    for event_id in ids:
        attributes = {
            A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
            A.MESSAGING_OPERATION_TYPE: A.OP_SEND,
            A.MESSAGING_OPERATION_NAME: "publish",
            A.MESSAGING_DESTINATION_NAME: "bench-shop:order.placed",
            A.EXCHANGE: "bench-shop",
            A.MESSAGING_ROUTING_KEY: "order.placed",
            A.EVENT_TYPE: "order.placed",
            A.PRODUCER: "orders",
            A.MESSAGING_BODY_SIZE: 200,
            A.MESSAGING_MESSAGE_ID: event_id,
        }
        scope.spans.append(
            Span(
                trace_id=random.getrandbits(128).to_bytes(16, "big"),
                span_id=random.getrandbits(64).to_bytes(8, "big"),
                name="publish bench-shop",
                kind=Span.SPAN_KIND_PRODUCER,
                start_time_unix_nano=now_ns,
                end_time_unix_nano=now_ns + 50_000,
                attributes=[_attribute(k, v) for k, v in attributes.items()],
            )
        )
    return request.SerializeToString()


def batch(start: int, now_us: int) -> tuple[bytes, BrokerBatch]:
    out = BrokerBatch()
    ids = [f"{random.getrandbits(64):016x}-{n}" for n in range(start, start + BATCH)]
    for n, event_id in zip(range(start, start + BATCH), ids, strict=True):
        text = body(n)
        out.events.append(
            {
                "event_id": event_id,
                "event_type": "order.placed",
                "exchange": "bench-shop",
                "routing_key": "order.placed",
                "producer_service": "orders",
                "published_at": now_us,
                "trace_id": None,
                "span_id": None,
                "causation_id": None,
                "correlation_id": None,
                "routed_queues": ["q"],
                "payload_size": len(text),
                "source": "firehose",
            }
        )
        kept = payloads.capture(
            text.encode(), content_type="application/json", content_encoding=None, policy=CAPTURE
        )
        out.payloads.append({"event_id": event_id, "captured_at": now_us, **kept})
    return spans(ids, now_us * 1000), out


def submit(writer: Writer, batch: Any) -> None:
    """As the OTLP exporter and the tap do on a full write queue: wait, then try again."""
    while True:
        try:
            writer.submit(batch)
            return
        except WriteQueueFull:
            time.sleep(0.05)


def phase(document: asyncapi.Document, *, sample_rate: float, seconds: float) -> dict[str, float]:
    """Feed the collector's write side for ``seconds``; its process CPU per second."""
    with tempfile.TemporaryDirectory() as where:
        store = Store.open(Path(where) / "bench.duckdb", grace_s=1.0)
        writer = Writer(store).start()
        config = AlertsConfig(
            contracts=ContractsConfig(documents=(document,), sample_rate=sample_rate), interval_s=1.0
        )
        engine = AlertEngine(config, store=store, writer=writer, grace_s=1.0).start()
        sent = 0
        begin_us = int(time.time() * 1e6) + 2_000_000  # published as they are sent, after the build
        inputs = [
            batch(start, begin_us + start * 1_000_000 // RATE)
            for start in range(0, int(seconds * RATE), BATCH)
        ]
        time.sleep(max(0.0, begin_us / 1e6 - time.time()))
        started, cpu = time.perf_counter(), time.process_time()
        try:
            for raw, broker in inputs:
                rows = normalise_protobuf(raw)
                assert rows is not None
                submit(writer, rows)
                submit(writer, broker)
                sent += BATCH
                pause = sent / RATE - (time.perf_counter() - started)
                if pause > 0:
                    time.sleep(pause)
            assert engine.contracts is not None
            deadline = time.perf_counter() + 120
            while engine.contracts.counters["checked"] < sent and time.perf_counter() < deadline:
                time.sleep(0.05)  # until every event had its check: the same work in each phase
            elapsed = time.perf_counter() - started
            used = time.process_time() - cpu
        finally:
            validated = engine.contracts.counters["payloads_validated"] if engine.contracts else 0
            engine.stop()
            writer.close()
            store.close()
    return {
        "cpu_per_event_us": used / sent * 1e6,
        "sent": sent,
        "validated": validated,
        "cpu_s": used,
        "wall_s": elapsed,
        "cpu_per_s": used / elapsed,
    }


def micro(document: asyncapi.Document, n: int = 20_000) -> dict[str, float]:
    (declaration,) = document.declarations
    schema_json = declaration.schema_json or "{}"
    values = [json.loads(body(i)) for i in range(n)]
    check = SchemaCheck()
    check.problems(schema_json, values[0])  # compiled once, outside the timing
    started = time.perf_counter()
    for value in values:
        check.problems(schema_json, value)
    compiled = (time.perf_counter() - started) / n
    import jsonschema

    reference = jsonschema.Draft7Validator(json.loads(schema_json))
    started = time.perf_counter()
    for value in values[: n // 10]:
        reference.is_valid(value)
    reference_s = (time.perf_counter() - started) / (n // 10)
    checks = ContractChecks(ContractsConfig(documents=(document,), sample_rate=1.0))
    match = checks.catalog.match(event_type="order.placed", exchange="bench-shop", routing_key="order.placed")
    bodies = [body(i) for i in range(n)]
    started = time.perf_counter()
    for text in bodies:
        checks.validate(match, text)
    validate = (time.perf_counter() - started) / n
    return {
        "compiled_us": compiled * 1e6,
        "reference_us": reference_s * 1e6,
        "json_and_validate_us": validate * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/validating pairs (default 2)")
    args = parser.parse_args(argv)
    document = asyncapi.parse(DOCUMENT, file="bench-orders.yaml")
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "validating": []}
    for round_ in range(args.rounds):
        order = [("baseline", 0.0), ("validating", 1.0)]
        if round_ % 2:
            order.reverse()
        for name, rate in order:
            result = phase(document, sample_rate=rate, seconds=args.seconds)
            results[name].append(result)
            print(
                f"round {round_ + 1} {name:>10}: {result['sent']:,} events+payloads, "
                f"{result['validated']:,} validated, {result['cpu_per_event_us']:.0f} µs CPU per event, "
                f"{result['cpu_per_s'] * 100:.1f} % of a core",
                flush=True,
            )
    # CPU per event (every event checked in both phases) at 1,000 events/s = share of a core
    base = sorted(r["cpu_per_event_us"] for r in results["baseline"])[len(results["baseline"]) // 2] / 1000
    validating = sorted(r["cpu_per_event_us"] for r in results["validating"])[len(results["validating"]) // 2]
    validating /= 1000
    cost = validating - base
    share = cost / validating if validating else 0.0
    figures = micro(document)
    print()
    print(f"collector CPU at {RATE:,} payloads/s, no validation : {base * 100:.1f} % of a core (median)")
    print(
        f"collector CPU at {RATE:,} payloads/s, all validated : {validating * 100:.1f} % of a core (median)"
    )
    print(
        f"validation costs                               : {cost * 100:.1f} % of a core "
        f"= {share * 100:.1f} % of the collector's CPU"
    )
    print(
        f"per payload: compiled validator {figures['compiled_us']:.1f} µs, "
        f"reference jsonschema {figures['reference_us']:.1f} µs, "
        f"json.loads + validate {figures['json_and_validate_us']:.1f} µs"
    )
    verdict = "PASS" if share <= 0.10 else "MISS"
    print(f"{verdict}: validation <= 10 % of the collector's CPU at 1,000 payloads/s")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
