"""Trace pika channels: event metadata and trace context in every message, standard spans.

One line per channel::

    from eventscope.adapters.pika import instrument_channel
    channel = instrument_channel(connection.channel(), service="orders")

or, with no code change to the channels, once at start-up::

    from eventscope.adapters import pika as eventscope_pika
    eventscope_pika.install(service="orders")

The returned channel behaves like the original: every attribute passes through,
``isinstance(channel, BlockingChannel)`` still holds, arguments and return values and
exceptions are the original ones. What it adds:

* ``basic_publish``: a PRODUCER span; a copy of the properties with the event metadata
  filled where missing (``message_id`` UUIDv7, ``timestamp``, ``app_id``,
  ``x-causation-id`` and ``x-correlation-id`` on caused events, W3C trace context). The caller's
  ``BasicProperties`` and headers dict are never modified.
* ``basic_consume`` callbacks: a CONSUMER ``process`` span around the callback, current
  inside it; the callback receives the traced channel, so publishes and acks made with it
  are traced too.
* ``consume()`` (blocking): a span per message covering the application's processing; it
  ends on ack/nack/reject of that message, at the next iteration, or when the generator
  closes.
* ``basic_get``: a CONSUMER ``receive`` span.
* ``basic_ack``/``basic_nack``/``basic_reject``: the outcome and requeue flag, on the
  delivery's span while it is open, else as a short ``settle`` span.

Failures in tracing are caught, logged once per kind and counted
(``eventscope.tracer.sdk.failures``); the application's call then proceeds untraced.

Combined with ``opentelemetry-instrumentation-pika``: a channel eventscope traces is taken
over from it (its per-channel wrappers are removed and it is told the channel is already
instrumented), so each operation yields exactly one span.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pika
from opentelemetry import context
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.connection import Connection
from pika.spec import BasicProperties

from eventscope.adapters._amqp import (
    Unusual,
    pack_flags,
    pack_long,
    pack_long_string,
    pack_timestamp,
    short_string,
)
from eventscope.tracer import contract as A
from eventscope.tracer.sdk import compat, failures
from eventscope.tracer.version import __version__

from ._spans import AmqpTracing, Delivery, Publish, Settlements, suppressed

__all__ = ["TracedBlockingChannel", "TracedChannel", "install", "instrument_channel", "uninstall"]

logger = logging.getLogger(__name__)

_LIBRARY = "eventscope.adapters.pika"
_VERSION = __version__  # the instrumentation scope's version: the package's, from one source
_OTEL_PIKA_MODULE = "opentelemetry.instrumentation.pika"
_OUTCOMES = {"ack": A.OUTCOME_ACK, "nack": A.OUTCOME_NACK}  # the rest: reject


def _text_table(table: Any) -> bytes:
    """A header table of text keys and text values, as pika's ``encode_table`` writes it."""
    if type(table) is not dict:
        raise Unusual
    parts = []
    for key, value in table.items():
        if type(value) is not str:
            raise Unusual
        raw = value.encode("utf-8")
        parts.append(short_string(key) + pack_long_string(b"S", len(raw)) + raw)
    encoded = b"".join(parts)
    return pack_long(len(encoded)) + encoded


class _OutgoingProperties(BasicProperties):
    """The properties eventscope sends: a copy, encoded in one step in the common shape.

    pika's ``BasicProperties.encode`` writes field by field through helpers with a type check
    each (~1.5 µs for eventscope's metadata). Properties that hold only eventscope's metadata
    and text fields an application commonly sets, with a header table of text values, are
    written here directly: the same bytes (tests/adapters/test_pika_properties.py compares
    them). Any other shape, or a value pika would refuse, is encoded by pika itself.
    """

    def encode(self) -> list[bytes]:
        fields = self.__dict__
        try:
            if (
                fields["content_type"] is None
                and fields["content_encoding"] is None
                and fields["delivery_mode"] is None
                and fields["priority"] is None
                and fields["reply_to"] is None
                and fields["expiration"] is None
                and fields["user_id"] is None
                and fields["cluster_id"] is None
            ):
                flags = 0
                parts = [b""]
                headers = fields["headers"]
                if headers is not None:
                    flags = BasicProperties.FLAG_HEADERS
                    parts.append(_text_table(headers))
                value = fields["correlation_id"]
                if value is not None:
                    flags |= BasicProperties.FLAG_CORRELATION_ID
                    parts.append(short_string(value))
                value = fields["message_id"]
                if value is not None:
                    flags |= BasicProperties.FLAG_MESSAGE_ID
                    parts.append(short_string(value))
                value = fields["timestamp"]
                if value is not None:
                    if type(value) is not int or not 0 <= value < 1 << 64:
                        raise Unusual
                    flags |= BasicProperties.FLAG_TIMESTAMP
                    parts.append(pack_timestamp(value))
                value = fields["type"]
                if value is not None:
                    flags |= BasicProperties.FLAG_TYPE
                    parts.append(short_string(value))
                value = fields["app_id"]
                if value is not None:
                    flags |= BasicProperties.FLAG_APP_ID
                    parts.append(short_string(value))
                parts[0] = pack_flags(flags)
                return parts
        except (Unusual, KeyError):
            pass
        return BasicProperties.encode(self)


