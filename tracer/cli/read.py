"""``eventscope sql``, ``orphans``, ``chain``, ``alerts``: read questions, from a collector or a file.

Thin: each command asks one question of a :mod:`~eventscope.tracer.query.client` source
and renders the answer. Bad input (a path that is not a DuckDB file, a DuckDB file that is
not eventscope's, an output that cannot be written) is one line saying what to do.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from eventscope.tracer.cli import options, render
from eventscope.tracer.cli.options import fail
from eventscope.tracer.contract import ORPHAN_REASONS

__all__ = ["add_source_arguments", "register"]

_DEFAULT_API = "http://127.0.0.1:4318"
_DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file
_ALERT_COLUMNS = (
    "status",
    "severity",
    "rule",
    "reason",
    "queue",
    "event_type",
    "event_id",
    "fired_at",
    "delivered",
)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db`` | ``--store`` | ``--api``, and ``--token``: where a read command (or the dashboard)
    reads from."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--db", metavar="PATH", help="DuckDB file to open read-only (no collector running; $EVENTSCOPE_DB)"
    )
    target.add_argument(
        "--store", metavar="URL", help="store URL: duckdb:///FILE, chdb:///DIR, clickhouse://HOST:8123/DB"
    )
    target.add_argument(
        "--api", metavar="URL", help=f"collector base URL (default $EVENTSCOPE_API or {_DEFAULT_API})"
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help="the collector's bearer token (default $EVENTSCOPE_TOKEN)"
    )


def register(commands: Any) -> None:
    sql = commands.add_parser(
        "sql",
        help="run one read-only SQL query",
        description=(
            "Run one read-only SELECT against the public schema (spans, events, deliveries, "
            "causal_edges, orphans, alerts, chain(ID)). Against a running collector use --api; "
            "--db opens a file no collector holds."
        ),
    )
    add_source_arguments(sql)
    sql.add_argument(
        "--format",
        choices=["table", "csv", "json", "parquet"],
        default="table",
        help="output (default table); parquet needs --output",
    )
    sql.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    sql.add_argument("query", metavar="SQL", help='e.g. "SELECT * FROM orphans"')
    sql.set_defaults(handler=run_sql, needs="collector", quiet=True)

    orphans = commands.add_parser(
        "orphans",
        help="events that did not end well, as a table",
        description="Orphan events (per expected queue) with their reason and age, newest first.",
    )
    add_source_arguments(orphans)
    orphans.add_argument("--reason", choices=ORPHAN_REASONS)
    orphans.add_argument(
        "--grace", type=options.seconds, default=None, metavar="SECONDS", help="override the grace"
    )
    orphans.add_argument(
        "--limit", type=options.positive_int, default=100, help="at most this many rows (default 100)"
    )
    orphans.set_defaults(handler=run_orphans, needs="collector", quiet=True)

    chain = commands.add_parser(
        "chain",
        help="what an event caused, as a tree",
        description="The causal chain of an event: everything downstream of it, across services and traces.",
    )
    add_source_arguments(chain)
    chain.add_argument("event_id", metavar="EVENT_ID")
    chain.set_defaults(handler=run_chain, needs="collector", quiet=True)

    alerts = commands.add_parser(
        "alerts",
        help="alerts fired by the collector's rules, as a table",
        description="Alerts (newest first) with their rule, severity, status, reason and delivery state.",
    )
    add_source_arguments(alerts)
    alerts.add_argument("--firing", action="store_true", help="only the alerts not resolved yet")
    alerts.add_argument(
        "--limit", type=options.positive_int, default=100, help="at most this many rows (default 100)"
    )
    alerts.set_defaults(handler=run_alerts, needs="collector", quiet=True)


# -- the source -----------------------------------------------------------------------------------
def check_database(path: str) -> None:
    """Refuse, in one line, a ``--db`` that is missing, a directory, or not a DuckDB file."""
    if not os.path.exists(path):
        raise fail(
            f"no eventscope database at {path}: check the path, or read a running collector with --api URL"
        )
    if os.path.isdir(path):
        raise fail(f"{path} is a directory: --db takes the DuckDB file `eventscope collect --db` wrote")
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
    except OSError as exc:
        raise fail(f"cannot read {path} ({exc.strerror}): check its permissions") from None
    if header[8:12] != _DUCKDB_MAGIC:
        raise fail(f"{path} is not a DuckDB file: --db takes the file `eventscope collect --db` wrote")


def open_source(args: argparse.Namespace) -> Any:
    """The file (checked to be an eventscope database) or the collector the flags name."""
    from eventscope.tracer.query.client import SourceError
    from eventscope.tracer.query.client import open_source as open_any

    if args.db:
        check_database(args.db)
    try:
        source = open_any(db=args.db, api=args.api, token=args.token, store=getattr(args, "store", None))
    except SourceError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # DuckDB refusing the file: corrupt, newer storage version...
        raise fail(f"cannot open {args.db or args.api}: {exc}".splitlines()[0]) from None
    if args.db:
        try:
            source.sql("SELECT max(version) FROM schema_version")
        except SourceError:
            source.close()
            raise fail(
                f"{args.db} is a DuckDB file but not an eventscope database (it has no schema_version "
                "table): point --db at the file `eventscope collect --db` wrote"
            ) from None
    return source


def _ask(args: argparse.Namespace, question: Any) -> Any:
    from eventscope.tracer.query.client import SourceError

    source = open_source(args)
    try:
        return question(source)
    except SourceError as exc:
        raise fail(str(exc)) from None
    finally:
        source.close()


def writable(path: str) -> None:
    """Refuse an ``--output`` that cannot be written before the query runs, not after."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise fail(f"--output {path} is a directory: name a file")
    if not os.path.isdir(directory):
        raise fail(f"--output {path}: the directory {directory} does not exist: create it or choose another")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise fail(f"--output {path} is not writable here: choose a path you can write")


