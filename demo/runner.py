"""``eventscope demo``: collector + demo shop on the local broker, a live summary, a clean stop.

Everything runs as child processes of this one: the collector (``eventscope collect``) and
one process per shop service. Ctrl-C or ``--duration`` stops the services first (so their
last spans are exported), then the collector (which flushes and closes its database).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

from eventscope.tracer.broker import firehose, management

from . import topology

_DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
_DEFAULT_LISTEN = "127.0.0.1:4318"
# (service, reported name): started in this order, the gateway first and the load last
_SERVICES = (
    ("gateway", "gateway"),
    ("checkout", "checkout"),
    ("payments", "payments-1"),
    ("payments", "payments-2"),
    ("inventory", "inventory"),
    ("shipping", "shipping"),
    ("notifications", "notifications"),
    ("fraud", "fraud"),
    ("auditor", "auditor"),
    ("customers", "customers"),
    ("loyalty", "loyalty"),
)
# services on aio-pika run from eventscope.demo.async_services, the others from .services
_SERVICE_MODULES = {"loyalty": "eventscope.demo.async_services"}
_GRACE_S = 10
_ALERT_RULES = Path(__file__).with_name("eventscope.toml")
_SUMMARY_EVERY_S = 2.0
_BROKER_HELP = """\
eventscope demo needs RabbitMQ at {url}.
Start one with either of:
  docker compose up -d rabbitmq                 (from the eventscope repository)
  sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached
or point the demo at yours: eventscope demo --amqp-url amqp://USER:PASS@HOST:5672/VHOST"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by ``eventscope demo`` and ``python -m eventscope.demo``)."""
    parser.add_argument("--amqp-url", default=os.environ.get("EVENTSCOPE_AMQP_URL", _DEFAULT_AMQP_URL))
    parser.add_argument("--db", default="eventscope-demo.duckdb", help="DuckDB file the collector writes")
    parser.add_argument("--listen", default=_DEFAULT_LISTEN, help="collector address (OTLP + API)")
    parser.add_argument("--rate", type=float, default=5.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--no-browser", action="store_true", help="do not open the dashboard in a browser")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    parser.add_argument(
        "--no-firehose", action="store_true", help="spans only: do not tap RabbitMQ's firehose"
    )
    parser.add_argument(
        "--collector", metavar="URL", help="use this running collector instead of starting one"
    )
    parser.add_argument(
        "--endpoint", metavar="URL", help="where the shop exports spans (default: the collector)"
    )
    parser.add_argument(
        "--dashboard-port", type=int, default=8501, help="dashboard port (default 8501; a free one if taken)"
    )
    parser.add_argument("--keep-topology", action="store_true", help="leave the demo queues on the broker")


def _broker_ok(url: str) -> bool:
    try:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 3
        pika.BlockingConnection(params).close()
        return True
    except Exception:
        return False


