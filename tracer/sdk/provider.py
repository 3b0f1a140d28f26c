"""``setup()``: one call that makes a process export OpenTelemetry spans to eventscope.

What the caller can rely on:

* If no SDK ``TracerProvider`` is installed yet, one is created with the resource
  ``service.name=service``, a ``BatchSpanProcessor`` and the OTLP/HTTP exporter, and made
  global. eventscope then *owns* the provider.
* If the application already installed an SDK ``TracerProvider``, it is reused: only an
  OTLP exporter for the eventscope endpoint is added, and only if none exports there yet.
  The application's processors and resource are left alone.
* Calling it again (from several modules, or twice) changes nothing and returns the same
  provider.
* A collector that is down never blocks or raises into the application: spans wait in the
  processor's bounded queue (``max_queue_size``, 8192 by default) and beyond it are dropped.
* The standard ``OTEL_*`` variables mean what they mean to the SDK: ``OTEL_SDK_DISABLED=true``
  turns tracing off (no exporter, no lean path); ``OTEL_TRACES_EXPORTER`` (``otlp``,
  ``console``, ``none``, or any installed exporter's name, comma-separated);
  ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` (``grpc`` when the gRPC exporter is installed, else
  a warning and ``http/protobuf``); ``OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT``, ``_HEADERS``,
  ``_COMPRESSION``, ``_CERTIFICATE``; ``OTEL_BSP_*``; ``OTEL_RESOURCE_ATTRIBUTES``;
  ``OTEL_TRACES_SAMPLER``; the span limits. Explicit options win over variables.
* It never raises on a value the SDK would accept: a value eventscope cannot use is logged
  once and the SDK's default applies; an exporter that cannot be built leaves tracing off.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from eventscope.tracer.sdk import compat

__all__ = ["DEFAULT_ENDPOINT", "Telemetry", "current", "resolve_endpoint", "sdk_disabled", "setup"]

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
_TRACES_PATH = "/v1/traces"
_GRPC_DEFAULT_ENDPOINT = "http://127.0.0.1:4317"
_DEFAULT_EXPORT_TIMEOUT_S = 5.0
_TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# Messaging spans come in thousands a second: a larger queue and larger batches than the SDK's
# (2048 / 512) mean fewer drops and fewer export wake-ups competing with the application for the GIL.
_DEFAULT_QUEUE = 8192
_DEFAULT_BATCH = 2048
_SDK_DEFAULT_QUEUE = 2048
_SDK_DEFAULT_BATCH = 512
_TRUE = ("true", "1", "yes", "on")
_OPTIONS = frozenset(
    {
        "max_queue_size",
        "max_export_batch_size",
        "schedule_delay_millis",
        "export_timeout_millis",
        "exporter",
        "resource_attributes",
    }
)


@dataclass(frozen=True)
class Telemetry:
    """What ``setup()`` did: the provider, the traces URL, and whether eventscope owns it."""

    provider: TracerProvider
    traces_url: str
    owned: bool
    processor: SpanProcessor | None


_lock = threading.Lock()
_current: Telemetry | None = None


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The OTLP/HTTP traces URL: the argument, else the standard OTel variables, else 4318.

    ``endpoint`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` are base URLs (``/v1/traces`` is
    appended, as the OTLP spec says); ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is.
    """
    if endpoint is None:
        signal = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if signal:
            return signal
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(_TRACES_PATH) else endpoint + _TRACES_PATH


def current() -> Telemetry | None:
    """The result of the last successful ``setup()`` in this process, if any."""
    return _current


def sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED=true``: the SDK hands out no-op tracers; eventscope exports nothing."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE


