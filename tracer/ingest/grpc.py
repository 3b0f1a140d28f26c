"""OTLP/gRPC receiver (``eventscope collect --grpc HOST:PORT``; 4317 by convention).

The same pipeline as OTLP/HTTP: decode, normalise, the writer's queue, and the answer only
once the batch is committed. Status codes follow the OTLP specification ("OTLP/gRPC
Response"): ``OK`` with ``partial_success`` when some spans were invalid; ``INVALID_ARGUMENT``
for a request that does not decode (not retried by exporters); ``UNAVAILABLE`` when the write
queue is full or the commit did not come within the call's deadline (retried, with backoff;
a retry is stored once); ``INTERNAL`` when storing the batch failed (not retried, like HTTP's
500); ``RESOURCE_EXHAUSTED``
from gRPC itself above the body limit (``max_body``, the same as for HTTP, after
decompression); ``UNAUTHENTICATED`` without the collector's bearer token.

The request bytes reach the handler undecoded, so a garbage body gets ``INVALID_ARGUMENT``
and a clear message rather than gRPC's generic deserialisation failure.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections import Counter
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from eventscope.tracer.ingest.pipeline import NotCommitted, Outcome, Pipeline
from eventscope.tracer.metrics import Family, labels

__all__ = ["GrpcReceiver"]

logger = logging.getLogger(__name__)

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_DEFAULT_WORKERS = 8
_DEFAULT_COMMIT_WAIT_S = 60.0
_DEFAULT_STOP_GRACE_S = _DEFAULT_COMMIT_WAIT_S  # a call in flight may wait that long for its commit
# INVALID_ARGUMENT is not retried by exporters; UNAVAILABLE is (with backoff); INTERNAL is not,
# like OTLP/HTTP's 500: the same batch would fail again.
_CODES: dict[Outcome, grpc.StatusCode] = {
    Outcome.UNSUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
    Outcome.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Outcome.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Outcome.BUSY: grpc.StatusCode.UNAVAILABLE,
    Outcome.NOT_COMMITTED: grpc.StatusCode.UNAVAILABLE,
    Outcome.FAILED: grpc.StatusCode.INTERNAL,
}


class GrpcReceiver:
    """A gRPC server with the OTLP trace service over the shared ingest pipeline."""

    def __init__(
        self, pipeline: Pipeline, address: str, *, token: str | None = None, workers: int = _DEFAULT_WORKERS
    ) -> None:
        self._pipeline = pipeline
        self._token = token
        self.responses: Counter[str] = Counter()  # by gRPC status code name
        self._lock = threading.Lock()
        options = [
            ("grpc.max_receive_message_length", pipeline.max_body),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),  # a second collector on the same port must fail, not share it
        ]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
        handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=None,  # bytes: decoding errors are ours to report
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(_SERVICE, {"Export": handler})]
        )
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from exc
        if self.port == 0:  # older grpcio reports a failed bind this way
            raise OSError(f"cannot listen for OTLP/gRPC on {address}: address in use or invalid")
        self.address = address

    def start(self) -> GrpcReceiver:
        self._server.start()
        logger.info("OTLP/gRPC receiver listening on %s", self.address)
        return self

    def stop(self, *, grace_s: float = _DEFAULT_STOP_GRACE_S) -> None:
        """Refuse new calls, let those in flight finish (up to ``grace_s``)."""
        self._server.stop(grace_s).wait()

    def metric_families(self) -> list[Family]:
        with self._lock:
            samples = [(labels(code=code), float(n)) for code, n in sorted(self.responses.items())]
        return [("grpc_responses_total", "counter", "OTLP/gRPC responses by status code.", samples)]

    def _answer(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        self._count(code)
        context.abort(code, message)

    def _count(self, code: grpc.StatusCode) -> None:
        with self._lock:
            self.responses[code.name] += 1

    def _export(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        if self._token is not None:
            given = dict(context.invocation_metadata()).get("authorization") or ""
            if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
                self._answer(context, grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required")
        pipeline = self._pipeline
        pending = pipeline.start(lambda: pipeline.decode_protobuf(body))
        error: BaseException | None = None
        if pending.future is not None:
            remaining = context.time_remaining()
            wait_s = (
                _DEFAULT_COMMIT_WAIT_S
                if remaining is None
                else max(0.1, min(remaining, _DEFAULT_COMMIT_WAIT_S))
            )
            try:
                pending.future.result(timeout=wait_s)
            except futures.TimeoutError:
                # it may still commit; a retry is then stored once (idempotent on span ids)
                error = NotCommitted()
            except Exception as exc:
                error = exc
        result = pipeline.finish(pending, error)
        if result.outcome is not Outcome.OK:
            self._answer(context, _CODES[result.outcome], result.message)
        batch = result.batch
        assert batch is not None
        response = ExportTraceServiceResponse()
        if batch.rejected:
            response.partial_success.rejected_spans = batch.rejected
            response.partial_success.error_message = batch.error_message()
        self._count(grpc.StatusCode.OK)
        return response
