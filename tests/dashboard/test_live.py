"""Live mode: the dashboard against a running collector (its /api/<question> routes) answers
exactly as it does on the file, and shows the collector's own health.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from eventscope.tracer.query.client import ApiSource, open_source
from tests.dashboard.dashboard_helpers import APP, CLI, free_port, metrics, texts, wait_healthy

pytestmark = pytest.mark.integration  # the real broker on 127.0.0.1:5672


@pytest.fixture(scope="module")
def live_collector(shop_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("dashboard-live") / "live.duckdb"
    shutil.copy(shop_db, db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*CLI, "--log-level", "warning", "collect", "--db", str(db), "--listen", f"127.0.0.1:{port}"]
        + ["--grace", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def _without_ages(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ages(v) for k, v in value.items() if k != "age_s"}
    if isinstance(value, list):
        return [_without_ages(v) for v in value]
    return value


def test_api_answers_as_the_file_does(shop_db: Path, live_collector: str) -> None:
    file_source = open_source(db=str(shop_db))
    api_source = ApiSource(live_collector)
    try:
        order = file_source.sql(
            "SELECT event_id FROM events WHERE event_type = 'order.placed' ORDER BY published_at LIMIT 1"
        ).rows[0][0]
        asks: list[tuple[str, dict[str, Any]]] = [
            ("summary", {}),
            ("rates", {"buckets": 30}),
            ("orphan_counts", {}),
            ("orphan_report", {"limit": 3}),
            ("fanout_delivered", {}),
            ("event_types", {}),
            ("top_orphaned", {"limit": 5}),
            ("slowest", {"limit": 5}),
            ("facets", {}),
            ("events_page", {"event_type": "order.placed", "outcome": "nack", "limit": 5}),
            ("events_page", {"limit": 10, "offset": 40}),
            ("upstream", {"event_id": order}),
            ("chain_detail", {"event_id": order}),
            ("fanout", {}),
            ("topology", {}),
            ("lag", {"outliers": 3}),
            ("workflows", {"stuck_after_s": 0.0, "status": "stuck"}),
            ("alerts", {"state": "firing"}),
            ("schema", {}),
        ]
        for question, params in asks:
            assert _without_ages(api_source.ask(question, **params)) == _without_ages(
                file_source.ask(question, **params)
            ), question
    finally:
        file_source.close()
        api_source.close()


def test_api_refuses_bad_parameters(live_collector: str) -> None:
    bad = httpx.get(f"{live_collector}/api/events_page", params={"limit": "many"})
    assert bad.status_code == 400
    unknown = httpx.get(f"{live_collector}/api/events_page", params={"colour": "red"})
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"]
    missing = httpx.get(f"{live_collector}/api/chain_detail")
    assert missing.status_code == 400
    outcome = httpx.get(f"{live_collector}/api/events_page", params={"outcome": "sideways"})
    assert outcome.status_code == 400 and "outcome must be one of" in outcome.json()["error"]


def test_overview_live_shows_collector_health(live_collector: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSCOPE_API", live_collector)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = metrics(at)
    assert shown["Events"] == "49" and shown["Orphans"] == "7"
    assert shown["Spans received"] == "0" and shown["Spans rejected"] == "0"
    assert "Collector status: ok" in texts(at)
    assert at.toggle(key="auto_refresh").value is True