# The fields of a ``BasicProperties()`` (all None): copied in one step for a publish without
# properties instead of running its ``__init__`` (fourteen assignments). Used only while they
# are all None, so nothing mutable is shared between copies.
_BLANK = dict(BasicProperties().__dict__)
if any(value is not None for value in _BLANK.values()):  # pragma: no cover - another pika
    _BLANK = {}


def _copy_properties(properties: BasicProperties | None) -> BasicProperties:
    """A new ``BasicProperties`` with the same fields; the original is never touched."""
    copy = _OutgoingProperties.__new__(_OutgoingProperties)
    if properties is not None:
        copy.__dict__.update(properties.__dict__)
    elif _BLANK:
        copy.__dict__.update(_BLANK)
    else:  # pragma: no cover - another pika
        BasicProperties.__init__(copy)
    return copy


def _connection_address(channel: Any) -> tuple[str | None, int | None]:
    try:
        connection = channel.connection
        params = getattr(connection, "params", None) or connection._impl.params
        return params.host, params.port
    except Exception:
        return None, None


class _ChannelProxy:
    """Everything a traced channel shares: pass-through, isinstance, publish and settles."""

    __slots__ = ("__weakref__", "_es_channel", "_es_pending", "_es_tracing")

    def __init__(self, channel: Any, tracing: AmqpTracing) -> None:
        object.__setattr__(self, "_es_channel", channel)
        object.__setattr__(self, "_es_tracing", tracing)
        object.__setattr__(self, "_es_pending", Settlements())

    # -- behave like the wrapped channel ------------------------------------------------
    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(traced, BlockingChannel) keeps working
        return type(self._es_channel)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._es_channel, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._es_channel, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._es_channel, name)

    def __repr__(self) -> str:
        return repr(self._es_channel)

    def __eq__(self, other: object) -> bool:
        return other is self or other is self._es_channel

    def __hash__(self) -> int:
        return hash(self._es_channel)

    def __int__(self) -> int:
        return int(self._es_channel)

    @property
    def eventscope_channel(self) -> Any:
        """The untraced channel underneath."""
        return self._es_channel

    # -- publish ------------------------------------------------------------------------
    def _publish(self, exchange: str, routing_key: str, body: Any, properties: Any, mandatory: bool) -> Any:
        channel = self._es_channel
        publish: Publish | None = None
        current = compat.get_current()
        if not suppressed(current):
            try:
                publish = self._es_tracing.start_publish(
                    exchange, routing_key, body, properties, _copy_properties, current
                )
            except Exception as exc:
                failures.record("publish tracing", exc)
        if publish is None:
            return type(channel).basic_publish(channel, exchange, routing_key, body, properties, mandatory)
        try:
            result = type(channel).basic_publish(
                channel, exchange, routing_key, body, publish.properties, mandatory
            )
        except Exception as exc:
            try:
                publish.fail(exc)
            except Exception as inner:
                failures.record("publish tracing", inner)
            raise
        try:
            publish.span.end()
        except Exception as exc:
            failures.record("publish tracing", exc)
        return result

    # -- settle -------------------------------------------------------------------------
    def _settled(self, delivery_tag: Any, multiple: bool, operation: str, requeue: bool | None) -> None:
        outcome = A.OUTCOME_REQUEUE if requeue else _OUTCOMES.get(operation, A.OUTCOME_REJECT)
        try:
            self._es_pending.settle(delivery_tag, multiple, outcome, operation, requeue)
        except Exception as exc:
            failures.record("settle tracing", exc)

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        channel = self._es_channel
        result = type(channel).basic_ack(channel, delivery_tag, multiple)
        self._settled(delivery_tag, multiple, "ack", None)
        return result

    def basic_nack(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> None:
        channel = self._es_channel
        result = type(channel).basic_nack(channel, delivery_tag, multiple, requeue)
        self._settled(delivery_tag, multiple, "nack", bool(requeue))
        return result

    def basic_reject(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        channel = self._es_channel
        result = type(channel).basic_reject(channel, delivery_tag, requeue)
        self._settled(delivery_tag, False, "reject", bool(requeue))
        return result

    # -- consume ------------------------------------------------------------------------
    def _start_delivery(
        self,
        operation: str,
        queue: str,
        method: Any,
        properties: Any,
        body: Any,
        auto_ack: bool,
        start_time: int | None = None,
    ) -> Delivery | None:
        current = compat.get_current()
        if suppressed(current):
            return None
        try:
            # positional: a keyword call with a ``**`` merge costs more than the call's body here
            delivery = self._es_tracing.start_delivery(
                operation,
                queue,
                getattr(method, "exchange", "") or "",
                getattr(method, "routing_key", "") or "",
                getattr(method, "delivery_tag", None),
                getattr(method, "redelivered", False),
                properties,
                body,
                auto_ack,
                start_time,
                current,
            )
            if not auto_ack:
                self._es_pending.track(delivery)
            return delivery
        except Exception as exc:
            failures.record("consume tracing", exc)
            return None

    def _traced_callback(
        self, callback: Callable[..., Any], queue: str, auto_ack: bool, operation: str
    ) -> Any:
        """Wrap an on-message callback: a span around it, and the traced channel as ``ch``."""

        def traced(_channel: Any, method: Any, properties: Any, body: Any) -> Any:
            delivery = self._start_delivery(operation, queue, method, properties, body, auto_ack)
            if delivery is None:
                return callback(self, method, properties, body)
            token = compat.attach(delivery.context)
            try:
                return callback(self, method, properties, body)
            except BaseException as exc:
                try:
                    delivery.fail(exc)
                except Exception as inner:
                    failures.record("consume tracing", inner)
                raise
            finally:
                compat.detach(token)
                try:
                    delivery.finish()
                except Exception as exc:
                    failures.record("consume tracing", exc)

        # opentelemetry-instrumentation-pika skips callbacks carrying this marker.
        traced._original_callback = callback  # type: ignore[attr-defined]
        traced.__wrapped__ = callback  # type: ignore[attr-defined]
        return traced

    def basic_consume(
        self,
        queue: str,
        on_message_callback: Callable[..., Any],
        auto_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str | None = None,
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        channel = self._es_channel
        callback = on_message_callback
        if callable(on_message_callback):
            try:
                callback = self._traced_callback(on_message_callback, queue, bool(auto_ack), A.OP_PROCESS)
            except Exception as exc:
                failures.record("consume tracing", exc)
        return type(channel).basic_consume(
            channel,
            queue,
            callback,
            auto_ack=auto_ack,
            exclusive=exclusive,
            consumer_tag=consumer_tag,
            arguments=arguments,
            **kwargs,
        )


class TracedBlockingChannel(_ChannelProxy):
    """A traced ``pika.BlockingChannel`` (``isinstance`` checks against it still hold)."""

    __slots__ = ()

    def __enter__(self) -> TracedBlockingChannel:
        self._es_channel.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._es_channel.__exit__(*exc_info)

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: Any,
        properties: BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        return self._publish(exchange, routing_key, body, properties, mandatory)

    def basic_get(self, queue: str, auto_ack: bool = False) -> tuple[Any, Any, Any]:
        channel = self._es_channel
        start = time.time_ns()
        method, properties, body = type(channel).basic_get(channel, queue, auto_ack)
        if method is not None:
            delivery = self._start_delivery(
                A.OP_RECEIVE, queue, method, properties, body, bool(auto_ack), start_time=start
            )
            if delivery is not None:
                try:
                    delivery.finish()
                except Exception as exc:
                    failures.record("consume tracing", exc)
        return method, properties, body

    def consume(
        self,
        queue: str,
        auto_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        inactivity_timeout: float | None = None,
        consumer_tag: str | None = None,
    ) -> Generator[tuple[Any, Any, Any], None, None]:
        channel = self._es_channel
        messages = type(channel).consume(
            channel,
            queue,
            auto_ack=auto_ack,
            exclusive=exclusive,
            arguments=arguments,
            inactivity_timeout=inactivity_timeout,
            consumer_tag=consumer_tag,
        )
        return self._traced_messages(messages, queue, bool(auto_ack))

    def _traced_messages(
        self, messages: Iterator[tuple[Any, Any, Any]], queue: str, auto_ack: bool
    ) -> Generator[tuple[Any, Any, Any], None, None]:
        """Yield what pika yields; a span per message covers the caller's loop body."""
        delivery: Delivery | None = None
        token = None
        try:
            while True:
                try:
                    item = next(messages)
                except StopIteration:
                    return
                finally:
                    token, delivery = _close_delivery(token, delivery)
                method, properties, body = item
                if method is not None:
                    delivery = self._start_delivery(A.OP_PROCESS, queue, method, properties, body, auto_ack)
                    if delivery is not None:
                        delivery.end_on_settle = True
                        token = context.attach(delivery.context)
                yield item
        finally:
            _close_delivery(token, delivery)
            close = getattr(messages, "close", None)
            if close is not None:
                close()


class TracedChannel(_ChannelProxy):
    """A traced ``pika.channel.Channel`` (SelectConnection and the other async adapters)."""

    __slots__ = ()

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: Any,
        properties: BasicProperties | None = None,
        mandatory: bool = False,
    ) -> None:
        return self._publish(exchange, routing_key, body, properties, mandatory)

    def basic_get(self, queue: str, callback: Callable[..., Any], auto_ack: bool = False) -> None:
        channel = self._es_channel
        traced = callback
        if callable(callback):
            try:
                traced = self._traced_callback(callback, queue, bool(auto_ack), A.OP_RECEIVE)
            except Exception as exc:
                failures.record("consume tracing", exc)
        return type(channel).basic_get(channel, queue, traced, auto_ack)


# -- generator bookkeeping ---------------------------------------------------------------


def _close_delivery(token: Any, delivery: Delivery | None) -> tuple[None, None]:
    if token is not None:
        context.detach(token)
    if delivery is not None:
        try:
            delivery.finish()
        except Exception as exc:
            failures.record("consume tracing", exc)
    return None, None


# -- take over from opentelemetry-instrumentation-pika -----------------------------------
def _take_over_from_otel(channel: Any) -> None:
    """Remove OTel pika's wrappers from ``channel`` so an operation yields one span, not two.

    Its publish/consume wrappers go, and it is told the channel is already instrumented so
    it adds none later. Callbacks of consumers registered *before* eventscope took over stay
    as they are (eventscope does not know their queue): they keep OTel's single span.
    """
    if _OTEL_PIKA_MODULE not in sys.modules:
        return
    impl = getattr(channel, "_impl", None)
    for target in (channel, impl):
        if target is None:
            continue
        own = vars(target)
        for name in ("basic_publish", "basic_consume"):
            function = own.get(name)
            if function is not None and (
                hasattr(function, "_original_function") or hasattr(function, "__wrapped__")
            ):
                delattr(target, name)
        target._is_instrumented_by_opentelemetry = True
    # Under a BlockingChannel, OTel's global instrumentation also wraps the internal
    # delivery callbacks of the channel underneath: a second span for every delivery.
    consumers = getattr(impl, "_consumers", None) if impl is not None else None
    if isinstance(consumers, dict):
        for tag, callback in list(consumers.items()):
            if hasattr(callback, "_original_callback"):
                consumers[tag] = callback._original_callback


def _unwrap_generator_events(channel: Any) -> None:
    """Keep OTel's global ``consume()`` proxy off the generators of a channel we trace.

    OTel's ``PikaInstrumentor().instrument()`` replaces every consume generator's event
    deque with a proxy that starts a span per message. pika creates that deque and then
    calls ``_basic_consume_impl`` before it pops the first message; an instance-level hook
    there swaps the proxy for the plain deque, for this channel only.
    """
    original = getattr(type(channel), "_basic_consume_impl", None)
    if original is None or "_basic_consume_impl" in vars(channel):
        return

    def basic_consume_impl(*args: Any, **kwargs: Any) -> Any:
        try:
            generator = channel._queue_consumer_generator
            events = getattr(generator, "pending_events", None)
            if kwargs.get("alternate_event_sink") is not None and hasattr(events, "_self_tracer"):
                generator.pending_events = events.__wrapped__
        except Exception as exc:
            failures.record("take over from opentelemetry-instrumentation-pika", exc)
        return original(channel, *args, **kwargs)

    channel._basic_consume_impl = basic_consume_impl


# -- public API ---------------------------------------------------------------------------
def instrument_channel(channel: Any, *, service: str | None = None, link_mode: str = "parent") -> Any:
    """Return a traced view of ``channel`` (a ``BlockingChannel`` or a ``pika.channel.Channel``).

    ``service`` names the producing service (``app_id``; default ``OTEL_SERVICE_NAME`` or
    the service given to ``eventscope.tracer.setup``). ``link_mode="parent"`` makes the
    consumer span a child of the producer span (one trace per flow); ``"link"`` starts a
    new trace per delivery, linked to the producer's span. A channel that is already
    traced is returned as it is. Bad arguments raise ``ValueError`` at once.
    """
    if isinstance(channel, _ChannelProxy) or type(channel) in (TracedBlockingChannel, TracedChannel):
        return channel
    if isinstance(channel, BlockingChannel):
        proxy_type: type[_ChannelProxy] = TracedBlockingChannel
    elif isinstance(channel, pika.channel.Channel):
        proxy_type = TracedChannel
    else:
        raise TypeError(f"instrument_channel() takes a pika channel, not {type(channel).__name__}")
    host, port = _connection_address(channel)
    tracing = AmqpTracing(
        service=service,
        link_mode=link_mode,
        server_address=host,
        server_port=port,
        library=_LIBRARY,
        version=_VERSION,
    )
    try:
        _take_over_from_otel(channel)
        if proxy_type is TracedBlockingChannel:
            _unwrap_generator_events(channel)
    except Exception as exc:
        failures.record("take over from opentelemetry-instrumentation-pika", exc)
    return proxy_type(channel, tracing)


_install_lock = threading.Lock()
_installed: dict[str, Any] = {}
_inside_blocking_channel = threading.local()


def install(*, service: str | None = None, link_mode: str = "parent") -> None:
    """Trace every pika channel opened from now on (blocking and async); idempotent.

    Patches ``BlockingConnection.channel`` and ``Connection.channel`` so they hand out
    traced channels (also to ``on_open_callback``). ``uninstall()`` restores them.
    """
    if link_mode not in ("parent", "link"):
        raise ValueError(f"link_mode must be 'parent' or 'link', not {link_mode!r}")
    with _install_lock:
        if _installed:
            return
        blocking_channel = BlockingConnection.channel
        async_channel = Connection.channel

        def traced_blocking_channel(self: Any, *args: Any, **kwargs: Any) -> Any:
            _inside_blocking_channel.active = True
            try:
                channel = blocking_channel(self, *args, **kwargs)
            finally:
                _inside_blocking_channel.active = False
            return _instrument_quietly(channel, service, link_mode)

        def traced_async_channel(self: Any, channel_number: Any = None, on_open_callback: Any = None) -> Any:
            if getattr(_inside_blocking_channel, "active", False):
                return async_channel(self, channel_number=channel_number, on_open_callback=on_open_callback)
            traced: list[Any] = []

            def opened(channel: Any) -> Any:
                return on_open_callback(traced[0] if traced else channel)

            channel = async_channel(
                self, channel_number=channel_number, on_open_callback=opened if on_open_callback else None
            )
            traced.append(_instrument_quietly(channel, service, link_mode))
            return traced[0]

        traced_blocking_channel.__wrapped__ = blocking_channel  # type: ignore[attr-defined]
        traced_async_channel.__wrapped__ = async_channel  # type: ignore[attr-defined]
        _installed.update(blocking=blocking_channel, select=async_channel)
        BlockingConnection.channel = traced_blocking_channel  # type: ignore[method-assign]
        Connection.channel = traced_async_channel  # type: ignore[method-assign]


def uninstall() -> None:
    """Undo ``install()``: channels opened from now on are plain pika channels again."""
    with _install_lock:
        if not _installed:
            return
        BlockingConnection.channel = _installed.pop("blocking")  # type: ignore[method-assign]
        Connection.channel = _installed.pop("select")  # type: ignore[method-assign]


def _instrument_quietly(channel: Any, service: str | None, link_mode: str) -> Any:
    try:
        return instrument_channel(channel, service=service, link_mode=link_mode)
    except Exception as exc:
        failures.record("instrument channel", exc)
        return channel
