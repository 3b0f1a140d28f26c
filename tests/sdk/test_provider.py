"""setup(): owned provider, reuse of the application's provider, idempotence, endpoints.

Each scenario runs in a fresh interpreter: OpenTelemetry lets a process set its global
provider only once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from eventscope.tracer.sdk.provider import DEFAULT_ENDPOINT, resolve_endpoint


def _run(script: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_setup_creates_owns_and_reuses_one_provider():
    out = _run(
        """
        import json
        from opentelemetry import trace
        from eventscope.tracer import setup
        from eventscope.tracer.sdk.provider import current
        from eventscope.tracer.testing import OtlpReceiver

        with OtlpReceiver() as receiver:
            provider = setup(service="billing", endpoint=receiver.endpoint)
            again = setup(service="billing", endpoint=receiver.endpoint)
            trace.get_tracer("t").start_span("hello").end()
            provider.force_flush()
            names = [(s.name, s.service) for s in receiver.spans]
        try:
            setup(service="x", bogus=1)
            unknown = None
        except TypeError as exc:
            unknown = str(exc)
        print(json.dumps({
            "same": provider is again,
            "global": trace.get_tracer_provider() is provider,
            "owned": current().owned,
            "processors": len(provider._active_span_processor._span_processors),
            "names": names,
            "unknown": unknown,
        }))
        """
    )
    assert out["same"] and out["global"] and out["owned"]
    assert out["processors"] == 1
    assert out["names"] == [["hello", "billing"]]
    assert "bogus" in out["unknown"]


def test_setup_reuses_the_applications_provider_and_keeps_its_processors():
    out = _run(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from eventscope.tracer import setup
        from eventscope.tracer.sdk.provider import current
        from eventscope.tracer.testing import OtlpReceiver

        app_provider = TracerProvider(resource=Resource.create({"service.name": "app-own"}))
        memory = InMemorySpanExporter()
        app_provider.add_span_processor(SimpleSpanProcessor(memory))
        trace.set_tracer_provider(app_provider)
        with OtlpReceiver() as receiver:
            provider = setup(service="ignored", endpoint=receiver.endpoint)
            setup(service="ignored", endpoint=receiver.endpoint)
            trace.get_tracer("t").start_span("work").end()
            provider.force_flush()
            exported = [(s.name, s.service) for s in receiver.spans]
        print(json.dumps({
            "reused": provider is app_provider,
            "owned": current().owned,
            "processors": len(app_provider._active_span_processor._span_processors),
            "app_saw": [s.name for s in memory.get_finished_spans()],
            "exported": exported,
        }))
        """
    )
    assert out["reused"] and not out["owned"]
    assert out["processors"] == 2  # the application's + one OTLP exporter, added once
    assert out["app_saw"] == ["work"]
    assert out["exported"] == [["work", "app-own"]]


def test_setup_does_not_add_an_exporter_when_the_app_already_exports_there():
    out = _run(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from eventscope.tracer import setup

        app_provider = TracerProvider()
        app_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint="http://127.0.0.1:4318/v1/traces"))
        )
        trace.set_tracer_provider(app_provider)
        setup(service="svc")
        print(json.dumps({"processors": len(app_provider._active_span_processor._span_processors)}))
        """
    )
    assert out["processors"] == 1


@pytest.mark.parametrize(
    ("argument", "env", "expected"),
    [
        (None, {}, DEFAULT_ENDPOINT + "/v1/traces"),
        ("http://collector:4318", {}, "http://collector:4318/v1/traces"),
        ("http://collector:4318/", {}, "http://collector:4318/v1/traces"),
        ("http://collector:4318/v1/traces", {}, "http://collector:4318/v1/traces"),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:9999"}, "http://env:9999/v1/traces"),
        (
            None,
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:9999",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x",
            },
            "http://t/x",
        ),
        ("http://arg:1", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:9999"}, "http://arg:1/v1/traces"),
    ],
)
def test_endpoint_resolution(monkeypatch, argument, env, expected):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_endpoint(argument) == expected
