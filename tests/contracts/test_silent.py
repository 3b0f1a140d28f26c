"""Silent producers in a running collector: a type that flowed steadily stops → one ``silent``
alert and one ``contract_violations`` row; it flows again → both resolved.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

from eventscope.tracer.alerts import rules
from eventscope.tracer.contracts.checks import SilenceWatch
from eventscope.tracer.server.app import CollectorConfig
from tests.alerts.alert_helpers import Harness
from tests.contracts.test_documents import V3
from tests.spans import _T0, RunningCollector, new_trace, publish, request

TOML = """
[alerts]
interval = "100ms"

[contracts]
asyncapi = ["orders.yaml"]
silent_min_events = 5
silent_factor = 20  # posting from a loaded machine jitters: no false silence mid-flow
"""


def sql(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30)
    assert response.status_code == 200, response.text
    document = response.json()
    return [dict(zip(document["columns"], row, strict=True)) for row in document["rows"]]


def send(url: str, event_id: str) -> None:
    now_ms = int(time.time() * 1000) - _T0 // 1_000_000  # published now, by the wall clock
    span = publish(trace_id=new_trace(), event_id=event_id, exchange="shop", start_ms=now_ms)
    response = httpx.post(
        f"{url}/v1/traces",
        content=request(span).SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200


def wait_until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return result


def test_a_stopped_producer_fires_silent_once_and_resolves_when_it_resumes(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text(V3)
    (tmp_path / "eventscope.toml").write_text(TOML)
    config = CollectorConfig(
        db_path=str(tmp_path / "c.duckdb"), grace_s=0, alerts=rules.load(tmp_path / "eventscope.toml")
    )
    running = RunningCollector(config).start()
    url = running.url
    silent = "SELECT a.event_id, a.resolved_at FROM alerts a WHERE a.rule = 'silent producers'"
    try:
        for n in range(10):  # steady: one every 100 ms
            send(url, f"steady-{n}")
            time.sleep(0.1)
        assert sql(url, silent) == []  # not while it flows
        (alert,) = wait_until(lambda: sql(url, silent), timeout=30)
        assert alert == {"event_id": "steady-9", "resolved_at": None}  # the last event before it
        time.sleep(1.5)
        assert len(sql(url, silent)) == 1  # once, not at every tick
        (row,) = sql(url, "SELECT event_id, kind, service, detail, resolved_at FROM contract_violations")
        assert (row["event_id"], row["kind"], row["service"], row["resolved_at"]) == (
            "steady-9",
            "silent",
            "orders",
            None,
        )
        quiet, gap = map(
            float,
            re.fullmatch(r"no order\.placed for (.+)s \(usual gap (.+)s, k=20\)", row["detail"]).groups(),
        )
        # k times the usual gap (>= 100 ms: posting adds to it); the detail prints the silence to
        # 0.1 s and the gap to 3 digits, so compare within that rounding (3.4 s for 20 x 0.171 s)
        assert quiet + 0.05 >= 20 * gap * 0.999 and gap >= 0.1
        send(url, "again-0")
        wait_until(lambda: sql(url, silent)[0]["resolved_at"] is not None)
        wait_until(lambda: sql(url, "SELECT resolved_at FROM contract_violations")[0]["resolved_at"])
        assert len(sql(url, silent)) == 1
        # the same questions the CLI and the dashboard ask, served live
        (entry,) = httpx.get(f"{url}/api/catalog").json()["result"]
        assert (entry["event_type"], entry["declared"], entry["events"]) == ("order.placed", True, 11)
        assert entry["producers"] == [{"service": "orders", "status": "match"}] and entry["violations"] == {}
        (row,) = httpx.get(f"{url}/api/contract_violations", params={"kind": "silent"}).json()["result"]
        assert row["event_id"] == "steady-9" and row["resolved_at"] is not None
        observed = httpx.get(f"{url}/api/contract_observations").json()["result"]
        assert [(o["role"], o["service"], o["events"]) for o in observed] == [("send", "orders", 11)]
        metrics = httpx.get(f"{url}/metrics").text
        assert (
            "eventscope_alerts_fired_total 1" in metrics and "eventscope_alerts_resolved_total 1" in metrics
        )
    finally:
        running.stop()


def test_a_type_below_the_minimum_rate_never_qualifies() -> None:
    watch = SilenceWatch(factor=10, min_rate_per_min=6, min_events=3)  # at least one every 10 s
    for n in range(5):
        watch.seen("nightly.report", n * 60.0, f"r{n}", "reports")  # one a minute
    assert watch.poll(10_000.0) == ([], [])
    for n in range(5):
        watch.seen("order.placed", n * 1.0, f"o{n}", "orders")
    started, _ = watch.poll(4 + 10.5)
    assert [s.event_type for s in started] == ["order.placed"]
    assert watch.poll(100.0) == ([], [])  # fired once
    watch.seen("order.placed", 101.0, "o5", "orders")
    assert watch.poll(101.5) == ([], ["order.placed"])


def test_a_silence_left_firing_resolves_after_a_restart(tmp_path: Path) -> None:
    (tmp_path / "orders.yaml").write_text(V3)
    toml = TOML.replace('"orders.yaml"', f'"{tmp_path / "orders.yaml"}"')
    db = tmp_path / "restart.duckdb"
    first = Harness(db, toml)
    try:
        for n in range(10):
            first.ingest(publish(trace_id=new_trace(), event_id=f"s-{n}", exchange="shop", start_ms=n * 100))
        first.tick(1.0)
        assert [a["rule"] for a in first.alerts()] == []
        first.tick(10.0)  # 9.1 s of silence > 20 x 0.1 s
        (alert,) = first.alerts()
        assert (alert["rule"], alert["reason"], alert["event_id"], alert["resolved_at"]) == (
            "silent producers",
            "silent",
            "s-9",
            None,
        )
    finally:
        first.close()
    second = Harness(db, toml)  # picks up the silence still firing
    try:
        second.tick(11.0)
        assert second.alerts()[0]["resolved_at"] is None
        second.ingest(publish(trace_id=new_trace(), event_id="s-10", exchange="shop", start_ms=11_500))
        second.tick(12.0)
        (alert,) = second.alerts()
        assert alert["resolved_at"] is not None and alert["status"] == "resolved"
    finally:
        second.close()
