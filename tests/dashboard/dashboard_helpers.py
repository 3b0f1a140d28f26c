"""Dashboard test helpers: the CLI command, ports, and AppTest readers of what a page shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from eventscope.tracer.query.client import open_source
from tests.processes import CLI, free_port, wait_healthy

__all__ = ["APP", "CLI", "ROOT", "free_port", "metrics", "one", "open_page", "texts", "wait_healthy"]

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")


def open_page(db: Path, page: str | None, monkeypatch: pytest.MonkeyPatch, **query: str) -> AppTest:
    """The app run on ``db``, switched to ``app_pages/<page>.py`` (None: the default page)."""
    monkeypatch.setenv("EVENTSCOPE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()
    if page is not None:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(at: AppTest) -> str:
    """Markdown, captions, subheaders, notices and page-link labels, one per line."""
    parts = [e.value for e in (*at.markdown, *at.caption, *at.subheader, *at.success, *at.info, *at.error)]
    parts += [link.proto.label for link in at.get("page_link")]
    return "\n".join(str(p) for p in parts)


def one(db: Path, sql: str) -> str:
    """The first value of ``sql``, read as the dashboard reads (same sandboxed read-only config)."""
    source = open_source(db=str(db))
    try:
        return source.sql(sql).rows[0][0]
    finally:
        source.close()
