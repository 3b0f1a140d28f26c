"""`eventscope demo` end to end: collector + shop services on the real broker, then stop."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pika


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_demo_runs_the_shop_and_stops_cleanly(tmp_path, broker):
    db = tmp_path / "demo.duckdb"
    port = _free_port()
    result = subprocess.run(
        [sys.executable, "-m", "eventscope.tracer.cli", "demo", "--db", str(db), "--duration", "12"]
        + ["--listen", f"127.0.0.1:{port}", "--rate", "10", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"collector and SQL API on http://127.0.0.1:{port}" in result.stdout
    assert "final: events" in result.stdout

    query = """
        select producer_service, count(*) as n from events group by 1 order by 1
    """
    out = subprocess.run(
        [sys.executable, "-m", "eventscope.tracer.cli", "sql", "--db", str(db), "--format", "json", query],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    producers = {row["producer_service"]: row["n"] for row in json.loads(out.stdout)}
    assert set(producers) == {
        "gateway",
        "customers",
        "checkout",
        "payments-1",
        "payments-2",
        "inventory",
        "shipping",
    }
    assert producers["gateway"] >= 50

    reasons = subprocess.run(
        [sys.executable, "-m", "eventscope.tracer.cli", "sql", "--db", str(db), "--format", "json"]
        + ["select distinct reason from orphans_after(0)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert {row["reason"] for row in json.loads(reasons.stdout)} >= {"failed", "unconsumed", "unacked"}

    # the demo removed its queues and exchanges from the broker
    connection = pika.BlockingConnection(broker)
    channel = connection.channel()
    try:
        channel.queue_declare("demo.payments", passive=True)
        leftover = True
    except pika.exceptions.ChannelClosedByBroker:
        leftover = False
    connection.close()
    assert not leftover
