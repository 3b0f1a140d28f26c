"""Broker truth without a broker: event identity across taps, x-death, DLX binding plans,
management rows, and the poller's failure handling.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from eventscope.tracer.broker.deadletter import DeadLetterTap, DlxBinding, _properties_table, plan_bindings
from eventscope.tracer.broker.firehose import parse_record
from eventscope.tracer.broker.management import ManagementPoller, binding_row, exchange_row, queue_row
from eventscope.tracer.broker.records import Topology, message_event_id, normalise_firehose, parse_deaths
from eventscope.tracer.ingest.normaliser import synthesized_event_id

TRACE, SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
DEATH = {
    "count": 1,
    "reason": b"rejected",
    "queue": "payments",
    "time": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    "exchange": "shop",
    "routing-keys": [b"payment.failed"],
    "original-expiration": "60000",
}


def test_event_id_prefers_message_id_then_trace_context_then_content() -> None:
    assert message_event_id({"message_id": b"m-1"}, b"x", exchange="", routing_keys=["q"]) == "m-1"
    carried = {"headers": {"traceparent": f"00-{TRACE}-{SPAN}-01".encode()}}
    assert message_event_id(carried, b"x", exchange="", routing_keys=["q"]) == synthesized_event_id(
        TRACE, SPAN
    )
    plain = message_event_id({"type": "t"}, b"x", exchange="", routing_keys=["q"])
    assert plain.startswith("amqp-")
    assert plain != message_event_id({"type": "t"}, b"y", exchange="", routing_keys=["q"])
    assert plain != message_event_id({"type": "t"}, b"x", exchange="", routing_keys=["other"])


def test_a_dead_lettered_copy_has_the_id_of_the_message_it_copies() -> None:
    """The firehose's property table and pika's BasicProperties of the DLX copy: same id."""
    published = {
        "app_id": "legacy",
        "timestamp": 1_700_000_000,
        "expiration": "60000",
        "delivery_mode": 2,
        "headers": {"s": "text", "b": b"\xff\x00", "n": None, "l": [1, b"x"], "d": {"k": b"v"}},
    }
    original = message_event_id(published, b"body", exchange="shop", routing_keys=["payment.failed", "cc"])
    copy = SimpleNamespace(
        app_id="legacy",
        timestamp=1_700_000_000,
        expiration=None,  # the broker moves it into x-death
        delivery_mode=2,
        headers={
            "s": "text",
            "b": b"\xff\x00",
            "n": None,
            "l": [1, "x"],
            "d": {"k": "v"},
            "x-death": [DEATH],
            "x-first-death-queue": "payments",
            "x-first-death-reason": "rejected",
            "x-first-death-exchange": "shop",
        },
    )
    table = _properties_table(copy)
    assert message_event_id(table, b"body", exchange="dlx", routing_keys=["payment.failed"]) == original


def test_deaths_are_decoded_defensively() -> None:
    (death,) = parse_deaths({"x-death": [DEATH, "garbage", {"queue": "q"}, {**DEATH, "count": True}]})
    assert (death.queue, death.reason, death.count, death.exchange) == ("payments", "rejected", 1, "shop")
    assert death.routing_keys == ("payment.failed",)
    assert death.died_at_us == int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    assert parse_deaths(None) == () and parse_deaths({"x-death": "nope"}) == ()


def test_firehose_rows_carry_routing_causes_and_deaths() -> None:
    publish = parse_record(
        "publish.shop",
        {
            "exchange_name": "shop",
            "routing_keys": ["invoice.created"],
            "routed_queues": [b"invoices", "eventscope.collector.dlx.x"],
            "properties": {
                "message_id": "B",
                "app_id": "billing",
                "headers": {
                    "x-causation-id": "A",
                    "x-correlation-id": "A",
                    "traceparent": f"00-{TRACE}-{SPAN}-01",
                },
            },
        },
        b"{}",
        5_000,
    )
    deliver = parse_record(
        "deliver.dead",
        {
            "exchange_name": "dlx",
            "routing_keys": ["payment.failed"],
            "redelivered": 0,
            "properties": {"message_id": "P", "headers": {"x-death": [DEATH]}},
        },
        b"{}",
        9_000,
    )
    batch = normalise_firehose([publish, deliver])
    (event,) = batch.events
    assert event["routed_queues"] == ["invoices"]  # the collector's own queues never count
    assert (event["trace_id"], event["span_id"], event["producer_service"]) == (TRACE, SPAN, "billing")
    assert batch.edges == [("A", "B", "causation_id")]
    (delivery,) = batch.deliveries
    assert delivery["trace_id"] is None and delivery["source"] == "firehose" and delivery["record_id"]
    (dead,) = batch.dead_letters
    assert (dead["event_id"], dead["queue"], dead["reason"], dead["dead_letter_exchange"]) == (
        "P",
        "payments",
        "rejected",
        "dlx",
    )


def test_a_root_event_without_type_or_correlation_header_gets_both_inferred() -> None:
    """The adapters send no ``type`` and no ``x-correlation-id`` on a root event (issue 16)."""
    root = parse_record(
        "publish.shop",
        {
            "exchange_name": "shop",
            "routing_keys": ["order.placed"],
            "routed_queues": ["billing"],
            "properties": {"message_id": "R", "headers": {"traceparent": f"00-{TRACE}-{SPAN}-01"}},
        },
        b"{}",
        5_000,
    )
    effect = parse_record(
        "publish.",
        {
            "exchange_name": "",
            "routing_keys": ["invoices"],
            "routed_queues": ["invoices"],
            "properties": {"message_id": "E", "headers": {"x-causation-id": "C"}},
        },
        b"{}",
        6_000,
    )
    batch = normalise_firehose([root, effect])
    by_id = {event["event_id"]: event for event in batch.events}
    assert (by_id["R"]["event_type"], by_id["R"]["correlation_id"]) == ("order.placed", "R")
    # a caused event without the header has an unknown flow, not its own
    assert (by_id["E"]["event_type"], by_id["E"]["correlation_id"]) == ("invoices", None)


def _topology() -> Topology:
    def queue(name: str, **arguments: object) -> dict:
        return queue_row({"name": name, "vhost": "/", "arguments": arguments}, 1)

    return Topology(
        "/",
        1,
        queues=[
            queue("work", **{"x-dead-letter-exchange": "dlx.direct"}),
            queue("jobs", **{"x-dead-letter-exchange": "dlx.direct", "x-dead-letter-routing-key": "dead"}),
            queue("topical", **{"x-dead-letter-exchange": "dlx.direct"}),
            queue("fan", **{"x-dead-letter-exchange": "dlx.fanout"}),
            queue("heads", **{"x-dead-letter-exchange": "dlx.headers"}),
            queue("default", **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "parking"}),
        ],
        exchanges=[
            exchange_row({"name": name, "vhost": "/", "type": kind}, 1)
            for name, kind in (
                ("dlx.direct", "direct"),
                ("dlx.fanout", "fanout"),
                ("dlx.headers", "headers"),
                ("dlx.topic", "topic"),
            )
        ],
        bindings=[
            binding_row(
                {"source": "", "destination": "work", "destination_type": "queue", "routing_key": "work"}, 1
            ),
            binding_row(
                {"source": "shop", "destination": "work", "destination_type": "queue", "routing_key": "w.1"},
                1,
            ),
            binding_row(
                {
                    "source": "shop",
                    "destination": "topical",
                    "destination_type": "queue",
                    "routing_key": "t.*",
                },
                1,
            ),
        ],
    )


def test_dlx_bindings_follow_the_exchange_type() -> None:
    assert plan_bindings(_topology(), ["dlx.topic", "unknown"]) == {
        DlxBinding("dlx.direct", "work"),  # the queue's own keys: a dead letter keeps them
        DlxBinding("dlx.direct", "w.1"),
        DlxBinding("dlx.direct", "dead"),  # the dead-letter routing key
        DlxBinding("dlx.fanout", ""),
        DlxBinding("dlx.headers", "", headers_match_all=True),
        DlxBinding("dlx.topic", "#"),
        DlxBinding("unknown", "#"),  # no management: '#' covers fanout, topic and headers
    }  # 't.*' cannot be matched by a direct exchange; the default exchange takes no bindings
    assert plan_bindings(None, ["x"]) == {DlxBinding("x", "#")}


def test_queue_rows_apply_rabbitmqs_precedence() -> None:
    row = queue_row(
        {
            "name": "q",
            "vhost": "/",
            "arguments": {"x-message-ttl": 5000, "x-dead-letter-exchange": "arg.dlx", "x-max-length": 10},
            "effective_policy_definition": {
                "message-ttl": 1000,
                "dead-letter-exchange": "policy.dlx",
                "max-length": 99,
            },
            "messages": 4,
            "consumers": 0,
        },
        7,
    )
    assert row["message_ttl_ms"] == 1000  # the lower of argument and policy
    assert row["max_length"] == 10
    assert row["dead_letter_exchange"] == "arg.dlx"  # the argument wins
    assert (row["messages"], row["consumers"], row["type"], row["present"]) == (4, 0, "classic", True)
    policy_only = queue_row({"name": "p", "effective_policy_definition": {"dead-letter-exchange": "pd"}}, 7)
    assert policy_only["dead_letter_exchange"] == "pd" and policy_only["message_ttl_ms"] is None


def test_poller_counts_failures_and_never_raises() -> None:
    stored = []
    poller = ManagementPoller("http://user:p%40ss@127.0.0.1:9/api/", stored.append, timeout_s=0.5)
    assert poller.url == "http://127.0.0.1:9" and poller._auth == ("user", "p@ss")
    assert poller.poll_once() is None
    assert poller.failures == 1 and not poller.ok and stored == []
    assert "ConnectError" in (poller.state()["last_error"] or "")
    with pytest.raises(ValueError):
        ManagementPoller("amqp://127.0.0.1", stored.append)


def test_dead_letter_tap_skips_messages_without_x_death() -> None:
    tap = DeadLetterTap(SimpleNamespace(client_properties=None), lambda batch: None, exchanges=["dlx"])
    method = SimpleNamespace(exchange="dlx", routing_key="k")
    assert tap._parse(method, SimpleNamespace(headers={"a": 1}), b"", 1) is None
    copy = tap._parse(method, SimpleNamespace(headers={"x-death": [DEATH]}, message_id="m"), b"", 1)
    assert copy is not None and copy.event_id == "m" and copy.deaths[0].queue == "payments"


def test_collect_refuses_broker_taps_without_a_broker(capsys: pytest.CaptureFixture[str]) -> None:
    from eventscope.tracer.cli.main import main

    assert main(["collect", "--firehose"]) == 2
    assert main(["collect", "--dlx", "dead"]) == 2
    assert "--amqp-url" in capsys.readouterr().err


def test_a_remote_broker_gets_told_how_to_turn_the_firehose_on() -> None:
    from eventscope.tracer.broker.receivers import BrokerReceivers

    receivers = BrokerReceivers(
        SimpleNamespace(), amqp_url="amqp://guest:guest@broker.example:5672/shop", firehose=True
    )
    assert receivers.tracing is not None and receivers.tracing["enabled"] is None
    assert "rabbitmqctl trace_on -p 'shop'" in receivers.tracing["message"]
    assert receivers.state()["firehose"]["connected"] is False  # not started
    with pytest.raises(ValueError, match="amqp"):
        BrokerReceivers(SimpleNamespace(), firehose=True)
