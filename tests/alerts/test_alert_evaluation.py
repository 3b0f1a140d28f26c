"""The alert engine against a real DuckDB store, fed synthetic spans, tick by tick."""

from __future__ import annotations

from typing import Any

from tests.spans import new_span_id, new_trace, process, publish, sid

RULE = """
[[alerts.rules]]
name = "orders must be handled"
event_type = "order.*"
within = "5s"
severity = "critical"
"""


def orphan(h: Any, *, routing_key: str = "order.placed", start_ms: int = 0) -> str:
    """An event nobody received (spans only: 'unconsumed')."""
    event_id = new_span_id()
    h.ingest(publish(trace_id=new_trace(), event_id=event_id, routing_key=routing_key, start_ms=start_ms))
    return event_id


def consume(
    h: Any,
    event_id: str,
    *,
    queue: str = "billing",
    service: str = "billing",
    outcome: str = "ack",
    **kw: Any,
) -> None:
    h.ingest(
        process(trace_id=new_trace(), parent=None, event_id=event_id, queue=queue, outcome=outcome, **kw),
        service=service,
    )


def test_healthy_traffic_fires_nothing(harness: Any) -> None:
    h = harness(RULE)
    for _ in range(20):
        trace_id = new_trace()
        event_id = new_span_id()
        producer = publish(trace_id=trace_id, event_id=event_id)
        h.ingest(producer)
        h.ingest(process(trace_id=trace_id, parent=sid(producer), event_id=event_id, queue="billing"))
    for at in (1, 6, 60):
        h.tick(at)
    assert h.alerts() == []
    assert h.engine.firing() == {}


def test_one_alert_per_event_per_rule_across_ticks_then_resolved_by_late_consumption(harness: Any) -> None:
    h = harness(RULE)
    first, second = orphan(h), orphan(h)
    assert h.tick(4.9).fired == 0  # within not passed yet
    stats = h.tick(5.0)
    assert (stats.candidates, stats.fired) == (2, 2)
    for at in (6, 7, 60):  # dedupe: nothing new, and nothing is re-read
        assert h.tick(at).fired == 0
    rows = h.alerts()
    assert sorted(r["event_id"] for r in rows) == sorted([first, second])
    assert {(r["rule"], r["reason"], r["severity"], r["status"]) for r in rows} == {
        ("orders must be handled", "unconsumed", "critical", "firing")
    }
    assert all(r["resolved_at"] is None for r in rows)
    consume(h, first)  # late consumption
    stats = h.tick(61)
    assert (stats.candidates, stats.resolved) == (1, 1)
    by_event = {r["event_id"]: r for r in h.alerts()}
    assert by_event[first]["resolved_at"] is not None and by_event[first]["status"] == "resolved"
    assert by_event[second]["resolved_at"] is None
    assert h.engine.firing() == {("orders must be handled", "critical"): 1}
    # a resolved alert does not fire again for the same event
    consume(h, first, outcome="nack")
    assert h.tick(62).fired == 0
    assert len(h.alerts()) == 2


def test_only_matching_rules_and_reasons_fire(harness: Any) -> None:
    h = harness(
        """
[[alerts.rules]]
name = "refunds"
event_type = "refund.*"
reasons = ["failed"]
within = "1s"

[[alerts.rules]]
name = "payments queue"
queue = "payments"
within = "1s"
"""
    )
    orphan(h, routing_key="order.placed")  # neither rule's event type / queue
    unconsumed_refund = orphan(h, routing_key="refund.issued")  # 'unconsumed', not 'failed'
    failed_refund = orphan(h, routing_key="refund.issued")
    consume(h, failed_refund, queue="refunds", outcome="nack")
    failed_payment = orphan(h, routing_key="payment.done")
    consume(h, failed_payment, queue="payments", outcome="reject")
    h.tick(10)
    assert sorted((r["rule"], r["event_id"], r["queue"], r["reason"]) for r in h.alerts()) == sorted(
        [
            ("refunds", failed_refund, "refunds", "failed"),
            ("payments queue", failed_payment, "payments", "failed"),
        ]
    )
    assert unconsumed_refund not in {r["event_id"] for r in h.alerts()}


def test_an_event_fine_at_within_that_fails_later_fires_then(harness: Any) -> None:
    h = harness(RULE)
    event_id = orphan(h)
    consume(h, event_id, start_ms=1000, end_ms=1001)
    assert h.tick(6).fired == 0
    consume(h, event_id, outcome="nack", redelivered=True, start_ms=7000, end_ms=7001)  # a later attempt
    assert h.tick(8).fired == 1
    (row,) = h.alerts()
    assert (row["event_id"], row["reason"], row["queue"]) == (event_id, "failed", "billing")


def test_unacked_after_within(harness: Any) -> None:
    h = harness(RULE)
    event_id = orphan(h)
    consume(h, event_id, outcome=None)  # received, never settled
    h.tick(6)
    assert [r["reason"] for r in h.alerts()] == ["unacked"]
    assert h.alerts()[0]["event_id"] == event_id


