"""``opentelemetry-instrument python app.py`` switches eventscope's pika adapter on.

Registered as the ``eventscope_pika`` entry point of the ``opentelemetry_instrumentor``
group (pyproject.toml), so OpenTelemetry's auto-instrumentation finds it with the others;
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=eventscope_pika`` leaves it off. It does what a
service would do by hand:

* ``eventscope.tracer.setup()`` when no SDK tracer provider is configured yet (no
  distro), so spans go to ``OTEL_EXPORTER_OTLP_ENDPOINT``; a provider that a distro or
  configurator installed is reused as it is (``setup()`` adds an exporter only for an
  endpoint nothing exports to yet);
* ``eventscope.adapters.pika.install()``: every channel opened from then on is traced.

Beside ``opentelemetry-instrumentation-pika`` (whichever is loaded first), a channel
eventscope traces is taken over from it, so each operation yields one span.

This module imports ``opentelemetry-instrumentation``, which only auto-instrumentation
installs; nothing else in eventscope imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

__all__ = ["EventscopePikaInstrumentor"]

logger = logging.getLogger(__name__)

_INSTRUMENTS = ("pika >= 1.3, < 2",)


class EventscopePikaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """eventscope's pika adapter as an OpenTelemetry instrumentor.

    ``instrument(service=..., link_mode=...)`` takes the options of
    :func:`eventscope.adapters.pika.install`.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        from eventscope.adapters import pika as eventscope_pika
        from eventscope.tracer import setup

        service = kwargs.get("service")
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            setup(service=service)
        eventscope_pika.install(service=service, link_mode=kwargs.get("link_mode", "parent"))
        logger.debug("eventscope's pika adapter installed by opentelemetry-instrument")

    def _uninstrument(self, **kwargs: Any) -> None:
        from eventscope.adapters import pika as eventscope_pika

        eventscope_pika.uninstall()
