"""Each instrumentation's dialect, in one place: how its spans name routes and what they mean.

OpenTelemetry instrumentations of RabbitMQ clients agree on little beyond the span kind.
They differ in how they name the exchange, the routing key and the queue, and above all in
what the end of a consumer span says about the message's settle: eventscope's adapters
write the outcome; ``@opentelemetry/instrumentation-amqplib`` ends its ``process`` span *at*
the ack/nack/reject; the Python ``pika`` and ``aio-pika`` instrumentations end theirs when the
callback returns (or, for pika's ``consume()`` generator, when the message is taken) and
never see the settle at all. A dialect is chosen by the span's instrumentation scope name
(its version is passed for the dialects that need it); every reader of the normaliser goes
through :func:`dialect_for`, so the protobuf-object path and the wire reader read alike.

An orphan is never a guess: a dialect that cannot tell an ack from "still processing" says
``unknown`` (``contract.OUTCOME_UNKNOWN``) and broker truth decides (docs/sql.md). Unknown
instrumentations keep the conservative reading of :class:`Dialect` (no outcome recorded →
unsettled). docs/collector.md lists the dialects and how to add one.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from eventscope.tracer import contract as A

__all__ = ["AioPikaDialect", "AmqplibDialect", "Dialect", "PikaDialect", "dialect_for"]

logger = logging.getLogger(__name__)

_SEND_OPERATIONS = frozenset({A.OP_SEND, "publish", "create"})
_DELIVERY_OPERATIONS = frozenset({A.OP_PROCESS, A.OP_RECEIVE, "deliver"})
_TEMP_DESTINATION = "messaging.temp_destination"


def text(value: Any) -> str | None:
    """An attribute value as text, or None (no value, an empty one, a map or a list)."""
    if type(value) is str:  # nearly every value: the checks below only for the others
        return value or None
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    rendered = str(value)
    return rendered or None


class Dialect:
    """The conservative reading: eventscope's adapters, and any instrumentation not listed.

    Every method takes the span's attributes with legacy names already mapped to current ones
    (``contract.LEGACY``), so subclasses override only what their instrumentation says
    differently.
    """

    name = "generic"

    def operation(self, attributes: dict[str, Any], kind: int) -> str | None:
        """``send`` / ``process`` / ``receive`` / ``settle``, or None for non-messaging spans."""
        operation = text(attributes.get(A.MESSAGING_OPERATION_TYPE))
        if operation is not None:
            operation = operation.lower()
        if A.MESSAGING_SYSTEM not in attributes and operation is None:
            return None
        if operation in _SEND_OPERATIONS or (operation is None and kind == A.SPAN_KIND_PRODUCER):
            return A.OP_SEND
        if operation in _DELIVERY_OPERATIONS or (operation is None and kind == A.SPAN_KIND_CONSUMER):
            return A.OP_PROCESS if operation in (A.OP_PROCESS, "deliver") else A.OP_RECEIVE
        if operation == A.OP_SETTLE:
            return A.OP_SETTLE
        return None

    def route(self, attributes: dict[str, Any], span_name: str) -> tuple[str | None, str | None]:
        """(exchange, routing key) of a publish; ``""`` is the default exchange."""
        routing_key = text(attributes.get(A.MESSAGING_ROUTING_KEY))
        # Other instrumentations name only a destination: the exchange, or for the default
        # exchange the routing key. Best effort.
        raw_exchange = attributes.get(A.EXCHANGE)
        if raw_exchange is None:
            return text(attributes.get(A.MESSAGING_DESTINATION_NAME)), routing_key
        return str(raw_exchange), routing_key

    def queue(self, attributes: dict[str, Any], span_name: str) -> str | None:
        """The queue a delivery came from, None when the span does not say."""
        return (
            text(attributes.get(A.QUEUE))
            or text(attributes.get(A.MESSAGING_CONSUMER_GROUP))
            or text(attributes.get(A.MESSAGING_DESTINATION_NAME))
        )

    def outcome(self, attributes: dict[str, Any], *, status: str, status_message: str) -> str | None:
        """The delivery's settle outcome as far as its consumer span tells (None: unsettled)."""
        outcome = text(attributes.get(A.SETTLE_OUTCOME))
        if outcome not in A.OUTCOMES:
            outcome = None
        if status == "ERROR" and outcome is None:
            return A.OUTCOME_ERROR
        return outcome


