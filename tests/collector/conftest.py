"""Fixtures of the collector tests: a store and an in-process collector (see collector_helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import RunningCollector

from eventscope.tracer.collector import CollectorConfig
from eventscope.tracer.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "store.duckdb", grace_s=0)
    yield opened
    opened.close()


@pytest.fixture
def running_collector(tmp_path: Path) -> Iterator[RunningCollector]:
    collector = RunningCollector(CollectorConfig(db_path=str(tmp_path / "collector.duckdb"), grace_s=0))
    yield collector.start()
    collector.stop()
