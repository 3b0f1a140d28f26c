"""OTLP/gRPC receiver: the real OTLP/gRPC exporter in, the same rows as over HTTP, the spec's
status codes for hostile input, a full write queue and a missing token.
"""

from __future__ import annotations

import gzip
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from eventscope.tracer import contract as A
from eventscope.tracer.metrics import render
from eventscope.tracer.server.app import CollectorConfig
from tests.processes import collect, free_port, wait_healthy
from tests.spans import RunningCollector, new_span_id, new_trace, process, publish, request

_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _config(tmp_path: Path, **options: object) -> CollectorConfig:
    return CollectorConfig(
        db_path=str(tmp_path / "c.duckdb"), grace_s=0, grpc_listen="127.0.0.1:0", **options
    )  # type: ignore[arg-type]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningCollector]:
    running = RunningCollector(_config(tmp_path, max_body=256 * 1024)).start()
    yield running
    running.stop()


def _target(running: RunningCollector) -> str:
    assert running.collector.grpc is not None
    return f"127.0.0.1:{running.collector.grpc.port}"


def _export_raw(target: str, body: bytes, metadata: tuple = ()) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(_METHOD, request_serializer=None, response_deserializer=None)
        return ExportTraceServiceResponse.FromString(call(body, metadata=metadata, timeout=30))


def _rows(running: RunningCollector, sql: str) -> list[tuple]:
    reader = running.collector.store.reader()
    try:
        return reader.execute(sql).fetchall()
    finally:
        reader.close()


