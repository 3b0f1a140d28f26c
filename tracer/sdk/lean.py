"""A lean span path for eventscope's own messaging spans, used when eventscope owns the provider.

The SDK's ``Tracer.start_span`` + ``Span.end`` costs about 20 to 30 µs a span here: a sampler call,
a lock and a validation per attribute, a processor fan-out, and metrics hooks. On a
publish or a delivery that is most of what tracing costs. When ``setup()`` created the
provider, we know exactly what it holds — the default parent-based always-on sampler,
random ids, and our single ``BatchSpanProcessor`` — so the adapter's spans can be built
directly as ``ReadableSpan``s and handed to that processor: the same spans reach the same
exporter, at a fraction of the cost.

The lean path steps aside (and the SDK path is used) as soon as anything differs: the
application owns the provider, added a span processor, chose another sampler or id
generator, or the parent is not sampled. Users' own processors therefore always see the
spans.
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from eventscope.tracer.sdk import compat, failures
from eventscope.tracer.sdk import provider as telemetry

__all__ = ["LeanSpan", "LeanTracer", "share_prefix", "tracer_for"]

_MAX_ATTRIBUTES = 128
_MAX_EVENTS = 128
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | compat.RANDOM_TRACE_ID)  # SAMPLED where unknown
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)  # immutable: one for every span


_PLAIN = frozenset({str, bool, int, float})


def _valid(value: Any) -> Any:
    """The value as the SDK would store it (its own cleaning, so both paths agree).

    Plain scalars are stored as they are by the SDK too when no length limit is set (a
    condition of the lean path), so they skip the call.
    """
    if type(value) in _PLAIN:
        return value
    return compat.clean_attribute_value(value)


def _default_limits(provider: TracerProvider) -> bool:
    """No length limit and room for our attributes: the lean path need not truncate or drop."""
    limits = compat.span_limits(provider)
    return limits is not None and (
        limits.max_attribute_length is None
        and limits.max_span_attribute_length is None
        and (limits.max_span_attributes or 0) >= _MAX_ATTRIBUTES
        and (limits.max_events or 0) >= _MAX_EVENTS
        and (limits.max_event_attributes or 0) >= _MAX_ATTRIBUTES
    )


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span that is its own ``ReadableSpan``: ``end()`` hands it to the processor.

    Like the SDK's own span class it is both the live span and the finished record, so
    ending it builds nothing more.
    """

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        span_context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        start_time: int,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = span_context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._links = links
        self._start_time = start_time
        self._end_time: int | None = None
        self._events: list[Event] = []
        self._status = _UNSET
        self._resource = tracer.resource
        self._instrumentation_scope = tracer.scope
        self._instrumentation_info = None
        self._prefix: dict[str, Any] | None = None  # see share_prefix()

    def get_span_context(self) -> SpanContext:
        return self._context

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Any) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None or not isinstance(key, str) or not key:
            return
        value = _valid(value)
        if value is None and compat.DROPS_REFUSED_VALUES:
            return
        if key not in self._attributes and len(self._attributes) >= _MAX_ATTRIBUTES:
            return
        prefix = self._prefix
        if prefix is not None and key in prefix:  # an overwrite: the shared encoding no longer holds
            self._prefix = None
        self._attributes[key] = value

    def set_known(self, key: str, value: str | bool | int | float) -> None:
        """``set_attribute`` for a non-empty ``str`` key and a plain value the caller vouches for.

        The adapters' settle outcome, written on an open delivery span once per message: the
        same result as ``set_attribute`` (plain scalars are stored as they are), without its
        checks of the key's and the value's types.
        """
        if self._end_time is not None:
            return
        attributes = self._attributes
        if key not in attributes and len(attributes) >= _MAX_ATTRIBUTES:
            return
        prefix = self._prefix
        if prefix is not None and key in prefix:
            self._prefix = None
        attributes[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is not None or len(self._events) >= _MAX_EVENTS:
            return
        cleaned = {k: _valid(v) for k, v in (attributes or {}).items()}
        if compat.DROPS_REFUSED_VALUES:
            cleaned = {k: v for k, v in cleaned.items() if v is not None}
        self._events.append(Event(name, cleaned, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self._end_time is None and context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            self._status = status
        else:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        qualname = kind.__qualname__
        event = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        try:
            self._tracer.enqueue(self)
        except Exception as exc:
            failures.record("span processor", exc)

    def __repr__(self) -> str:
        return f"LeanSpan(name={self._name!r}, context={self._context!r})"


def _span_key() -> str | None:
    """The context key OpenTelemetry keeps the current span under (read, not imported: it is private)."""
    probe = trace.set_span_in_context(trace.INVALID_SPAN, Context())
    return next(iter(probe)) if len(probe) == 1 else None


_SPAN_KEY = _span_key()
_UNKNOWN = object()  # no known span key: ask get_current_span
_fields = compat.span_context_fields


class LeanTracer:
    """Builds :class:`LeanSpan`s for one instrumentation scope on an eventscope-owned provider."""

    __slots__ = (
        "_active",
        "_batch",
        "_fallback",
        "_processors",
        "processor",
        "provider",
        "resource",
        "scope",
    )

    def __init__(self, setup: telemetry.Telemetry, name: str, version: str, schema_url: str) -> None:
        provider = setup.provider
        self.provider = provider
        self.processor = setup.processor
        self.resource = provider.resource
        self.scope = InstrumentationScope(name, version, schema_url)
        self._processors = compat.span_processors(provider)
        self._active = provider._active_span_processor  # the SDK swaps its tuple, never this object
        self._fallback = provider.get_tracer(name, version, schema_url=schema_url)
        self._batch = compat.batch_queue(self.processor)

    def enqueue(self, span: LeanSpan) -> None:
        """Hand an ended span to the processor: what ``BatchSpanProcessor.on_end`` does, cheaper.

        The SDK's ``on_end`` re-reads the span's sampling flag (always set on this path) and
        calls ``os.getpid()`` per span to notice a fork, which its own at-fork hook already
        handles; together about 1 µs a span here. While the batch queue is open, has room and
        belongs to this process, the span goes straight onto it and the export thread is woken
        at a full batch, as the SDK does; any other case (shut down, full, forked, a release
        with another shape) takes ``on_end`` itself, with its drop counting and warnings.
        """
        batch = self._batch
        if batch is not None:
            queue = batch._queue
            if not batch._shutdown and len(queue) < batch._max_queue_size and batch._pid == compat.PID[0]:
                queue.appendleft(span)
                if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                    batch._worker_awaken.set()
                return
        self.processor.on_end(span)

    @staticmethod
    def eligible(setup: telemetry.Telemetry | None) -> bool:
        """Is ``setup``'s provider one whose behaviour the lean path reproduces exactly?"""
        if setup is None or not setup.owned or setup.processor is None:
            return False
        provider = setup.provider
        return (
            type(provider) is TracerProvider
            and compat.lean_capable(provider)
            and not telemetry.sdk_disabled()
            and type(getattr(provider, "id_generator", None)) is RandomIdGenerator
            and os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on") == "parentbased_always_on"
            and compat.span_processors(provider) == (setup.processor,)
            and _default_limits(provider)
        )

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
    ) -> trace.Span:
        """Like ``Tracer.start_span``; the caller's ``attributes`` dict becomes the span's."""
        processors = self._active._span_processors  # present: eligible() checked it (compat)
        if processors is not self._processors and processors != self._processors:
            # the application added a processor: it must see this span
            return self._fallback.start_span(name, context, kind, attributes, links, start_time)
        holder = (
            (context if context is not None else otel_context.get_current()).get(_SPAN_KEY)
            if _SPAN_KEY is not None
            else _UNKNOWN
        )
        if holder is None:  # no span in the context: a root (no validity check to make)
            parent = None
        elif type(holder) in _PLAIN_SPANS:
            parent = holder.get_span_context()
        else:  # whatever get_current_span makes of it (it ignores a value that is not a Span)
            parent = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id, _span_id, _remote, parent_flags, trace_state = _fields(parent)
            if not parent_flags & _SAMPLED:  # the ``sampled`` property, without its call
                return self._fallback.start_span(name, context, kind, attributes, links, start_time)
            flags = _SAMPLED_RANDOM if parent_flags & compat.RANDOM_TRACE_ID else _SAMPLED
        else:
            parent = None
            ids = random.getrandbits(192)  # trace id and span id from one call
            trace_id = ids >> 64
            while trace_id == 0:  # pragma: no cover - one in 2**128
                trace_id = random.getrandbits(128)
            flags = _SAMPLED_RANDOM
            trace_state = None
        span_id = random.getrandbits(64) if parent is not None else ids & 0xFFFF_FFFF_FFFF_FFFF
        while span_id == 0:  # pragma: no cover - one in 2**64
            span_id = random.getrandbits(64)
        span_context = compat.span_context(trace_id, span_id, False, flags, trace_state)
        return LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            attributes if attributes is not None else {},
            tuple(links) if links else (),
            start_time or time.time_ns(),
        )

    def start_child(
        self,
        name: str,
        parent: SpanContext,
        base: Context,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
    ) -> trace.Span:
        """``start_span(name, context=<base with a span of context parent current>, ...)``.

        A delivery's parent is the producer's span context, read from its headers: this starts
        the child straight from it instead of building a ``Context`` to hold it and reading it
        back. ``parent`` must be valid; the context is built only when the SDK path is taken.
        """
        processors = self._active._span_processors
        trace_id, _span_id, _remote, parent_flags, trace_state = _fields(parent)
        if (processors is not self._processors and processors != self._processors) or not (
            parent_flags & _SAMPLED
        ):
            parent_context = trace.set_span_in_context(trace.NonRecordingSpan(parent), base)
            return self._fallback.start_span(name, parent_context, kind, attributes, links, start_time)
        span_id = random.getrandbits(64)
        while span_id == 0:  # pragma: no cover - one in 2**64
            span_id = random.getrandbits(64)
        span_context = compat.span_context(
            trace_id,
            span_id,
            False,
            _SAMPLED_RANDOM if parent_flags & compat.RANDOM_TRACE_ID else _SAMPLED,
            trace_state,
        )
        return LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            attributes,
            tuple(links) if links else (),
            start_time or time.time_ns(),
        )


