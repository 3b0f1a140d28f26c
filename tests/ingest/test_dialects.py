"""Each instrumentation's dialect, read by scope, the same through the wire reader and the
protobuf runtime. The span shapes are those the real instrumentations emit (tests/interop runs
them against the broker; these pin each reading rule on its own).
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from eventscope.tracer import contract as A
from eventscope.tracer.ingest.dialects import (
    AioPikaDialect,
    AmqplibDialect,
    Dialect,
    PikaDialect,
    dialect_for,
)
from eventscope.tracer.ingest.normaliser import Normalised, normalise, normalise_protobuf
from tests.spans import CONSUMER, PRODUCER, new_span_id, new_trace, span

AMQPLIB = "@opentelemetry/instrumentation-amqplib"
PIKA = "opentelemetry.instrumentation.pika.pika_instrumentor"
AIO_PIKA = "opentelemetry.instrumentation.aio_pika"


def scoped(scope: str, *spans: Span, version: str = "1.0") -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.scope.version = version
    scope_spans.spans.extend(spans)
    return message


def both(message: ExportTraceServiceRequest) -> Normalised:
    """The rows of ``message`` read by both paths, which must agree."""
    body = message.SerializeToString()
    expected = normalise(ExportTraceServiceRequest.FromString(body))
    read = normalise_protobuf(body)
    assert read is not None
    for name in ("spans", "events", "deliveries", "edges", "settle_needs", "delivery_needs"):
        assert getattr(read, name) == getattr(expected, name), name
    return read


def with_status(message: Span, text: str) -> Span:
    message.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=text))
    return message


def amqplib_process(status: str | None) -> Span:
    message = span(
        "orders-queue process",
        CONSUMER,
        trace_id=new_trace(),
        attributes={
            "messaging.system": "RabbitMQ",
            "messaging.destination": "shop",
            "messaging.destination_kind": "topic",
            "messaging.rabbitmq.routing_key": "order.placed",
            "messaging.operation": "process",
            "messaging.message_id": "evt-1",
        },
    )
    return message if status is None else with_status(message, status)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (None, A.OUTCOME_ACK),  # ended by the ack: UNSET, nothing else said
        ("nack called on message without requeue", A.OUTCOME_NACK),
        ("nack called on message with requeue", A.OUTCOME_REQUEUE),
        ("nack called on message", A.OUTCOME_REQUEUE),  # amqplib's default requeues
        ("reject called on message without requeue", A.OUTCOME_REJECT),
        ("reject called on message with requeue", A.OUTCOME_REQUEUE),
        ("nackAll called on message without requeue", A.OUTCOME_NACK),
        ("channel closed", None),  # the broker requeues it: not settled by the consumer
        ("channel error", None),
        ("instrumentation timeout called on message with requeue", A.OUTCOME_UNKNOWN),
    ],
)
def test_amqplib_process_span_ends_at_its_settle(status: str | None, outcome: str | None) -> None:
    out = both(scoped(AMQPLIB, amqplib_process(status)))
    [delivery] = out.deliveries
    assert (delivery["event_id"], delivery["queue"], delivery["outcome"]) == (
        "evt-1",
        "orders-queue",
        outcome,
    )
    assert delivery["settled_at"] == (
        None if outcome in (None, A.OUTCOME_UNKNOWN) else out.spans[0]["end_time"]
    )
    assert delivery["error"] == status


def test_amqplib_publish_names_exchange_and_routing_key_even_without_a_system() -> None:
    message = span(
        "publish <default>",
        PRODUCER,
        trace_id=new_trace(),
        attributes={"messaging.destination": "", "messaging.rabbitmq.routing_key": "jobs"},
    )
    [event] = both(scoped(AMQPLIB, message)).events
    assert (event["exchange"], event["routing_key"], event["event_type"]) == ("", "jobs", "jobs")


def test_aio_pika_publish_destination_is_split_into_exchange_and_routing_key() -> None:
    trace_id = new_trace()
    published = [
        span(
            f"{destination} send",
            PRODUCER,
            trace_id=trace_id,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination": destination,
                "messaging.temp_destination": True,
                "messaging.message.id": f"evt-{i}",
            },
        )
        for i, destination in enumerate(("shop,order.placed", ",jobs", "shop,a,b"))
    ]
    events = both(scoped(AIO_PIKA, *published)).events
    assert [(e["exchange"], e["routing_key"]) for e in events] == [
        ("shop", "order.placed"),
        ("", "jobs"),
        ("shop", "a,b"),
    ]


@pytest.mark.parametrize("scope", [PIKA, AIO_PIKA])
def test_python_otel_consumers_cannot_tell_an_ack_so_say_unknown(scope: str) -> None:
    trace_id = new_trace()
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.destination": "shop",
        "messaging.operation": "receive",
        "messaging.message.id": "evt-1",
    }
    handled = span("shop receive", CONSUMER, trace_id=trace_id, attributes=attributes)
    raised = span("shop receive", CONSUMER, trace_id=trace_id, attributes=attributes, error=True)
    deliveries = both(scoped(scope, handled, raised)).deliveries
    # the destination is the exchange, never the queue: the queue stays unknown
    assert [(d["queue"], d["outcome"], d["settled_at"]) for d in deliveries] == [
        (None, A.OUTCOME_UNKNOWN, None),
        (None, A.OUTCOME_ERROR, deliveries[1]["settled_at"]),
    ]
    assert deliveries[1]["settled_at"] is not None


def test_unknown_instrumentations_keep_the_conservative_reading() -> None:
    message = span(
        "shop receive",
        CONSUMER,
        trace_id=new_trace(),
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination": "shop",
            "messaging.operation": "receive",
        },
    )
    [delivery] = both(scoped("some.other.instrumentation", message)).deliveries
    assert (delivery["queue"], delivery["outcome"]) == ("shop", None)  # unsettled, as before
    # the same span from amqplib's scope would have been an ack
    assert both(scoped(AMQPLIB, message)).deliveries[0]["outcome"] == A.OUTCOME_ACK


@pytest.mark.parametrize(
    ("scope", "dialect"),
    [
        (AMQPLIB, AmqplibDialect),
        (PIKA, PikaDialect),
        ("opentelemetry.instrumentation.pika", PikaDialect),
        ("opentelemetry.instrumentation.aio_pika", AioPikaDialect),
        ("opentelemetry.instrumentation.pikachu", Dialect),  # a package prefix, not a string prefix
        ("eventscope.adapters.pika", Dialect),
        ("", Dialect),
    ],
)
def test_dialect_is_chosen_by_scope(scope: str, dialect: type[Any]) -> None:
    assert type(dialect_for(scope)) is dialect


def test_requests_mixing_scopes_read_each_span_in_its_own_dialect() -> None:
    message = scoped(AMQPLIB, amqplib_process(None))
    other = message.resource_spans[0].scope_spans.add()
    other.scope.name = PIKA
    other.spans.append(
        span(
            "shop receive",
            CONSUMER,
            trace_id=new_trace(),
            span_id=new_span_id(),
            attributes={"messaging.system": "rabbitmq", "messaging.operation": "receive"},
        )
    )
    assert [d["outcome"] for d in both(message).deliveries] == [A.OUTCOME_ACK, A.OUTCOME_UNKNOWN]