# -- commands --------------------------------------------------------------------------------------
def run_sql(args: argparse.Namespace) -> int:
    if args.format == "parquet" and not args.output:
        raise fail("--format parquet writes a file: add --output FILE", status=2)
    if args.output:
        writable(args.output)
    if args.format == "parquet":
        import pyarrow.parquet as pq

        result = _ask(args, lambda source: source.sql(args.query, arrow=True))
        try:
            pq.write_table(result.table, args.output)
        except OSError as exc:
            raise fail(f"cannot write {args.output}: {exc}") from None
        print(f"{result.table.num_rows} rows written to {args.output}", file=sys.stderr)
    else:
        from eventscope.tracer.query.questions import jsonable

        result = _ask(args, lambda source: source.sql(args.query))
        rows = [[jsonable(v) for v in row] for row in result.rows]
        text = render.rows_text(args.format, result.columns, rows)
        if args.output:
            try:
                with open(args.output, "w", encoding="utf-8") as out:
                    out.write(text)
            except OSError as exc:
                raise fail(
                    f"cannot write {args.output} ({exc.strerror}): choose a path you can write"
                ) from None
        else:
            sys.stdout.write(text)
    if result.truncated:
        options.stderr("sql", "output cut by the collector's row cap (use --db for all rows)")
    return 0


def run_orphans(args: argparse.Namespace) -> int:
    rows = _ask(args, lambda s: s.orphans(reason=args.reason, grace_s=args.grace, limit=args.limit))
    render.orphans_table(rows)
    return 0


def run_chain(args: argparse.Namespace) -> int:
    rows = _ask(args, lambda source: source.chain(args.event_id))
    unknown = len(rows) == 1 and rows[0].get("published_at") is None and not rows[0].get("deliveries")
    if not rows or unknown:
        raise fail(f"no event {args.event_id!r}")
    render.chain_tree(rows)
    return 0


def run_alerts(args: argparse.Namespace) -> int:
    rows = _ask(args, lambda source: source.ask("alert_details", firing=args.firing, limit=args.limit))
    cells = []
    for row in rows:
        delivered = (
            "yes" if row.get("delivered") else f"no: {row['last_error']}" if row.get("last_error") else "no"
        )
        cells.append([render.cell(delivered if c == "delivered" else row.get(c)) for c in _ALERT_COLUMNS])
    sys.stdout.write(render.rows_text("table", list(_ALERT_COLUMNS), cells))
    return 0
