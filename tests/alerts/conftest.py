"""Fixtures of the alert tests: a real store + writer + engine on a fake clock, a webhook
receiver on 127.0.0.1, and the span builders of the collector tests (tests/spans.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.alerts.alert_helpers import Harness, WebhookReceiver


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made: list[Harness] = []

    def make(toml: str, **kwargs: object) -> Harness:
        made.append(Harness(tmp_path / f"alerts-{len(made)}.duckdb", toml, **kwargs))
        return made[-1]

    yield make  # type: ignore[misc]
    for h in made:
        h.close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver
