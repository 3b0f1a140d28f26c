"""The collector: OTLP/HTTP in, the store, and the read API out, as one Starlette app.

Routes (every listener binds 127.0.0.1 unless told otherwise):

* ``POST /v1/traces`` — OTLP/HTTP, protobuf or JSON, optionally gzip. 200 (an
  ``ExportTraceServiceResponse``, with ``partial_success`` when spans were rejected) only once
  the batch is committed; 400 + ``google.rpc.Status`` for undecodable bodies; 413 above
  ``max_body`` bytes after decompression; 415 for unknown content types or encodings; 503 +
  ``Retry-After`` when the write queue is full (OTLP exporters retry 503, not 429).
* ``GET|POST /api/sql`` — one read-only SELECT, sandboxed, time-limited, row-capped; JSON, or
  Arrow IPC stream with ``Accept: application/vnd.apache.arrow.stream`` (or ``?format=arrow``).
* ``GET /api/orphans``, ``GET /api/events/{id}``, ``GET /api/chain/{id}`` — the common questions.
* ``GET /api/<question>?param=value`` — every function of ``queries.QUESTIONS`` (the
  dashboard's questions: summary, rates, events_page, chain_detail, topology, lag, ...), its
  keyword parameters from the query string; ``{"result": ...}``.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text, with orphans by reason), both with the
  state of the broker receivers (firehose tap, dead-letter tap, management poller) when they
  run: :mod:`receivers`. They reconnect by themselves; the collector keeps serving meanwhile.

With a token configured (``--token`` / ``EVENTSCOPE_TOKEN``) every route but ``/healthz``
needs ``Authorization: Bearer TOKEN`` (OTLP exporters: ``OTEL_EXPORTER_OTLP_HEADERS=
"Authorization=Bearer%20TOKEN"``).

Handlers are thin: decoding lives in :mod:`otlp`, rows in :mod:`normaliser`, writing in
:mod:`writer`/:mod:`store`, every read in :mod:`queries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.util
import inspect
import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from eventscope.tracer.alerts.engine import AlertEngine
from eventscope.tracer.alerts.rules import AlertsConfig
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.broker.receivers import BrokerReceivers
from eventscope.tracer.ingest import codec as otlp
from eventscope.tracer.ingest.normaliser import Normalised, normalise, normalise_protobuf
from eventscope.tracer.ingest.writer import DROP_POLICY, WriteQueueFull, Writer
from eventscope.tracer.query import questions as queries
from eventscope.tracer.query.client import ARROW_STREAM
from eventscope.tracer.store.duckdb_store import Store
from eventscope.tracer.store.urls import open_store

if TYPE_CHECKING:
    from eventscope.tracer.ingest.grpc import GrpcReceiver

__all__ = ["Collector", "CollectorConfig", "create_app", "serve"]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_BODY = 32 * 1024 * 1024
_DEFAULT_RETRY_AFTER_S = 1
_DEFAULT_SQL_TIMEOUT_S = 10.0
_DEFAULT_SQL_MAX_ROWS = 10_000
_DEFAULT_SQL_CONCURRENCY = 2
_DEFAULT_SQL_MAX_WAITING = 16
_DEFAULT_MAX_ATTRIBUTES = 1024


@dataclass(frozen=True)
class CollectorConfig:
    """Everything ``eventscope collect`` can be told; the defaults are the documented ones."""

    db_path: str
    grace_s: float = 30.0
    retention_s: float | None = None
    max_body: int = _DEFAULT_MAX_BODY
    max_pending_batches: int = 64
    max_attributes: int = _DEFAULT_MAX_ATTRIBUTES
    retry_after_s: int = _DEFAULT_RETRY_AFTER_S
    sql_timeout_s: float = _DEFAULT_SQL_TIMEOUT_S
    sql_max_rows: int = _DEFAULT_SQL_MAX_ROWS
    sql_concurrency: int = _DEFAULT_SQL_CONCURRENCY
    sql_max_waiting: int = _DEFAULT_SQL_MAX_WAITING
    memory_limit: str = "1GB"
    threads: int | None = None
    token: str | None = None  # bearer token required on every route but /healthz
    grpc_listen: str | None = None  # "HOST:PORT" for the OTLP/gRPC receiver (off when None)
    amqp_url: str | None = None  # broker taps (firehose, dead-letter tap) connect here
    firehose: bool = False
    trace_on: bool = True  # run `rabbitmqctl trace_on` for the vhost (local broker only)
    dlx: tuple[str, ...] = ()  # dead-letter exchanges to tap (the management poller finds more)
    management_url: str | None = None
    management_interval_s: float = 5.0
    broker_flush_s: float = 0.2  # how often the taps hand what they read to the writer
    capture: PayloadCapture | None = None  # keep published bodies (firehose only; payloads.py)
    tap_queue: str | None = None  # durable, bounded tap queues shared by a deployment (broker/tap.py)
    alerts: AlertsConfig | None = None  # validated [alerts] of eventscope.toml (rules.load)

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ValueError("max_body must be positive")
        if self.grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        if self.retention_s is not None and self.retention_s <= 0:
            raise ValueError("retention_s must be positive")
        if (self.firehose or self.dlx) and not self.amqp_url:
            raise ValueError("the firehose and dead-letter taps need amqp_url")
        if self.grpc_listen is not None and importlib.util.find_spec("grpc") is None:
            raise ValueError("OTLP/gRPC needs grpcio: pip install 'eventscope[collector]' (or grpcio)")
        if self.capture is not None and not self.firehose:
            raise ValueError("payload capture reads bodies from the firehose: it needs the firehose tap")
        if self.alerts is not None and "://" in self.db_path and not self.db_path.startswith("duckdb://"):
            raise ValueError(f"alerts run on the DuckDB store only, not yet on --store {self.db_path}")
        if self.management_interval_s <= 0 or self.broker_flush_s <= 0:
            raise ValueError("management_interval_s and broker_flush_s must be positive")


class Collector:
    """The store, its writer thread and the counters /metrics reports."""

    def __init__(
        self, config: CollectorConfig, store: Store, writer: Writer, receivers: BrokerReceivers | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.writer = writer
        self.receivers = receivers
        self.alerts: AlertEngine | None = None
        self.counters: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.grpc: GrpcReceiver | None = None
        self._count_lock = threading.Lock()
        self._sql_limiter: anyio.CapacityLimiter | None = None

    @classmethod
    def open(cls, config: CollectorConfig) -> Collector:
        """Open the store (raises ``StoreLocked`` if another process holds it), start writing."""
        store = open_store(  # db_path: a DuckDB file or a --store URL (store/urls.py)
            config.db_path, grace_s=config.grace_s, memory_limit=config.memory_limit, threads=config.threads
        )
        writer = Writer(store, max_pending=config.max_pending_batches, retention_s=config.retention_s).start()
        receivers = None
        engine = None
        try:
            if config.alerts is not None:  # before the taps, so that it sees every commit
                engine = AlertEngine(config.alerts, store=store, writer=writer).start()
            if config.amqp_url or config.management_url:
                receivers = BrokerReceivers(
                    writer,
                    amqp_url=config.amqp_url,
                    firehose=config.firehose,
                    trace_on=config.trace_on,
                    dlx=config.dlx,
                    management_url=config.management_url,
                    management_interval_s=config.management_interval_s,
                    flush_interval_s=config.broker_flush_s,
                    capture=config.capture,
                    tap_queue=config.tap_queue,
                ).start()
        except BaseException:
            if engine is not None:
                engine.stop()
            writer.close()
            store.close()
            raise
        collector = cls(config, store, writer, receivers)
        collector.alerts = engine
        if config.grpc_listen is not None:
            try:
                from eventscope.tracer.ingest.grpc import GrpcReceiver  # grpcio only when asked for

                collector.grpc = GrpcReceiver(collector, config.grpc_listen).start()
            except BaseException:
                collector.close()
                raise
        return collector

    def close(self) -> None:
        """Stop the broker receivers (they flush), write what is queued, then checkpoint and
        close the store; idempotent.
        """
        if self.grpc is not None:  # calls in flight still get their commit
            self.grpc.stop()
        if self.receivers is not None:
            self.receivers.stop()
        if self.alerts is not None:  # its last delivery outcomes go through the writer
            self.alerts.stop()
        self.writer.close()
        self.store.close()

    @property
    def sql_limiter(self) -> anyio.CapacityLimiter:
        if self._sql_limiter is None:  # created inside the event loop
            self._sql_limiter = anyio.CapacityLimiter(self.config.sql_concurrency)
        return self._sql_limiter

    def count_received(self, batch: Normalised) -> None:
        """Count a decoded request's spans (OTLP/HTTP and OTLP/gRPC handlers, any thread)."""
        with self._count_lock:
            self.counters["spans_received"] += batch.accepted + batch.rejected
            self.counters["spans_rejected"] += batch.rejected

    def count_accepted(self, batch: Normalised) -> None:
        """Count a request's spans once they are committed."""
        with self._count_lock:
            self.counters["spans_accepted"] += batch.accepted

    def decode(self, body: bytes, encoding: str | None, media: str) -> Normalised:
        """Body → rows; raises the :mod:`otlp` errors. Runs in a worker thread."""
        raw = otlp.decompress(body, encoding, max_size=self.config.max_body)
        if media == otlp.PROTOBUF:
            return self.decode_protobuf(raw)
        return normalise(otlp.decode(raw, media), max_attributes=self.config.max_attributes)

    def decode_protobuf(self, raw: bytes) -> Normalised:
        """An uncompressed protobuf request → rows (OTLP/HTTP and OTLP/gRPC); raises
        :class:`otlp.DecodeError`. The wire reader first; what it cannot vouch for goes through
        the protobuf runtime.
        """
        batch = normalise_protobuf(raw, max_attributes=self.config.max_attributes)
        if batch is not None:
            return batch
        return normalise(otlp.decode(raw, otlp.PROTOBUF), max_attributes=self.config.max_attributes)

    def metrics(self) -> str:
        """Prometheus text exposition of the collector's own health."""
        lineage = self.store.lineage
        c = self.counters
        families: list[tuple[str, str, str, list[tuple[str, float]]]] = [
            ("spans_received_total", "counter", "Spans decoded (OTLP).", [("", c["spans_received"])]),
            ("spans_accepted_total", "counter", "Spans committed to the store.", [("", c["spans_accepted"])]),
            ("spans_rejected_total", "counter", "Invalid spans.", [("", c["spans_rejected"])]),
            (
                "requests_refused_total",
                "counter",
                f"OTLP requests refused with 503: write queue full (policy {DROP_POLICY}).",
                [("", self.writer.refused)],
            ),
            ("write_failures_total", "counter", "Batches not written.", [("", self.writer.failed)]),
            (
                "dropped_total",
                "counter",
                "Lineage needs given up (a causal edge, delivery event id or settle outcome lost).",
                [('{reason="overflow"}', lineage.dropped), ('{reason="expired"}', lineage.expired)],
            ),
            ("write_queue_depth", "gauge", "Batches waiting for the writer.", [("", self.writer.depth)]),
            ("write_queue_capacity", "gauge", "Write queue bound.", [("", self.writer.max_pending)]),
            ("lineage_waiting", "gauge", "Needs parked until a span arrives.", [("", lineage.waiting)]),
            (
                "http_responses_total",
                "counter",
                "OTLP responses by status code.",
                [(f'{{code="{code}"}}', n) for code, n in sorted(self.responses.items())],
            ),
        ]
        if self.grpc is not None:
            families += self.grpc.metric_families()
        if self.receivers is not None:
            families += self.receivers.metric_families()
        if self.alerts is not None:
            families += self.alerts.metric_families()
        lines: list[str] = []
        for name, kind, help_text, samples in families:
            lines.append(f"# HELP eventscope_{name} {help_text}")
            lines.append(f"# TYPE eventscope_{name} {kind}")
            lines.extend(f"eventscope_{name}{labels} {value:g}" for labels, value in samples)
        return "\n".join(lines) + "\n"


