"""Incidents: a grouping rule's per-event alerts, notified per incident (docs/alerts.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from eventscope.tracer.alerts import rules
from eventscope.tracer.alerts.engine import AlertEngine
from eventscope.tracer.alerts.sinks import slack_body
from tests.spans import new_span_id, new_trace, process, publish

GROUPED = """
[alerts]
dashboard_url = "http://127.0.0.1:8501"
[[alerts.rules]]
name = "orders must be handled"
event_type = "order.*"
within = "5s"
severity = "critical"
group_by = ["reason", "event_type", "queue"]
[[alerts.sinks]]
type = "webhook"
url = "{url}"
"""


def orphans(h: Any, count: int, *, routing_key: str = "order.placed", over_ms: int = 10_000) -> list[str]:
    """``count`` events nobody receives, published evenly over ``over_ms``, in one request."""
    ids = [new_span_id() for _ in range(count)]
    h.ingest(
        *(
            publish(
                trace_id=new_trace(),
                event_id=event_id,
                routing_key=routing_key,
                start_ms=i * over_ms // count,
            )
            for i, event_id in enumerate(ids)
        )
    )
    return ids


def consume_all(h: Any, ids: list[str]) -> None:
    h.ingest(
        *(process(trace_id=new_trace(), parent=None, event_id=event_id, queue="billing") for event_id in ids),
        service="billing",
    )


def incidents(h: Any) -> list[dict[str, Any]]:
    connection = h.store.reader()
    try:
        cursor = connection.execute("SELECT * FROM incidents ORDER BY opened_at, incident_id")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()


def settle(webhook: Any, h: Any, expected: int, *, at: float) -> list[dict[str, Any]]:
    """The bodies once ``expected`` arrived, and after a moment in which no more may come."""
    webhook.wait(expected)
    h.wait_for(lambda: not any(d.depth for d in h.engine.sinks.deliverers), at=at)
    time.sleep(0.3)
    return list(webhook.bodies)


def test_500_orphans_of_one_kind_make_one_incident_with_few_notifications(harness: Any, webhook: Any) -> None:
    h = harness(GROUPED.format(url=webhook.url))
    ids = orphans(h, 500)
    fired = 0
    for at in range(5, 17):  # each second: the events whose `within` passed fire, one by one
        fired += h.tick(at).fired
    assert fired == 500
    (opened,) = settle(webhook, h, 1, at=16)
    assert opened["kind"] == "incident" and opened["notification"] == "opened"
    assert opened["status"] == "firing" and opened["rule"] == "orders must be handled"
    assert opened["group"] == {"reason": "unconsumed", "event_type": "order.placed", "queue": None}
    assert 0 < opened["event_count"] < 500  # what had fired at the first tick
    assert len(opened["examples"]) == min(5, opened["event_count"])
    assert all(e["dashboard_url"].endswith(f"/chain?event={e['event_id']}") for e in opened["examples"])
    assert {e["event_id"] for e in opened["examples"]} <= set(ids)
    assert opened["dashboard_url"] == f"http://127.0.0.1:8501/alerts?incident={opened['incident_id']}"

    # it grew; the update waits for repeat_interval (10 min by default) after the opening (at 5 s)
    h.tick(5 + 599)
    assert len(settle(webhook, h, 1, at=5 + 599)) == 1
    h.tick(5 + 600)
    h.tick(5 + 601)
    h.tick(916)  # not grown since: nothing
    bodies = settle(webhook, h, 2, at=916)
    assert [b["notification"] for b in bodies] == ["opened", "updated"]
    assert bodies[1]["event_count"] == 500 and bodies[1]["open_count"] == 500

    consume_all(h, ids[:499])
    assert h.tick(917).resolved == 499
    (row,) = incidents(h)
    assert (row["status"], row["open_count"], row["event_count"]) == ("open", 1, 500)
    consume_all(h, ids[499:])
    assert h.tick(918).resolved == 1
    h.tick(919)
    bodies = settle(webhook, h, 3, at=919)
    assert [b["notification"] for b in bodies] == ["opened", "updated", "resolved"]
    assert bodies[2]["status"] == "resolved" and bodies[2]["resolved_at"] is not None
    assert len({b["incident_id"] for b in bodies}) == 1

    (row,) = incidents(h)
    assert (row["status"], row["event_count"], row["open_count"], row["notifications"]) == (
        "resolved",
        500,
        0,
        3,
    )
    assert row["incident_id"] == bodies[0]["incident_id"] and len(row["examples"]) == 5
    h.wait_for(lambda: incidents(h)[0]["delivered"], at=919)
    alerts = h.alerts()  # every event keeps its own alert row, tied to the incident
    assert len(alerts) == 500 and {a["incident_id"] for a in alerts} == {row["incident_id"]}
    assert all(a["resolved_at"] is not None for a in alerts)
    assert h.engine.incident_figures() == {"open": {}, "opened": 1, "resolved": 1}


def test_two_kinds_make_two_incidents(harness: Any, webhook: Any) -> None:
    h = harness(GROUPED.format(url=webhook.url))
    orphans(h, 30, routing_key="order.placed", over_ms=1000)
    orphans(h, 20, routing_key="order.cancelled", over_ms=1000)
    for at in range(5, 8):
        h.tick(at)
    bodies = settle(webhook, h, 2, at=7)
    assert sorted((b["event_type"], b["notification"]) for b in bodies) == [
        ("order.cancelled", "opened"),
        ("order.placed", "opened"),
    ]
    counts = {row["event_type"]: (row["event_count"], row["status"]) for row in incidents(h)}
    assert counts == {"order.placed": (30, "open"), "order.cancelled": (20, "open")}
    assert h.engine.incident_figures()["open"] == {("orders must be handled", "critical"): 2}
    metrics = dict((name, samples) for name, _, _, samples in h.engine.metric_families())
    assert metrics["alert_incidents_open"] == [('{rule="orders must be handled",severity="critical"}', 2)]


def test_a_new_orphan_after_resolution_opens_a_new_incident(harness: Any, webhook: Any) -> None:
    h = harness(GROUPED.format(url=webhook.url))
    first = orphans(h, 3, over_ms=100)
    h.tick(6)
    consume_all(h, first)
    h.tick(7)
    later = [new_span_id()]
    h.ingest(publish(trace_id=new_trace(), event_id=later[0], start_ms=8000))
    h.tick(14)
    bodies = settle(webhook, h, 3, at=14)
    assert [b["notification"] for b in bodies] == ["opened", "resolved", "opened"]
    assert bodies[0]["incident_id"] == bodies[1]["incident_id"] != bodies[2]["incident_id"]
    assert [(r["status"], r["event_count"]) for r in incidents(h)] == [("resolved", 3), ("open", 1)]


def test_per_event_mode_is_unchanged_without_group_by(harness: Any, webhook: Any) -> None:
    h = harness(GROUPED.format(url=webhook.url).replace('group_by = ["reason", "event_type", "queue"]\n', ""))
    ids = orphans(h, 20, over_ms=1000)
    h.tick(7)
    bodies = settle(webhook, h, 20, at=7)
    assert sorted(b["event_id"] for b in bodies) == sorted(ids)
    assert all("kind" not in b and b["status"] == "firing" for b in bodies)
    assert incidents(h) == []
    assert all(a["incident_id"] is None for a in h.alerts())
    assert h.engine.incident_figures() == {"open": {}, "opened": 0, "resolved": 0}


def test_a_restarted_engine_resumes_the_open_incident(harness: Any, webhook: Any) -> None:
    h = harness(GROUPED.format(url=webhook.url))
    ids = orphans(h, 10, over_ms=100)
    h.tick(6)
    settle(webhook, h, 1, at=6)
    h.engine.stop(timeout=2)
    h.engine = AlertEngine(
        h.config, store=h.store, writer=h.writer, clock=lambda: h.now, sink_backoff_s=0.01
    ).start(thread=False)
    assert h.engine.incident_figures()["open"] == {("orders must be handled", "critical"): 1}
    consume_all(h, ids)
    h.tick(100)  # the recheck of firing alerts finds them consumed
    bodies = settle(webhook, h, 2, at=100)
    assert [b["notification"] for b in bodies] == ["opened", "resolved"]
    assert bodies[0]["incident_id"] == bodies[1]["incident_id"]
    assert [(r["status"], r["event_count"], r["notifications"]) for r in incidents(h)] == [
        ("resolved", 10, 2)
    ]


def test_slack_format_sends_one_message_per_incident_with_example_links() -> None:
    body = slack_body(
        {
            "kind": "incident",
            "notification": "opened",
            "status": "firing",
            "rule": "orders",
            "severity": "critical",
            "event_count": 500,
            "open_count": 500,
            "event_type": "order.placed",
            "reason": "expired",
            "queue": "demo.billing",
            "first_seen": "2026-11-29T00:00:00Z",
            "last_seen": "2026-11-29T00:00:10Z",
            "examples": [{"event_id": "e1", "dashboard_url": "http://x/chain?event=e1"}],
            "dashboard_url": "http://x/alerts?incident=i1",
        }
    )
    assert "500 x order.placed expired at demo.billing" in body["text"]
    assert "<http://x/chain?event=e1|e1>" in body["attachments"][0]["text"]
    assert body["attachments"][0]["title_link"] == "http://x/alerts?incident=i1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'group_by = ["reason", "evnt_type"]',
            "cannot group by 'evnt_type' (hint: did you mean 'event_type'?)",
        ),
        ('group_by = "reason"', "must be a list of field names"),
        ('group_by = ["reason"]\nthreshold = { count = 2, window = "1m" }', "a threshold rule already"),
        ('repeat_interval = "0s"', "must be longer than zero"),
    ],
)
def test_group_by_is_validated(extra: str, message: str) -> None:
    with pytest.raises(rules.ConfigError) as error:
        rules.parse(f'[[alerts.rules]]\nname = "x"\n{extra}\n')
    assert message in str(error.value)


def test_group_by_parses_with_its_repeat_interval() -> None:
    config = rules.parse(
        '[[alerts.rules]]\nname = "x"\ngroup_by = ["queue", "reason"]\nrepeat_interval = "1m"\n'
    )
    (rule,) = config.rules
    assert (rule.group_by, rule.repeat_interval_s) == (("queue", "reason"), 60.0)
    assert "incidents by rule, queue, reason (repeat 60s)" in config.summary()
    assert rules.parse('[[alerts.rules]]\nname = "x"\n').rules[0].group_by is None


def test_an_incident_whose_alerts_were_resolved_while_stopped_resolves_at_restart(
    harness: Any, webhook: Any
) -> None:
    h = harness(GROUPED.format(url=webhook.url))
    orphans(h, 3, over_ms=100)
    h.tick(6)
    settle(webhook, h, 1, at=6)
    h.engine.stop(timeout=2)
    connection = h.store.reader()  # resolved by hand while no engine ran
    try:
        connection.execute("UPDATE alerts SET resolved_at = now() WHERE resolved_at IS NULL")
    finally:
        connection.close()
    h.engine = AlertEngine(
        h.config, store=h.store, writer=h.writer, clock=lambda: h.now, sink_backoff_s=0.01
    ).start(thread=False)
    h.tick(7)
    bodies = settle(webhook, h, 2, at=7)
    assert [b["notification"] for b in bodies] == ["opened", "resolved"]
    assert [r["status"] for r in incidents(h)] == ["resolved"]


def test_retention_deletes_resolved_incidents_with_their_alerts(harness: Any, webhook: Any) -> None:
    h = harness(GROUPED.format(url=webhook.url))
    ids = orphans(h, 3, over_ms=100)
    h.tick(6)
    consume_all(h, ids)
    h.tick(7)
    orphans(h, 2, over_ms=100)  # a second, still open incident of the same group
    h.tick(20)
    assert [r["status"] for r in incidents(h)] == ["resolved", "open"]
    h.writer.call(lambda store: store.retain(max_age_s=0)).result(10)
    assert [r["status"] for r in incidents(h)] == ["open"]
