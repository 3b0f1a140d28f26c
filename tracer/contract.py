"""The wire contract both sides share: what the adapters write and the collector reads.

* Span attribute names: the OpenTelemetry messaging conventions we emit, and eventscope's own.
  The ``messaging.*`` names follow the current (1.2x+) messaging semantic conventions; the
  pre-1.2x names that other instrumentations still emit (e.g.
  ``opentelemetry-instrumentation-pika``) are listed in ``LEGACY`` for readers.
* AMQP header names of the event metadata and the W3C trace context, how a header value is
  read (:func:`decode_header`), how a ``traceparent`` is parsed (:func:`parse_traceparent`)
  and how an event id is made (:func:`new_event_id`).
* OTLP's SpanKind codes and names.

Pure Python with no OpenTelemetry import: the collector reads the contract without loading
the SDK, and services write it without loading DuckDB. docs/adapters.md describes it for users.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any, Final

# AMQP headers (docs/adapters.md, "Wire metadata").
TRACEPARENT_HEADER: Final = "traceparent"
TRACESTATE_HEADER: Final = "tracestate"
CAUSATION_HEADER: Final = "x-causation-id"
CORRELATION_HEADER: Final = "x-correlation-id"
_MAX_HEADER_CHARS = 8192  # W3C baggage's own limit; longer values are not trace context
_HEX = frozenset("0123456789abcdef")
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def decode_header(value: Any) -> str | None:
    """A header value as ``str``, or ``None`` when it is not text (or absurdly long).

    pika decodes AMQP long strings as ``bytes`` or ``str`` depending on content, and foreign
    producers put anything in a header table: this never raises.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and len(value) <= _MAX_HEADER_CHARS:
        return value
    return None


