"""``eventscope collect``: the collector process (OTLP in, DuckDB store, read API out)."""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from eventscope.tracer.broker.payloads import DEFAULT_MAX_BYTES as DEFAULT_PAYLOAD_BYTES
from eventscope.tracer.broker.payloads import DEFAULT_REDACT, PayloadCapture
from eventscope.tracer.cli import options
from eventscope.tracer.cli.options import fail

__all__ = ["register"]

logger = logging.getLogger(__name__)

_DEFAULT_LISTEN = "127.0.0.1:4318"
_DEFAULT_DB = "eventscope.duckdb"


def register(commands: Any) -> None:
    collect = commands.add_parser(
        "collect",
        help="run the collector: OTLP/HTTP in, DuckDB store, read API",
        description=(
            "Receive OTLP/HTTP spans on /v1/traces (and OTLP/gRPC with --grpc), store events, "
            "deliveries and causal edges in a DuckDB file (this process is its only writer), serve "
            "/api/sql, /api/orphans, /api/events/ID, /api/chain/ID, /healthz and /metrics. "
            "SIGTERM/SIGINT flush, close and exit 0."
        ),
    )
    collect.set_defaults(handler=run, needs="collector", quiet=False)
    collect.add_argument(
        "--db",
        default=_DEFAULT_DB,
        metavar="PATH",
        help=f"DuckDB file (default {_DEFAULT_DB}; $EVENTSCOPE_DB)",
    )
    collect.add_argument(
        "--store",
        metavar="URL",
        help="store URL instead of --db: duckdb:///FILE, chdb:///DIR, clickhouse://HOST:8123/DB",
    )
    collect.add_argument(
        "--tap-queue",
        metavar="NAME",
        help="durable, bounded tap queues eventscope.collector.<tap>.NAME that outlive the collector "
        "and are shared by the instances using NAME (docs/sql.md)",
    )
    collect.add_argument(
        "--listen",
        type=options.listen,
        default=options.listen(_DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"HTTP listener (default {_DEFAULT_LISTEN}; $EVENTSCOPE_LISTEN)",
    )
    collect.add_argument(
        "--grpc",
        type=options.listen,
        default=None,
        metavar="HOST:PORT",
        help="also receive OTLP/gRPC here, e.g. 127.0.0.1:4317 (default: off)",
    )
    collect.add_argument(
        "--grace",
        type=options.seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long an event may wait for delivery/settle before it is an orphan (default 30)",
    )
    collect.add_argument(
        "--retention",
        type=options.duration,
        default=None,
        metavar="DURATION",
        help="delete data older than this, e.g. 7d or 12h (default: keep everything)",
    )
    collect.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on every route but /healthz (default $EVENTSCOPE_TOKEN)",
    )
    collect.add_argument(
        "--max-body",
        type=options.parse_bytes,
        default=32 * 2**20,
        metavar="BYTES",
        help="largest OTLP request accepted, after decompression (default 32MiB); larger → 413",
    )
    collect.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="eventscope.toml with [alerts] rules, expectations and sinks (docs/alerts.md), validated "
        "before anything starts (default $EVENTSCOPE_CONFIG, else ./eventscope.toml when it has [alerts])",
    )
    broker = collect.add_argument_group(
        "broker truth",
        "what RabbitMQ itself says: routing (firehose), dead-lettering (DLX tap), queue arguments "
        "(management API); see docs/sql.md",
    )
    broker.add_argument(
        "--amqp-url",
        default=None,
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
        default=None,
        metavar="URL",
        help="RabbitMQ management API, e.g. http://guest:guest@127.0.0.1:15672: queues, bindings, "
        "queue arguments (TTL, DLX) (default $EVENTSCOPE_MANAGEMENT_URL)",
    )
    broker.add_argument(
        "--management-interval",
        type=options.seconds,
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
        type=options.parse_bytes,
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
    redrive = collect.add_argument_group(
        "redrive", "writing to the broker (docs/redrive.md): off unless asked for, and only with --token"
    )
    redrive.add_argument(
        "--allow-redrive",
        action="store_true",
        help="enable POST /api/redrive (needs --token and --amqp-url; off by default)",
    )
    redrive.add_argument(
        "--max-redrives",
        type=int,
        default=3,
        metavar="N",
        help="loop guard: refuse a message already redriven N times (default 3)",
    )
    redrive.add_argument(
        "--redrive-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin (besides the collector's own) allowed to call the write endpoint",
    )


def _alerts_config(args: argparse.Namespace) -> Any:
    """The ``[alerts]`` configuration: ``--config``, else ``./eventscope.toml`` if it has one."""
    from eventscope.tracer.alerts.rules import ConfigError, load

    path = args.config
    if not path:
        found, _ = options.load_file_settings()
        if found is None or not _has_alerts(found):
            return None
        path = str(found)
    try:
        return load(path)
    except ConfigError as exc:
        raise fail(f"{path} is not valid; nothing started:\n{exc}") from None


def _has_alerts(path: Any) -> bool:
    import tomllib

    try:
        return "alerts" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def run(args: argparse.Namespace) -> int:
    if (args.firehose or args.dlx) and not args.amqp_url:
        raise fail("--firehose and --dlx need --amqp-url (or $EVENTSCOPE_AMQP_URL)", status=2)
    if args.capture_payloads and not args.firehose:
        raise fail("--capture-payloads reads bodies from the firehose: add --firehose", status=2)
    alerts = _alerts_config(args)

    from eventscope.tracer.server.app import CollectorConfig, serve
    from eventscope.tracer.store.duckdb_store import StoreLocked

    host, port = args.listen
    try:
        config = CollectorConfig(
            db_path=args.store or args.db,
            tap_queue=args.tap_queue,
            grace_s=args.grace,
            retention_s=args.retention,
            max_body=args.max_body,
            token=args.token or None,
            grpc_listen=options.address(*args.grpc) if args.grpc else None,
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
            allow_redrive=args.allow_redrive,
            max_redrives=args.max_redrives,
            redrive_origins=tuple(args.redrive_origin),
        )
    except ValueError as exc:  # options that do not go together, or grpcio missing for --grpc
        raise fail(str(exc), status=2) from None
    # uvicorn re-raises the signal that stopped it to the handlers it found: make those ours,
    # so a SIGTERM/SIGINT shutdown (flushed and closed) ends with exit status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    try:
        serve(config, host=host, port=port, log_level=args.log_level)
    except (StoreLocked, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    logger.info("collector stopped; %s closed", args.db)
    return 0