def test_threshold_alerts_once_per_group_and_resolves_when_the_window_empties(harness: Any) -> None:
    h = harness(
        """
[[alerts.rules]]
name = "burst"
within = "1s"
threshold = { count = 3, window = "1m" }
"""
    )
    orphan(h)
    orphan(h)
    assert h.tick(2).fired == 0  # 2 < 3
    orphan(h)
    assert h.tick(3).fired == 1
    for _ in range(5):
        orphan(h)
    assert h.tick(4).fired == 0  # still the same group alert
    (row,) = h.alerts()
    assert (row["rule"], row["group_key"], row["event_count"], row["status"]) == (
        "burst",
        "burst",
        3,
        "firing",
    )
    assert h.engine.firing() == {("burst", "warning"): 1}
    assert h.tick(70).resolved == 1  # nothing matched in the last minute
    (row,) = h.alerts()
    assert row["status"] == "resolved" and row["resolved_at"] is not None


def test_missing_consumer_for_a_declared_service_even_when_routed_elsewhere(harness: Any) -> None:
    h = harness(
        """
[[alerts.rules]]
name = "declared consumers"
reasons = ["missing_consumer"]
within = "2s"

[alerts.expect]
"order.*" = ["payments", "billing"]
"""
    )
    event_id = orphan(h)
    consume(h, event_id, queue="billing", service="billing")  # payments never processes it
    healthy = orphan(h)
    consume(h, healthy, queue="billing", service="billing")
    consume(h, healthy, queue="payments", service="payments")
    h.tick(3)
    (row,) = h.alerts()
    assert (row["event_id"], row["reason"], row["detail"]) == (
        event_id,
        "missing_consumer",
        "expected: payments",
    )
    consume(h, event_id, queue="payments", service="payments")
    assert h.tick(4).resolved == 1


def test_expectations_without_a_rule_get_the_implicit_rule(harness: Any) -> None:
    h = harness('[alerts.expect]\n"order.placed" = ["payments"]\n')
    event_id = orphan(h)
    h.tick(31)
    (row,) = h.alerts()
    assert (row["rule"], row["event_id"], row["reason"]) == (
        "expected consumers",
        event_id,
        "missing_consumer",
    )


def test_the_implicit_rule_waits_the_collectors_grace(harness: Any) -> None:
    """Under ``--grace 3`` a missing consumer is flagged at 3 s, not after a hidden 30 s."""
    expect = '[alerts.expect]\n"order.placed" = ["payments"]\n'
    h = harness(expect, grace_s=3)
    event_id = orphan(h)
    assert h.tick(2.9).fired == 0
    assert h.tick(3.0).fired == 1
    (row,) = h.alerts()
    assert (row["rule"], row["event_id"], row["reason"]) == (
        "expected consumers",
        event_id,
        "missing_consumer",
    )
    assert h.engine.config.summary().endswith(
        "within the collector's --grace, missing_consumer (no rule selects it)"
    )


def test_a_missing_consumer_rule_keeps_its_own_wait_whatever_the_grace(harness: Any) -> None:
    h = harness(
        '[alerts.expect]\n"order.placed" = ["payments"]\n\n'
        '[[alerts.rules]]\nname = "payments late"\nreasons = ["missing_consumer"]\nwithin = "10s"\n',
        grace_s=3,
    )
    orphan(h)
    assert h.tick(9.9).fired == 0  # the grace (3 s) does not shorten the rule's own within
    assert h.tick(10).fired == 1
    assert [r["rule"] for r in h.alerts()] == ["payments late"]


def test_poison_redelivery_loop(harness: Any) -> None:
    h = harness(
        """
[alerts]
redelivery_limit = 3

[[alerts.rules]]
name = "poison"
reasons = ["poison"]
within = "1s"
"""
    )
    looping = orphan(h)
    for attempt in range(5):  # 1 delivery + 4 redeliveries, each requeued
        consume(
            h, looping, outcome="requeue", redelivered=attempt > 0, start_ms=10 + attempt, end_ms=11 + attempt
        )
    retried = orphan(h)
    for attempt in range(3):  # 2 redeliveries: under the limit
        consume(
            h, retried, outcome="requeue", redelivered=attempt > 0, start_ms=10 + attempt, end_ms=11 + attempt
        )
    h.tick(2)
    (row,) = h.alerts()
    assert (row["event_id"], row["reason"], row["queue"]) == (looping, "poison", "billing")
    consume(h, looping, outcome="ack", redelivered=True, start_ms=50, end_ms=51)
    assert h.tick(3).resolved == 1


def test_learned_baseline_flags_the_service_that_stops(harness: Any) -> None:
    h = harness(
        """
[alerts]
learn_after = 3

[[alerts.rules]]
name = "learned"
reasons = ["missing_consumer"]
within = "1s"
"""
    )
    for n in range(3):
        event_id = orphan(h, start_ms=n)
        consume(h, event_id, queue="audit", service="audit")
        h.tick(2 + n)
    assert h.alerts() == []
    stopped = orphan(h, start_ms=10)
    consume(h, stopped, queue="billing", service="billing")
    h.tick(10)
    (row,) = h.alerts()
    assert (row["event_id"], row["reason"], row["detail"]) == (stopped, "missing_consumer", "learned: audit")