# -- handlers ---------------------------------------------------------------------------------
def _status(
    media: str, status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        otlp.encode_status(media, code=code, message=message),
        status_code=status,
        media_type=media,
        headers=headers,
    )


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


async def _traces(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    response = await _export(collector, request)
    collector.responses[response.status_code] += 1
    return response


async def _export(collector: Collector, request: Request) -> Response:
    try:
        media = otlp.media_type(request.headers.get("content-type"))
    except otlp.UnsupportedMediaType as exc:
        return _status(otlp.PROTOBUF, 415, otlp.CODE_INVALID_ARGUMENT, str(exc))
    limit = collector.config.max_body
    body = await _read_body(request, limit)
    if body is None:
        return _status(media, 413, otlp.CODE_RESOURCE_EXHAUSTED, f"body above the limit of {limit} bytes")
    try:
        batch = await anyio.to_thread.run_sync(
            collector.decode, body, request.headers.get("content-encoding"), media
        )
    except otlp.UnsupportedMediaType as exc:
        return _status(media, 415, otlp.CODE_INVALID_ARGUMENT, str(exc))
    except otlp.TooLarge as exc:
        return _status(media, 413, otlp.CODE_RESOURCE_EXHAUSTED, str(exc))
    except otlp.DecodeError as exc:
        return _status(media, 400, otlp.CODE_INVALID_ARGUMENT, str(exc))
    collector.count_received(batch)
    if batch.accepted:
        try:
            future = collector.writer.submit(batch)
        except WriteQueueFull as exc:
            retry = str(collector.config.retry_after_s)
            return _status(media, 503, otlp.CODE_UNAVAILABLE, str(exc), headers={"Retry-After": retry})
        try:
            await asyncio.wrap_future(future)
        except Exception:
            logger.exception("a batch could not be stored")
            return _status(media, 500, otlp.CODE_UNAVAILABLE, "the batch could not be stored")
        collector.count_accepted(batch)
    body = otlp.encode_response(media, rejected_spans=batch.rejected, error_message=batch.error_message())
    return Response(body, status_code=200, media_type=media)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_query(collector: Collector, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a query function on a fresh reader in the SQL worker pool (bounded)."""
    limiter = collector.sql_limiter
    if limiter.statistics().tasks_waiting >= collector.config.sql_max_waiting:
        raise WriteQueueFull("too many queries waiting")

    def run() -> Any:
        connection = collector.store.reader()
        try:
            return function(connection, *args, **kwargs)
        finally:
            connection.close()

    return await anyio.to_thread.run_sync(run, limiter=limiter)


async def _guarded(collector: Collector, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return await _read_query(collector, function, *args, **kwargs)
    except WriteQueueFull as exc:
        return _error(503, str(exc))
    except queries.SqlTimeout as exc:
        return _error(408, str(exc))
    except (queries.SqlRejected, queries.SqlError) as exc:
        return _error(400, str(exc))


async def _sql(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    if request.method == "GET":
        sql = request.query_params.get("q")
    else:
        raw = await _read_body(request, 1024 * 1024)
        if raw is None:
            return _error(413, "query text above 1 MiB")
        sql = raw.decode("utf-8", "replace")
        if (request.headers.get("content-type") or "").startswith("application/json"):
            try:
                document = json.loads(sql)
            except ValueError:
                return _error(400, "body is not JSON")
            sql = document.get("sql") if isinstance(document, dict) else None
    if not isinstance(sql, str) or not sql.strip():
        return _error(400, 'no query: use GET /api/sql?q=... or POST a body (text, or JSON {"sql": ...})')
    arrow = (
        ARROW_STREAM in (request.headers.get("accept") or "") or request.query_params.get("format") == "arrow"
    )
    result = await _guarded(
        collector,
        queries.run_sql,
        sql,
        max_rows=collector.config.sql_max_rows,
        timeout_s=collector.config.sql_timeout_s,
        arrow=arrow,
    )
    if isinstance(result, Response):
        return result
    if arrow:
        return Response(
            _arrow_stream(result.table),
            media_type=ARROW_STREAM,
            headers={"X-Eventscope-Truncated": "true" if result.truncated else "false"},
        )
    return JSONResponse(result.to_json())


def _arrow_stream(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


async def _orphans(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    params = request.query_params
    try:
        grace = float(params["grace"]) if "grace" in params else None
        limit = int(params.get("limit", "1000"))
    except ValueError:
        return _error(400, "grace must be a number of seconds and limit an integer")
    reason = params.get("reason")
    result = await _guarded(collector, queries.orphans, reason=reason, grace_s=grace, limit=limit)
    if isinstance(result, Response):
        return result
    return JSONResponse({"orphans": result})


async def _event(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    event_id = request.path_params["event_id"]
    result = await _guarded(collector, queries.event, event_id)
    if isinstance(result, Response):
        return result
    if result is None:
        return _error(404, f"no event {event_id!r}")
    return JSONResponse(result)


async def _chain(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    event_id = request.path_params["event_id"]
    result = await _guarded(collector, queries.chain, event_id)
    if isinstance(result, Response):
        return result
    return JSONResponse({"event_id": event_id, "chain": result})


def _question_params(function: Callable[..., Any], given: Any) -> dict[str, Any]:
    """Query-string values typed by the question's annotations; ValueError for bad ones."""
    parameters = inspect.signature(function).parameters
    params: dict[str, Any] = {}
    for name, text in given.items():
        parameter = parameters.get(name)
        if parameter is None or name == "connection":
            raise ValueError(f"unknown parameter {name!r}")
        annotation = str(parameter.annotation)
        if annotation.startswith("int"):
            params[name] = int(text)
        elif annotation.startswith("float"):
            params[name] = float(text)
        elif annotation.startswith("bool"):
            params[name] = text.lower() in ("1", "true", "yes")
        else:
            params[name] = text
    return params


def _question(function: Callable[..., Any]) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        collector: Collector = request.app.state.collector
        try:
            params = _question_params(function, request.query_params)
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            result = await _guarded(collector, function, **params)
        except TypeError as exc:  # a required parameter is missing
            return _error(400, str(exc))
        if isinstance(result, Response):
            return result
        return JSONResponse({"result": result})

    return handler


async def _healthz(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    alive = collector.writer.alive
    body: dict[str, Any] = {
        "status": "ok" if alive else "writer stopped",
        "write_queue_depth": collector.writer.depth,
    }
    if collector.receivers is not None:
        body.update(collector.receivers.state())
    return JSONResponse(body, status_code=200 if alive else 503)


async def _metrics(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    text = collector.metrics()
    gauges = await _guarded(collector, queries.orphan_gauges)
    if not isinstance(gauges, Response):  # a busy store must not fail the scrape
        by_reason: Counter[str] = Counter()
        for row in gauges:
            by_reason[row["reason"]] += row["n"]
        text += "# HELP eventscope_orphans Orphan events by reason (per expected queue).\n"
        text += "# TYPE eventscope_orphans gauge\n"
        text += "".join(f'eventscope_orphans{{reason="{r}"}} {n}\n' for r, n in sorted(by_reason.items()))
        text += "# HELP eventscope_orphans_by_queue Orphan events by reason, queue and event type.\n"
        text += "# TYPE eventscope_orphans_by_queue gauge\n"
        text += "".join(
            f'eventscope_orphans_by_queue{{reason="{_label(row["reason"])}",queue="{_label(row["queue"])}",'
            f'event_type="{_label(row["event_type"])}"}} {row["n"]}\n'
            for row in gauges
        )
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _label(value: Any) -> str:
    """A Prometheus label value, escaped as the text format wants."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _BearerToken:
    """ASGI middleware: every HTTP route but /healthz needs ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/healthz":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = JSONResponse(
                    {"error": "missing or wrong bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="eventscope"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(collector: Collector) -> Starlette:
    """The ASGI app over an open collector; its lifespan shutdown closes the collector."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(collector.close)

    app = Starlette(
        routes=[
            Route("/v1/traces", _traces, methods=["POST"]),
            Route("/api/sql", _sql, methods=["GET", "POST"]),
            Route("/api/orphans", _orphans, methods=["GET"]),
            Route("/api/events/{event_id:path}", _event, methods=["GET"]),
            Route("/api/chain/{event_id:path}", _chain, methods=["GET"]),
            *(
                Route(f"/api/{name}", _question(function), methods=["GET"])
                for name, function in queries.QUESTIONS.items()
            ),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/metrics", _metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[Middleware(_BearerToken, token=collector.config.token)]
        if collector.config.token
        else None,
    )
    app.state.collector = collector
    return app


def serve(
    config: CollectorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 4318,
    sock: socket.socket | None = None,
    log_level: str = "info",
    on_server: Callable[[uvicorn.Server], None] | None = None,
) -> uvicorn.Server:
    """Run the collector until the server is told to exit (SIGINT/SIGTERM in the main thread,
    or ``server.should_exit = True``); the store is flushed and closed before this returns.
    """
    Path(config.db_path).parent.mkdir(parents=True, exist_ok=True)
    collector = Collector.open(config)
    try:
        app = create_app(collector)
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on")
        )
        if on_server is not None:  # lets an embedding thread stop it (server.should_exit)
            on_server(server)
        server.run(sockets=[sock] if sock is not None else None)
    finally:
        collector.close()
    return server
