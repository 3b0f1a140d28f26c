"""Untrusted SQL: one read-only SELECT, time limit, row cap; the named questions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.query import questions as queries
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import new_trace, process, publish, request


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM events",
        "DROP TABLE spans",
        "INSERT INTO alerts VALUES ('a', 'r', NULL, NULL, NULL, now(), NULL, false)",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "LOAD httpfs",
        "ATTACH '/tmp/x.duckdb'",
        "COPY events TO '/tmp/x.csv'",
        "PRAGMA database_list",
        "CALL checkpoint()",
        "SELECT 1; DROP TABLE spans",
    ],
)
def test_only_a_single_select_is_allowed(store: Store, sql: str) -> None:
    reader = store.reader()
    with pytest.raises(queries.SqlRejected):
        queries.run_sql(reader, sql)
    assert queries.run_sql(reader, "SELECT count(*) AS n FROM spans").rows == [(0,)]


def test_file_access_inside_a_select_is_refused(store: Store, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    reader = store.reader()
    for sql in (
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM '{secret}'",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    ):
        with pytest.raises(queries.SqlError):
            queries.run_sql(reader, sql)


def test_runaway_query_is_interrupted(store: Store) -> None:
    reader = store.reader()
    started = time.monotonic()
    with pytest.raises(queries.SqlTimeout):
        queries.run_sql(
            reader, "SELECT count(*) FROM range(1000000000) a, range(1000000000) b", timeout_s=0.5
        )
    assert time.monotonic() - started < 5
    assert queries.run_sql(reader, "SELECT 42 AS x").rows == [(42,)]  # the connection still works


def test_row_cap_and_json(store: Store) -> None:
    reader = store.reader()
    result = queries.run_sql(reader, "SELECT range AS n, now() AS t, [1, 2] AS l FROM range(25)", max_rows=10)
    assert result.truncated and len(result.rows) == 10
    document = result.to_json()
    assert document["columns"] == ["n", "t", "l"] and document["row_count"] == 10
    assert isinstance(document["rows"][0][1], str) and document["rows"][0][2] == [1, 2]
    assert result.records()[3]["n"] == 3
    assert not queries.run_sql(reader, "SELECT 1", max_rows=1).truncated


def test_syntax_errors_are_sql_errors(store: Store) -> None:
    with pytest.raises(queries.SqlError):
        queries.run_sql(store.reader(), "SELEC nonsense")
    with pytest.raises(queries.SqlError):
        queries.run_sql(store.reader(), "SELECT * FROM no_such_table")


def test_event_chain_and_orphans(store: Store) -> None:
    trace_id = new_trace()
    store.append(
        [
            normalise(
                request(
                    publish(trace_id=trace_id, event_id="A"),
                    process(trace_id=trace_id, parent=None, event_id="A", queue="q"),
                    publish(trace_id=trace_id, event_id="B", causation_id="A"),
                )
            )
        ]
    )
    reader = store.reader()
    found = queries.event(reader, "A")
    assert found is not None
    assert found["event"]["event_id"] == "A" and len(found["deliveries"]) == 1
    assert found["effects"] == [{"effect_event_id": "B", "via": "causation_id"}] and found["orphans"] == []
    assert queries.event(reader, "nope") is None
    assert [(r["event_id"], r["depth"]) for r in queries.chain(reader, "A")] == [("A", 0), ("B", 1)]
    assert [(r["event_id"], r["reason"]) for r in queries.orphans(reader)] == [("B", "unconsumed")]
    assert queries.orphans(reader, reason="failed") == []
    assert queries.orphans(reader, grace_s=10**10) == []