def test_ticks_read_only_new_and_due_events(harness: Any) -> None:
    h = harness(RULE)
    for _ in range(50):
        orphan(h)
    assert h.tick(6).candidates == 50
    assert h.tick(7).candidates == 0  # nothing new, nothing touched: no query at all
    orphan(h, start_ms=7000)
    assert h.tick(13).candidates == 1


def test_firing_alerts_survive_a_restart_without_firing_twice(harness: Any, tmp_path: Any) -> None:
    h = harness(RULE)
    event_id = orphan(h)
    h.tick(6)
    path = h.store.path
    h.close()
    from tests.alerts.alert_helpers import Harness

    again = Harness(type(tmp_path)(path), RULE)
    try:
        assert again.engine.firing() == {("orders must be handled", "critical"): 1}
        consume(again, event_id)
        assert again.tick(100).resolved == 1
        (row,) = again.alerts()
        assert row["status"] == "resolved"
    finally:
        again.close()


def test_bounded_memory_drops_are_counted_and_firing_events_are_kept(harness: Any) -> None:
    h = harness(RULE, max_watched=3, max_evaluated=2)
    kept = [orphan(h) for _ in range(5)]
    h.tick(1)
    assert h.engine.dropped == 2  # 3 watched, 2 refused (drop-newest)
    assert h.tick(6).fired == 3
    assert len(h.engine._evaluated) == 3  # over the bound: all three have a firing alert
    for event_id in kept[:3]:
        consume(h, event_id)
    assert h.tick(7).resolved == 3
    h.tick(8)
    assert len(h.engine._evaluated) <= 2
    assert h.engine.metric_families()[4] == (
        "alert_observations_dropped_total",
        "counter",
        "Events the alert engine could not take (policy drop-newest).",
        [("", 2)],
    )


def test_resolution_while_a_slower_rule_still_waits(harness: Any) -> None:
    h = harness(RULE + '\n[[alerts.rules]]\nname = "slow"\nwithin = "1h"\n')
    event_id = orphan(h)
    assert h.tick(6).fired == 1
    consume(h, event_id)
    assert h.tick(7).resolved == 1  # not at the slow rule's hour
    assert h.tick(3601).fired == 0


def test_a_full_write_queue_postpones_writes_and_notifications(
    harness: Any, webhook: Any, monkeypatch: Any
) -> None:
    from eventscope.tracer.ingest.writer import WriteQueueFull

    h = harness(RULE + f'\n[[alerts.sinks]]\ntype = "webhook"\nurl = "{webhook.url}"\n')
    orphan(h)
    real_call = h.writer.call

    def full(action: Any) -> Any:
        raise WriteQueueFull("full")

    monkeypatch.setattr(h.writer, "call", full)
    assert h.tick(6).fired == 1
    assert h.alerts() == [] and h.engine.counters["write_retries"] == 1
    monkeypatch.setattr(h.writer, "call", real_call)
    h.tick(7)
    assert len(h.alerts()) == 1
    (body,) = webhook.wait(1)
    assert body["status"] == "firing"
    h.wait_for(lambda: h.alerts()[0]["delivered"])


def test_poison_by_dead_letter_cycles(harness: Any) -> None:
    from eventscope.tracer.broker.records import BrokerBatch

    h = harness(
        """
[alerts]
redelivery_limit = 3

[[alerts.rules]]
name = "cycling"
within = "1s"
"""
    )
    event_id = orphan(h)
    consume(h, event_id, queue="work", outcome="reject")
    deaths = [
        {
            "event_id": event_id,
            "queue": "work",
            "reason": "rejected",
            "count": count,
            "died_at": None,
            "observed_at": int((1_700_000_000 + count) * 1e6),
            "exchange": "shop",
            "routing_keys": ["order.placed"],
            "dead_letter_exchange": "dlx",
        }
        for count in range(1, 5)
    ]
    h.writer.submit(BrokerBatch(dead_letters=deaths)).result(10)
    h.tick(10)
    (row,) = h.alerts()
    assert (row["event_id"], row["queue"], row["reason"]) == (event_id, "work", "poison")


def test_events_not_yet_evaluated_before_a_restart_are_evaluated_after_it(tmp_path: Any) -> None:
    import time
    from pathlib import Path

    from tests.alerts.alert_helpers import T0, Harness

    path = Path(tmp_path) / "restart.duckdb"
    now_ms = int((time.time() - T0) * 1000)
    first = Harness(path, RULE)
    fired, waiting = orphan(first, start_ms=now_ms - 8000), orphan(first, start_ms=now_ms - 1000)
    first.tick(now_ms / 1000)  # 'fired' is 8 s old: fires; 'waiting' is 1 s old
    first.close()
    second = Harness(path, RULE)
    try:
        assert second.tick(now_ms / 1000 + 10).fired == 1  # only 'waiting': 'fired' already did
        assert sorted(r["event_id"] for r in second.alerts()) == sorted([fired, waiting])
    finally:
        second.close()
