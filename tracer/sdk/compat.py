"""Every use of the OpenTelemetry SDK's private internals, feature-detected in one place.

eventscope supports a range of OpenTelemetry releases (pyproject.toml's bounds, both ends
tested in CI) so that it installs beside whatever an application already runs. The lean
span path and the lean encoder read a few private attributes of the SDK; their names and
shapes change between releases. Each accessor here answers ``None`` (or ``False``) when the
internal is missing or shaped differently, and the caller then takes the public path: the
SDK's own tracer, the stock exporter. Never an ``AttributeError`` into the application.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import operator
import os
import threading
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry.trace import SpanContext, TraceFlags, TraceState
from opentelemetry.trace import span as _span_module

__all__ = [
    "DROPS_REFUSED_VALUES",
    "EMPTY_TRACE_STATE",
    "PID",
    "RANDOM_TRACE_ID",
    "attach",
    "batch_queue",
    "clean_attribute_value",
    "detach",
    "exporter_internals",
    "get_current",
    "lean_capable",
    "processor_exporter",
    "span_context",
    "span_context_fields",
    "span_limits",
    "span_processors",
]

logger = logging.getLogger(__name__)


def _find_cleaner() -> tuple[Any, bool]:
    """The SDK's whole-value attribute cleaner, or ``None`` (the lean path then stays off).

    Older releases clean a whole value in ``_clean_attribute(key, value, max_len)`` (their
    ``_clean_attribute_value`` cleans one element); newer ones in ``_clean_attribute_value``.
    The candidate must clean a list into a tuple, as the SDK stores it, to be trusted. The
    flag says whether the SDK drops a value its cleaner refused (older releases) rather than
    storing ``None`` (newer ones).
    """
    from opentelemetry import attributes

    whole = getattr(attributes, "_clean_attribute", None)
    candidates = []
    if callable(whole):
        candidates.append((lambda value, limit: whole("key", value, limit), True))
    value_cleaner = getattr(attributes, "_clean_attribute_value", None)
    if callable(value_cleaner):
        candidates.append((value_cleaner, False))
    for candidate, drops in candidates:
        try:
            if candidate([1, 2], None) == (1, 2) and candidate("x", None) == "x":
                return candidate, drops
        except Exception:  # a shape we do not know: try the next one
            continue
    return None, False


_clean, DROPS_REFUSED_VALUES = _find_cleaner()

# W3C Trace Context level 2's "random trace id" flag: set on new roots by recent SDKs only.
RANDOM_TRACE_ID: int = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))


def clean_attribute_value(value: Any) -> Any:
    """The SDK's own attribute cleaning (no length limit); only called when :func:`lean_capable`."""
    return _clean(value, None)  # type: ignore[misc]


def span_processors(provider: Any) -> tuple[Any, ...] | None:
    """The provider's span processors in order, or ``None`` when this SDK hides them elsewhere."""
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    return processors if isinstance(processors, tuple) else None


def processor_exporter(processor: Any) -> Any | None:
    """The exporter a Simple/BatchSpanProcessor sends to, wherever this release keeps it."""
    for holder in (processor, getattr(processor, "_batch_processor", None)):
        for name in ("span_exporter", "_exporter"):
            exporter = getattr(holder, name, None)
            if exporter is not None:
                return exporter
    return None


_EMPTY_STATE = getattr(_span_module, "DEFAULT_TRACE_STATE", None)
EMPTY_TRACE_STATE = _EMPTY_STATE  # what a SpanContext built without a trace state holds (or None)


def _tuple_layout_matches() -> bool:
    """Is a ``SpanContext`` the tuple ``(trace_id, span_id, is_remote, flags, state, is_valid)``?"""
    try:
        state = TraceState([("k", "v")])
        public = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1), trace_state=state)
        built = tuple.__new__(SpanContext, (0x1234, 0x5678, True, TraceFlags(1), state, True))
        empty = SpanContext(1, 2, is_remote=False)
        return (
            isinstance(_EMPTY_STATE, TraceState)
            and tuple(public) == tuple(built)
            and (built.trace_id, built.span_id, built.is_remote, built.is_valid)
            == (0x1234, 0x5678, True, True)
            and built.trace_state is state
            and built.trace_flags == 1
            and empty.trace_state is _EMPTY_STATE
        )
    except Exception:  # another shape: the public constructor it is
        return False


_FAST_SPAN_CONTEXT = _tuple_layout_matches()


def span_context(
    trace_id: int, span_id: int, is_remote: bool, trace_flags: TraceFlags, trace_state: TraceState | None
) -> SpanContext:
    """A ``SpanContext`` for ids the caller knows are valid (non-zero, in range).

    The public constructor validates the ids and takes keywords: ~1.5 µs, on every span and
    every delivery. Where the SDK's ``SpanContext`` is the plain tuple it has been for years
    (checked once at import), it is built as that tuple directly; else the constructor.
    """
    if _FAST_SPAN_CONTEXT:
        return tuple.__new__(
            SpanContext,
            (
                trace_id,
                span_id,
                is_remote,
                trace_flags,
                trace_state if trace_state is not None else _EMPTY_STATE,
                True,
            ),
        )
    return SpanContext(
        trace_id, span_id, is_remote=is_remote, trace_flags=trace_flags, trace_state=trace_state
    )


