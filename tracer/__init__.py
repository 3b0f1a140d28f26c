"""eventscope's tracer: what a service runs (:mod:`.sdk`) and the collector's parts.

``setup()`` is the one call a service needs to export spans to eventscope. The names below are
loaded on first use, so that importing a collector module (``eventscope.tracer.query``, say)
never loads the OpenTelemetry SDK, and importing this package costs nothing by itself.
docs/architecture.md maps the sub-packages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventscope.tracer.sdk import failures
    from eventscope.tracer.sdk.propagation import extract, inject, new_event_id
    from eventscope.tracer.sdk.provider import resolve_endpoint, setup

__all__ = ["extract", "failures", "inject", "new_event_id", "resolve_endpoint", "setup"]

_LAZY = {
    "failures": ("eventscope.tracer.sdk.failures", None),
    "extract": ("eventscope.tracer.sdk.propagation", "extract"),
    "inject": ("eventscope.tracer.sdk.propagation", "inject"),
    "new_event_id": ("eventscope.tracer.contract", "new_event_id"),
    "resolve_endpoint": ("eventscope.tracer.sdk.provider", "resolve_endpoint"),
    "setup": ("eventscope.tracer.sdk.provider", "setup"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
