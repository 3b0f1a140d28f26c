"""The ``eventscope`` command: ``collect``, ``sql`` and ``demo``.

Commands are thin: they parse flags and call the collector, :mod:`queries` or the demo.
Exit codes: 0 success, 1 the query or the collector failed, 2 bad usage (argparse's).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import Any

from eventscope.tracer.broker.payloads import DEFAULT_MAX_BYTES as DEFAULT_PAYLOAD_BYTES
from eventscope.tracer.broker.payloads import DEFAULT_REDACT, PayloadCapture
from eventscope.tracer.contract import ORPHAN_REASONS

__all__ = ["main", "parse_bytes", "parse_duration"]

logger = logging.getLogger(__name__)

_DEFAULT_LISTEN = "127.0.0.1:4318"
_DEFAULT_API = "http://127.0.0.1:4318"
_DEFAULT_DB = "eventscope.duckdb"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 15m, 12h, 7d)")
    return float(match.group(1)) * _DURATION_UNITS.get(match.group(2) or "s", 1)


def parse_bytes(text: str) -> int:
    """``1048576``, ``32MiB``, ``16MB`` → bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]i?b|b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4194304, 32MiB, 16MB)")
    value = int(match.group(1)) * _BYTE_UNITS[match.group(2) or ""]
    if value < 1:
        raise argparse.ArgumentTypeError("size must be positive")
    return value


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("seconds must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventscope",
        description="Debugging and observability for event-driven systems on RabbitMQ.",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    collect = commands.add_parser(
        "collect",
        help="run the collector: OTLP/HTTP in, DuckDB store, read API",
        description=(
            "Receive OTLP/HTTP spans on /v1/traces (and OTLP/gRPC with --grpc), store events, "
            "deliveries and causal edges in a "
            "DuckDB file (this process is its only writer), serve /api/sql, /api/orphans, "
            "/api/events/ID, /api/chain/ID, /healthz and /metrics. SIGTERM/SIGINT flush, close and "
            "exit 0."
        ),
    )
    collect.add_argument(
        "--db", default=_DEFAULT_DB, metavar="PATH", help=f"DuckDB file (default {_DEFAULT_DB})"
    )
    collect.add_argument(
        "--tap-queue",
        metavar="NAME",
        help="durable, bounded tap queues eventscope.collector.<tap>.NAME that outlive the collector "
        "and are shared by the instances using NAME (docs/sql.md)",
    )
    collect.add_argument(
        "--store",
        metavar="URL",
        help="store URL instead of --db: duckdb:///FILE, chdb:///DIR, clickhouse://HOST:8123/DB",
    )
    collect.add_argument(
        "--listen",
        type=_listen,
        default=_listen(_DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"HTTP listener (default {_DEFAULT_LISTEN})",
    )
    collect.add_argument(
        "--grpc",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="also receive OTLP/gRPC here, e.g. 127.0.0.1:4317 (default: off)",
    )
    collect.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long an event may wait for delivery/settle before it is an orphan (default 30)",
    )
    collect.add_argument(
        "--retention",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="delete data older than this, e.g. 7d or 12h (default: keep everything)",
    )
    collect.add_argument(
        "--token",
        default=os.environ.get("EVENTSCOPE_TOKEN"),
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on every route but /healthz (default $EVENTSCOPE_TOKEN)",
    )
    collect.add_argument(
        "--max-body",
        type=parse_bytes,
        default=32 * 2**20,
        metavar="BYTES",
        help="largest OTLP request accepted, after decompression (default 32MiB); larger → 413",
    )
    collect.add_argument(
        "--config",
        default=os.environ.get("EVENTSCOPE_CONFIG"),
        metavar="FILE",
        help="eventscope.toml with [alerts] rules, expectations and sinks (docs/alerts.md), validated "
        "before anything starts (default $EVENTSCOPE_CONFIG)",
    )
    broker = collect.add_argument_group(
        "broker truth",
        "what RabbitMQ itself says: routing (firehose), dead-lettering (DLX tap), queue arguments "
        "(management API); see docs/sql.md",
    )
    broker.add_argument(
        "--amqp-url",
        default=os.environ.get("EVENTSCOPE_AMQP_URL"),
        metavar="URL",
        help="broker for the firehose and dead-letter taps, e.g. amqp://guest:guest@127.0.0.1:5672/%%2F "
        "(default $EVENTSCOPE_AMQP_URL)",
    )
    broker.add_argument(
        "--firehose",
        action="store_true",
        help="consume amq.rabbitmq.trace (turned on for the vhost with rabbitmqctl when the broker is local)",
    )
    broker.add_argument(
        "--no-trace-on",
        dest="trace_on",
        action="store_false",
        help="never run rabbitmqctl trace_on; tracing must already be on for the vhost",
    )
    broker.add_argument(
        "--dlx",
        action="append",
        default=[],
        metavar="NAME",
        help="a dead-letter exchange to tap (repeatable); --management-url finds the others",
    )
    broker.add_argument(
        "--management-url",
        default=os.environ.get("EVENTSCOPE_MANAGEMENT_URL"),
        metavar="URL",
        help="RabbitMQ management API, e.g. http://guest:guest@127.0.0.1:15672: queues, bindings, "
        "queue arguments (TTL, DLX) (default $EVENTSCOPE_MANAGEMENT_URL)",
    )
    broker.add_argument(
        "--management-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often the management API is polled (default 5)",
    )
    broker.add_argument(
        "--capture-payloads",
        action="store_true",
        help="keep each published body in the payloads table, redacted and capped (needs --firehose; "
        "off by default: bodies may hold personal data)",
    )
    broker.add_argument(
        "--payload-max-bytes",
        type=parse_bytes,
        default=DEFAULT_PAYLOAD_BYTES,
        metavar="BYTES",
        help=f"keep at most this much of each body (default {DEFAULT_PAYLOAD_BYTES})",
    )
    broker.add_argument(
        "--redact",
        action="append",
        default=[],
        metavar="FIELD",
        help="a JSON field whose values are never stored (repeatable; added to "
        + ", ".join(sorted(DEFAULT_REDACT))
        + ")",
    )

    sql = commands.add_parser(
        "sql",
        help="run one read-only SQL query",
        description=(
            "Run one read-only SELECT against the public schema (spans, events, deliveries, "
            "causal_edges, orphans, alerts, chain(ID)). Against a running collector use --api; "
            "--db opens a file no collector holds."
        ),
    )
    _add_source_arguments(sql)
    sql.add_argument(
        "--format",
        choices=["table", "csv", "json", "parquet"],
        default="table",
        help="output (default table); parquet needs --output",
    )
    sql.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")
    sql.add_argument("query", metavar="SQL", help='e.g. "SELECT * FROM orphans"')

    orphans = commands.add_parser(
        "orphans",
        help="events that did not end well, as a table",
        description="Orphan events (per expected queue) with their reason and age, newest first.",
    )
    _add_source_arguments(orphans)
    orphans.add_argument(
        "--reason",
        choices=ORPHAN_REASONS,
    )
    orphans.add_argument("--grace", type=_seconds, default=None, metavar="SECONDS", help="override the grace")
    orphans.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")

    chain = commands.add_parser(
        "chain",
        help="what an event caused, as a tree",
        description="The causal chain of an event: everything downstream of it, across services and traces.",
    )
    _add_source_arguments(chain)
    chain.add_argument("event_id", metavar="EVENT_ID")

    alerts = commands.add_parser(
        "alerts",
        help="alerts fired by the collector's rules, as a table",
        description="Alerts (newest first) with their rule, severity, status, reason and delivery state.",
    )
    _add_source_arguments(alerts)
    alerts.add_argument("--firing", action="store_true", help="only the alerts not resolved yet")
    alerts.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")

    rules = commands.add_parser(
        "rules",
        help="check an eventscope.toml",
        description="Alert rules: `eventscope rules check FILE` validates a configuration file.",
    )
    rules_commands = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    check = rules_commands.add_parser(
        "check",
        help="validate FILE: OK and a summary, or every error with its line (exit 1)",
    )
    check.add_argument("file", metavar="FILE")

    dashboard = commands.add_parser(
        "dashboard",
        help="the Streamlit dashboard, against a running collector or a database file",
        description=(
            "Serve the dashboard on 127.0.0.1 (XSRF protection on). Live against a running collector "
            "(--api, the default) or post-mortem on a DuckDB file no collector holds (--db)."
        ),
    )
    _add_source_arguments(dashboard)
    dashboard.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    dashboard.add_argument(
        "--address",
        default="127.0.0.1",
        help="listen address (default 127.0.0.1; 0.0.0.0 only inside a container)",
    )

    demo = commands.add_parser(
        "demo",
        help="collector + dashboard + a small shop on RabbitMQ producing healthy chains and orphans",
        description=(
            "Start a collector and a demo shop on RabbitMQ (one process per service), print a live "
            "summary, and stop everything on Ctrl-C or after --duration."
        ),
    )
    from eventscope.demo import runner

    runner.add_arguments(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command in (
        "sql",
        "orphans",
        "chain",
        "demo",
        "alerts",
        "rules",
    )  # their output is for people; library chatter is not
    level = max(logging.WARNING, _level(args.log_level)) if quiet else _level(args.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "collect":
        return _collect(args)
    if args.command in ("sql", "orphans", "chain"):
        return _read_command(args)
    if args.command == "alerts":
        return _alerts(args)
    if args.command == "rules":
        return _rules_check(args.file)
    if args.command == "dashboard":
        return _dashboard(args)
    if args.command == "demo":
        from eventscope.demo import runner

        return runner.main(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


def _level(name: str) -> int:
    return logging.getLevelName(name.upper())


# -- collect ----------------------------------------------------------------------------------
def _collect(args: argparse.Namespace) -> int:
    from eventscope.tracer.server.app import CollectorConfig, serve
    from eventscope.tracer.store.duckdb_store import StoreLocked

    host, port = args.listen
    if (args.firehose or args.dlx) and not args.amqp_url:
        print("eventscope collect: --firehose and --dlx need --amqp-url", file=sys.stderr)
        return 2
    if args.capture_payloads and not args.firehose:
        print(
            "eventscope collect: --capture-payloads reads bodies from the firehose: add --firehose",
            file=sys.stderr,
        )
        return 2
    alerts = None
    if args.config:
        from eventscope.tracer.alerts.rules import ConfigError, load

        try:
            alerts = load(args.config)
        except ConfigError as exc:
            print(f"eventscope collect: {args.config} is not valid; nothing started:\n{exc}", file=sys.stderr)
            return 1
    try:
        config = CollectorConfig(
            db_path=args.store or args.db,
            tap_queue=args.tap_queue,
            grace_s=args.grace,
            retention_s=args.retention,
            max_body=args.max_body,
            token=args.token or None,
            grpc_listen=_address(*args.grpc) if args.grpc else None,
            capture=PayloadCapture.with_fields(args.redact, max_bytes=args.payload_max_bytes)
            if args.capture_payloads
            else None,
            amqp_url=args.amqp_url or None,
            firehose=args.firehose,
            trace_on=args.trace_on,
            dlx=tuple(args.dlx),
            management_url=args.management_url or None,
            management_interval_s=args.management_interval or 5.0,
            alerts=alerts,
        )
    except ValueError as exc:  # options that do not go together, or grpcio missing for --grpc
        print(f"eventscope collect: {exc}", file=sys.stderr)
        return 2
    # uvicorn re-raises the signal that stopped it to the handlers it found: make those ours,
    # so a SIGTERM/SIGINT shutdown (flushed and closed) ends with exit status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    try:
        serve(config, host=host, port=port, log_level=args.log_level)
    except (StoreLocked, ValueError, OSError) as exc:
        print(f"eventscope collect: {exc}", file=sys.stderr)
        return 1
    logger.info("collector stopped; %s closed", args.db)
    return 0


# -- alerts, rules ----------------------------------------------------------------------------
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


def _alerts(args: argparse.Namespace) -> int:
    from eventscope.tracer.query.client import SourceError, open_source

    try:
        source = open_source(db=args.db, api=args.api, token=args.token)
        try:
            rows = source.ask("alert_details", firing=args.firing, limit=args.limit)
        finally:
            source.close()
    except SourceError as exc:
        print(f"eventscope alerts: {exc}", file=sys.stderr)
        return 1
    cells = []
    for row in rows:
        delivered = (
            "yes" if row.get("delivered") else f"no: {row['last_error']}" if row.get("last_error") else "no"
        )
        cells.append([_cell(delivered if c == "delivered" else row.get(c)) for c in _ALERT_COLUMNS])
    sys.stdout.write(_format("table", list(_ALERT_COLUMNS), cells))
    return 0


def _rules_check(path: str) -> int:
    from eventscope.tracer.alerts.rules import ConfigError, load

    try:
        config = load(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK, {config.summary()}")
    return 0


# -- dashboard --------------------------------------------------------------------------------
def _dashboard(args: argparse.Namespace) -> int:
    from eventscope.dashboard import server

    if args.db and not os.path.exists(args.db):
        print(f"eventscope dashboard: no eventscope database at {args.db}", file=sys.stderr)
        return 1
    api = None if args.db else (args.api or os.environ.get("EVENTSCOPE_API") or _DEFAULT_API)
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


# -- sql, orphans, chain ------------------------------------------------------------------
def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--db", metavar="PATH", help="DuckDB file to open read-only (no collector running)")
    target.add_argument(
        "--store", metavar="URL", help="store URL: duckdb:///FILE, chdb:///DIR, clickhouse://HOST:8123/DB"
    )
    target.add_argument(
        "--api", metavar="URL", help=f"collector base URL (default $EVENTSCOPE_API or {_DEFAULT_API})"
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help="the collector's bearer token (default $EVENTSCOPE_TOKEN)"
    )


def _read_command(args: argparse.Namespace) -> int:
    from eventscope.tracer.query.client import SourceError, open_source

    try:
        source = open_source(db=args.db, api=args.api, token=args.token, store=args.store)
        try:
            if args.command == "sql":
                return _sql(source, args)
            if args.command == "orphans":
                rows = source.orphans(reason=args.reason, grace_s=args.grace, limit=args.limit)
                _print_orphans(rows)
                return 0
            return _print_chain(source.chain(args.event_id), args.event_id)
        finally:
            source.close()
    except SourceError as exc:
        print(f"eventscope {args.command}: {exc}", file=sys.stderr)
        return 1


def _sql(source: Any, args: argparse.Namespace) -> int:
    if args.format == "parquet":
        if not args.output:
            print("eventscope sql: --format parquet writes a file: add --output FILE", file=sys.stderr)
            return 2
        import pyarrow.parquet as pq

        result = source.sql(args.query, arrow=True)
        pq.write_table(result.table, args.output)
        print(f"{result.table.num_rows} rows written to {args.output}", file=sys.stderr)
    else:
        from eventscope.tracer.query.questions import jsonable

        result = source.sql(args.query)
        rows = [[jsonable(v) for v in row] for row in result.rows]
        text = _format(args.format, result.columns, rows)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(text)
        else:
            sys.stdout.write(text)
    if result.truncated:
        print(
            "eventscope sql: output cut by the collector's row cap (use --db for all rows)", file=sys.stderr
        )
    return 0


_ORPHAN_COLUMNS = ("reason", "event_type", "queue", "age_s", "event_id", "exchange", "routing_key")


def _print_orphans(rows: list[dict[str, Any]]) -> None:
    """A rich table on a terminal; plain aligned text (nothing cut) when piped."""
    cells = [[_orphan_cell(row, column) for column in _ORPHAN_COLUMNS] for row in rows]
    if not sys.stdout.isatty():
        sys.stdout.write(_format("table", list(_ORPHAN_COLUMNS), cells))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} orphan{'s' if len(rows) != 1 else ''}", title_justify="left")
    for column in _ORPHAN_COLUMNS:
        table.add_column(column, justify="right" if column == "age_s" else "left", overflow="fold")
    for row in cells:
        table.add_row(*row)
    Console().print(table)


def _orphan_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "age_s" and isinstance(value, int | float):
        return f"{value:.1f}"
    return _cell(value)


def _print_chain(rows: list[dict[str, Any]], event_id: str) -> int:
    from rich.console import Console
    from rich.tree import Tree

    unknown = len(rows) == 1 and rows[0].get("published_at") is None and not rows[0].get("deliveries")
    if not rows or unknown:
        print(f"eventscope chain: no event {event_id!r}", file=sys.stderr)
        return 1

    def label(row: dict[str, Any]) -> str:
        producer = row.get("producer_service") or "?"
        route = "/".join(p for p in (row.get("exchange"), row.get("routing_key")) if p)
        return (
            f"[bold]{row.get('event_type') or '(unknown type)'}[/] {row['event_id']} "
            f"[dim]by {producer} via {route or 'amq.default'}, {row.get('deliveries', 0)} deliveries[/]"
        )

    nodes: dict[str, Tree] = {}
    root = Tree(label(rows[0]))
    nodes[rows[0]["event_id"]] = root
    for row in rows[1:]:
        parent = nodes.get(row.get("cause_event_id") or "", root)
        nodes[row["event_id"]] = parent.add(label(row))
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 10_000).print(root)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _format(kind: str, columns: list[str], rows: list[list[Any]]) -> str:
    if kind == "json":
        return json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2) + "\n"
    if kind == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(v) for v in row] for row in rows)
        return out.getvalue()
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
