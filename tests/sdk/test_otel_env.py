"""The standard OTEL_* variables mean to setup() what they mean to the SDK (issue 11).

Scenarios that make a global provider run in a fresh interpreter (OpenTelemetry sets it
once per process); exporter-level ones build the exporter here with the variable set.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventscope.tracer.sdk import provider as telemetry
from eventscope.tracer.sdk.otlp_encoder import LeanOtlpSpanExporter
from eventscope.tracer.testing import OtlpReceiver

# A span through setup(): the lean path when eventscope owns the provider, as the adapters do.
_SCRIPT = """
import json, sys
from eventscope.tracer import setup
from eventscope.tracer.sdk import lean
from eventscope.tracer.sdk.provider import current

provider = setup(service="env-test", endpoint=sys.argv[1] if len(sys.argv) > 1 else None)
tracer = lean.tracer_for("eventscope.test", "1", "")
span = tracer.start_span("publish shop")
recording = span.is_recording()
span.end()
provider.force_flush()
telemetry = current()
print(json.dumps({
    "lean": isinstance(tracer, lean.LeanTracer),
    "recording": recording,
    "processor": telemetry.processor is not None,
}))
"""


def _run(env: dict[str, str], *args: str) -> tuple[dict[str, Any], str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env)
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *args], capture_output=True, text=True, timeout=60, env=environ
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout + result.stderr


def _names(receiver: OtlpReceiver) -> list[str]:
    return [span.name for span in receiver.spans]


def test_sdk_disabled_turns_everything_off_lean_path_included() -> None:
    with OtlpReceiver() as receiver:
        enabled, _ = _run({}, receiver.endpoint)
        assert enabled == {"lean": True, "recording": True, "processor": True}
        assert _names(receiver) == ["publish shop"]
        receiver.clear()
        disabled, _ = _run({"OTEL_SDK_DISABLED": "true"}, receiver.endpoint)
        time.sleep(0.2)
        assert _names(receiver) == []
    assert disabled == {"lean": False, "recording": False, "processor": False}


def test_a_queue_smaller_than_eventscopes_batch_is_accepted() -> None:
    with OtlpReceiver() as receiver:
        out, _ = _run({"OTEL_BSP_MAX_QUEUE_SIZE": "1024"}, receiver.endpoint)
        assert out["processor"] and _names(receiver) == ["publish shop"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"max_queue_size": 8192, "max_export_batch_size": 2048}),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "1024"}, {"max_queue_size": 1024, "max_export_batch_size": 1024}),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}, {"max_queue_size": 8192, "max_export_batch_size": 100}),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "many"}, {"max_queue_size": 2048, "max_export_batch_size": 2048}),
    ],
)
def test_batch_options_follow_the_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: dict[str, int]
) -> None:
    for name in ("OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert telemetry._batch_options({}) == expected
    assert telemetry._batch_options({"max_queue_size": 10, "max_export_batch_size": 5}) == {
        "max_queue_size": 10,
        "max_export_batch_size": 5,
    }


def test_traces_exporter_none_console_and_both() -> None:
    with OtlpReceiver() as receiver:
        out, _ = _run({"OTEL_TRACES_EXPORTER": "none"}, receiver.endpoint)
        assert not out["processor"] and _names(receiver) == []
        out, text = _run({"OTEL_TRACES_EXPORTER": "console"}, receiver.endpoint)
        assert out["processor"] and _names(receiver) == []
        assert '"name": "publish shop"' in text
        out, text = _run({"OTEL_TRACES_EXPORTER": "otlp,console"}, receiver.endpoint)
        assert _names(receiver) == ["publish shop"] and '"name": "publish shop"' in text


def test_values_eventscope_cannot_use_are_warnings_not_errors() -> None:
    with OtlpReceiver() as receiver:
        out, text = _run(
            {
                "OTEL_TRACES_EXPORTER": "otlp,no-such-exporter",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-3",
            },
            receiver.endpoint,
        )
        assert out["processor"] and _names(receiver) == ["publish shop"]
    assert "no-such-exporter" in text and "http/json" in text


def test_grpc_protocol_uses_the_grpc_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    protocol = telemetry._protocol()
    assert protocol == "grpc"
    assert telemetry._grpc_endpoint(None) == "http://127.0.0.1:4317"
    exporter = telemetry._otlp_exporter(telemetry._grpc_endpoint(None), protocol, {})
    try:
        assert isinstance(exporter, OTLPSpanExporter)
    finally:
        exporter.shutdown()


def test_grpc_protocol_without_the_grpc_exporter_warns_once_and_uses_http(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name.startswith("opentelemetry.exporter.otlp.proto.grpc") else real(name, *a)
        ),
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    with caplog.at_level(logging.WARNING, logger=telemetry.__name__):
        assert telemetry._protocol() == "http/protobuf"
    (record,) = caplog.records
    assert "pip install opentelemetry-exporter-otlp-proto-grpc" in record.getMessage()
    assert "\n" not in record.getMessage()


# -- exporter-level: timeouts, headers, compression ------------------------------------------
def _one_span() -> Any:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span("publish shop").end()
    return memory.get_finished_spans()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: an export waits for its timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1/traces"
    server.close()


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"])
def test_timeout_variables_bound_an_export(
    monkeypatch: pytest.MonkeyPatch, silent_server: str, variable: str
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "1")
    exporter = telemetry._otlp_exporter(silent_server, "http/protobuf", {})
    spans = _one_span()
    started = time.monotonic()
    result = exporter.export(spans)
    took = time.monotonic() - started
    exporter.shutdown()
    assert result is SpanExportResult.FAILURE
    assert 0.5 < took < 3.5, took  # eventscope's own default would be 5 s


def test_explicit_timeout_wins_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    assert telemetry._timeout_s({"export_timeout_millis": 250}) == 0.25
    assert telemetry._timeout_s({}) is None  # the exporter reads the variable itself
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT")
    assert telemetry._timeout_s({}) == 5.0


def test_headers_and_compression_variables_reach_the_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=payments")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        exporter = telemetry._otlp_exporter(url, "http/protobuf", {})
        assert isinstance(exporter, LeanOtlpSpanExporter)
        assert exporter.export(_one_span()) is SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert seen and seen[0]["x-team"] == "payments" and seen[0]["content-encoding"] == "gzip"
