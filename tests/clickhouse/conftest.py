"""chDB allows one data path per process: the tests of this folder share one, emptied per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chdb")

from eventscope.tracer.store.clickhouse.engine import open_chdb
from eventscope.tracer.store.clickhouse.store import ClickHouseStore

_TABLES = (
    "otel_traces",
    "span_messages",
    "span_tree",
    "span_keys",
    "span_links",
    "derived_events",
    "derived_deliveries",
    "derived_edges",
    "edge_flows",
    "event_flows",
    "derived_fates",
    "derive_keys",
    "derive_spans",
    "derive_scope",
    "derive_resolved",
    "broker_events",
    "broker_deliveries",
    "broker_dead_letters",
    "broker_payloads",
    "broker_queues",
    "broker_exchanges",
    "broker_bindings",
)


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def chstore(chdb_path: Path) -> Iterator[Any]:
    store = ClickHouseStore(open_chdb(str(chdb_path)), f"chdb://{chdb_path}", grace_s=0)
    for table in _TABLES:
        store.engine.command(f"TRUNCATE TABLE {table}")
    yield store
