"""Decode + normalise per span: the wire reader (tracer/ingest/wire.py) against the protobuf
runtime path, in the same run, on requests shaped like the adapter's and the foreign
instrumentations' spans. It decides whether the wire reader keeps its place (bench/README.md).

    python -m bench.wire_reader [--spans 1536] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from eventscope.tracer import contract as A
from eventscope.tracer.ingest import codec
from eventscope.tracer.ingest.normaliser import normalise, normalise_protobuf

_T0 = 1_700_000_000_000_000_000


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _span(kind: int, name: str, attributes: dict[str, object], i: int) -> Span:
    return Span(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        parent_span_id=os.urandom(8),
        name=name,
        kind=kind,
        start_time_unix_nano=_T0 + i * 1000,
        end_time_unix_nano=_T0 + i * 1000 + 500,
        attributes=[_kv(k, v) for k, v in attributes.items()],
    )


def request(spans: int, scope: str) -> bytes:
    """Half publish, half process spans; eventscope's attributes or amqplib's."""
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.append(_kv("service.name", "bench"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    for i in range(spans):
        event_id = f"01a229c0-{i:04x}-7b33-8206-{os.urandom(6).hex()}"
        if scope.startswith("@opentelemetry"):
            common = {
                "messaging.system": "RabbitMQ",
                "messaging.destination": "shop",
                "messaging.destination_kind": "topic",
                "messaging.rabbitmq.routing_key": "order.placed",
                "messaging.message_id": event_id,
                "messaging.protocol": "AMQP",
                "messaging.protocol_version": "0.9.1",
                "net.peer.name": "127.0.0.1",
                "net.peer.port": 5672,
            }
            if i % 2:
                scope_spans.spans.append(
                    _span(5, "orders process", {**common, "messaging.operation": "process"}, i)
                )
            else:
                scope_spans.spans.append(_span(4, "publish shop", common, i))
            continue
        common = {
            A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
            A.MESSAGING_DESTINATION_NAME: "shop:order.placed",
            A.MESSAGING_ROUTING_KEY: "order.placed",
            A.MESSAGING_MESSAGE_ID: event_id,
            A.EXCHANGE: "shop",
            A.SERVER_ADDRESS: "127.0.0.1",
            A.SERVER_PORT: 5672,
            A.EVENT_TYPE: "order.placed",
            A.CORRELATION_ID: event_id,
        }
        if i % 2:
            attributes = {
                **common,
                A.MESSAGING_OPERATION_TYPE: A.OP_PROCESS,
                A.QUEUE: "billing",
                A.SETTLE_OUTCOME: A.OUTCOME_ACK,
            }
            scope_spans.spans.append(_span(5, "process billing", attributes, i))
        else:
            attributes = {**common, A.MESSAGING_OPERATION_TYPE: A.OP_SEND, A.PRODUCER: "orders"}
            scope_spans.spans.append(_span(4, "publish shop", attributes, i))
    return message.SerializeToString()


def per_span_us(run: Callable[[], object], spans: int, rounds: int) -> float:
    run()  # warm caches
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        timings.append((time.perf_counter() - start) / spans * 1e6)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1536, help="spans per request (default 1536)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"decode + normalise, µs per span (median of {args.rounds}, {args.spans}-span requests)")
    print(f"{'spans of':<42} {'protobuf runtime':>17} {'wire reader':>12} {'ratio':>6}")
    for scope in ("eventscope.adapters.pika", "@opentelemetry/instrumentation-amqplib"):
        body = request(args.spans, scope)
        wire = normalise_protobuf(body)
        runtime = normalise(codec.decode(body, codec.PROTOBUF))
        assert wire is not None and wire.events == runtime.events and wire.deliveries == runtime.deliveries
        baseline = per_span_us(
            lambda b=body: normalise(codec.decode(b, codec.PROTOBUF)), args.spans, args.rounds
        )
        reader = per_span_us(lambda b=body: normalise_protobuf(b), args.spans, args.rounds)
        print(f"{scope:<42} {baseline:>17.1f} {reader:>12.1f} {baseline / reader:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
