"""Trace context and event metadata over AMQP headers.

Two jobs, both on the application's hot path and both tolerant of anything a broker or a
foreign producer puts in a header table:

* **Trace context**: inject/extract with the globally configured OpenTelemetry
  propagators. The getter decodes ``bytes`` and ignores values that are not strings
  (``None``, ints, nested tables), so odd headers never raise. With the default W3C
  propagators, ``traceparent`` is formatted straight from the span context (the generic
  propagator path costs several microseconds a message).
* **Event metadata** (docs/adapters.md, "Wire metadata"): event IDs (UUIDv7), and the event being
  handled in the current context, from which published events take their
  ``x-causation-id`` and ``x-correlation-id``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eventscope.tracer.contract import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    decode_header,
    new_event_id,
    parse_traceparent,
)
from eventscope.tracer.sdk import compat

__all__ = [
    "CAUSATION_HEADER",
    "CORRELATION_HEADER",
    "GENERIC",
    "TRACEPARENT_HEADER",
    "Handling",
    "HeaderGetter",
    "carried",
    "current_handling",
    "decode_header",
    "extract",
    "handling_context",
    "inject",
    "new_event_id",
    "with_handling",
]

_HANDLING_KEY = context.create_key("eventscope.handling")
_fields = compat.span_context_fields
_NO_STATE = compat.EMPTY_TRACE_STATE


class HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads AMQP header tables: decodes bytes, ignores non-strings, never raises."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = decode_header(carrier.get(key))
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


_getter = HeaderGetter()


GENERIC = object()  # carried(): only the configured propagators can tell what the headers carry


def carried(headers: Any) -> SpanContext | object | None:
    """The producer's span context in ``headers``, read without building a ``Context``.

    ``None`` when they carry none (or are not a mapping); :data:`GENERIC` when the global
    propagators are not the default W3C pair or the headers hold baggage: then only
    :func:`extract` (``propagate.extract``) knows what the context is.
    """
    if not headers or not (type(headers) is dict or isinstance(headers, Mapping)):
        return None
    if "baggage" in headers or not _is_default_w3c():
        return GENERIC
    parent = _parse_traceparent(decode_header(headers.get(TRACEPARENT_HEADER)))
    if parent is None:
        return None
    state = headers.get(TRACESTATE_HEADER)  # absent on most messages: no decode call then
    if state is not None and (state := decode_header(state)):
        parent = SpanContext(
            parent.trace_id,
            parent.span_id,
            is_remote=True,
            trace_flags=parent.trace_flags,
            trace_state=TraceState.from_header([state]),
        )
    return parent


def extract(headers: Any, ctx: Context | None = None) -> Context:
    """The context carried by ``headers`` (any object; non-mappings carry nothing)."""
    parent = carried(headers)
    if parent is GENERIC:
        return propagate.extract(headers, context=ctx, getter=_getter)
    if parent is None:
        return ctx if ctx is not None else context.get_current()
    return trace.set_span_in_context(NonRecordingSpan(parent), ctx)  # type: ignore[arg-type]


def _parse_traceparent(value: str | None) -> SpanContext | None:
    """A W3C ``traceparent`` as a remote span context, or ``None`` when it is not valid."""
    parsed = parse_traceparent(value)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    trace_flags = _FLAGS.get(flags)
    if trace_flags is None:
        trace_flags = TraceFlags(flags)
    return compat.span_context(
        trace_id, span_id, True, trace_flags, None
    )  # parse_traceparent checked the ids


_FLAGS = {value: TraceFlags(value) for value in range(4)}


_default_w3c: tuple[Any, bool] = (None, False)


def _is_default_w3c() -> bool:
    """Are the global propagators OTel's default W3C trace context + baggage? (cached)"""
    global _default_w3c
    textmap = propagate.get_global_textmap()
    known, answer = _default_w3c
    if textmap is known:
        return answer
    inner = getattr(textmap, "_propagators", None)  # private: unknown shape → the generic path
    answer = isinstance(textmap, CompositePropagator) and [type(p) for p in inner or ()] == [
        TraceContextTextMapPropagator,
        W3CBaggagePropagator,
    ]
    _default_w3c = (textmap, answer)
    return answer


def _baggage_key() -> str | None:
    """The context key OpenTelemetry keeps baggage under (read, not imported: it is private)."""
    probe = baggage.set_baggage("probe", "1", Context())
    return next(iter(probe)) if len(probe) == 1 else None


_BAGGAGE_KEY = _baggage_key()


def _has_baggage(ctx: Context | None) -> bool:
    if _BAGGAGE_KEY is None or ctx is None:
        return bool(baggage.get_all(ctx))
    return bool(ctx.get(_BAGGAGE_KEY))


def inject(headers: MutableMapping[str, Any], span: Span, parent: Context | None = None) -> None:
    """Write the trace context of ``span`` into ``headers``, keeping keys already there.

    ``parent`` is the context the span was started in (for baggage and non-W3C
    propagators). An application that supplied its own ``traceparent`` keeps it and gets no
    other trace header from us: a mixed traceparent/tracestate pair would be wrong.
    """
    if TRACEPARENT_HEADER in headers:
        return
    if _is_default_w3c() and not _has_baggage(parent):
        # the fields in one call, and validity as SpanContext decides it: both ids non-zero
        trace_id, span_id, _remote, flags, state = _fields(span.get_span_context())
        if trace_id and span_id:
            headers[TRACEPARENT_HEADER] = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
            if state is not _NO_STATE and state and TRACESTATE_HEADER not in headers:
                headers[TRACESTATE_HEADER] = state.to_header()
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span, parent))
    for key, value in carrier.items():
        headers.setdefault(key, value)


@dataclass(frozen=True, slots=True)
class Handling:
    """The event being handled in the current context: its ID and its flow's correlation ID."""

    event_id: str | None
    correlation_id: str | None


def with_handling(ctx: Context, event_id: str | None, correlation_id: str | None) -> Context:
    """``ctx`` plus the event being handled; publishes under it become its effects."""
    return context.set_value(_HANDLING_KEY, Handling(event_id, correlation_id or event_id), ctx)


def _span_key() -> str | None:
    """The context key OpenTelemetry keeps the current span under (read, not imported: it is private)."""
    probe = trace.set_span_in_context(trace.INVALID_SPAN, Context())
    return next(iter(probe)) if len(probe) == 1 else None


_SPAN_KEY = _span_key()


def handling_context(ctx: Context, span: Span, event_id: str | None, correlation_id: str | None) -> Context:
    """``ctx`` with ``span`` current and the event being handled: a handler's context, one copy.

    The same as ``with_handling(trace.set_span_in_context(span, ctx), ...)``, built in one
    step on the consumer's hot path.
    """
    if _SPAN_KEY is None:
        return with_handling(trace.set_span_in_context(span, ctx), event_id, correlation_id)
    handler = Context(ctx)  # one copy; filled before anyone else sees it (Context refuses item assignment)
    _set_item(handler, _SPAN_KEY, span)
    _set_item(handler, _HANDLING_KEY, Handling(event_id, correlation_id or event_id))
    return handler


_set_item = dict.__setitem__


def current_handling(ctx: Context | None = None) -> Handling | None:
    """The event being handled in ``ctx`` (default: the current context), if any."""
    value = (ctx if ctx is not None else compat.get_current()).get(_HANDLING_KEY)
    return value if type(value) is Handling else None  # Handling is final (slots, frozen)