def parse_traceparent(value: str | None) -> tuple[int, int, int] | None:
    """A W3C ``traceparent`` as ``(trace_id, span_id, flags)``, or ``None`` when not valid.

    Same acceptance as OpenTelemetry's TraceContext propagator (version 00 exactly 55
    characters; later versions may append fields; ``ff`` is invalid; zero ids are invalid).
    Hand-written because extracting through the generic propagator costs several microseconds
    a message on the consumer's hot path (bench/README.md, micro-benchmarks).
    """
    if value is None:
        return None
    usual = _TRACEPARENT_00.fullmatch(value)
    if usual is not None:  # the usual shape, in one C-level match: version 00, nothing around it
        trace_hex, span_hex, flags_hex = usual.groups()
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        return (trace_id, span_id, int(flags_hex, 16)) if trace_id and span_id else None
    value = value.strip(" \t")
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version, trace_hex, span_hex, flags_hex = value[:2], value[3:35], value[36:52], value[53:55]
    if version == "ff" or (version == "00" and len(value) != 55) or (len(value) > 55 and value[55] != "-"):
        return None
    if not _HEX.issuperset(version + trace_hex + span_hex + flags_hex):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(flags_hex, 16)


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562) as text: time-ordered, so IDs sort by creation time.

    The random bits come from ``random`` (reseeded after fork), as OpenTelemetry's span
    ids do: event IDs must be unique, not unguessable.
    """
    ms = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF
    rand = random.getrandbits(80)  # like OTel's span ids: unique, not secret, no syscall
    # the five groups formatted at once: 48-bit time, version 7 + 12 random bits,
    # variant 0b10 + 14 random bits, 48 random bits (the same text as slicing 32 hex digits)
    return (
        f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{0x7000 | rand >> 68 & 0xFFF:04x}"
        f"-{0x8000 | rand >> 48 & 0x3FFF:04x}-{rand & 0xFFFF_FFFF_FFFF:012x}"
    )


# OpenTelemetry messaging semantic conventions (current names).
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_ROUTING_KEY: Final = "messaging.rabbitmq.destination.routing_key"
MESSAGING_DELIVERY_TAG: Final = "messaging.rabbitmq.message.delivery_tag"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
MESSAGING_CONVERSATION_ID: Final = "messaging.message.conversation_id"
MESSAGING_BODY_SIZE: Final = "messaging.message.body.size"
MESSAGING_CONSUMER_GROUP: Final = "messaging.consumer.group.name"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"

# eventscope's own attributes: the event metadata of docs/adapters.md, "Wire metadata".
EVENT_TYPE: Final = "eventscope.event.type"
CAUSATION_ID: Final = "eventscope.causation_id"
CORRELATION_ID: Final = "eventscope.correlation_id"
EXCHANGE: Final = "eventscope.exchange"
QUEUE: Final = "eventscope.queue"
PRODUCER: Final = "eventscope.producer"
REDELIVERED: Final = "eventscope.redelivered"
DEATH_COUNT: Final = "eventscope.x_death.count"
DEATH_REASON: Final = "eventscope.x_death.reason"
SETTLE_OUTCOME: Final = "eventscope.settle.outcome"
SETTLE_REQUEUE: Final = "eventscope.settle.requeue"
AUTO_ACK: Final = "eventscope.auto_ack"

# Values.
SYSTEM_RABBITMQ: Final = "rabbitmq"
OP_SEND: Final = "send"
OP_PROCESS: Final = "process"
OP_RECEIVE: Final = "receive"
OP_SETTLE: Final = "settle"
DEFAULT_EXCHANGE: Final = "amq.default"

# Outcomes of a delivery (the ``deliveries.outcome`` column of the SQL surface).
OUTCOME_ACK: Final = "ack"
OUTCOME_NACK: Final = "nack"
OUTCOME_REJECT: Final = "reject"
OUTCOME_REQUEUE: Final = "requeue"
OUTCOME_ERROR: Final = "error"
# The instrumentation cannot tell an ack from "still processing" (it records no settle):
# broker truth decides whether such a delivery is an orphan (docs/sql.md, "Orphans").
OUTCOME_UNKNOWN: Final = "unknown"
OUTCOMES: Final = frozenset(
    {OUTCOME_ACK, OUTCOME_NACK, OUTCOME_REJECT, OUTCOME_REQUEUE, OUTCOME_ERROR, OUTCOME_UNKNOWN}
)

# AMQP 0-9-1 basic properties, as pika's BasicProperties names them (headers apart: a table).
AMQP_PROPERTIES: Final = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)

# RabbitMQ's direct reply-to pseudo-queue: replies sent to it bypass every real queue.
DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"

# OTLP ``Span.SpanKind`` numbers and their names, as both sides of the wire write and read
# them (the SDK encoder, the collector's readers, the store and ``testing``).
SPAN_KIND_INTERNAL: Final = 1
SPAN_KIND_SERVER: Final = 2
SPAN_KIND_CLIENT: Final = 3
SPAN_KIND_PRODUCER: Final = 4
SPAN_KIND_CONSUMER: Final = 5
SPAN_KINDS: Final = {
    0: "UNSPECIFIED",
    SPAN_KIND_INTERNAL: "INTERNAL",
    SPAN_KIND_SERVER: "SERVER",
    SPAN_KIND_CLIENT: "CLIENT",
    SPAN_KIND_PRODUCER: "PRODUCER",
    SPAN_KIND_CONSUMER: "CONSUMER",
}
SPAN_KIND_CODES: Final = {name: code for code, name in SPAN_KINDS.items()}

# Why an event is an orphan (the ``orphans.reason`` column of the SQL surface).
ORPHAN_REASONS: Final = (
    "unroutable",
    "unconsumed",
    "unacked",
    "failed",
    "dead_lettered",
    "expired",
    "missing_consumer",
)

# Pre-1.2x names still emitted by other instrumentations, mapped to the current ones.
LEGACY: Final = {
    "messaging.destination": MESSAGING_DESTINATION_NAME,
    "messaging.operation": MESSAGING_OPERATION_TYPE,
    "messaging.conversation_id": MESSAGING_CONVERSATION_ID,
    "messaging.message_id": MESSAGING_MESSAGE_ID,
    "messaging.rabbitmq.routing_key": MESSAGING_ROUTING_KEY,
    "messaging.message_payload_size_bytes": MESSAGING_BODY_SIZE,
    "net.peer.name": SERVER_ADDRESS,
    "net.peer.port": SERVER_PORT,
}
