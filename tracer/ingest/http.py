"""OTLP/HTTP transport: ``POST /v1/traces`` over the shared :mod:`pipeline`.

Follows the OTLP/HTTP specification: protobuf or JSON, optionally gzip. 200 (an
``ExportTraceServiceResponse``, with ``partial_success`` when spans were rejected) only once
the batch is committed; 400 + ``google.rpc.Status`` for undecodable bodies; 413 above the body
limit after decompression; 415 for unknown content types or encodings; 503 + ``Retry-After``
when the write queue is full (OTLP exporters retry 503, not 429); 500 when storing failed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventscope.tracer.ingest import codec
from eventscope.tracer.ingest.pipeline import Outcome, Pipeline
from eventscope.tracer.metrics import Family, labels

__all__ = ["HttpReceiver", "read_body"]

_STATUS: dict[Outcome, tuple[int, int]] = {
    Outcome.UNSUPPORTED: (415, codec.CODE_INVALID_ARGUMENT),
    Outcome.TOO_LARGE: (413, codec.CODE_RESOURCE_EXHAUSTED),
    Outcome.INVALID: (400, codec.CODE_INVALID_ARGUMENT),
    Outcome.BUSY: (503, codec.CODE_UNAVAILABLE),
    Outcome.NOT_COMMITTED: (503, codec.CODE_UNAVAILABLE),
    Outcome.FAILED: (500, codec.CODE_UNAVAILABLE),
}


async def read_body(request: Request, limit: int) -> bytes | None:
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


def _status(
    media: str, status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = codec.encode_status(media, code=code, message=message)
    return Response(body, status_code=status, media_type=media, headers=headers)


class HttpReceiver:
    """The ``/v1/traces`` route and the responses it gave, by status code."""

    def __init__(self, pipeline: Pipeline, *, retry_after_s: int) -> None:
        self.pipeline = pipeline
        self.retry_after_s = retry_after_s
        self.responses: Counter[int] = Counter()
        self._lock = threading.Lock()

    def route(self) -> Route:
        return Route("/v1/traces", self._traces, methods=["POST"])

    def metric_families(self) -> list[Family]:
        with self._lock:
            samples = [(labels(code=code), float(n)) for code, n in sorted(self.responses.items())]
        return [("http_responses_total", "counter", "OTLP responses by status code.", samples)]

    async def _traces(self, request: Request) -> Response:
        response = await self._export(request)
        with self._lock:
            self.responses[response.status_code] += 1
        return response

    async def _export(self, request: Request) -> Response:
        try:
            media = codec.media_type(request.headers.get("content-type"))
        except codec.UnsupportedMediaType as exc:
            return _status(codec.PROTOBUF, 415, codec.CODE_INVALID_ARGUMENT, str(exc))
        limit = self.pipeline.max_body
        body = await read_body(request, limit)
        if body is None:
            return _status(
                media, 413, codec.CODE_RESOURCE_EXHAUSTED, f"body above the limit of {limit} bytes"
            )
        encoding = request.headers.get("content-encoding")
        pipeline = self.pipeline
        pending = await anyio.to_thread.run_sync(
            pipeline.start, lambda: pipeline.decode(body, encoding, media)
        )
        error: BaseException | None = None
        if pending.future is not None:
            try:
                await asyncio.wrap_future(pending.future)
            except Exception as exc:
                error = exc
        result = pipeline.finish(pending, error)
        if result.outcome is not Outcome.OK:
            status, code = _STATUS[result.outcome]
            headers = {"Retry-After": str(self.retry_after_s)} if status == 503 else None
            return _status(media, status, code, result.message, headers)
        batch = result.batch
        assert batch is not None
        answer = codec.encode_response(
            media, rejected_spans=batch.rejected, error_message=batch.error_message()
        )
        return Response(answer, status_code=200, media_type=media)
