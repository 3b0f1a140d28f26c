"""eventscope's tracer: telemetry setup, propagation and (later) the collector.

``setup()`` is the one call a service needs to export spans to eventscope.
"""

from __future__ import annotations

from . import failures
from .propagation import extract, inject, new_event_id
from .telemetry import resolve_endpoint, setup

__all__ = ["extract", "failures", "inject", "new_event_id", "resolve_endpoint", "setup"]
