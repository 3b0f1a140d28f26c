"""The collector's one write endpoint: ``POST /api/redrive`` (docs/redrive.md).

Off unless the collector runs with ``--allow-redrive`` *and* a token (the configuration refuses
one without the other). In the order a caller meets them:

* **401** — a missing or wrong ``Authorization: Bearer TOKEN`` (the bearer middleware answers
  first on every route; checked here again so that this route never depends on it);
* **403** — redrive not allowed by the collector (``--allow-redrive`` not given);
* **405** — any method but POST (a GET, a link, an ``<img>`` never moves a message);
* **403** — a cross-site request: an ``Origin`` that is neither the collector's own nor one of
  ``--redrive-origin``, or ``Sec-Fetch-Site: cross-site``;
* **415** — a body that is not ``application/json`` (an HTML form cannot send one without a
  CORS preflight, which this collector never grants);
* **400** — a body that is not a valid request or edit; **409** — nothing could start (a queue
  that does not exist: nothing moved); **200** — the answer lists every message touched.

The actor recorded with each redrive is the caller's address plus the ``actor`` the body gives
(the CLI sends ``user@host``, the dashboard ``dashboard``).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventscope.tracer.redrive import browse  # noqa: F401  (registers the dead-letter questions)
from eventscope.tracer.redrive.mover import EditError, RedriveError
from eventscope.tracer.redrive.service import RedriveRequest, RedriveService

if TYPE_CHECKING:
    from eventscope.tracer.server.app import Collector

__all__ = ["ROUTES", "check_config"]

logger = logging.getLogger(__name__)

_MAX_REQUEST_BYTES = 4 * 1024 * 1024


def check_config(
    *, allow_redrive: bool, token: str | None, amqp_url: str | None, max_redrives: int = 3
) -> None:
    """Fail fast on a configuration that would enable writes without protection."""
    if max_redrives < 1:
        raise ValueError("max_redrives (the loop guard) must be >= 1")
    if allow_redrive and not token:
        raise ValueError("--allow-redrive needs --token: the write endpoint is never open")
    if allow_redrive and not amqp_url:
        raise ValueError("--allow-redrive needs --amqp-url: redrive talks to the broker")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _same_origin(origin: str, request: Request, allowed: tuple[str, ...]) -> bool:
    if origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    host = request.headers.get("host")
    return bool(host) and urlsplit(origin).netloc == host


def _service(request: Request, collector: Collector) -> RedriveService:
    service = getattr(request.app.state, "redrive_service", None)
    if service is None:
        config = collector.config
        service = RedriveService(
            amqp_url=config.amqp_url or "",
            store=collector.store,
            writer=collector.writer,
            max_redrives=config.max_redrives,
        )
        request.app.state.redrive_service = service
    return service


async def redrive(request: Request) -> Response:
    collector: Collector = request.app.state.collector
    config = collector.config
    if config.token:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, f"Bearer {config.token}".encode()):
            return _error(
                401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="eventscope"'}
            )
    if not config.allow_redrive:
        return _error(403, "redrive is off: start the collector with --allow-redrive and --token")
    origin = request.headers.get("origin")
    if (
        origin is not None and not _same_origin(origin, request, config.redrive_origins)
    ) or request.headers.get("sec-fetch-site") == "cross-site":
        return _error(403, f"cross-site request refused (Origin {origin!r}); see --redrive-origin")
    if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/json":
        return _error(415, "send the request as application/json")
    raw = await request.body()
    if len(raw) > _MAX_REQUEST_BYTES:
        return _error(413, f"request above {_MAX_REQUEST_BYTES} bytes")
    caller = request.client.host if request.client else "unknown"
    try:
        document = json.loads(raw)
        redrive_request = RedriveRequest.from_json(document, caller=f"api@{caller}")
    except EditError as exc:
        return _error(400, f"edit refused: {exc}")
    except ValueError as exc:
        return _error(400, str(exc))
    service = _service(request, collector)
    try:
        answer: dict[str, Any] = await anyio.to_thread.run_sync(service.run, redrive_request)
    except RedriveError as exc:
        return _error(409, str(exc))
    logger.info(
        "redrive %s by %s: %d sent, %d refused, %d failed%s",
        answer["request_id"],
        answer["actor"],
        answer["sent"],
        answer["refused"],
        answer["failed"],
        " (dry run)" if answer["dry_run"] else "",
    )
    return JSONResponse(answer)


ROUTES = [Route("/api/redrive", redrive, methods=["POST"])]
