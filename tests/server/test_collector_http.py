"""The collector's HTTP surface: OTLP status codes, idempotency, the read API, health, metrics."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from eventscope.tracer.ingest.writer import WriteQueueFull
from eventscope.tracer.server.app import Collector, CollectorConfig, serve
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import RunningCollector, new_span_id, new_trace, process, publish, request

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningCollector]:
    config = CollectorConfig(db_path=str(tmp_path / "c.duckdb"), grace_s=0, max_body=1024 * 1024)
    running = RunningCollector(config).start()
    yield running
    running.stop()


@pytest.fixture
def collector(running: RunningCollector) -> Collector:
    return running.collector


@pytest.fixture
def client(running: RunningCollector) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as http:
        yield http


def sql(client: httpx.Client, query: str) -> list[list]:
    response = client.get("/api/sql", params={"q": query})
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def status_message(body: bytes) -> str:
    status = status_pb2.Status()
    status.ParseFromString(body)
    return status.message


def a_batch() -> bytes:
    trace_id, producer_id = new_trace(), new_span_id()
    return request(
        publish(trace_id=trace_id, event_id=f"e-{producer_id}", span_id=producer_id),
        process(trace_id=trace_id, parent=producer_id, event_id=f"e-{producer_id}", queue="q"),
    ).SerializeToString()


def test_protobuf_export_is_committed_before_200(client: httpx.Client) -> None:
    response = client.post("/v1/traces", content=a_batch(), headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse()
    parsed.ParseFromString(response.content)
    assert parsed.partial_success.rejected_spans == 0
    assert sql(client, "SELECT count(*) FROM spans") == [[2]]
    assert sql(client, "SELECT count(*) FROM deliveries WHERE event_id IS NOT NULL") == [[1]]


def test_gzip_export(client: httpx.Client) -> None:
    headers = dict(PROTOBUF, **{"Content-Encoding": "gzip"})
    assert client.post("/v1/traces", content=gzip.compress(a_batch()), headers=headers).status_code == 200


def test_same_batch_twice_is_stored_once(client: httpx.Client) -> None:
    body = a_batch()
    for _ in range(2):
        assert client.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    assert sql(client, "SELECT count(*) FROM spans") == [[2]]
    assert sql(client, "SELECT count(*) FROM events") == [[1]]
    assert sql(client, "SELECT count(*) FROM deliveries") == [[1]]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"\xff\xff\xff\xff garbage", PROTOBUF, 400),
        (gzip.compress(b"x" * 10_000)[:20], dict(PROTOBUF, **{"Content-Encoding": "gzip"}), 400),
        (gzip.compress(b"\0" * (64 * 1024 * 1024)), dict(PROTOBUF, **{"Content-Encoding": "gzip"}), 413),
        (b"\0" * (1024 * 1024 + 1), PROTOBUF, 413),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"", {}, 415),
        (b"{}", {"Content-Type": "application/x-protobuf", "Content-Encoding": "br"}, 415),
    ],
    ids=["garbage", "truncated-gzip", "gzip-bomb", "too-large", "text-plain", "no-type", "brotli"],
)
def test_hostile_input(client: httpx.Client, body: bytes, headers: dict[str, str], status: int) -> None:
    response = client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == status
    assert status_message(response.content)  # a google.rpc.Status body that says why
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/traces", content=a_batch(), headers=PROTOBUF).status_code == 200


def test_json_with_unknown_fields_and_a_bad_span(client: httpx.Client) -> None:
    trace_id = new_trace()
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                "brandNewField": True,
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "1111111111111111",
                                "name": "publish shop",
                                "kind": "SPAN_KIND_PRODUCER",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000001000000",
                                "attributes": [
                                    {"key": "messaging.system", "value": {"stringValue": "rabbitmq"}},
                                    {"key": "messaging.operation.type", "value": {"stringValue": "send"}},
                                    {"key": "messaging.message.id", "value": {"stringValue": "json-1"}},
                                ],
                                "futureThing": {"a": 1},
                            },
                            {"traceId": "zz", "spanId": "1111111111111111", "name": "broken"},
                        ]
                    }
                ],
            }
        ]
    }
    response = client.post(
        "/v1/traces", content=json.dumps(document), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "trace_id" in partial["errorMessage"]
    assert sql(client, "SELECT event_id, producer_service FROM events") == [["json-1", "js"]]
    metrics = client.get("/metrics").text
    assert "eventscope_spans_rejected_total 1" in metrics and "eventscope_spans_accepted_total 1" in metrics


def test_json_garbage_gets_a_json_status(client: httpx.Client) -> None:
    response = client.post("/v1/traces", content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "invalid JSON" in response.json()["message"]


def test_full_write_queue_answers_503_with_retry_after(
    client: httpx.Client, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(batch: object) -> None:
        collector.writer.refused += 1
        raise WriteQueueFull("write queue full (64 batches waiting)")

    monkeypatch.setattr(collector.writer, "submit", full)
    response = client.post("/v1/traces", content=a_batch(), headers=PROTOBUF)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "eventscope_requests_refused_total 1" in client.get("/metrics").text


def test_writer_queue_is_bounded(tmp_path: Path) -> None:
    from eventscope.tracer.ingest.normaliser import Normalised
    from eventscope.tracer.ingest.writer import Writer

    store = Store.open(tmp_path / "w.duckdb")
    writer = Writer(store, max_pending=2)  # not started: nothing drains the queue
    writer.submit(Normalised())
    writer.submit(Normalised())
    with pytest.raises(WriteQueueFull):
        writer.submit(Normalised())
    assert writer.refused == 1 and writer.depth == 2
    store.close()


def test_sql_api_sandbox_and_runaway_query(tmp_path: Path) -> None:
    config = CollectorConfig(db_path=str(tmp_path / "c.duckdb"), sql_timeout_s=0.5, sql_max_rows=5)
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    running = RunningCollector(config).start()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        for query in (
            f"SELECT * FROM read_csv('{secret}')",
            f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
            f"ATTACH '{tmp_path / 'x.duckdb'}'",
            "INSTALL httpfs",
            "SET enable_external_access = true",
            "DROP TABLE events",
        ):
            response = client.post("/api/sql", json={"sql": query})
            assert response.status_code == 400, (query, response.text)
            assert response.json()["error"]
        assert not (tmp_path / "out.csv").exists()

        outcome: dict[str, int] = {}

        def runaway() -> None:
            response = client.get(
                "/api/sql", params={"q": "SELECT count(*) FROM range(10000000000) a, range(10) b"}
            )
            outcome["status"] = response.status_code

        thread = threading.Thread(target=runaway)
        thread.start()
        # while it runs, the collector keeps ingesting and answering
        assert client.post("/v1/traces", content=a_batch(), headers=PROTOBUF).status_code == 200
        assert client.get("/healthz").json()["status"] == "ok"
        thread.join(20)
        assert outcome["status"] == 408
        capped = client.post(
            "/api/sql", content="SELECT * FROM range(100)", headers={"Content-Type": "text/plain"}
        )
        assert capped.json()["row_count"] == 5 and capped.json()["truncated"] is True
        assert client.get("/api/sql").status_code == 400
    running.stop()


def test_read_api(client: httpx.Client) -> None:
    trace_id = new_trace()
    body = request(
        publish(trace_id=trace_id, event_id="A"),
        process(trace_id=trace_id, parent=None, event_id="A", queue="q"),
        publish(trace_id=trace_id, event_id="B", causation_id="A", exchange="", routing_key="nobody"),
    ).SerializeToString()
    assert client.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    event = client.get("/api/events/A").json()
    assert event["event"]["event_id"] == "A" and event["deliveries"][0]["outcome"] == "ack"
    assert client.get("/api/events/missing").status_code == 404
    chain = client.get("/api/chain/A").json()["chain"]
    assert [(row["event_id"], row["depth"], row["cause_event_id"]) for row in chain] == [
        ("A", 0, None),
        ("B", 1, "A"),
    ]
    orphans = client.get("/api/orphans").json()["orphans"]
    assert [(o["event_id"], o["queue"], o["reason"]) for o in orphans] == [("B", "nobody", "unconsumed")]
    assert client.get("/api/orphans", params={"grace": "1e10"}).json()["orphans"] == []
    assert client.get("/api/orphans", params={"grace": "soon"}).status_code == 400
    metrics = client.get("/metrics").text
    for name in ("spans_received_total", "write_queue_depth", "dropped_total", "requests_refused_total"):
        assert f"eventscope_{name}" in metrics


@pytest.mark.parametrize("scheme", ["", "duckdb://"])
def test_serve_makes_the_stores_folder_not_one_named_after_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    # --store duckdb:///DIR/F made a folder 'duckdb:/DIR' under the working directory (and chdb:// one
    # named 'chdb:'), because the URL itself was taken for a path
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    target = tmp_path / "new" / "folder" / "c.duckdb"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        serve(
            CollectorConfig(db_path=f"{scheme}{target}", grace_s=0),
            sock=sock,
            log_level="warning",
            on_server=lambda server: setattr(server, "should_exit", True),
        )
    assert target.exists()
    assert list(cwd.iterdir()) == []
