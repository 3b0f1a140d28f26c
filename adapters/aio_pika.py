"""Trace aio-pika (>= 9) channels: the same events, spans and settle outcomes as the pika adapter.

One line per channel::

    from eventscope.adapters.aio_pika import instrument_channel
    channel = instrument_channel(await connection.channel(), service="orders")

or, with no change to the code that opens channels (robust connections and FastStream
included), once at start-up::

    from eventscope.adapters import aio_pika as eventscope_aio_pika
    eventscope_aio_pika.install(service="orders")

``instrument_channel`` returns the channel itself: aio-pika's exchanges and queues hold their
channel, so eventscope keeps a registry of traced channels (weakly: a closed channel is
forgotten) and hooks the class methods every exchange, queue and message goes through once
(``Exchange.publish``, ``Queue.consume``/``get``/``iterator``, ``IncomingMessage.ack``/
``nack``/``reject``, ``message.process()``). For a channel not in the registry the hooks
cost one dictionary look-up and call aio-pika's own code.

What a traced channel adds (the wire contract and span names are the pika adapter's,
docs/adapters.md):

* ``exchange.publish(message, routing_key)`` (any exchange, the default one too): a
  PRODUCER span; a *copy* of the ``Message`` carries the metadata (``message_id`` UUIDv7 set
  before aiormq would stamp a uuid4, ``timestamp``, ``app_id``, ``x-causation-id`` and
  ``x-correlation-id`` on caused events, W3C context). A broker nack or a returned mandatory
  message is recorded on the span; the result and exceptions are aio-pika's.
* ``queue.consume(callback)``: a CONSUMER ``process`` span around the callback, current
  inside it (aio-pika runs each callback in a task of its own, so contexts never mix).
* ``queue.iterator()`` / ``async for``: a span per message, current in the loop body, ended
  by the message's settle, the next iteration, leaving the loop (``break`` included, with or
  without ``async with``), or the iterator's close.
* ``queue.get()``: a ``receive`` span. ``ack``/``nack``/``reject`` (also through
  ``message.process()``): the outcome on the delivery's span, or a short ``settle`` span.

Failures in tracing are caught, logged once per kind and counted
(``eventscope.tracer.sdk.failures``); the application's call proceeds untraced.

With ``opentelemetry-instrumentation-aio-pika``: on a channel eventscope traces, eventscope
calls aio-pika's own ``publish``/``consume`` underneath OpenTelemetry's wrappers, so each
operation yields one span (eventscope's). Channels eventscope does not trace keep OTel's.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import aiormq
from aio_pika.connection import Connection
from aio_pika.exchange import Exchange
from aio_pika.message import IncomingMessage, Message, ProcessContext
from aio_pika.queue import Queue, QueueIterator
from aio_pika.robust_queue import RobustQueueIterator
from opentelemetry import context

from eventscope.adapters._amqp import SHORT_LENGTHS, Unusual, pack_long, pack_timestamp, short_string
from eventscope.tracer import contract as A
from eventscope.tracer.sdk import compat, failures

from ._spans import LINK_MODES, AmqpTracing, Delivery, Publish, Settlements, suppressed

__all__ = ["install", "instrument_channel", "uninstall"]

logger = logging.getLogger(__name__)

_LIBRARY = "eventscope.adapters.aio_pika"
_VERSION = "0.1.0"
_OUTCOMES = {"ack": A.OUTCOME_ACK, "nack": A.OUTCOME_NACK}  # the rest: reject

# Traced aio-pika channels and their tracing; unsettled deliveries per aiormq channel
# (delivery tags are per AMQP channel, and a robust channel gets a new one on reconnect).
_channels: weakref.WeakKeyDictionary[Any, AmqpTracing] = weakref.WeakKeyDictionary()
_settlements: weakref.WeakKeyDictionary[Any, Settlements] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_patched: dict[tuple[type, str], Any] = {}
_installed: dict[str, Any] = {}

# The fields of an outgoing ``Message`` (its ``headers`` is replaced on the copy, not mutated).
_MESSAGE_FIELDS = (
    "app_id",
    "body",
    "body_size",
    "content_encoding",
    "content_type",
    "correlation_id",
    "delivery_mode",
    "expiration",
    "headers",
    "message_id",
    "priority",
    "reply_to",
    "timestamp",
    "type",
    "user_id",
)


# Basic.Properties fields the one-step encoding writes, in pamqp's order, with their flags;
# the others must be unset (None or "", which pamqp leaves out too)
_TEXT_FIELDS = (("correlation_id", 1 << 10), ("message_id", 1 << 7))
_LATE_TEXT_FIELDS = (("message_type", 1 << 5), ("app_id", 1 << 3))
_OCTET_FIELDS = (("delivery_mode", 1 << 12), ("priority", 1 << 11))
_OTHER_FIELDS = (
    "content_type",
    "content_encoding",
    "reply_to",
    "expiration",
    "user_id",
    "cluster_id",
)


class _Properties(aiormq.spec.Basic.Properties):
    """The properties of the copy eventscope sends, marshalled in one step in the common shape.

    pamqp's ``marshal`` visits every field and dispatches each value by its AMQP type name:
    for eventscope's metadata that is most of what the extra properties cost a publish. When
    only text fields, an aware ``datetime`` timestamp and a header table of short text keys and
    text values are set, they are written here directly: the same bytes
    (tests/adapters/test_aio_pika_properties.py compares them). Anything else is pamqp's.
    """

    __slots__ = ()

    def marshal(self) -> bytes:
        try:
            for name in _OTHER_FIELDS:
                value = getattr(self, name)
                if value is not None and value != "":
                    raise Unusual
            flags = 0
            parts = []
            headers = self.headers
            if headers is not None and headers != "":
                if type(headers) is not dict:
                    raise Unusual
                table = []
                for key, value in sorted(headers.items()):
                    if type(key) is not str or type(value) is not str:
                        raise Unusual
                    encoded_key = key.encode("utf-8")
                    if len(encoded_key) > 128:  # pamqp truncates such keys, with a warning
                        raise Unusual
                    raw = value.encode("utf-8")
                    table.append(
                        SHORT_LENGTHS[len(encoded_key)] + encoded_key + b"S" + pack_long(len(raw)) + raw
                    )
                encoded = b"".join(table)
                flags = 1 << 13
                parts.append(pack_long(len(encoded)) + encoded)
            for name, flag in _OCTET_FIELDS:
                value = getattr(self, name)
                if value is not None and value != "":
                    if not isinstance(value, int) or not 0 <= value <= 255:  # DeliveryMode is an IntEnum
                        raise Unusual
                    flags |= flag
                    parts.append(SHORT_LENGTHS[value])
            for name, flag in _TEXT_FIELDS:
                value = getattr(self, name)
                if value is not None and value != "":
                    flags |= flag
                    parts.append(short_string(value))
            stamp = self.timestamp
            if stamp is not None and stamp != "":
                if type(stamp) is not dt.datetime or stamp.utcoffset() is None:
                    raise Unusual
                flags |= 1 << 6
                parts.append(pack_timestamp(int(stamp.timestamp())))
            for name, flag in _LATE_TEXT_FIELDS:
                value = getattr(self, name)
                if value is not None and value != "":
                    flags |= flag
                    parts.append(short_string(value))
        except (Unusual, AttributeError, struct.error):
            pass  # pamqp's own marshal below, outside this handler: its errors stay its own
        else:
            return struct.pack(">H", flags) + b"".join(parts)
        return super().marshal()


class _MessageCopy(Message):
    """The copy eventscope sends: a ``Message`` whose fields the adapter fills without
    aio-pika's per-assignment lock check (it is never locked; nobody else holds it)."""

    __slots__ = ()
    __setattr__ = object.__setattr__  # type: ignore[assignment]

    @property
    def properties(self) -> aiormq.spec.Basic.Properties:
        """What ``Message.properties`` builds (aio-pika's code), as properties that marshal in one step."""
        built = _message_properties(self)
        if type(built) is aiormq.spec.Basic.Properties:
            built.__class__ = _Properties  # same slots: only marshal() differs
        return built


