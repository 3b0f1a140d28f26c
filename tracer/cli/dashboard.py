"""``eventscope dashboard``: the Streamlit dashboard, live on a collector or post-mortem on a file."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from eventscope.tracer.cli import read

__all__ = ["register"]

_DEFAULT_API = "http://127.0.0.1:4318"


def register(commands: Any) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="the Streamlit dashboard, against a running collector or a database file",
        description=(
            "Serve the dashboard on 127.0.0.1 (XSRF protection on). Live against a running collector "
            "(--api, the default) or post-mortem on a DuckDB file no collector holds (--db)."
        ),
    )
    read.add_source_arguments(dashboard)
    dashboard.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    dashboard.add_argument(
        "--address",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; 0.0.0.0 only inside a container)",
    )
    dashboard.set_defaults(handler=run, needs="dashboard", quiet=False)


def run(args: argparse.Namespace) -> int:
    from eventscope.dashboard import server

    store = getattr(args, "store", None)
    if store:
        if not store.startswith("duckdb:///"):
            raise read.fail(
                "the dashboard reads a ClickHouse store through the collector that writes it: "
                "--api http://HOST:4318 (docs/scaling.md)",
                status=2,
            )
        args.db = store[len("duckdb://") :]
    if args.db:
        read.check_database(args.db)
    api = None if args.db else (args.api or _DEFAULT_API)
    process = server.start(port=args.port, db=args.db, api=api, token=args.token, host=args.address)
    source = f"database {args.db}" if args.db else f"collector {api}"
    print(
        f"eventscope dashboard on {server.url(args.port, args.address)} ({source}); Ctrl-C stops it",
        flush=True,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: process.terminate())
    status = process.wait()
    return 0 if status in (0, -signal.SIGTERM, -signal.SIGINT) else 1
