"""The configurations the benchmarks compare, and how each one opens a channel.

Every traced configuration uses the same export pipeline: the SDK ``TracerProvider`` that
``eventscope.tracer.setup(service="bench", endpoint=...)`` installs (``BatchSpanProcessor``
with its defaults + the real ``OTLPSpanExporter`` over HTTP) posting to ``bench/sink.py``.
The global provider can be set once per process and OTel's ``instrument()`` patches pika
process-wide, so a process runs exactly one configuration (``prepare`` once, then
``open_channel`` as often as needed). The ``-noexport`` twins are diagnostics: the same
pipeline with an exporter that sends nothing, so that the overhead splits into what the
application thread and the processor cost and what OTLP encoding and HTTP cost.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import pika

__all__ = ["AMQP_HOST", "AMQP_PORT", "CONFIGS", "Config", "connect", "exported_spans", "get"]

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672


@dataclass(frozen=True)
class Config:
    """One way of running pika: untraced, or traced by one of the instrumentations."""

    name: str
    label: str
    traced: bool
    instrumentation: str = "none"  # eventscope | otel-channel | otel-global
    exported: bool = True  # False: a no-op exporter, to split tracing's cost (diagnostic)
    note: str = ""
    baseline: bool = False  # run against the eventscope tree given to run.py --baseline

    def prepare(self, endpoint: str | None) -> Any:
        """Set the process up for this configuration; return the provider (``None`` for raw)."""
        if not self.traced:
            return None
        from eventscope.tracer import setup

        options = {} if self.exported else {"exporter": _null_exporter()}
        provider = setup(service="bench", endpoint=endpoint, **options)
        if self.instrumentation == "otel-global":
            from opentelemetry.instrumentation.pika import PikaInstrumentor

            PikaInstrumentor().instrument()
        return provider

    def open_channel(self, connection: pika.BlockingConnection) -> Any:
        """A channel on ``connection`` traced the way this configuration traces."""
        channel = connection.channel()
        if self.instrumentation == "eventscope":
            from eventscope.adapters.pika import instrument_channel

            return instrument_channel(channel)
        if self.instrumentation == "otel-channel":
            from opentelemetry.instrumentation.pika import PikaInstrumentor

            PikaInstrumentor.instrument_channel(channel)
        return channel


_null: Any = None


def _null_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        """Accepts every batch and sends nothing: tracing's cost minus encoding and HTTP."""

        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    global _null
    _null = NullExporter()
    return _null


def exported_spans(endpoint: str | None) -> int:
    """Spans exported so far: counted by the sink, or by the no-op exporter of a diagnostic."""
    if _null is not None:
        return _null.spans
    if endpoint is None:
        return 0
    with urllib.request.urlopen(endpoint + "/stats", timeout=10) as response:
        return int(json.load(response)["spans"])


CONFIGS = (
    Config("raw", "raw pika", traced=False),
    Config("eventscope", "eventscope instrument_channel", traced=True, instrumentation="eventscope"),
    Config("otel-channel", "OTel pika instrument_channel", traced=True, instrumentation="otel-channel"),
    Config(
        "otel-global",
        "OTel pika instrument() (global)",
        traced=True,
        instrumentation="otel-global",
        note="patches BlockingConnection.channel and Connection.channel: the blocking channel and the "
        "impl channel under it are both instrumented, so each publish yields two spans (a delivery, one)",
    ),
    Config(
        "eventscope-base",
        "eventscope, baseline tree",
        traced=True,
        instrumentation="eventscope",
        baseline=True,
        note="the same as eventscope instrument_channel, importing eventscope from the tree given to "
        "run.py --baseline (e.g. main's code): the change and its baseline measured side by side",
    ),
    Config(
        "eventscope-noexport",
        "  diag: eventscope, no-op exporter",
        traced=True,
        instrumentation="eventscope",
        exported=False,
        note="same processor, an exporter that sends nothing: the overhead without OTLP encoding and HTTP",
    ),
    Config(
        "otel-channel-noexport",
        "  diag: OTel pika ch., no-op exporter",
        traced=True,
        instrumentation="otel-channel",
        exported=False,
    ),
)


def get(name: str) -> Config:
    for config in CONFIGS:
        if config.name == name:
            return config
    raise ValueError(f"unknown configuration {name!r}; one of {[c.name for c in CONFIGS]}")


def connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            host=AMQP_HOST, port=AMQP_PORT, credentials=pika.PlainCredentials("guest", "guest")
        )
    )