def _sdk_spans(event_id: str) -> list:
    """A publish and a process span made by the real SDK, attributes as the pika adapter sets them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "publish shop",
        kind=SpanKind.PRODUCER,
        attributes={
            A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
            A.MESSAGING_OPERATION_TYPE: A.OP_SEND,
            A.MESSAGING_DESTINATION_NAME: "shop:order.placed",
            A.EXCHANGE: "shop",
            A.MESSAGING_ROUTING_KEY: "order.placed",
            A.MESSAGING_MESSAGE_ID: event_id,
        },
    ):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_the_real_exporter_is_committed_before_success(
    running: RunningCollector, compression: str | None
) -> None:
    exporter = OTLPSpanExporter(
        endpoint=_target(running),
        insecure=True,
        compression=grpc.Compression.Gzip if compression else grpc.Compression.NoCompression,
    )
    try:
        assert exporter.export(_sdk_spans("evt-grpc")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    # committed when the call returned: no waiting here
    assert _rows(running, "SELECT event_id, exchange, routing_key, producer_service, source FROM events") == [
        ("evt-grpc", "shop", "order.placed", "orders", "span")
    ]
    metrics = render(running.collector.metric_families())
    assert "eventscope_spans_accepted_total 1" in metrics
    assert 'eventscope_grpc_responses_total{code="OK"} 1' in metrics


def test_same_batch_twice_is_stored_once_and_joins_deliveries(running: RunningCollector) -> None:
    trace_id, producer_id = new_trace(), new_span_id()
    body = request(
        publish(trace_id=trace_id, event_id="A", span_id=producer_id),
        process(trace_id=trace_id, parent=producer_id, event_id="A", queue="q"),
    ).SerializeToString()
    for _ in range(2):
        assert not _export_raw(_target(running), body).HasField("partial_success")
    assert _rows(running, "SELECT count(*) FROM spans") == [(2,)]
    assert _rows(running, "SELECT event_id, queue, outcome FROM deliveries") == [("A", "q", "ack")]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xff\xfe garbage", grpc.StatusCode.INVALID_ARGUMENT),
        (gzip.compress(b"not protobuf either")[:10], grpc.StatusCode.INVALID_ARGUMENT),
        (b"\x0a" + b"\xff" * 5, grpc.StatusCode.INVALID_ARGUMENT),
        (b"\x00" * (300 * 1024), grpc.StatusCode.RESOURCE_EXHAUSTED),  # above max_body
    ],
)
def test_hostile_input(running: RunningCollector, body: bytes, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _export_raw(_target(running), body)
    assert raised.value.code() is code
    # still serving
    good = request(publish(trace_id=new_trace(), event_id="after")).SerializeToString()
    _export_raw(_target(running), good)
    assert _rows(running, "SELECT event_id FROM events") == [("after",)]


def test_a_partly_invalid_batch_gets_partial_success(running: RunningCollector) -> None:
    bad = publish(trace_id=new_trace(), event_id="bad")
    bad.trace_id = b"short"
    body = request(publish(trace_id=new_trace(), event_id="good"), bad).SerializeToString()
    response = _export_raw(_target(running), body)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message
    assert _rows(running, "SELECT event_id FROM events") == [("good",)]


def test_full_write_queue_answers_unavailable(tmp_path: Path) -> None:
    running = RunningCollector(_config(tmp_path, max_pending_batches=1)).start()
    gate, held = threading.Event(), threading.Event()

    def hold(store: object) -> None:
        held.set()
        gate.wait(30)

    try:
        writer = running.collector.writer
        busy = writer.call(hold)
        assert held.wait(10)  # the writer thread is held here
        writer.call(lambda store: None)  # and the one free slot is taken
        body = request(publish(trace_id=new_trace(), event_id="later")).SerializeToString()
        with pytest.raises(grpc.RpcError) as raised:
            _export_raw(_target(running), body)
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE  # OTLP exporters retry this
        assert "write queue full" in (raised.value.details() or "")
        gate.set()
        busy.result(10)
        _export_raw(_target(running), body)  # the retry is stored
        assert _rows(running, "SELECT event_id FROM events") == [("later",)]
    finally:
        gate.set()
        running.stop()


def test_the_bearer_token_is_required(tmp_path: Path) -> None:
    running = RunningCollector(_config(tmp_path, token="s3cret")).start()
    try:
        body = request(publish(trace_id=new_trace(), event_id="tok")).SerializeToString()
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as raised:
                _export_raw(_target(running), body, metadata)
            assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert _rows(running, "SELECT count(*) FROM spans") == [(0,)]
        _export_raw(_target(running), body, (("authorization", "Bearer s3cret"),))
        assert _rows(running, "SELECT event_id FROM events") == [("tok",)]
    finally:
        running.stop()


def test_a_port_in_use_is_a_clear_error(running: RunningCollector, tmp_path: Path) -> None:
    other = CollectorConfig(db_path=str(tmp_path / "other.duckdb"), grpc_listen=_target(running))
    with pytest.raises(OSError, match="cannot listen for OTLP/gRPC"):
        RunningCollector(other)


def test_eventscope_collect_grpc_flag(tmp_path: Path) -> None:
    """`eventscope collect --grpc`: the real exporter through the CLI's collector, then SIGTERM → 0."""
    http_port, grpc_port = free_port(), free_port()
    process = collect(str(tmp_path / "cli.duckdb"), http_port, "--grpc", f"127.0.0.1:{grpc_port}")
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process)
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True)
        try:
            assert exporter.export(_sdk_spans("evt-cli")) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        found = httpx.get(f"{url}/api/sql", params={"q": "SELECT event_id FROM events"}, timeout=10).json()
        assert found["rows"] == [["evt-cli"]]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_grpc_without_grpcio_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a)
    )
    with pytest.raises(ValueError, match="needs grpcio"):
        CollectorConfig(db_path=str(tmp_path / "x.duckdb"), grpc_listen="127.0.0.1:0")
    from eventscope.tracer.cli import main as cli

    args = ["collect", "--db", str(tmp_path / "x.duckdb"), "--listen", "127.0.0.1:0", "--grpc", "127.0.0.1:0"]
    assert cli.main(args) == 2  # a message, no traceback, nothing opened
    assert "needs grpcio" in capsys.readouterr().err
    assert not (tmp_path / "x.duckdb").exists()
