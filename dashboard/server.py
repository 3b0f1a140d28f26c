"""Starting the dashboard: ``streamlit run app.py`` as a child process, bound to 127.0.0.1.

Used by ``eventscope dashboard`` and ``eventscope demo``. The data source travels in the
environment (``EVENTSCOPE_DB`` or ``EVENTSCOPE_API`` + ``EVENTSCOPE_TOKEN``), which
:mod:`eventscope.dashboard.data` reads. XSRF protection stays on, as Streamlit ships it.
This module imports nothing heavy: the demo uses it without loading Streamlit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["APP", "DEFAULT_PORT", "command", "environment", "start", "url", "wait_ready"]

APP = Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501
_HOST = "127.0.0.1"


def command(*, port: int, host: str = _HOST) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.enableXsrfProtection",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def environment(*, db: str | None = None, api: str | None = None, token: str | None = None) -> dict[str, str]:
    """This process's environment with the dashboard's source set (and any other one cleared)."""
    env = {k: v for k, v in os.environ.items() if k not in ("EVENTSCOPE_DB", "EVENTSCOPE_API")}
    if db:
        env["EVENTSCOPE_DB"] = str(Path(db).resolve())
    elif api:
        env["EVENTSCOPE_API"] = api
    if token:
        env["EVENTSCOPE_TOKEN"] = token
    return env


def url(port: int, host: str = _HOST) -> str:
    return f"http://{host}:{port}"


def start(
    *,
    port: int = DEFAULT_PORT,
    db: str | None = None,
    api: str | None = None,
    token: str | None = None,
    quiet: bool = False,
    host: str = _HOST,
) -> subprocess.Popen[bytes]:
    """The dashboard as a child process; stop it with ``terminate()``. Loopback unless told."""
    output = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(
        command(port=port, host=host),
        env=environment(db=db, api=api, token=token),
        stdout=output,
        stderr=output,
    )


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """True once the dashboard accepts connections; False if it exited or took too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection((_HOST, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False
