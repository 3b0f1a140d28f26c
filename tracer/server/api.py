"""The read API over an open collector: SQL, the common questions, health and metrics, auth.

Routes (every listener binds 127.0.0.1 unless told otherwise):

* ``GET|POST /api/sql`` — one read-only SELECT, sandboxed, time-limited, row-capped; JSON, or
  Arrow IPC stream with ``Accept: application/vnd.apache.arrow.stream`` (or ``?format=arrow``).
* ``GET /api/orphans``, ``GET /api/events/{id}``, ``GET /api/chain/{id}`` — the common questions.
* ``GET /api/<question>?param=value`` — every function of ``questions.QUESTIONS`` (the
  dashboard's questions: summary, rates, events_page, chain_detail, topology, lag, ...), its
  keyword parameters from the query string; ``{"result": ...}``.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text, with orphans by reason), both with the
  state of the broker receivers when they run.

With a token configured every route but ``/healthz`` needs ``Authorization: Bearer TOKEN``
(:class:`BearerToken`). Handlers are thin: every read is a function of :mod:`query.questions`,
run on a fresh read connection in a bounded worker pool.
"""

from __future__ import annotations

import hmac
import inspect
import json
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from eventscope.tracer.ingest.http import read_body
from eventscope.tracer.ingest.writer import WriteQueueFull
from eventscope.tracer.metrics import labels, render
from eventscope.tracer.query import questions as queries
from eventscope.tracer.query.client import ARROW_STREAM

if TYPE_CHECKING:
    from eventscope.tracer.server.app import Collector

__all__ = ["BearerToken", "routes"]


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
        raw = await read_body(request, 1024 * 1024)
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
    families = collector.metric_families()
    gauges = await _guarded(collector, queries.orphan_gauges)
    if not isinstance(gauges, Response):  # a busy store must not fail the scrape
        by_reason: Counter[str] = Counter()
        for row in gauges:
            by_reason[row["reason"]] += row["n"]
        families.append(
            (
                "orphans",
                "gauge",
                "Orphan events by reason (per expected queue).",
                [(labels(reason=r), n) for r, n in sorted(by_reason.items())],
            )
        )
        families.append(
            (
                "orphans_by_queue",
                "gauge",
                "Orphan events by reason, queue and event type.",
                [
                    (labels(reason=row["reason"], queue=row["queue"], event_type=row["event_type"]), row["n"])
                    for row in gauges
                ],
            )
        )
    return PlainTextResponse(render(families), media_type="text/plain; version=0.0.4")


class BearerToken:
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


def routes() -> list[Route]:
    """Every read route; the collector's app adds ``/v1/traces`` from the HTTP transport."""
    return [
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
    ]
