"""eventscope's tracer: telemetry setup, propagation and (later) the collector.

``setup()`` is the one call a service needs to export spans to eventscope.
"""

from __future__ import annotations

from eventscope.tracer.sdk import failures
from eventscope.tracer.sdk.propagation import extract, inject, new_event_id
from eventscope.tracer.sdk.provider import resolve_endpoint, setup

__all__ = ["extract", "failures", "inject", "new_event_id", "resolve_endpoint", "setup"]
