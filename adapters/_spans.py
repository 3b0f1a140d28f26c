"""Spans and event metadata for AMQP 0-9-1 operations, independent of the client library.

A client adapter (``pika.py``, ``aio_pika.py``) calls three things on its hot paths:

* :meth:`AmqpTracing.start_publish` before ``basic.publish``: fills the event metadata on a
  *copy* of the properties, starts the PRODUCER span and injects its context;
* :meth:`AmqpTracing.start_delivery` when a message is handed to the application (push
  callback, ``consume()`` generator, ``basic.get``): starts the CONSUMER span with the
  producer's context as parent (or as a link) and builds the context the handler runs in;
* :meth:`Settlements.settle` on ``basic.ack``/``nack``/``reject``: records the outcome on the
  delivery's span while it is open, or as a small ``settle`` span once it has ended.

Every method here may raise on broken input or a broken SDK; the adapter wraps each call
and falls back to the untraced operation (see ``eventscope.tracer.sdk.failures``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode

from eventscope.tracer import contract as A
from eventscope.tracer.sdk import failures
from eventscope.tracer.sdk import provider as telemetry
from eventscope.tracer.sdk.compat import get_current
from eventscope.tracer.sdk.lean import LeanSpan, LeanTracer, share_prefix, tracer_for
from eventscope.tracer.sdk.propagation import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    GENERIC,
    TRACEPARENT_HEADER,
    carried,
    current_handling,
    decode_header,
    extract,
    handling_context,
    inject,
    new_event_id,
)

__all__ = ["AmqpTracing", "Delivery", "Publish", "Settlements", "suppressed"]

_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
_DEFAULT_MAX_UNSETTLED = 65_536
_MAX_PREFIXES = 1024  # distinct destinations per channel whose shared attributes are kept
LINK_MODES = ("parent", "link")


def suppressed(ctx: Context | None = None) -> bool:
    """Is instrumentation suppressed in ``ctx`` (default: the current context), e.g. inside an exporter?"""
    return bool((ctx if ctx is not None else get_current()).get(_SUPPRESS_INSTRUMENTATION_KEY))


def _destination(exchange: str, routing_key: str, queue: str = "") -> str:
    """``messaging.destination.name`` by the RabbitMQ rules.

    ``exchange:routing_key`` on publish, ``exchange:routing_key:queue`` on consume; empty
    parts are left out, a queue equal to the routing key is named once, and with nothing
    left the default exchange is ``amq.default``.
    """
    parts = [exchange, routing_key] if queue == routing_key else [exchange, routing_key, queue]
    return ":".join(part for part in parts if part) or A.DEFAULT_EXCHANGE


def _body_size(body: Any) -> int | None:
    """Bytes on the wire (pika sends a ``str`` body as UTF-8)."""
    if type(body) is bytes:
        return len(body)
    if isinstance(body, bytes | bytearray):
        return len(body)
    if isinstance(body, str):
        return len(body) if body.isascii() else len(body.encode("utf-8"))
    if isinstance(body, memoryview):
        return body.nbytes
    return None


class Publish:
    """A publish in flight: the properties to send and the PRODUCER span to end."""

    __slots__ = ("properties", "span")

    def __init__(self, properties: Any, span: Span) -> None:
        self.properties = properties
        self.span = span

    def fail(self, exc: BaseException) -> None:
        span = self.span
        span.set_attribute(A.ERROR_TYPE, type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__qualname__))
        span.end()

    def returned(self, reply_code: Any, reply_text: Any) -> None:
        """The broker returned a mandatory message it could not route (``basic.return``)."""
        span = self.span
        span.set_attribute(A.ERROR_TYPE, "basic.return")
        span.set_status(Status(StatusCode.ERROR, f"returned: {reply_code} {reply_text}"))
        span.end()


class Delivery:
    """One message handed to the application, with its CONSUMER span.

    ``open`` is true while the application is processing it (inside the callback, or
    between two iterations of a ``consume()`` generator); a settle that arrives then is
    written onto the span itself, later ones become a ``settle`` span.
    """

    __slots__ = (
        "context",
        "delivery_tag",
        "end_on_settle",
        "failed",
        "open",
        "queue",
        "settled",
        "span",
        "tracing",
    )

    def __init__(self, tracing: AmqpTracing, span: Span, ctx: Context, queue: str, delivery_tag: Any) -> None:
        self.tracing = tracing
        self.span = span
        self.context = ctx
        self.queue = queue
        self.delivery_tag = delivery_tag
        self.open = True
        self.settled = False
        self.failed = False  # an exception seen twice (context manager, then callback) is recorded once
        self.end_on_settle = False  # consume() generator: settling ends the processing

    def fail(self, exc: BaseException) -> None:
        """The handler raised: record it (the adapter re-raises the exception unchanged)."""
        if self.failed:
            return
        self.failed = True
        span = self.span
        span.record_exception(exc)
        attributes = {A.ERROR_TYPE: type(exc).__qualname__}
        if not self.settled:
            attributes[A.SETTLE_OUTCOME] = A.OUTCOME_ERROR
        span.set_attributes(attributes)
        span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__qualname__))

    def finish(self) -> None:
        """Processing is over (callback returned, next iteration, generator closed)."""
        if self.open:
            self.open = False
            self.span.end()

    def settle(self, outcome: str, operation: str, requeue: bool | None) -> None:
        self.settled = True
        if self.open:
            span = self.span
            if type(span) is LeanSpan and (requeue is None or type(requeue) is bool):
                span.set_known(A.SETTLE_OUTCOME, outcome)
                if requeue is not None:
                    span.set_known(A.SETTLE_REQUEUE, requeue)
            else:
                span.set_attribute(A.SETTLE_OUTCOME, outcome)
                if requeue is not None:
                    span.set_attribute(A.SETTLE_REQUEUE, requeue)
            if self.end_on_settle:
                self.finish()
            return
        attributes: dict[str, Any] = {A.SETTLE_OUTCOME: outcome}
        if requeue is not None:
            attributes[A.SETTLE_REQUEUE] = requeue
        attributes.update(
            {
                A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
                A.MESSAGING_OPERATION_TYPE: A.OP_SETTLE,
                A.MESSAGING_OPERATION_NAME: operation,
                A.MESSAGING_DESTINATION_NAME: self.queue,
                A.QUEUE: self.queue,
            }
        )
        if isinstance(self.delivery_tag, int):
            attributes[A.MESSAGING_DELIVERY_TAG] = self.delivery_tag
        parent = trace.set_span_in_context(NonRecordingSpan(self.span.get_span_context()))
        self.tracing.tracer.start_span(
            f"{operation} {self.queue}", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        ).end()


class Settlements:
    """Deliveries of one channel that await ``basic.ack``/``nack``/``reject``, by delivery tag.

    Bounded: past ``max_size`` the oldest entry is dropped (counted as
    ``unsettled-deliveries-dropped``); its settle then goes unrecorded, nothing else.
    """

    __slots__ = ("_pending", "max_size")

    def __init__(self, max_size: int = _DEFAULT_MAX_UNSETTLED) -> None:
        self._pending: dict[Any, Delivery] = {}
        self.max_size = max_size

    def track(self, delivery: Delivery) -> None:
        pending = self._pending
        if len(pending) >= self.max_size:
            pending.pop(next(iter(pending)))
            failures.record("unsettled-deliveries-dropped")
        pending[delivery.delivery_tag] = delivery

    def get(self, delivery_tag: Any) -> Delivery | None:
        """The unsettled delivery with this tag, if it is tracked."""
        return self._pending.get(delivery_tag)

    def settle(
        self, delivery_tag: Any, multiple: bool, outcome: str, operation: str, requeue: bool | None
    ) -> None:
        pending = self._pending
        if not multiple:
            delivery = pending.pop(delivery_tag, None)
            if delivery is not None:
                delivery.settle(outcome, operation, requeue)
            return
        tags = [tag for tag in pending if delivery_tag == 0 or tag <= delivery_tag]
        for tag in tags:
            delivery = pending.pop(tag, None)
            if delivery is not None:
                delivery.settle(outcome, operation, requeue)

    def __len__(self) -> int:
        return len(self._pending)


class AmqpTracing:
    """The spans and metadata of one instrumented channel (or of ``install()``)."""

    __slots__ = (
        "_library",
        "_prefixes",
        "_resource",
        "_service",
        "_state",
        "_version",
        "link_mode",
        "server_address",
        "server_port",
    )

    def __init__(
        self,
        *,
        service: str | None,
        link_mode: str,
        server_address: str | None,
        server_port: int | None,
        library: str,
        version: str,
    ) -> None:
        if link_mode not in LINK_MODES:
            raise ValueError(f"link_mode must be one of {LINK_MODES}, not {link_mode!r}")
        self.link_mode = link_mode
        self.server_address = server_address
        self.server_port = server_port
        self._service = service
        self._library = library
        self._version = version
        self._resource: tuple[Any, str | None] | None = None
        self._state: tuple[Any, Any, str | None] | None = None
        self._prefixes: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}

    @property
    def tracer(self) -> Any:
        """The lean tracer when eventscope owns the provider, else the SDK's (see tracer.lean)."""
        return tracer_for(self._library, self._version, _SCHEMA_URL)

    def _setup_state(self) -> tuple[Any, Any, str | None]:
        """``(setup, tracer, the resource's service.name)`` for the current ``setup()``, kept per setup.

        What ``tracer`` and ``_resource_service()`` answer, looked up once per ``setup()``
        result instead of twice per message (``tracer_for`` itself caches per setup too).
        """
        setup = telemetry.current()
        state = self._state
        if state is None or state[0] is not setup:
            state = self._state = (setup, self.tracer, self._resource_service())
        return state

    @property
    def service(self) -> str | None:
        """``service=``, else ``OTEL_SERVICE_NAME``, else the service of ``setup()``."""
        if self._service is None:
            name = os.environ.get("OTEL_SERVICE_NAME")
            if not name and (setup := telemetry.current()) is not None:
                value = setup.provider.resource.attributes.get("service.name")
                name = value if isinstance(value, str) and not value.startswith("unknown_service") else None
            self._service = name or ""
        return self._service or None

    def _resource_service(self) -> str | None:
        """``service.name`` of the provider ``setup()`` configured (what the collector falls back to)."""
        setup = telemetry.current()
        cached = self._resource
        if cached is None or cached[0] is not setup:
            value = setup.provider.resource.attributes.get("service.name") if setup is not None else None
            cached = self._resource = (setup, value if isinstance(value, str) else None)
        return cached[1]

    def _network(self, attributes: dict[str, Any]) -> None:
        if self.server_address:
            attributes[A.SERVER_ADDRESS] = self.server_address
        if self.server_port:
            attributes[A.SERVER_PORT] = self.server_port

    def _prefix(self, key: tuple[Any, ...], build: Any) -> tuple[dict[str, Any], str]:
        """The attributes every span of this channel with ``key`` shares, and their span name, built once.

        Each span's attributes start as a copy of the dict (one dict copy instead of a dict
        built pair by pair), and the lean encoder writes it as one cached block
        (``lean.share_prefix``). Never mutated once built.
        """
        entry = self._prefixes.get(key)
        if entry is None:
            if len(self._prefixes) >= _MAX_PREFIXES:
                self._prefixes.clear()
            entry = self._prefixes[key] = build(*key)
        return entry

    def _publish_prefix(self, _kind: str, exchange: str, routing_key: str) -> tuple[dict[str, Any], str]:
        attributes: dict[str, Any] = {
            A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
            A.MESSAGING_OPERATION_TYPE: A.OP_SEND,
            A.MESSAGING_OPERATION_NAME: "publish",
            A.MESSAGING_DESTINATION_NAME: _destination(exchange, routing_key),
            A.EXCHANGE: exchange,
        }
        if routing_key:
            attributes[A.MESSAGING_ROUTING_KEY] = routing_key
        self._network(attributes)
        return attributes, f"publish {exchange or A.DEFAULT_EXCHANGE}"

    def _delivery_prefix(
        self,
        operation: str,
        queue: str,
        exchange: str,
        routing_key: str,
        redelivered: bool,
        auto_ack: bool,
    ) -> tuple[dict[str, Any], str]:
        attributes: dict[str, Any] = {
            A.MESSAGING_SYSTEM: A.SYSTEM_RABBITMQ,
            A.MESSAGING_OPERATION_TYPE: operation,
            A.MESSAGING_OPERATION_NAME: "process" if operation == A.OP_PROCESS else "get",
            A.MESSAGING_DESTINATION_NAME: _destination(exchange, routing_key, queue),
            A.QUEUE: queue,
        }
        # Written only when true: every exported attribute costs, and absent means false.
        if redelivered:
            attributes[A.REDELIVERED] = True
        if auto_ack:
            attributes[A.AUTO_ACK] = True
            attributes[A.SETTLE_OUTCOME] = A.OUTCOME_ACK
        if routing_key:
            attributes[A.MESSAGING_ROUTING_KEY] = routing_key
        self._network(attributes)
        return attributes, f"{'process' if operation == A.OP_PROCESS else 'receive'} {queue}"

    def start_publish(
        self,
        exchange: str,
        routing_key: str,
        body: Any,
        properties: Any,
        new_properties: Any,
        current: Context | None = None,
    ) -> Publish:
        """Fill metadata on a copy of ``properties``, start the PRODUCER span, inject it.

        ``new_properties(original)`` returns a fresh properties object (a copy of the
        original, or an empty one for ``None``); ``properties`` itself is never touched.
        ``current`` is the current context when the caller has it at hand already.
        """
        props = new_properties(properties)
        headers = props.headers
        # ``type(...) is dict`` first: the ABC check costs more than the rest of this line
        if headers is None:
            headers = {}
        elif type(headers) is dict or isinstance(headers, Mapping):
            headers = dict(headers)
        else:
            headers = None
        if current is None:
            current = get_current()
        parent = extract(headers, current) if headers and TRACEPARENT_HEADER in headers else current
        handling = current_handling(current)

        event_id = props.message_id
        if not event_id:
            event_id = props.message_id = new_event_id()
        if props.timestamp is None:
            props.timestamp = int(time.time())
        service = self.service
        app_id = props.app_id
        if app_id is None and service:
            app_id = props.app_id = service
        _setup, tracer, resource_service = self._setup_state()

        prefix, name = self._prefix(("publish", exchange, routing_key), self._publish_prefix)
        attributes = prefix.copy()
        attributes[A.MESSAGING_MESSAGE_ID] = event_id if type(event_id) is str else str(event_id)
        if props.correlation_id:
            attributes[A.MESSAGING_CONVERSATION_ID] = str(props.correlation_id)
        if props.type and props.type != routing_key:  # the collector falls back to the routing key
            attributes[A.EVENT_TYPE] = str(props.type)
        if app_id and app_id != resource_service:  # else implied by the resource
            attributes[A.PRODUCER] = str(app_id)
        size = len(body) if type(body) is bytes else _body_size(body)
        if size is not None:
            attributes[A.MESSAGING_BODY_SIZE] = size

        if headers is not None:
            if handling is not None:
                # "missing" means the key is absent: values the application set stay, whatever their type
                if CAUSATION_HEADER not in headers and handling.event_id:
                    headers[CAUSATION_HEADER] = handling.event_id
                # a root event is its own flow: no header, the collector infers its correlation
                if CORRELATION_HEADER not in headers and handling.correlation_id:
                    headers[CORRELATION_HEADER] = handling.correlation_id
            if headers:  # an empty table (a root event's, usually) carries neither
                causation = decode_header(headers.get(CAUSATION_HEADER))
                correlation = decode_header(headers.get(CORRELATION_HEADER))
                if causation:
                    attributes[A.CAUSATION_ID] = causation
                if correlation and correlation != event_id:  # a root event is its own flow: implied
                    attributes[A.CORRELATION_ID] = correlation

        span = tracer.start_span(name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes)
        share_prefix(span, prefix)
        if headers is not None:
            inject(headers, span, parent)
            props.headers = headers
        return Publish(props, span)

    def start_delivery(
        self,
        operation: str,
        queue: str,
        exchange: str,
        routing_key: str,
        delivery_tag: Any,
        redelivered: Any,
        properties: Any,
        body: Any,
        auto_ack: bool,
        start_time: int | None = None,
        current: Context | None = None,
    ) -> Delivery:
        """Start the CONSUMER span of a message handed to the application.

        ``operation`` is ``process`` (push) or ``receive`` (pull). The returned delivery's
        ``context`` is what the handler should run in: the span is current there, and
        publishes made in it carry this event as their cause. ``current`` is the current
        context when the caller has it at hand already.
        """
        headers = getattr(properties, "headers", None)
        if current is None:
            current = get_current()
        # The producer's span context straight from the headers (W3C, no baggage): no Context
        # is built to carry it; else the configured propagators' Context.
        producer = carried(headers)
        extracted: Context | None = None
        if producer is GENERIC:
            extracted = extract(headers, current)
            producer = trace.get_current_span(extracted).get_span_context()
        links: list[Link] | None = None
        if self.link_mode == "link":
            if producer is None:  # as extract() answers then: the current context's span, if any
                producer = trace.get_current_span(current).get_span_context()
            links = [Link(producer)] if producer is not None and producer.is_valid else None  # type: ignore[attr-defined]
            producer = None
            parent = current
        else:
            parent = extracted if extracted is not None else current

        event_id = getattr(properties, "message_id", None)
        event_id = str(event_id) if event_id else None
        prefix, name = self._prefix(
            (operation, queue, exchange, routing_key, bool(redelivered), auto_ack), self._delivery_prefix
        )
        attributes = prefix.copy()
        if isinstance(delivery_tag, int):
            attributes[A.MESSAGING_DELIVERY_TAG] = delivery_tag
        if event_id:
            attributes[A.MESSAGING_MESSAGE_ID] = event_id
        # The event's own facts (exchange, producer, causation, correlation) live on the
        # producer's span, once, not on every delivery; the handler's context still carries
        # the flow's correlation ID.
        correlation = None
        if properties is not None:
            if properties.correlation_id:
                attributes[A.MESSAGING_CONVERSATION_ID] = str(properties.correlation_id)
            if properties.type and properties.type != routing_key:
                attributes[A.EVENT_TYPE] = str(properties.type)
            if headers and (type(headers) is dict or isinstance(headers, Mapping)):
                correlation = decode_header(headers.get(CORRELATION_HEADER))
                deaths = headers.get("x-death")
                if deaths:
                    _deaths(deaths, attributes)
        size = len(body) if type(body) is bytes else _body_size(body)
        if size is not None:
            attributes[A.MESSAGING_BODY_SIZE] = size

        tracer = self._setup_state()[1]
        if producer is None or extracted is not None:  # no parent, a link, or the propagators' context
            span = tracer.start_span(
                name,
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
                start_time=start_time,
            )
        elif type(tracer) is LeanTracer:
            span = tracer.start_child(
                name, producer, current, SpanKind.CONSUMER, attributes, links, start_time
            )  # type: ignore[arg-type]
        else:
            span = tracer.start_span(
                name,
                context=trace.set_span_in_context(NonRecordingSpan(producer), current),  # type: ignore[arg-type]
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
                start_time=start_time,
            )
        share_prefix(span, prefix)
        # ``parent`` differs from ``current`` only by the span this replaces (and a GENERIC extract's baggage)
        ctx = handling_context(parent, span, event_id, correlation)
        delivery = Delivery(self, span, ctx, queue, delivery_tag)
        if auto_ack:
            delivery.settled = True
        return delivery


def _deaths(deaths: Any, attributes: dict[str, Any]) -> None:
    """Sum the ``count`` of every ``x-death`` entry; keep the most recent reason."""
    if not isinstance(deaths, list | tuple):
        return
    total = 0
    reason = None
    for entry in deaths:
        if not isinstance(entry, Mapping):
            continue
        count = entry.get("count")
        if isinstance(count, int) and not isinstance(count, bool):
            total += count
        if reason is None:
            reason = decode_header(entry.get("reason"))
    if total:
        attributes[A.DEATH_COUNT] = total
    if reason:
        attributes[A.DEATH_REASON] = reason