_Properties.__slots__ = aiormq.spec.Basic.Properties.__slots__  # what pamqp iterates to marshal and compare
_message_properties = Message.properties.fget


def _copy_message(message: Any) -> Message:
    """A new unlocked ``Message`` with the fields of ``message``; ``message`` is never touched.

    Built field by field (``Message.__init__`` re-validates every field, and ``copy.copy``
    would share the headers dict). ``timestamp`` is filled here because aiormq encodes only
    a ``datetime``.
    """
    copy = _MessageCopy.__new__(_MessageCopy)
    put = object.__setattr__
    put(copy, "_Message__lock", False)
    for name in _MESSAGE_FIELDS:
        put(copy, name, getattr(message, name, None))
    if copy.timestamp is None:
        put(copy, "timestamp", _now())
    return copy


_second: tuple[int, dt.datetime] = (0, dt.datetime.fromtimestamp(0, dt.timezone.utc))


def _now() -> dt.datetime:
    """The current second as an aware ``datetime`` (AMQP timestamps are whole seconds), cached."""
    global _second
    now = int(time.time())
    if now != _second[0]:
        _second = (now, dt.datetime.fromtimestamp(now, dt.timezone.utc))
    return _second[1]


def _new_tracing(channel: Any, service: str | None, link_mode: str) -> AmqpTracing:
    host = port = None
    try:
        url = channel._connection.url
        host, port = url.host, url.port
    except Exception:
        pass
    return AmqpTracing(
        service=service,
        link_mode=link_mode,
        server_address=host,
        server_port=port,
        library=_LIBRARY,
        version=_VERSION,
    )