def _get(url: str, timeout: float = 2.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def query(api: str, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` from the collector's read-only SQL API, as dicts."""
    url = f"{api}/api/sql?" + urllib.parse.urlencode({"q": sql})
    result = json.loads(_get(url, timeout=10))
    return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]


def _wait_healthy(api: str, process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the collector exited with status {process.returncode}")
        try:
            _get(f"{api}/healthz")
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"the collector did not answer on {api} within {timeout:.0f}s")


_SUMMARY = """
select (select count(*) from events) as events,
       (select count(*) from deliveries) as deliveries,
       (select count(*) from orphans) as orphans
"""
_ORPHANS_BY_REASON = "select reason, count(*) as n from orphans group by reason order by n desc"


def _summary(api: str) -> str:
    try:
        (row,) = query(api, _SUMMARY)
        return f"events {row['events']} · deliveries {row['deliveries']} · orphans {row['orphans']}"
    except Exception as exc:  # the summary is a courtesy: never stop the demo for it
        return f"(summary unavailable: {exc})"


def _start_dashboard(api: str, wanted: int, *, open_browser: bool) -> subprocess.Popen[bytes] | None:
    """The dashboard, live against the collector's API; None (and a note) if it cannot start."""
    from eventscope.dashboard import server

    port = wanted
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            port = _free_port()
    try:
        process = server.start(port=port, api=api, quiet=True)
    except OSError as exc:
        print(f"  dashboard not started: {exc}", file=sys.stderr)
        return None
    if not server.wait_ready(port, process):
        print("  dashboard not started (is the `dashboard` extra installed?)", file=sys.stderr)
        _stop([process])
        return None
    print(f"  dashboard: {server.url(port)}", flush=True)
    if open_browser:
        webbrowser.open(server.url(port))
    return process


def main(args: argparse.Namespace) -> int:
    if not _broker_ok(args.amqp_url):
        print(_BROKER_HELP.format(url=args.amqp_url), file=sys.stderr)
        return 2
    params = pika.URLParameters(args.amqp_url)
    connection = pika.BlockingConnection(params)
    topology.declare(connection.channel())
    connection.close()

    api = args.collector.rstrip("/") if args.collector else f"http://{args.listen}"
    endpoint = args.endpoint or api
    children: list[subprocess.Popen[bytes]] = []
    dashboard: subprocess.Popen[bytes] | None = None
    collector = None
    restore_tracing = None
    error = None
    final = ""
    try:
        if not args.collector:
            command, restore_tracing = _collector_command(args, params)
            log_path = Path(args.db).with_suffix(".log")
            collector_log = open(log_path, "ab")  # noqa: SIM115 - open while the collector runs
            collector = subprocess.Popen(command, stdout=collector_log, stderr=subprocess.STDOUT)
        _wait_healthy(api, collector)
        gateway_port = _free_port()
        for service, name in _SERVICES:
            module = _SERVICE_MODULES.get(service, "eventscope.demo.services")
            command = [sys.executable, "-m", module, service, "--name", name]
            command += ["--amqp-url", args.amqp_url, "--endpoint", endpoint, "--rate", str(args.rate)]
            command += ["--gateway-port", str(gateway_port)]
            children.append(subprocess.Popen(command))
            if service == "gateway":
                _wait_port(gateway_port, children[-1])
        where = f"database {args.db}" if collector is not None else "an external collector"
        print(f"eventscope demo: collector and SQL API on {api}, {where}", flush=True)
        if collector is not None:
            print(f"  collector log (alerts as JSON lines): {log_path}")
        if not args.no_dashboard:
            dashboard = _start_dashboard(api, args.dashboard_port, open_browser=not args.no_browser)
        names = ", ".join(name for _, name in _SERVICES)
        print(f"  services: {names} on {args.amqp_url.rsplit('@', 1)[-1]}")
        print(f"  shop API: http://127.0.0.1:{gateway_port}/orders and /checkout (POST)")
        print(f'  try: eventscope sql --api {api} "select reason, count(*) from orphans group by 1"')
        until = f"; stopping by itself after {args.duration:.0f}s" if args.duration else ""
        print(f"  Ctrl-C stops everything{until}", flush=True)
        _watch(api, children, args.duration)
    except KeyboardInterrupt:
        print("\nstopping…")
    except RuntimeError as exc:
        error = str(exc)
    finally:
        _stop(children if dashboard is None else [*children, dashboard])
        time.sleep(1.0)  # the services' last spans reach the collector
        if collector is None or collector.poll() is None:
            final = _final_report(api)
        if collector is not None:
            _stop([collector])
            collector_log.close()
        if restore_tracing is not None:
            restore_tracing()
        if not args.keep_topology:
            _delete_topology(params)
    if error:
        print(f"eventscope demo: {error}", file=sys.stderr)
        return 1
    print(final)
    return 0


def _collector_command(
    args: argparse.Namespace, params: pika.URLParameters
) -> tuple[list[str], Callable[[], None] | None]:
    """The demo's own collector: broker truth when it can have it, the demo's alert rules.

    The firehose is turned on for the vhost here (and off again at the end, if it was off),
    so the broker is left as it was found.
    """
    command = [sys.executable, "-m", "eventscope.tracer.cli.main", "--log-level", "warning", "collect"]
    command += ["--db", str(Path(args.db)), "--listen", args.listen, "--grace", str(_GRACE_S)]
    command += ["--config", str(_ALERT_RULES)]
    restore = None
    if not args.no_firehose:
        vhost = params.virtual_host
        was_on = firehose.tracing_enabled(vhost)
        enabled, message = (True, "") if was_on else firehose.enable_tracing(vhost)
        if enabled:
            command += ["--amqp-url", args.amqp_url, "--firehose", "--no-trace-on", "--capture-payloads"]
            if was_on is False:

                def restore() -> None:
                    firehose.disable_tracing(vhost)

        else:
            print(f"  firehose not available ({message}); the demo runs on spans only", file=sys.stderr)
    command += ["--dlx", topology.DEAD_LETTER_EXCHANGE]
    management_url, restore_plugin = _management(params)
    if management_url:
        command += ["--management-url", management_url]
    restores = [r for r in (restore, restore_plugin) if r is not None]

    def restore_all() -> None:
        for undo in restores:
            undo()

    return command, restore_all if restores else None


def _management(params: pika.URLParameters) -> tuple[str | None, Callable[[], None] | None]:
    """The management API (queue TTLs and DLXs: what tells 'expired'), enabled for the demo
    on a local broker that lacks it, and disabled again at the end."""
    base = f"http://{params.host}:15672"
    url = f"http://{params.credentials.username}:{params.credentials.password}@{params.host}:15672"
    if _answers(f"{base}/api/overview"):
        return url, None
    if params.host not in ("127.0.0.1", "localhost") or management.plugin_enabled() is not False:
        return None, None
    print("  enabling RabbitMQ's management plugin for the demo (disabled again at the end)", flush=True)
    if not management.set_plugin(True):
        print("  could not enable it: 'expired' orphans will show as 'unconsumed'", file=sys.stderr)
        return None, None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _answers(f"{base}/api/overview"):
        time.sleep(0.3)
    return url, lambda: management.set_plugin(False)


def _answers(url: str) -> bool:
    try:
        _get(url, timeout=1.0)
        return True
    except urllib.error.HTTPError:
        return True  # it answered (401 without credentials is an answer)
    except (urllib.error.URLError, OSError):
        return False


def _watch(api: str, children: list[subprocess.Popen[bytes]], duration: float | None) -> None:
    """Print a summary line every few seconds until ``duration`` (or forever)."""
    started = time.monotonic()
    while duration is None or time.monotonic() - started < duration:
        left = (duration - (time.monotonic() - started)) if duration else _SUMMARY_EVERY_S
        time.sleep(min(_SUMMARY_EVERY_S, max(0.1, left)))
        print(f"  [{time.monotonic() - started:5.0f}s] {_summary(api)}", flush=True)
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"demo service {child.args[5]} exited with status {child.returncode}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo gateway exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the demo gateway did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def _delete_topology(params: pika.URLParameters) -> None:
    try:
        connection = pika.BlockingConnection(params)
        topology.delete(connection.channel())
        connection.close()
    except Exception as exc:
        print(f"could not remove the demo topology: {exc}", file=sys.stderr)


def _final_report(api: str) -> str:
    try:
        lines = [f"final: {_summary(api)}", "orphans by reason:"]
        lines += [f"  {row['reason']:<15} {row['n']}" for row in query(api, _ORPHANS_BY_REASON)]
        return "\n".join(lines)
    except Exception as exc:
        return f"(final report unavailable: {exc})"


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
