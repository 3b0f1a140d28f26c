"""The firehose tap against the real broker: publish/deliver records, unroutable, own queues."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer.broker.firehose import (
    COLLECTOR_QUEUE_PREFIX,
    FirehoseTap,
    disable_tracing,
    enable_tracing,
    parse_record,
)
from eventscope.tracer.broker.records import normalise_firehose
from tests.conftest import TEST_VHOST

pytestmark = pytest.mark.integration  # the real broker on 127.0.0.1:5672


def _tracing_on(vhost: str = "/") -> bool:
    out = subprocess.run(["rabbitmqctl", "list_vhosts", "name", "tracing"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] == vhost:
            return parts[1].strip() == "true"
    return False


@pytest.fixture
def firehose(broker):
    """Tracing on for the run's vhost, turned off again afterwards if it was off before."""
    was_on = _tracing_on(TEST_VHOST)
    enabled, message = enable_tracing(TEST_VHOST)
    assert enabled, message
    yield
    if not was_on:
        assert disable_tracing(TEST_VHOST)


class Collected:
    def __init__(self) -> None:
        self.records = []
        self.lock = threading.Lock()

    def __call__(self, batch) -> None:
        with self.lock:
            self.records.extend(batch)

    def wait(self, predicate, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [r for r in self.records if predicate(r)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return found


def test_tap_records_routing_unroutable_and_deliveries(amqp, firehose, spans):
    exchange = amqp.exchange()
    queue = amqp.queue()
    amqp.bind(queue, exchange, "order.*")
    collected = Collected()
    tap = FirehoseTap(amqp.parameters, collected, flush_interval_s=0.05).start()
    try:
        assert tap.connected.wait(10)
        producer = instrument_channel(amqp.connect().channel(), service="orders")
        producer.basic_publish(exchange, "order.placed", b"routed")
        producer.basic_publish(exchange, "refund.requested", b"nobody")
        consumer = amqp.connect().channel()
        deadline = time.monotonic() + 5
        method = None
        while method is None and time.monotonic() < deadline:
            method, properties, _body = consumer.basic_get(queue, auto_ack=True)
        assert method is not None

        publishes = collected.wait(lambda r: r.kind == "publish" and r.exchange == exchange, count=2)
        delivers = collected.wait(lambda r: r.kind == "deliver" and r.queue == queue)
    finally:
        tap.stop()
    by_key = {r.routing_keys[0]: r for r in publishes}
    routed, unroutable = by_key["order.placed"], by_key["refund.requested"]
    assert routed.routed_queues == (queue,)
    assert unroutable.routed_queues == ()
    assert routed.message_id == properties.message_id
    # the lighter wire contract (issue 16): no `type`, no correlation header on a root event;
    # the collector infers both
    assert routed.app_id == "orders" and routed.event_type is None
    assert routed.correlation_header is None
    inferred = {e["event_id"]: e for e in normalise_firehose([routed]).events}[routed.event_id]
    assert (inferred["event_type"], inferred["correlation_id"]) == ("order.placed", routed.event_id)
    assert routed.traceparent == properties.headers["traceparent"]
    assert routed.body_size == len(b"routed")
    (deliver,) = delivers
    assert deliver.message_id == properties.message_id
    assert deliver.redelivered is False
    assert deliver.vhost == TEST_VHOST
    assert tap.sink_failures == 0
    # the tap's own queue never shows up in what it records
    assert not collected.wait(lambda r: (r.queue or "").startswith(COLLECTOR_QUEUE_PREFIX), timeout=0.2)


def test_sink_failure_requeues_the_batch_and_nothing_is_lost(amqp, firehose):
    queue = amqp.queue()
    calls = {"n": 0}
    collected = Collected()

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("store busy")
        collected(batch)

    tap = FirehoseTap(amqp.parameters, flaky, flush_interval_s=0.05).start()
    try:
        assert tap.connected.wait(10)
        amqp.admin.basic_publish("", queue, b"once")
        found = collected.wait(lambda r: r.kind == "publish" and r.routing_keys == (queue,))
    finally:
        tap.stop()
    assert len(found) >= 1
    assert tap.sink_failures == 1
    # a replayed record keeps its identity, so the store can keep it once
    assert len({r.record_id for r in found}) == 1


def test_parse_record_tolerates_bytes_and_garbage():
    headers = {
        "exchange_name": b"shop",
        "routing_keys": [b"order.placed", "x", 5],
        "routed_queues": [b"q1", COLLECTOR_QUEUE_PREFIX + "dlx.1", None],
        "properties": {"message_id": b"m-1", "headers": {"x-causation-id": 7, "traceparent": b"00-x"}},
        "channel": 3,
    }
    record = parse_record("publish.shop", headers, b"abc", 1)
    assert record.exchange == "shop"
    assert record.routing_keys == ("order.placed", "x")
    assert record.routed_queues == ("q1",)
    assert record.message_id == "m-1"
    assert record.causation_header is None and record.traceparent == "00-x"
    assert parse_record("publish.", {"properties": "garbage"}, None, 1).exchange == ""
    assert parse_record("other.thing", headers, b"", 1) is None
    assert parse_record("deliver.q", None, b"", 1) is None
    deliver = parse_record("deliver.q", {"redelivered": 1}, b"", 1)
    assert deliver.queue == "q" and deliver.redelivered is True and deliver.routed_queues is None
