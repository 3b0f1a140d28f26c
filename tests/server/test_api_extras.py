"""Bearer token, Arrow IPC results, orphans in /metrics, and the read CLI (sql/orphans/chain)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventscope.tracer.query.client import ApiSource, FileSource, SourceError
from eventscope.tracer.server.app import CollectorConfig
from tests.spans import RunningCollector, new_trace, open_store, process, publish, request, sid

_PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _post(url, message, headers=None):
    return httpx.post(
        f"{url}/v1/traces", content=message.SerializeToString(), headers={**_PROTOBUF, **(headers or {})}
    )


def _flow():
    """A → B (B consumed and acked), and C published into a queue nobody reads."""
    trace = new_trace()
    a = publish(trace_id=trace, event_id="evt-a", routing_key="order.placed")
    a_done = process(trace_id=trace, parent=sid(a), event_id="evt-a", queue="payments")
    b = publish(
        trace_id=trace, event_id="evt-b", routing_key="payment.done", parent=sid(a_done), causation_id="evt-a"
    )
    c = publish(trace_id=new_trace(), event_id="evt-c", routing_key="refund.requested", exchange="")
    return request(a, a_done, b, c)


@pytest.fixture
def secured(tmp_path):
    config = CollectorConfig(db_path=str(tmp_path / "secured.duckdb"), grace_s=0, token="s3cret")
    collector = RunningCollector(config).start()
    yield collector
    collector.stop()


def test_token_guards_every_route_but_healthz(secured):
    url = secured.url
    assert httpx.get(f"{url}/healthz").status_code == 200
    for path in ("/api/sql?q=select%201", "/api/orphans", "/metrics", "/api/chain/x"):
        response = httpx.get(url + path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert _post(url, _flow()).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert _post(url, _flow(), good).status_code == 200
    assert httpx.get(f"{url}/api/sql", params={"q": "select count(*) as n from events"}, headers=good).json()[
        "rows"
    ] == [[3]]
    with pytest.raises(SourceError, match="token"):
        ApiSource(url).orphans()
    assert {row["event_id"] for row in ApiSource(url, token="s3cret").orphans()} >= {"evt-c"}


def test_sql_api_answers_in_arrow_ipc_with_duckdb_types(running_collector):
    url = running_collector.url
    assert _post(url, _flow()).status_code == 200
    response = httpx.post(
        f"{url}/api/sql",
        json={"sql": "select event_id, published_at, payload_size from events order by event_id"},
        headers={"Accept": "application/vnd.apache.arrow.stream"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(io.BytesIO(response.content)).read_all()
    assert table.column("event_id").to_pylist() == ["evt-a", "evt-b", "evt-c"]
    assert pa.types.is_timestamp(table.schema.field("published_at").type)
    assert response.headers["x-eventscope-truncated"] == "false"


def test_metrics_report_orphans_by_reason(running_collector):
    url = running_collector.url
    assert _post(url, _flow()).status_code == 200
    text = httpx.get(f"{url}/metrics").text
    assert "# TYPE eventscope_orphans gauge" in text
    assert 'eventscope_orphans{reason="unconsumed"} 2' in text  # B and C: nothing consumed them
    assert "# TYPE eventscope_orphans_by_queue gauge" in text
    assert 'eventscope_orphans_by_queue{reason="unconsumed",queue="",event_type="payment.done"} 1' in text
    # C went to the default exchange: its queue is the routing key
    assert (
        'eventscope_orphans_by_queue{reason="unconsumed",queue="refund.requested",'
        'event_type="refund.requested"} 1'
    ) in text


def test_metrics_labels_are_escaped(running_collector):
    url = running_collector.url
    hostile = 'weird"type\\with\nnewline'
    trace = new_trace()
    assert (
        _post(url, request(publish(trace_id=trace, event_id="evt-x", routing_key=hostile))).status_code == 200
    )
    text = httpx.get(f"{url}/metrics").text
    assert 'event_type="weird\\"type\\\\with\\nnewline"' in text
    for line in text.splitlines():
        assert line.startswith("#") or line.count(" ") >= 1


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "eventscope.tracer.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_read_commands_against_the_api_and_the_file(running_collector, tmp_path):
    url = running_collector.url
    assert _post(url, _flow()).status_code == 200

    orphans = _cli("orphans", "--api", url, "--grace", "0")
    assert orphans.returncode == 0, orphans.stderr
    assert "unconsumed" in orphans.stdout and "evt-c" in orphans.stdout and "evt-a" not in orphans.stdout

    chain = _cli("chain", "--api", url, "evt-a")
    assert chain.returncode == 0, chain.stderr
    lines = chain.stdout.splitlines()
    assert "order.placed" in lines[0] and "evt-a" in lines[0]
    assert any("payment.done" in line and "evt-b" in line and line.startswith("└") for line in lines[1:])

    missing = _cli("chain", "--api", url, "no-such-event")
    assert missing.returncode == 1 and "no event" in missing.stderr

    out = tmp_path / "events.parquet"
    parquet = _cli("sql", "--api", url, "--format", "parquet", "-o", str(out), "select * from events")
    assert parquet.returncode == 0, parquet.stderr
    assert sorted(pq.read_table(out).column("event_id").to_pylist()) == ["evt-a", "evt-b", "evt-c"]
    assert _cli("sql", "--api", url, "--format", "parquet", "select 1").returncode == 2

    unreachable = _cli("orphans", "--api", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "cannot reach the collector" in unreachable.stderr

    running_collector.stop()
    running_collector.stop = lambda: None  # the fixture's teardown
    db = running_collector.collector.config.db_path
    source = FileSource(db)
    try:
        assert [row["event_id"] for row in source.chain("evt-a")] == ["evt-a", "evt-b"]
        assert source.sql("select count(*) from deliveries").rows == [(1,)]
    finally:
        source.close()
    as_json = _cli("sql", "--db", db, "--format", "json", "select event_id from events order by 1")
    assert [row["event_id"] for row in json.loads(as_json.stdout)] == ["evt-a", "evt-b", "evt-c"]


def test_a_file_of_an_older_schema_read_post_mortem_says_how_to_migrate(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    open_store(path).close()
    with duckdb.connect(str(path)) as connection:  # as a version 4 file is: no payloads, no flow_edges
        connection.execute("DROP TABLE payloads")
        connection.execute("DROP MACRO TABLE flow_edges")
        connection.execute("DELETE FROM schema_version WHERE version >= 5")
    source = FileSource(str(path))
    try:
        assert source.sql("SELECT count(*) FROM events").rows == [(0,)]  # plain SQL still works
        # a question that needs what the old file lacks (the payload filter reads payloads; an
        # unfiltered page since issue 16 writes only the filters given, so it reads no payloads)
        with pytest.raises(SourceError, match=r"schema version 4.*eventscope collect --db .* once"):
            source.ask("events_page", payload="order_id=1")
        with pytest.raises(SourceError, match=r"schema version 4.*eventscope collect --db .* once"):
            source.ask("chain_detail", event_id="e1")
    finally:
        source.close()
    open_store(path).close()  # what the hint says: the collector migrates it
    source = FileSource(str(path))
    try:
        assert source.ask("events_page")["total"] == 0
    finally:
        source.close()
