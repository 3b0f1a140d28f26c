"""Dashboard test helpers: the CLI command, ports, and AppTest readers of what a page shows."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from eventscope.tracer.client import open_source

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
CLI = [sys.executable, "-c", "from eventscope.tracer.cli import main; raise SystemExit(main())"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "collector did not come up"
        time.sleep(0.1)


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