# The last channel looked up in each registry and what it holds: a weak reference, so a closed
# channel is still forgotten; calling it costs less than the weak dictionary's look-up, which
# makes a new weak reference every time. Only found entries are kept (a channel may be
# registered later; an entry never changes once made).
_last_tracing: tuple[Any, AmqpTracing | None] = (None, None)
_last_settlements: tuple[Any, Settlements | None] = (None, None)


def _tracing_for(channel: Any) -> AmqpTracing | None:
    global _last_tracing
    if not _channels or suppressed():
        return None
    reference, tracing = _last_tracing
    if reference is not None and reference() is channel and channel is not None:
        return tracing
    try:
        tracing = _channels.get(channel)
        if tracing is not None:
            _last_tracing = (weakref.ref(channel), tracing)
        return tracing
    except TypeError:  # an unhashable stand-in channel
        return None


def _settlements_for(message: Any, create: bool) -> Settlements | None:
    global _last_settlements
    underlay = getattr(message, "_IncomingMessage__channel", None)
    if underlay is None:
        return None
    reference, pending = _last_settlements
    if reference is not None and reference() is underlay:
        return pending
    pending = _settlements.get(underlay)
    if pending is None and create:
        pending = _settlements[underlay] = Settlements()
    if pending is not None:
        _last_settlements = (weakref.ref(underlay), pending)
    return pending


# -- publish ------------------------------------------------------------------------------
def _make_publish(following: Callable[..., Any], pristine: Callable[..., Any]) -> Callable[..., Any]:
    async def publish(self: Any, message: Any, routing_key: str, **kwargs: Any) -> Any:
        tracing = _tracing_for(getattr(self, "channel", None))
        if tracing is None:
            return await following.__get__(self, type(self))(message, routing_key, **kwargs)
        traced: Publish | None = None
        try:
            traced = tracing.start_publish(self.name, routing_key, message.body, message, _copy_message)
        except Exception as exc:
            failures.record("publish tracing", exc)
        if traced is None:
            return await pristine(self, message, routing_key, **kwargs)
        try:
            result = await pristine(self, traced.properties, routing_key, **kwargs)
        except BaseException as exc:  # a nack, a closed channel, a cancelled task: recorded, re-raised
            try:
                traced.fail(exc)
            except Exception as inner:
                failures.record("publish tracing", inner)
            raise
        try:
            if isinstance(result, aiormq.abc.DeliveredMessage):
                delivery = result.delivery
                traced.returned(getattr(delivery, "reply_code", None), getattr(delivery, "reply_text", ""))
            else:
                traced.span.end()
        except Exception as exc:
            failures.record("publish tracing", exc)
        return result

    publish.__wrapped__ = following  # type: ignore[attr-defined]
    publish._eventscope = True  # type: ignore[attr-defined]
    return publish


