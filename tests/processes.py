"""Helpers of every test that runs eventscope in a child process: the CLI command, a free
loopback port, and waiting until a collector answers /healthz.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx

CLI = [sys.executable, "-c", "from eventscope.tracer.cli.main import main; raise SystemExit(main())"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Wait until the collector at ``url`` answers /healthz; fail with its output if it exits."""
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


def collect(db: str, port: int, *flags: str) -> subprocess.Popen[str]:
    """``eventscope collect`` on 127.0.0.1:``port`` with ``flags``, output piped (text)."""
    return subprocess.Popen(
        [*CLI, "--log-level", "warning", "collect", "--db", db, "--listen", f"127.0.0.1:{port}", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
