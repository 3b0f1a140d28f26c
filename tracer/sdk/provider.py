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
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

__all__ = ["DEFAULT_ENDPOINT", "Telemetry", "current", "resolve_endpoint", "setup"]

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
_TRACES_PATH = "/v1/traces"
_DEFAULT_EXPORT_TIMEOUT_S = 5.0
_BATCH_DEFAULTS = (
    ("max_queue_size", "OTEL_BSP_MAX_QUEUE_SIZE", 8192),
    ("max_export_batch_size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 2048),
)
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
    processor: BatchSpanProcessor | None


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
        url = resolve_endpoint(endpoint)
        existing = trace.get_tracer_provider()
        if isinstance(existing, TracerProvider):
            processor = None
            if not _exports_to(existing, url):
                processor = _processor(url, options)
                existing.add_span_processor(processor)
            _current = Telemetry(existing, url, owned=False, processor=processor)
            return existing
        attributes = dict(options.get("resource_attributes") or {})
        name = service or os.environ.get("OTEL_SERVICE_NAME")
        if name:
            attributes[SERVICE_NAME] = name
        provider = TracerProvider(resource=Resource.create(attributes))
        processor = _processor(url, options)
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


def _processor(url: str, options: dict[str, Any]) -> BatchSpanProcessor:
    exporter: SpanExporter | None = options.get("exporter")
    if exporter is None:
        from eventscope.tracer.sdk.otlp_encoder import LeanOtlpSpanExporter

        timeout_s = options.get("export_timeout_millis", _DEFAULT_EXPORT_TIMEOUT_S * 1000) / 1000
        exporter = LeanOtlpSpanExporter(endpoint=url, timeout=timeout_s)
    kwargs = {
        key: options[key]
        for key in ("max_queue_size", "max_export_batch_size", "schedule_delay_millis")
        if key in options
    }
    # Messaging spans come in thousands a second: larger batches mean fewer export wake-ups
    # competing with the application for the GIL. The standard OTEL_BSP_* variables win.
    for key, env, default in _BATCH_DEFAULTS:
        if key not in kwargs and env not in os.environ:
            kwargs[key] = default
    processor = BatchSpanProcessor(exporter, **kwargs)
    processor._eventscope_url = url  # type: ignore[attr-defined]  # marks "exports to url"
    return processor


def _exports_to(provider: TracerProvider, url: str) -> bool:
    """Does ``provider`` already have an OTLP exporter (or our processor) for ``url``?"""
    for processor in getattr(provider._active_span_processor, "_span_processors", ()):
        if getattr(processor, "_eventscope_url", None) == url:
            return True
        exporter = getattr(processor, "span_exporter", None) or getattr(processor, "_exporter", None)
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