# -- consume ------------------------------------------------------------------------------
def _start(
    tracing: AmqpTracing,
    operation: str,
    queue: str,
    message: Any,
    auto_ack: bool,
    start_time: int | None = None,
    current: Any = None,
) -> Delivery | None:
    try:
        delivery = tracing.start_delivery(  # positional: cheaper than keywords on every delivery
            operation,
            queue,
            message.exchange or "",
            message.routing_key or "",
            message.delivery_tag,
            message.redelivered,
            message,
            message.body,
            auto_ack,
            start_time,
            current,
        )
        if not auto_ack:
            pending = _settlements_for(message, create=True)
            if pending is not None:
                pending.track(delivery)
        return delivery
    except Exception as exc:
        failures.record("consume tracing", exc)
        return None


def _finish(delivery: Delivery) -> None:
    try:
        delivery.finish()
    except Exception as exc:
        failures.record("consume tracing", exc)


def _traced_callback(
    callback: Callable[..., Any], tracing: AmqpTracing, queue: str, auto_ack: bool
) -> Callable[..., Any]:
    """A process span around ``callback``; aio-pika runs it in a task of its own per message."""

    async def traced(message: Any) -> Any:
        current = compat.get_current()
        delivery = (
            None
            if suppressed(current)
            else _start(tracing, A.OP_PROCESS, queue, message, auto_ack, None, current)
        )
        if delivery is None:
            result = callback(message)
            return await result if inspect.isawaitable(result) else result
        token = compat.attach(delivery.context)
        # the async twin of pika.py's traced callback (an await in the middle), parallel on purpose
        try:
            result = callback(message)
            return await result if inspect.isawaitable(result) else result
        except BaseException as exc:
            try:
                delivery.fail(exc)
            except Exception as inner:
                failures.record("consume tracing", inner)
            raise
        finally:
            compat.detach(token)
            _finish(delivery)

    traced.__wrapped__ = callback  # type: ignore[attr-defined]
    return traced


def _make_consume(following: Callable[..., Any], pristine: Callable[..., Any]) -> Callable[..., Any]:
    async def consume(self: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
        tracing = _tracing_for(getattr(self, "channel", None))
        if tracing is None:
            return await following.__get__(self, type(self))(callback, *args, **kwargs)
        # A queue iterator consumes through ``on_message``: its spans start in ``__anext__``.
        if isinstance(getattr(callback, "__self__", None), QueueIterator):
            return await pristine(self, callback, *args, **kwargs)
        traced = callback
        try:
            auto_ack = bool(kwargs.get("no_ack", args[0] if args else False))
            traced = _traced_callback(callback, tracing, self.name, auto_ack)
        except Exception as exc:
            failures.record("consume tracing", exc)
        return await pristine(self, traced, *args, **kwargs)

    consume.__wrapped__ = following  # type: ignore[attr-defined]
    consume._eventscope = True  # type: ignore[attr-defined]
    return consume


def _make_get(original: Callable[..., Any]) -> Callable[..., Any]:
    async def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracing = _tracing_for(getattr(self, "channel", None))
        if tracing is None:
            return await original(self, *args, **kwargs)
        start = time.time_ns()
        message = await original(self, *args, **kwargs)
        if message is not None:
            delivery = _start(
                tracing, A.OP_RECEIVE, self.name, message, bool(kwargs.get("no_ack")), start_time=start
            )
            if delivery is not None:
                _finish(delivery)
        return message

    get.__wrapped__ = original  # type: ignore[attr-defined]
    return get


class _IteratorState:
    """The message a queue iterator handed out last: its delivery and the context token."""

    __slots__ = ("busy", "delivery", "token")

    def __init__(self) -> None:
        self.busy = False
        self.delivery: Delivery | None = None
        self.token: Any = None

    def close(self, detach: bool = True) -> None:
        token, delivery = self.token, self.delivery
        self.token = self.delivery = None
        if token is not None and detach:
            try:
                context.detach(token)
            except Exception as exc:  # closed from another task: the context is not ours to reset
                failures.record("consume tracing", exc)
        if delivery is not None:
            _finish(delivery)

    def left(self) -> None:
        """The loop that iterated was left (``break``, ``return``, an exception): end its span.

        The context is detached only where it is still the delivery's own, i.e. in the task
        that iterated with nothing attached on top; anywhere else it is left alone.
        """
        delivery = self.delivery
        if delivery is None:
            return
        self.close(detach=self.token is not None and context.get_current() is delivery.context)


def _iterator_state(iterator: Any) -> _IteratorState:
    state = iterator.__dict__.get("_eventscope_state")
    if state is None:
        state = iterator.__dict__["_eventscope_state"] = _IteratorState()
        # An iterator dropped without ``close()`` (``async for ... break`` with no ``async with``)
        # ends its last span when it is collected; the context is not touched from there.
        weakref.finalize(iterator, state.close, False)
    return state


class _Loop:
    """What ``async for`` iterates on a traced queue iterator: its ``__anext__``, and a signal.

    ``async for`` holds the object ``__aiter__`` returns and nothing else does, so when the
    loop is left (``break`` included, with or without ``async with``) CPython drops it at
    once and ``__del__`` ends the last message's span there, instead of when the queue
    iterator is collected (its consumer keeps it alive while the channel is open).
    """

    __slots__ = ("_iterator",)

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    def __aiter__(self) -> _Loop:
        return self

    def __anext__(self) -> Any:
        return self._iterator.__anext__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)

    def __del__(self) -> None:
        try:
            state = self._iterator.__dict__.get("_eventscope_state")
            if state is not None:
                state.left()
        except Exception as exc:
            failures.record("consume tracing", exc)