def setup(service: str | None = None, endpoint: str | None = None, **options: Any) -> TracerProvider:
    """Make this process export spans over OTLP/HTTP; return the SDK ``TracerProvider``.

    ``service`` defaults to ``OTEL_SERVICE_NAME``. Options: ``max_queue_size``,
    ``max_export_batch_size``, ``schedule_delay_millis`` (BatchSpanProcessor),
    ``export_timeout_millis`` (exporter, default 5 s), ``exporter`` (a ``SpanExporter`` to
    use instead of OTLP/HTTP, e.g. an in-memory one in tests) and ``resource_attributes``.
    Unknown options raise ``TypeError`` at once: configuration errors fail fast.
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"setup() got unknown options: {', '.join(sorted(unknown))}")
    global _current
    with _lock:
        if _current is not None:
            if service and _resource_service(_current.provider) not in (service, None):
                logger.info(
                    "eventscope.setup(service=%r) called again; keeping service %r",
                    service,
                    _resource_service(_current.provider),
                )
            return _current.provider
        protocol = _protocol() if options.get("exporter") is None else "http/protobuf"
        url = _grpc_endpoint(endpoint) if protocol == "grpc" else resolve_endpoint(endpoint)
        if sdk_disabled():
            # The SDK's provider is itself off under this variable (its tracers are no-ops);
            # nothing is exported, nothing is made global, the lean path never engages.
            logger.info("OTEL_SDK_DISABLED is set: eventscope exports nothing")
            _current = Telemetry(TracerProvider(), url, owned=False, processor=None)
            return _current.provider
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            processor = None
            if not _exports_to(existing, url):
                processor = _processor(url, protocol, options)
                if processor is not None:
                    existing.add_span_processor(processor)
            _current = Telemetry(existing, url, owned=False, processor=processor)
            return existing
        attributes = dict(options.get("resource_attributes") or {})
        name = service or os.environ.get("OTEL_SERVICE_NAME")
        if name:
            attributes[SERVICE_NAME] = name
        provider = TracerProvider(resource=Resource.create(attributes))
        processor = _processor(url, protocol, options)
        if processor is not None:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:  # lost a race with another setter
            other = trace.get_tracer_provider()
            provider.shutdown()
            if isinstance(other, TracerProvider):
                _current = Telemetry(other, url, owned=False, processor=None)
                return other
        _current = Telemetry(provider, url, owned=True, processor=processor)
        return provider


def _processor(url: str, protocol: str, options: dict[str, Any]) -> SpanProcessor | None:
    """The processor that exports to ``url`` (``None``: ``OTEL_TRACES_EXPORTER=none``, or it failed).

    An exporter that cannot be built from the environment is logged, never raised: the
    application keeps running untraced rather than not at all.
    """
    try:
        exporters = _exporters(url, protocol, options)
    except Exception as exc:
        logger.warning("eventscope cannot build its span exporter (%s): spans are not exported", exc)
        return None
    if not exporters:
        return None
    batch = _batch_options(options)
    processors = [BatchSpanProcessor(exporter, **batch) for exporter in exporters]
    processor = processors[0] if len(processors) == 1 else _Fanout(processors)
    processor._eventscope_url = url  # type: ignore[attr-defined]  # marks "exports to url"
    return processor


def _exporters(url: str, protocol: str, options: dict[str, Any]) -> list[SpanExporter]:
    """``exporter=`` if given, else one per name in ``OTEL_TRACES_EXPORTER`` (default ``otlp``)."""
    given: SpanExporter | None = options.get("exporter")
    if given is not None:
        return [given]
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in dict.fromkeys(n for n in names if n):
        if name == "none":
            continue
        if name == "otlp":
            exporters.append(_otlp_exporter(url, protocol, options))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            exporter = _entry_point_exporter(name)
            if exporter is not None:
                exporters.append(exporter)
    return exporters


def _otlp_exporter(url: str, protocol: str, options: dict[str, Any]) -> SpanExporter:
    timeout_s = _timeout_s(options)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=url, timeout=timeout_s)  # type: ignore[arg-type]
    from eventscope.tracer.sdk.otlp_encoder import LeanOtlpSpanExporter

    return LeanOtlpSpanExporter(endpoint=url, timeout=timeout_s)  # type: ignore[arg-type]


def _timeout_s(options: dict[str, Any]) -> float | None:
    """``export_timeout_millis``, else ``None`` when a variable is set (the exporter reads it), else 5 s."""
    if "export_timeout_millis" in options:
        return options["export_timeout_millis"] / 1000
    if any(os.environ.get(name) for name in _TIMEOUT_VARIABLES):
        return None
    return _DEFAULT_EXPORT_TIMEOUT_S


def _protocol() -> str:
    """``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``: ``grpc`` if that exporter is installed, else http."""
    name = next((os.environ[v] for v in _PROTOCOL_VARIABLES if os.environ.get(v)), "http/protobuf")
    name = name.strip().lower()
    if name == "grpc":
        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
            return "grpc"
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc but opentelemetry-exporter-otlp-proto-grpc is not installed: "
            "exporting over http/protobuf (pip install opentelemetry-exporter-otlp-proto-grpc for gRPC)"
        )
    elif name != "http/protobuf":
        logger.warning("OTLP protocol %r is not supported here: exporting over http/protobuf", name)
    return "http/protobuf"


def _grpc_endpoint(endpoint: str | None) -> str:
    """gRPC takes the collector's address as is (no ``/v1/traces``); default 127.0.0.1:4317."""
    if endpoint is None:
        endpoint = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or _GRPC_DEFAULT_ENDPOINT
        )
    return endpoint.rstrip("/")