# Span classes whose get_span_context() answers what trace.get_current_span() would hand back.
_PLAIN_SPANS = frozenset({LeanSpan, trace.NonRecordingSpan, SdkSpan})


def share_prefix(span: Any, prefix: dict[str, Any]) -> None:
    """Tell the encoder that ``span``'s attributes begin with the items of ``prefix``, in order.

    ``prefix`` is a dict the caller built once (the attributes every span of a channel and
    destination share) and never mutates; the span's own dict was started as a copy of it.
    The OTLP encoder then writes those pairs as one cached block instead of pair by pair.
    A span that is not a :class:`LeanSpan` (the SDK path) is left alone; overwriting one of
    those keys later drops the mark.
    """
    if type(span) is LeanSpan:
        span._prefix = prefix


_lock = threading.Lock()
_cache: dict[tuple[str, str, str], tuple[telemetry.Telemetry | None, Any]] = {}


def tracer_for(name: str, version: str, schema_url: str) -> Any:
    """The tracer for eventscope's own spans: lean on an owned provider, else the SDK's.

    Cheap to call per span: the answer is cached per ``setup()`` result and re-checked only
    when that changes (or when the lean tracer sees the provider's processors change).
    """
    setup = telemetry.current()
    key = (name, version, schema_url)
    cached = _cache.get(key)
    if cached is not None and cached[0] is setup:
        return cached[1]
    with _lock:
        chosen: Any
        if LeanTracer.eligible(setup):
            chosen = LeanTracer(setup, name, version, schema_url)  # type: ignore[arg-type]
        else:
            chosen = trace.get_tracer(name, version, schema_url=schema_url)
        _cache[key] = (setup, chosen)
        return chosen