def _make_aiter(original: Callable[..., Any]) -> Callable[..., Any]:
    def aiter(self: Any) -> Any:
        iterator = original(self)
        if iterator is not self or not _channels:
            return iterator
        try:
            if _tracing_for(self._amqp_queue.channel) is not None:
                return _Loop(self)
        except Exception as exc:
            failures.record("consume tracing", exc)
        return iterator

    aiter.__wrapped__ = original  # type: ignore[attr-defined]
    return aiter


def _make_anext(original: Callable[..., Any]) -> Callable[..., Any]:
    async def anext(self: Any) -> Any:
        if not _channels:
            return await original(self)
        try:
            state = _iterator_state(self)
        except Exception as exc:
            failures.record("consume tracing", exc)
            return await original(self)
        if state.busy:  # a subclass's __anext__ calling ours
            return await original(self)
        state.close()
        state.busy = True
        try:
            message = await original(self)
        finally:
            state.busy = False
        queue = self._amqp_queue
        tracing = _tracing_for(queue.channel)
        if tracing is not None:
            auto_ack = bool(self._consume_kwargs.get("no_ack", False))
            delivery = _start(tracing, A.OP_PROCESS, queue.name, message, auto_ack)
            if delivery is not None:
                delivery.end_on_settle = True
                state.delivery = delivery
                state.token = context.attach(delivery.context)
        return message

    anext.__wrapped__ = original  # type: ignore[attr-defined]
    return anext


def _make_close(original: Callable[..., Any]) -> Callable[..., Any]:
    async def close(self: Any) -> Any:
        state = self.__dict__.get("_eventscope_state")
        if state is not None:
            state.close()
        return await original(self)

    close.__wrapped__ = original  # type: ignore[attr-defined]
    return close


# -- settle -------------------------------------------------------------------------------
def _settled(message: Any, multiple: bool, operation: str, requeue: bool | None) -> None:
    if not _settlements:
        return
    outcome = A.OUTCOME_REQUEUE if requeue else _OUTCOMES.get(operation, A.OUTCOME_REJECT)
    try:
        pending = _settlements_for(message, create=False)
        if pending is not None:
            pending.settle(message.delivery_tag, multiple, outcome, operation, requeue)
    except Exception as exc:
        failures.record("settle tracing", exc)


def _make_ack(original: Callable[..., Any]) -> Callable[..., Any]:
    async def ack(self: Any, multiple: bool = False) -> None:
        await original(self, multiple)
        _settled(self, multiple, "ack", None)

    ack.__wrapped__ = original  # type: ignore[attr-defined]
    return ack


def _make_nack(original: Callable[..., Any]) -> Callable[..., Any]:
    async def nack(self: Any, multiple: bool = False, requeue: bool = True) -> None:
        await original(self, multiple, requeue)
        _settled(self, multiple, "nack", bool(requeue))

    nack.__wrapped__ = original  # type: ignore[attr-defined]
    return nack


def _make_reject(original: Callable[..., Any]) -> Callable[..., Any]:
    async def reject(self: Any, requeue: bool = False) -> None:
        await original(self, requeue)
        _settled(self, False, "reject", bool(requeue))

    reject.__wrapped__ = original  # type: ignore[attr-defined]
    return reject


