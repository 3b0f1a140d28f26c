"""``eventscope dashboard``: how Streamlit is started, and a clear refusal of a missing file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from eventscope.dashboard import server
from tests.dashboard.dashboard_helpers import CLI


def test_streamlit_is_bound_to_loopback_with_xsrf_on() -> None:
    command = server.command(port=8765)
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert command[2:5] == ["streamlit", "run", str(server.APP)]
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.port"] == "8765"
    assert options["--server.enableXsrfProtection"] == "true"
    assert options["--server.headless"] == "true"


def test_the_source_travels_in_the_environment(tmp_path: Path) -> None:
    env = server.environment(db=str(tmp_path / "x.duckdb"))
    assert env["EVENTSCOPE_DB"] == str(tmp_path / "x.duckdb") and "EVENTSCOPE_API" not in env
    env = server.environment(api="http://127.0.0.1:4318", token="t")
    assert env["EVENTSCOPE_API"] == "http://127.0.0.1:4318" and env["EVENTSCOPE_TOKEN"] == "t"
    assert "EVENTSCOPE_DB" not in env


def test_a_missing_database_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "dashboard", "--db", str(tmp_path / "nope.duckdb")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "no eventscope database at" in result.stderr
