"""Micro-costs of the pieces on the publish and consume paths, in-process; prints JSON.

``python bench/micro.py --endpoint URL``

Span-producing operations run in batches of ``_BATCH`` calls with ``force_flush()`` between
batches (untimed): the processor's queue never reaches its export threshold inside a
batch, so a figure is the cost on the application's thread alone, with no export thread
competing for the GIL and no span dropped. What the export thread then spends per span
is measured separately (``export: ...``). Each figure is the median over batches, in µs per
call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.trace import SpanKind
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from eventscope.adapters._spans import AmqpTracing
from eventscope.adapters.pika import _copy_properties, instrument_channel
from eventscope.tracer import setup
from eventscope.tracer.sdk import propagation
from eventscope.tracer.sdk import provider as telemetry
from eventscope.tracer.sdk.otlp_encoder import encode_request

_BATCH = 256
_BATCHES = 40
_BODY = b"x" * 100
_QUEUE = "bench"
_EXPORT_BATCH = 512  # the BatchSpanProcessor's default max_export_batch_size
_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class NullChannel(BlockingChannel):
    """A ``BlockingChannel`` whose operations do nothing: the wrappers' cost without I/O.

    ``basic_consume`` only records the callback (as pika does, in ``_consumer_infos``), so a
    delivery is a direct call of the callback the instrumentation installed.
    """

    connection = SimpleNamespace(params=SimpleNamespace(host="127.0.0.1", port=5672))

    def __init__(self) -> None:
        self._consumer_infos: dict[str, Any] = {}

    def basic_publish(self, *args: Any, **kwargs: Any) -> None:
        pass

    def basic_ack(self, *args: Any, **kwargs: Any) -> None:
        pass

    def basic_consume(self, queue: str, on_message_callback: Any, *args: Any, **kwargs: Any) -> str:
        tag = kwargs.get("consumer_tag") or "ctag"
        self._consumer_infos[tag] = SimpleNamespace(on_message_callback=on_message_callback)
        return tag


def per_call(
    fn: Callable[[], Any], *, flush: Callable[[], Any] | None, batch: int = _BATCH, batches: int = _BATCHES
) -> float:
    """Median CPU µs per call of ``fn`` over ``batches`` batches; ``flush`` runs between batches.

    The calling thread's CPU time (``time.thread_time``): what other processes on a shared
    machine do, and the export thread's work during a flush, stay out of the figure.
    """
    for _ in range(batch):  # warm-up
        fn()
    samples = []
    for _ in range(batches):
        if flush is not None:
            flush()
        start = time.thread_time()
        for _ in range(batch):
            fn()
        samples.append((time.thread_time() - start) / batch * 1e6)
    if flush is not None:
        flush()
    return statistics.median(samples)


def _capture(exporter: Any, flush: Callable[[], Any], make_span: Callable[[], Any], count: int) -> list[Any]:
    """The ``ReadableSpan``s that ``count`` calls of ``make_span`` hand to the real exporter.

    Read at the exporter, whatever path built them (the SDK's tracer or a faster one).
    """
    flush()
    captured: list[Any] = []
    exporter.export = captured.extend  # the processor looks the method up on the instance
    try:
        for _ in range(count):
            make_span()
        flush()
    finally:
        del exporter.export
    return captured


def _batch_exporter(setup_result: telemetry.Telemetry) -> Any:
    processor = setup_result.processor
    exporter = getattr(processor, "span_exporter", None)
    return exporter if exporter is not None else processor._batch_processor._exporter


def measure(endpoint: str) -> dict[str, float]:
    provider = setup(service="bench", endpoint=endpoint)
    flush = provider.force_flush
    exporter = _batch_exporter(telemetry.current())
    figures: dict[str, float] = {}
    tracer = trace.get_tracer("bench")
    tracing = AmqpTracing(
        service=None,
        link_mode="parent",
        server_address="127.0.0.1",
        server_port=5672,
        library="eventscope.adapters.pika",
        version="0.1.0",
    )

    # -- eventscope publish path --------------------------------------------------------------
    def es_start_publish() -> None:
        tracing.start_publish("", _QUEUE, _BODY, None, _copy_properties).span.end()

    figures["eventscope.start_publish+end"] = per_call(es_start_publish, flush=flush)
    es_channel = instrument_channel(NullChannel())
    figures["eventscope.basic_publish wrapper (no I/O)"] = per_call(
        lambda: es_channel.basic_publish("", _QUEUE, _BODY), flush=flush
    )
    otel_channel = NullChannel()
    PikaInstrumentor.instrument_channel(otel_channel)
    figures["otel.basic_publish wrapper (no I/O)"] = per_call(
        lambda: otel_channel.basic_publish("", _QUEUE, _BODY), flush=flush
    )

    # -- the SDK alone ------------------------------------------------------------------------
    figures["sdk.span start+end (no attributes)"] = per_call(
        lambda: tracer.start_span("x").end(), flush=flush
    )
    es_spans = _capture(exporter, flush, es_start_publish, _EXPORT_BATCH)
    es_attributes = dict(es_spans[0].attributes)
    figures["sdk.span start+end (eventscope's publish attributes)"] = per_call(
        lambda: tracer.start_span(
            "publish amq.default", kind=SpanKind.PRODUCER, attributes=es_attributes
        ).end(),
        flush=flush,
    )

    def current_span() -> None:
        with tracer.start_as_current_span("x"):
            pass

    figures["sdk.start_as_current_span (no attributes)"] = per_call(current_span, flush=flush)

    # -- propagation --------------------------------------------------------------------------
    span = tracer.start_span("parent")
    ctx = trace.set_span_in_context(span)
    token = context.attach(ctx)
    figures["propagate.inject (global, into {})"] = per_call(lambda: propagate.inject({}), flush=None)
    context.detach(token)
    figures["eventscope propagation.inject (into {})"] = per_call(
        lambda: propagation.inject({}, span, ctx), flush=None
    )
    headers = {"traceparent": _TRACEPARENT, "x-correlation-id": "c0ffee"}
    figures["propagate.extract (traceparent)"] = per_call(lambda: propagate.extract(headers), flush=None)
    figures["eventscope propagation.extract (traceparent)"] = per_call(
        lambda: propagation.extract(headers), flush=None
    )
    span.end()
    figures["eventscope new_event_id()"] = per_call(propagation.new_event_id, flush=None)
    figures["str(uuid.uuid4()) (reference)"] = per_call(lambda: str(uuid.uuid4()), flush=None)
    figures["eventscope _copy_properties(None)"] = per_call(lambda: _copy_properties(None), flush=None)

    # -- pika encoding ------------------------------------------------------------------------
    plain = BasicProperties()
    otel_props = BasicProperties(headers={"traceparent": _TRACEPARENT})
    es_props = tracing.start_publish("", _QUEUE, _BODY, None, _copy_properties).properties
    figures["BasicProperties().encode() (raw publish)"] = per_call(plain.encode, flush=None)
    figures["BasicProperties(traceparent).encode() (OTel publish)"] = per_call(otel_props.encode, flush=None)
    figures["eventscope's properties .encode()"] = per_call(es_props.encode, flush=None)

    # -- consume path -------------------------------------------------------------------------
    method = Basic.Deliver(
        consumer_tag="ctag", delivery_tag=1, redelivered=False, exchange="", routing_key=_QUEUE
    )

    def on_message(channel: Any, method: Any, properties: Any, body: Any) -> None:
        channel.basic_ack(method.delivery_tag)

    deliveries = {}
    for name, channel, properties in (
        ("eventscope", es_channel, es_props),
        ("otel", otel_channel, BasicProperties(headers={"traceparent": _TRACEPARENT})),
    ):
        channel.basic_consume(_QUEUE, on_message, consumer_tag=name)
        callback = channel._consumer_infos[name].on_message_callback
        underlying = getattr(channel, "eventscope_channel", channel)  # pika passes its own channel
        deliveries[name] = lambda callback=callback, underlying=underlying, properties=properties: callback(
            underlying, method, properties, _BODY
        )
    figures["eventscope consume callback wrapper (callback acks)"] = per_call(
        deliveries["eventscope"], flush=flush
    )
    figures["otel consume callback wrapper (callback acks)"] = per_call(deliveries["otel"], flush=flush)

    # -- the export thread --------------------------------------------------------------------
    captured = {
        "no attributes": _capture(exporter, flush, lambda: tracer.start_span("x").end(), _EXPORT_BATCH),
        "eventscope publish": es_spans,
        "OTel pika publish": _capture(
            exporter, flush, lambda: otel_channel.basic_publish("", _QUEUE, _BODY), _EXPORT_BATCH
        ),
        "eventscope consume": _capture(exporter, flush, deliveries["eventscope"], _EXPORT_BATCH),
        "OTel pika consume": _capture(exporter, flush, deliveries["otel"], _EXPORT_BATCH),
    }
    for name, spans in captured.items():
        figures[f"export: {name} span, attribute count"] = float(len(spans[0].attributes))
        figures[f"export: encode per span ({name})"] = per_call(
            lambda spans=spans: encode_spans(spans).SerializePartialToString(), flush=None, batch=1, batches=9
        ) / len(spans)
        figures[f"export: eventscope's encoder per span ({name})"] = per_call(
            lambda spans=spans: encode_request(spans), flush=None, batch=1, batches=9
        ) / len(spans)
        figures[f"export: OTLP/HTTP export per span ({name})"] = per_call(
            lambda spans=spans: exporter.export(spans), flush=None, batch=1, batches=9
        ) / len(spans)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="base URL of bench/sink.py")
    args = parser.parse_args()
    print(json.dumps(measure(args.endpoint)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