class PikaDialect(Dialect):
    """``opentelemetry-instrumentation-pika``: pre-1.2x names and no settle at all.

    Its ``messaging.destination`` is the exchange, or the routing key for the default
    exchange; it never names the queue of a delivery nor the routing key of a publish. Its
    consumer span ends when the callback returns (``basic_consume``) or when the message is
    taken (``consume()``), and acks are not traced: an ack and "still processing" look the
    same, so the outcome is ``unknown`` unless the callback raised.
    """

    name = "opentelemetry-instrumentation-pika"

    def queue(self, attributes: dict[str, Any], span_name: str) -> str | None:
        return None

    def outcome(self, attributes: dict[str, Any], *, status: str, status_message: str) -> str | None:
        return A.OUTCOME_ERROR if status == "ERROR" else A.OUTCOME_UNKNOWN


class AioPikaDialect(PikaDialect):
    """``opentelemetry-instrumentation-aio-pika``: like pika's, but a publish's
    ``messaging.destination`` is ``"EXCHANGE,ROUTING_KEY"`` (``messaging.temp_destination``
    set, no operation); its consumer span covers the callback, never the settle.
    """

    name = "opentelemetry-instrumentation-aio-pika"

    def route(self, attributes: dict[str, Any], span_name: str) -> tuple[str | None, str | None]:
        destination = attributes.get(A.MESSAGING_DESTINATION_NAME)
        if isinstance(destination, str) and "," in destination:
            # aio-pika joins them unescaped: a comma in an exchange name cannot be told apart,
            # one in a routing key (more common) stays in the routing key.
            exchange, routing_key = destination.split(",", 1)
            return exchange, routing_key or None
        return super().route(attributes, span_name)


class AmqplibDialect(Dialect):
    """``@opentelemetry/instrumentation-amqplib`` (Node.js).

    ``messaging.destination`` is the exchange (``""`` for the default one) on both sides,
    the routing key is ``messaging.rabbitmq.routing_key``, and the queue is only in the
    consumer span's name (``"<queue> process"``). The ``process`` span ends when the message
    is settled: by an ack with status UNSET, by a nack/reject with status ERROR and the
    message ``"nack called on message with(out) requeue"``, by a closed channel with ERROR
    ``"channel closed"`` / ``"channel error"`` (the broker requeues the message: no
    outcome). With ``noAck`` the span ends after the callback, UNSET: an auto-ack. Its
    optional ``consumeTimeoutMs`` ends spans with ERROR ``"instrumentation timeout ..."``:
    the message may still be in the handler, so that one is ``unknown``.
    """

    name = "@opentelemetry/instrumentation-amqplib"
    _PROCESS_SUFFIX = " process"

    def operation(self, attributes: dict[str, Any], kind: int) -> str | None:
        if kind == A.SPAN_KIND_PRODUCER and A.MESSAGING_DESTINATION_NAME in attributes:
            return A.OP_SEND  # it sets messaging.system only when the server names its product
        return super().operation(attributes, kind)

    def route(self, attributes: dict[str, Any], span_name: str) -> tuple[str | None, str | None]:
        exchange = attributes.get(A.MESSAGING_DESTINATION_NAME)
        routing_key = text(attributes.get(A.MESSAGING_ROUTING_KEY))
        return (exchange if isinstance(exchange, str) else None), routing_key

    def queue(self, attributes: dict[str, Any], span_name: str) -> str | None:
        if span_name.endswith(self._PROCESS_SUFFIX):
            return span_name[: -len(self._PROCESS_SUFFIX)] or None
        return None

    def outcome(self, attributes: dict[str, Any], *, status: str, status_message: str) -> str | None:
        if status != "ERROR":
            return A.OUTCOME_ACK
        message = status_message.lower()
        if message.startswith(("nack", "reject")):
            settle = A.OUTCOME_REJECT if message.startswith("reject") else A.OUTCOME_NACK
            # amqplib's nack/reject requeue by default: only "without requeue" drops the message
            return settle if "without requeue" in message else A.OUTCOME_REQUEUE
        if message.startswith("channel"):
            return None  # closed or failed channel: the broker requeues what was unacked
        if message.startswith("instrumentation timeout"):
            return A.OUTCOME_UNKNOWN  # its consumeTimeoutMs gave up waiting, the handler may not have
        return A.OUTCOME_ERROR


_GENERIC = Dialect()
_BY_SCOPE: dict[str, Dialect] = {
    "opentelemetry.instrumentation.pika": PikaDialect(),
    "opentelemetry.instrumentation.aio_pika": AioPikaDialect(),
    "@opentelemetry/instrumentation-amqplib": AmqplibDialect(),
}


@functools.lru_cache(maxsize=256)
def dialect_for(scope_name: str, scope_version: str = "") -> Dialect:
    """The dialect of spans from the instrumentation scope ``scope_name`` (a module path such
    as ``opentelemetry.instrumentation.pika.pika_instrumentor`` matches its package).
    """
    name = scope_name
    while name:
        dialect = _BY_SCOPE.get(name)
        if dialect is not None:
            return dialect
        name = name.rpartition(".")[0]
    return _GENERIC