def _public_fields(span_context: SpanContext) -> tuple[int, int, bool, TraceFlags, TraceState]:
    return (
        span_context.trace_id,
        span_context.span_id,
        span_context.is_remote,
        span_context.trace_flags,
        span_context.trace_state,
    )


# ``(trace_id, span_id, is_remote, trace_flags, trace_state)`` of a ``SpanContext``: one C call
# where it is the tuple checked above (each public property is a Python-level call).
span_context_fields = operator.itemgetter(0, 1, 2, 3, 4) if _FAST_SPAN_CONTEXT else _public_fields


# This process's id, kept current across os.fork() (the SDK's batch processor compares its own).
PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: PID.__setitem__(0, os.getpid()))


def batch_queue(processor: Any) -> Any | None:
    """The SDK ``BatchProcessor`` behind a ``BatchSpanProcessor`` whose queue the lean path may fill.

    Recent SDKs keep it in ``_batch_processor`` with a bounded ``deque`` (``_queue``), its
    limits, a ``threading.Event`` that wakes the export thread, the owning pid and a shutdown
    flag. Any other shape answers ``None`` and spans go through ``on_end``.
    """
    batch = getattr(processor, "_batch_processor", None)
    try:
        if (
            isinstance(batch._queue, collections.deque)
            and isinstance(batch._max_queue_size, int)
            and isinstance(batch._max_export_batch_size, int)
            and isinstance(batch._worker_awaken, threading.Event)
            and isinstance(batch._pid, int)
            and isinstance(batch._shutdown, bool)
        ):
            return batch
    except AttributeError:
        pass
    return None


def span_limits(provider: Any) -> Any | None:
    """The provider's ``SpanLimits``, or ``None`` when it keeps them elsewhere."""
    limits = getattr(provider, "_span_limits", None)
    needed = ("max_attribute_length", "max_span_attribute_length", "max_span_attributes", "max_events")
    return limits if limits is not None and all(hasattr(limits, n) for n in needed) else None


def lean_capable(provider: Any) -> bool:
    """Does this SDK expose everything the lean span path reads (else the SDK tracer is used)?"""
    return _clean is not None and span_processors(provider) is not None and span_limits(provider) is not None


def exporter_internals(exporter: Any) -> tuple[Any, Any, int] | None:
    """``(client, metrics, max_request_size)`` of an OTLP/HTTP exporter that has them, else ``None``.

    Recent exporters split encoding from transport (``_client.export(bytes)``) and count
    exports in ``_metrics.export_operation``; the lean encoder replaces just the encoding
    step there. Older ones do both inside ``export()``: the stock path is used as it is.
    """
    client = getattr(exporter, "_client", None)
    metrics = getattr(exporter, "_metrics", None)
    limit = getattr(exporter, "_max_request_size", None)
    if (
        callable(getattr(client, "export", None))
        and callable(getattr(metrics, "export_operation", None))
        and isinstance(limit, int)
        and isinstance(getattr(exporter, "_shutdown", None), bool)
    ):
        return client, metrics, limit
    return None


def _context_var() -> contextvars.ContextVar[Any] | None:
    """The ``ContextVar`` OpenTelemetry keeps the current context in, or ``None``.

    The default runtime context (``contextvars_context``) wraps one ``ContextVar``; its
    ``get_current``, ``attach`` and ``detach`` are that variable's ``get``, ``set`` and ``reset``
    behind two Python calls each, and the adapters call them three to four times a message.
    Another runtime context (``OTEL_PYTHON_CONTEXT``) or another shape: ``None``, and the
    public functions are used.
    """
    try:
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

        runtime = getattr(_otel_context, "_RUNTIME_CONTEXT", None)
        var = getattr(runtime, "_current_context", None)
        if (
            type(runtime) is ContextVarsRuntimeContext
            and isinstance(var, contextvars.ContextVar)
            and var.get() is _otel_context.get_current()
        ):
            return var
    except Exception:  # an unknown layout: the public path
        pass
    return None


_CONTEXT_VAR = _context_var()

# The current OpenTelemetry context, and making one current: the same as
# ``opentelemetry.context.get_current`` and ``attach``, one C call each where the layout allows.
get_current = _CONTEXT_VAR.get if _CONTEXT_VAR is not None else _otel_context.get_current
attach = _CONTEXT_VAR.set if _CONTEXT_VAR is not None else _otel_context.attach


def detach(token: Any) -> None:
    """``opentelemetry.context.detach``: a token that will not reset is logged by it, never raised."""
    if _CONTEXT_VAR is not None:
        try:
            _CONTEXT_VAR.reset(token)
            return
        except Exception:  # its own logging, as if we had never been here
            pass
    _otel_context.detach(token)
