"""Orphans of what foreign instrumentations cannot tell and of routes that bypass queues:
an `unknown` settle is no orphan unless broker truth (firehose + queue state) says the message
may still be unacknowledged; a direct reply-to received by its pseudo-consumer is consumed, one
nobody received is unroutable; a default-exchange publish the firehose calls routed to a queue
the management poller never saw is unroutable. Maintained and re-derived orphans agree.
"""

from __future__ import annotations

import time

from eventscope.tracer.broker.management import queue_row
from eventscope.tracer.broker.records import BrokerBatch, Topology
from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.store.duckdb_store import Store
from tests.ingest.test_dialects import PIKA, scoped
from tests.spans import CONSUMER, new_trace, process, publish, request, sid, span
from tests.store.test_delivery_state import _assert_same
from tests.store.test_store_broker import firehose, orphans, record

REPLY_TO = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAEBgAAAAJrDLLC.cR1Y4VCu+DohJGMTdsnQ6w=="


def otel_pika_receive(trace_id: str, parent: str, event_id: str) -> BrokerBatch:
    consumer = span(
        "shop receive",
        CONSUMER,
        trace_id=trace_id,
        parent=parent,
        start_ms=10,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.destination": "shop",
            "messaging.operation": "receive",
            "messaging.message.id": event_id,
        },
    )
    return normalise(scoped(PIKA, consumer))


def poll(*queues: dict) -> BrokerBatch:
    polled = int(time.time() * 1_000_000)
    rows = [queue_row({"vhost": "/", "arguments": {}, **queue}, polled) for queue in queues]
    return BrokerBatch(topology=Topology("/", polled, queues=rows))


def unknown_deliveries(store: Store, *event_ids: str) -> None:
    """Events published by eventscope, received by an opentelemetry-instrumentation-pika consumer."""
    for event_id in event_ids:
        trace_id = new_trace()
        producer = publish(trace_id=trace_id, event_id=event_id)
        store.append([normalise(request(producer)), otel_pika_receive(trace_id, sid(producer), event_id)])


def test_unknown_settle_is_no_orphan_without_broker_truth(store: Store) -> None:
    unknown_deliveries(store, "A")
    assert orphans(store) == set()
    assert _assert_same(store) == 0


def test_unknown_settle_is_unacked_only_when_the_queue_still_holds_it(store: Store) -> None:
    unknown_deliveries(store, "A")
    store.append(
        [
            firehose(
                record("publish", "shop", message_id="A", routed=["work"]),
                record("deliver", "work", message_id="A", at_ms=8),
            )
        ]
    )
    assert orphans(store) == set()  # no queue state yet
    store.append([poll({"name": "work", "messages_unacknowledged": 0})])
    assert orphans(store) == set()  # nothing unacknowledged: it was settled
    store.append([poll({"name": "work", "messages_unacknowledged": 1})])
    assert orphans(store) == {("A", "work", "unacked")}
    assert _assert_same(store) == 1


def test_more_unknown_settles_than_unacked_messages_report_none(store: Store) -> None:
    unknown_deliveries(store, "A", "B")
    store.append(
        [
            firehose(
                record("publish", "shop", message_id="A", routed=["work"]),
                record("publish", "shop", message_id="B", routed=["work"]),
                record("deliver", "work", message_id="A", at_ms=8),
                record("deliver", "work", message_id="B", at_ms=9),
            ),
            poll({"name": "work", "messages_unacknowledged": 1}),
        ]
    )
    assert orphans(store) == set()  # one of them was settled; the broker cannot say which


def reply(store: Store, event_id: str, *, received: bool) -> None:
    trace_id = new_trace()
    producer = publish(trace_id=trace_id, event_id=event_id, exchange="", routing_key=REPLY_TO)
    batches = [normalise(request(producer))]
    if received:
        consumer = process(
            trace_id=trace_id, parent=sid(producer), event_id=event_id, queue="amq.rabbitmq.reply-to"
        )
        batches.append(normalise(request(consumer)))
    store.append(batches)


def test_direct_reply_to_spans_only(store: Store) -> None:
    reply(store, "R1", received=True)
    reply(store, "R2", received=False)
    assert orphans(store) == {("R2", None, "unroutable")}
    assert _assert_same(store) == 1


def test_direct_reply_to_with_broker_truth(store: Store) -> None:
    reply(store, "R1", received=True)
    reply(store, "R2", received=False)
    store.append(
        [
            firehose(
                *(
                    record("publish", "", message_id=event_id, exchange="", routing_key=REPLY_TO, routed=[])
                    for event_id in ("R1", "R2")
                )
            )
        ]
    )
    assert orphans(store) == {("R2", None, "unroutable")}
    assert _assert_same(store) == 1


def test_default_exchange_to_a_missing_queue_is_unroutable_once_the_poller_knows(store: Store) -> None:
    trace_id = new_trace()
    producer = publish(trace_id=trace_id, event_id="M", exchange="", routing_key="nope")
    store.append(
        [
            normalise(request(producer)),
            firehose(record("publish", "", message_id="M", exchange="", routing_key="nope", routed=["nope"])),
        ]
    )
    assert orphans(store) == {("M", "nope", "unconsumed")}  # the firehose says "routed"
    store.append([poll({"name": "other"})])
    assert orphans(store) == {("M", None, "unroutable")}
    store.append([poll({"name": "nope"})])  # declared later: it did not exist when published
    assert orphans(store) == {("M", None, "unroutable")}


def test_a_requeued_attempt_is_not_the_latest_beside_its_redelivery_received_in_the_same_instant(
    store: Store,
) -> None:
    """Node's instrumentation stamps milliseconds: a requeued attempt and its redelivery can
    carry the same receive time, and their settle times (sub-millisecond) may come in either
    order. Whatever the span ids and the settle order, the requeue is not the final fate (a
    random tie-break reported a requeued-then-acked message as unconsumed, now and then)."""
    low, high = "0" * 15 + "1", "f" * 16
    cases = [(ids, ends) for ids in ((high, low), (low, high)) for ends in ((11, 12), (12, 11))]
    for n, ((requeue_id, ack_id), (requeue_end, ack_end)) in enumerate(cases):
        event_id = f"tie-{n}"
        trace_id = new_trace()
        producer = publish(trace_id=trace_id, event_id=event_id)
        parent = sid(producer)
        first = process(
            trace_id=trace_id,
            parent=parent,
            event_id=event_id,
            queue="work",
            outcome="requeue",
            span_id=requeue_id,
            start_ms=10,
            end_ms=requeue_end,
        )
        again = process(
            trace_id=trace_id,
            parent=parent,
            event_id=event_id,
            queue="work",
            outcome="ack",
            span_id=ack_id,
            start_ms=10,
            end_ms=ack_end,
            redelivered=True,
        )
        store.append([normalise(request(producer, first, again))])
    assert orphans(store) == set()
    assert _assert_same(store) == 0
