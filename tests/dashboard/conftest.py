"""The dashboard's fixture database, built once per session from real traffic: the shop of
``dashboard_shop.py`` (one process per service, the real pika adapter and OTLP exporter) on the real
broker, into ``eventscope collect`` as a subprocess, which is then stopped so that the file
can be opened read-only like any post-mortem database.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pika
import pytest

from tests.spans import open_store

HERE = Path(__file__).resolve().parent

from tests.dashboard import dashboard_shop as shop  # noqa: E402
from tests.dashboard.dashboard_helpers import CLI, free_port, wait_healthy  # noqa: E402

ROLES = ("payments", "inventory", "shipping", "notifications", "orders")


@pytest.fixture(scope="session")
def shop_db(tmp_path_factory: pytest.TempPathFactory, broker: pika.ConnectionParameters) -> Path:
    """A DuckDB file holding the shop's traffic (see dashboard_shop.py for the exact numbers)."""
    db = tmp_path_factory.mktemp("dashboard") / "shop.duckdb"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    collector = subprocess.Popen(
        [*CLI, "--log-level", "warning", "collect", "--db", str(db), "--listen", f"127.0.0.1:{port}"]
        + ["--grace", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tag = uuid.uuid4().hex[:8]
    exchange, prefix = f"eventscope-dash-{tag}.shop", f"eventscope-dash-{tag}"
    connection = pika.BlockingConnection(broker)
    channel = connection.channel()
    try:
        wait_healthy(url, collector)
        shop.declare(channel, exchange, prefix)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        services = [
            subprocess.Popen(
                [sys.executable, str(HERE / "dashboard_shop.py"), role, url, exchange, prefix],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            for role in ROLES
        ]
        for service in services:
            output, _ = service.communicate(timeout=90)
            assert service.returncode == 0, output
    finally:
        shop.delete(channel, exchange, prefix)
        connection.close()
        if collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
        output, _ = collector.communicate(timeout=30)
    assert collector.returncode == 0, output
    return db


@pytest.fixture(scope="session")
def alerts_db(shop_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shop's database plus two alerts (no alert evaluator writes them yet): one firing
    on a declined order, one resolved.
    """
    db = tmp_path_factory.mktemp("dashboard-alerts") / "alerts.duckdb"
    shutil.copy(shop_db, db)
    with duckdb.connect(str(db)) as con:
        (failed,) = con.execute(
            "SELECT event_id FROM orphans_after(0) WHERE reason = 'failed' ORDER BY published_at LIMIT 1"
        ).fetchone()
        (invoice,) = con.execute(
            "SELECT event_id FROM events WHERE event_type = 'invoice.requested' ORDER BY published_at LIMIT 1"
        ).fetchone()
        con.execute(
            """
            INSERT INTO alerts VALUES
              ('alert-1', 'orphan-failed', ?, 'x.payments', 'failed', now() - INTERVAL 1 MINUTE, NULL, true),
              ('alert-2', 'orphan-unconsumed', ?, 'x.billing', 'unconsumed',
               now() - INTERVAL 10 MINUTE, now() - INTERVAL 5 MINUTE, true)
            """,
            [failed, invoice],
        )
        (has_details,) = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'alert_details'"
        ).fetchone()
        if has_details:  # schema version 3: the alert engine's own state
            con.execute(
                "INSERT INTO alert_details (alert_id, severity, status, detail, attempts) "
                "VALUES ('alert-1', 'critical', 'firing', 'payments never acknowledged it', 2)"
            )
    return db


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database a collector created and nobody sent anything to."""

    db = tmp_path_factory.mktemp("dashboard-empty") / "empty.duckdb"
    open_store(db).close()
    return db


@pytest.fixture(autouse=True)
def _no_source_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("EVENTSCOPE_DB", "EVENTSCOPE_API", "EVENTSCOPE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield
