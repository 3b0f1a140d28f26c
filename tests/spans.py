"""Collector test helpers: OTLP requests built by hand and an in-process collector.

Spans are built as ``opentelemetry-proto`` messages with the attributes the pika adapter
emits (``eventscope.tracer.contract``), so normaliser and store tests need no broker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from eventscope.tracer import contract as A
from eventscope.tracer.ingest.recorder import Recorder
from eventscope.tracer.server.app import Collector, CollectorConfig, create_app
from eventscope.tracer.store.duckdb_store import Store

PRODUCER = Span.SPAN_KIND_PRODUCER
CONSUMER = Span.SPAN_KIND_CONSUMER
CLIENT = Span.SPAN_KIND_CLIENT
INTERNAL = Span.SPAN_KIND_INTERNAL
_T0 = 1_700_000_000_000_000_000


def new_trace() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def span(
    name: str,
    kind: int,
    *,
    trace_id: str,
    span_id: str | None = None,
    parent: str | None = None,
    attributes: dict[str, Any] | None = None,
    start_ms: int = 0,
    end_ms: int | None = None,
    error: bool = False,
    links: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Span:
    message = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id or new_span_id()),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=_T0 + start_ms * 1_000_000,
        end_time_unix_nano=_T0 + (start_ms + 1 if end_ms is None else end_ms) * 1_000_000,
        attributes=[KeyValue(key=k, value=any_value(v)) for k, v in (attributes or {}).items()],
    )
    for link_trace, link_span in links:
        message.links.add(trace_id=bytes.fromhex(link_trace), span_id=bytes.fromhex(link_span))
    if error:
        message.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    return message


def publish(
    *,
    trace_id: str,
    event_id: str | None,
    exchange: str = "shop",
    routing_key: str = "order.placed",
    parent: str | None = None,
    causation_id: str | None = None,
    span_id: str | None = None,
    start_ms: int = 0,
) -> Span:
    """A PRODUCER span as the eventscope pika adapter emits it."""
    attributes: dict[str, Any] = {
        A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
        A.MESSAGING_OPERATION_TYPE: A.OP_SEND,
        A.MESSAGING_OPERATION_NAME: "publish",
        A.MESSAGING_DESTINATION_NAME: f"{exchange}:{routing_key}",
        A.EXCHANGE: exchange,
        A.MESSAGING_ROUTING_KEY: routing_key,
        A.EVENT_TYPE: routing_key,
        A.PRODUCER: "orders",
        A.MESSAGING_BODY_SIZE: 42,
    }
    if event_id is not None:
        attributes[A.MESSAGING_MESSAGE_ID] = event_id
    if causation_id is not None:
        attributes[A.CAUSATION_ID] = causation_id
        attributes[A.CORRELATION_ID] = causation_id
    return span(
        f"publish {exchange}",
        PRODUCER,
        trace_id=trace_id,
        span_id=span_id,
        parent=parent,
        attributes=attributes,
        start_ms=start_ms,
    )


def process(
    *,
    trace_id: str,
    parent: str | None,
    event_id: str | None,
    queue: str,
    outcome: str | None = A.OUTCOME_ACK,
    span_id: str | None = None,
    start_ms: int = 10,
    end_ms: int = 20,
    error: bool = False,
    redelivered: bool = False,
    operation: str = A.OP_PROCESS,
    links: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Span:
    """A CONSUMER span as the eventscope pika adapter emits it."""
    attributes: dict[str, Any] = {
        A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
        A.MESSAGING_OPERATION_TYPE: operation,
        A.MESSAGING_DESTINATION_NAME: f"shop:order.placed:{queue}",
        A.MESSAGING_CONSUMER_GROUP: queue,
        A.QUEUE: queue,
        A.EXCHANGE: "shop",
        A.REDELIVERED: redelivered,
        A.AUTO_ACK: False,
    }
    if event_id is not None:
        attributes[A.MESSAGING_MESSAGE_ID] = event_id
    if outcome is not None:
        attributes[A.SETTLE_OUTCOME] = outcome
    if error:
        attributes[A.ERROR_TYPE] = "ValueError"
    return span(
        f"process {queue}",
        CONSUMER,
        trace_id=trace_id,
        span_id=span_id,
        parent=parent,
        attributes=attributes,
        start_ms=start_ms,
        end_ms=end_ms,
        error=error,
        links=links,
    )


def settle(*, trace_id: str, delivery: str, outcome: str, queue: str, start_ms: int = 30) -> Span:
    """The CLIENT settle span the adapter emits for an ack after processing ended."""
    operation = {"ack": "ack", "nack": "nack", "requeue": "nack"}.get(outcome, "reject")
    return span(
        f"{operation} {queue}",
        CLIENT,
        trace_id=trace_id,
        parent=delivery,
        attributes={
            A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
            A.MESSAGING_OPERATION_TYPE: A.OP_SETTLE,
            A.MESSAGING_OPERATION_NAME: operation,
            A.SETTLE_OUTCOME: outcome,
            A.QUEUE: queue,
        },
        start_ms=start_ms,
    )


def request(*spans: Span, service: str = "orders") -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    resource_spans.scope_spans.add().spans.extend(spans)
    return message


def sid(message: Span) -> str:
    return message.span_id.hex()


def rows(store: Store, sql: str) -> list[tuple]:
    """The rows of ``sql`` on a reader of ``store``."""
    reader = store.reader()
    try:
        return reader.execute(sql).fetchall()
    finally:
        reader.close()


class RunningCollector:
    """A collector served by uvicorn in a thread of this process, on a random loopback port.

    Built like ``collector.serve`` builds it, but keeps the :class:`Collector` at hand.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.collector = Collector.open(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(self.collector), log_level="warning", access_log=False, lifespan="on")
        )
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="test-collector", daemon=True
        )

    def start(self) -> RunningCollector:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "collector did not start listening"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        assert not self._thread.is_alive(), "collector did not stop"
        self.collector.close()
        self.sock.close()


class RecordingStore:
    """A store as the writer uses it: appends go through a :class:`Recorder` (lineage
    resolved, forgotten spans looked up); every other attribute is the store's own.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.recorder = Recorder(store)

    def append(self, batches: Any) -> None:
        self.recorder.append(batches)

    def resolve_missing(self, *, older_than_s: float = 1.0) -> int:
        return self.recorder.resolve_missing(older_than_s=older_than_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def open_store(path: Any, **options: Any) -> RecordingStore:
    """``Store.open`` for tests that append batches themselves, with the writer's lineage."""
    return RecordingStore(Store.open(path, **options))