def _make_process_exit(original: Callable[..., Any]) -> Callable[..., Any]:
    async def process_exit(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
        if exc_val is not None and _settlements:
            try:
                pending = _settlements_for(self.message, create=False)
                delivery = pending.get(self.message.delivery_tag) if pending is not None else None
                if delivery is not None:
                    delivery.fail(exc_val)  # then the reject it chooses sets the outcome
            except Exception as exc:
                failures.record("consume tracing", exc)
        return await original(self, exc_type, exc_val, exc_tb)

    process_exit.__wrapped__ = original  # type: ignore[attr-defined]
    return process_exit


# -- hooks --------------------------------------------------------------------------------
def _hook(cls: type, name: str, make: Callable[..., Any], *, layered: bool = False) -> None:
    """Put eventscope's wrapper on ``cls.name``; a layered one keeps the one below (bound per call,
    wrapt's wrappers are descriptors) and aio-pika's own function to call for traced channels."""
    current = cls.__dict__[name]
    if getattr(current, "_eventscope", False):
        return
    if layered:  # publish/consume: OTel may wrap them too; keep the way to aio-pika's own
        wrapper = make(current, inspect.unwrap(current))
    else:
        if (cls, name) in _patched:
            return
        wrapper = make(current)
        wrapper._eventscope = True
    _patched.setdefault((cls, name), current)
    setattr(cls, name, wrapper)


def _ensure_hooks() -> None:
    """Hook aio-pika's classes once; publish/consume again if another wrapper went on top."""
    with _lock:
        _hook(Exchange, "publish", _make_publish, layered=True)
        _hook(Queue, "consume", _make_consume, layered=True)
        _hook(Queue, "get", _make_get)
        for cls in (QueueIterator, RobustQueueIterator):
            if "__anext__" in cls.__dict__:
                _hook(cls, "__anext__", _make_anext)
        _hook(QueueIterator, "close", _make_close)
        _hook(QueueIterator, "__aiter__", _make_aiter)
        _hook(IncomingMessage, "ack", _make_ack)
        _hook(IncomingMessage, "nack", _make_nack)
        _hook(IncomingMessage, "reject", _make_reject)
        _hook(ProcessContext, "__aexit__", _make_process_exit)


# -- public API ---------------------------------------------------------------------------
def instrument_channel(channel: Any, *, service: str | None = None, link_mode: str = "parent") -> Any:
    """Trace ``channel`` (an aio-pika channel, robust or not, opened or still to be awaited).

    Returns the channel itself, so everything about it stays aio-pika's; its exchanges and
    queues, declared before or after, are traced. ``service`` and ``link_mode`` as in the
    pika adapter. A channel that is already traced keeps its first settings. Bad arguments
    raise ``ValueError`` at once.
    """
    if link_mode not in LINK_MODES:
        raise ValueError(f"link_mode must be one of {LINK_MODES}, not {link_mode!r}")
    _ensure_hooks()
    if channel not in _channels:
        _channels[channel] = _new_tracing(channel, service, link_mode)
    return channel


def install(*, service: str | None = None, link_mode: str = "parent") -> None:
    """Trace every aio-pika channel opened from now on (robust connections, FastStream); idempotent.

    Hooks ``Connection.channel`` (``RobustConnection.channel`` goes through it) so every new
    channel is registered. ``uninstall()`` stops that for channels opened afterwards.
    """
    if link_mode not in LINK_MODES:
        raise ValueError(f"link_mode must be one of {LINK_MODES}, not {link_mode!r}")
    _ensure_hooks()
    with _lock:
        if _installed:
            return
        original = Connection.channel

        def channel(self: Any, *args: Any, **kwargs: Any) -> Any:
            opened = original(self, *args, **kwargs)
            try:
                if opened not in _channels:
                    _channels[opened] = _new_tracing(opened, service, link_mode)
            except Exception as exc:
                failures.record("instrument channel", exc)
            return opened

        channel.__wrapped__ = original  # type: ignore[attr-defined]
        _installed["channel"] = original
        Connection.channel = channel  # type: ignore[method-assign]


def uninstall() -> None:
    """Undo ``install()``: channels opened from now on are untraced (traced ones stay traced)."""
    with _lock:
        if _installed:
            Connection.channel = _installed.pop("channel")  # type: ignore[method-assign]
