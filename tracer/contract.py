"""The wire contract both sides share: span attribute names, outcome values, span kinds.

Span attribute names: the OpenTelemetry messaging conventions we emit, and eventscope's own.

The adapters write these and the collector reads them, so they live in one place. The
``messaging.*`` names follow the current (1.2x+) messaging semantic conventions; the
pre-1.2x names that other instrumentations still emit (e.g.
``opentelemetry-instrumentation-pika``) are listed in ``LEGACY`` for readers.
"""

from __future__ import annotations

from typing import Final

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

# eventscope's own attributes: the event metadata of DESIGN.md "Wire metadata".
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