def _entry_point_exporter(name: str) -> SpanExporter | None:
    """An exporter a package registers for ``OTEL_TRACES_EXPORTER``, found as the SDK's autoconfigure does."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="opentelemetry_traces_exporter", name=name):
        return entry.load()()
    logger.warning("OTEL_TRACES_EXPORTER names %r, which no installed package provides: skipped", name)
    return None


def _batch_options(options: dict[str, Any]) -> dict[str, Any]:
    """BatchSpanProcessor arguments: options, else ``OTEL_BSP_*``, else eventscope's larger defaults.

    A default batch never exceeds the queue (the SDK refuses that): ``OTEL_BSP_MAX_QUEUE_SIZE=1024``
    alone gives batches of at most 1024. A variable the SDK would not accept falls back to the
    SDK's default with a warning, as the SDK itself does. Explicit options are passed as given:
    a contradiction there fails fast, in the SDK's words.
    """
    kwargs = {
        key: options[key]
        for key in ("max_queue_size", "max_export_batch_size", "schedule_delay_millis")
        if key in options
    }
    if "max_queue_size" not in kwargs:
        kwargs["max_queue_size"] = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", _SDK_DEFAULT_QUEUE) or _DEFAULT_QUEUE
    if "max_export_batch_size" not in kwargs:
        batch = _env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _SDK_DEFAULT_BATCH) or _DEFAULT_BATCH
        kwargs["max_export_batch_size"] = min(batch, kwargs["max_queue_size"])
    return kwargs


def _env_int(name: str, sdk_default: int) -> int | None:
    """A positive integer variable; ``None`` when unset; the SDK's default when unusable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        logger.warning("%s=%r is not a positive integer: using %d, the SDK's default", name, raw, sdk_default)
        return sdk_default
    return value


class _Fanout(SpanProcessor):
    """Several exporters' processors as one (``OTEL_TRACES_EXPORTER=otlp,console``)."""

    def __init__(self, processors: list[SpanProcessor]) -> None:
        self._processors = tuple(processors)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for processor in self._processors:
            processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: Any) -> None:
        for processor in self._processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self._processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self._processors)


def _exports_to(provider: TracerProvider, url: str) -> bool:
    """Does ``provider`` already have an OTLP exporter (or our processor) for ``url``?"""
    for processor in compat.span_processors(provider) or ():
        if getattr(processor, "_eventscope_url", None) == url:
            return True
        exporter = compat.processor_exporter(processor)
        if getattr(exporter, "_endpoint", None) == url:
            return True
    return False


def _resource_service(provider: TracerProvider) -> str | None:
    value = provider.resource.attributes.get(SERVICE_NAME)
    return value if isinstance(value, str) else None


def _reset_for_tests() -> None:
    """Forget the recorded setup (the global provider itself cannot be unset in OTel)."""
    global _current
    with _lock:
        _current = None
