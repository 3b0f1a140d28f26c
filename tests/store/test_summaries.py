"""The writer's summaries (tracer/store/summaries.py, schema version 12) say exactly what the
derivation from the tables says, whatever order spans, firehose records, settles and dead
letters arrive in, across restarts, retention and the migration that adds them; and the
questions that read them answer as the derivation does.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from eventscope.tracer.query import questions as queries
from eventscope.tracer.query.topology import CONSISTENCY_PER_EVENT
from eventscope.tracer.store import summaries
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import open_store
from tests.store.test_delivery_state import _scenario
from tests.store.test_store_broker import T0_NS

_ORDER = "ORDER BY event_id"


def _both(store: Store) -> tuple[list[tuple], list[tuple]]:
    reader = store.reader()
    try:
        kept = reader.execute(f"SELECT * FROM event_consistency {_ORDER}").fetchall()
        derived = reader.execute(f"SELECT * FROM ({CONSISTENCY_PER_EVENT}) {_ORDER}").fetchall()
    finally:
        reader.close()
    return kept, derived


def _assert_same(store: Store) -> int:
    kept, derived = _both(store)
    assert kept == derived
    return len(derived)


@pytest.mark.parametrize("seed", range(6))
def test_event_consistency_equals_the_derivation(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    now_ns = duckdb.connect().execute("SELECT epoch_ns(now())").fetchall()[0][0]
    batches = _scenario(rng, 40, (now_ns - T0_NS) // 1_000_000)
    path = tmp_path / "s.duckdb"
    store = open_store(path, grace_s=0)
    try:
        half = len(batches) // 2
        for start in range(0, half, 3):  # groups of batches, as the writer commits them
            store.append(batches[start : min(start + 3, half)])
            _assert_same(store)
    finally:
        store.close()
    store = open_store(path, grace_s=0)  # the rest after a restart: lineage looks spans up
    try:
        for batch in batches[half:]:
            store.append([batch])
            _assert_same(store)
        store.resolve_missing(older_than_s=0)
        assert _assert_same(store) > 0
        store.retain(max_age_s=120)  # drops the 2023 rows, keeps the recent ones
        _assert_same(store)
    finally:
        store.close()


def test_questions_read_the_summary_as_they_read_the_derivation(tmp_path: Path) -> None:
    path = tmp_path / "q.duckdb"
    store = open_store(path, grace_s=0)
    try:
        for batch in _scenario(random.Random(7), 60, 0):
            store.append([batch])
        reader = store.reader()
        with_summary = (queries.slowest(reader, limit=50), queries.lag(reader, outliers=50))
        reader.execute("ALTER TABLE event_consistency RENAME TO _hidden")  # as a version 11 file
        derived = (queries.slowest(reader, limit=50), queries.lag(reader, outliers=50))
        reader.execute("ALTER TABLE _hidden RENAME TO event_consistency")
        reader.close()
        assert with_summary[0]
        assert with_summary == derived
    finally:
        store.close()


def test_a_version_11_database_gets_its_summaries_on_migration(tmp_path: Path) -> None:
    path = tmp_path / "v11.duckdb"
    store = open_store(path, grace_s=0)
    try:
        for batch in _scenario(random.Random(42), 30, 0):
            store.append([batch])
        expected = _both(store)[1]
        assert expected
    finally:
        store.close()
    with duckdb.connect(str(path)) as connection:  # back to version 11: no summaries
        connection.execute("DROP TABLE event_consistency")
        connection.execute(f"DELETE FROM schema_version WHERE version >= {summaries.VERSION}")
    store = open_store(path, grace_s=0)
    try:
        kept, derived = _both(store)
        assert kept == derived == expected
    finally:
        store.close()
