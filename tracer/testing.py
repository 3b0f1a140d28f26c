"""Helpers for testing code instrumented with eventscope (shipped to users, used by our tests).

:class:`OtlpReceiver` is a small OTLP/HTTP endpoint on 127.0.0.1 that decodes what the real
OpenTelemetry exporter sends, so tests exercise the whole export pipeline instead of an
in-memory exporter. It needs ``opentelemetry-proto`` (the ``test`` extra). Requests are
decoded by the collector's own codec (:mod:`eventscope.tracer.ingest.codec`, which needs only
protobuf and the OTLP messages, never DuckDB or the server), with the contract's span kinds.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eventscope.tracer.contract import SPAN_KINDS

__all__ = ["OtlpReceiver", "ReceivedSpan"]


@dataclass
class ReceivedSpan:
    """One span as it arrived over OTLP, with ids as lowercase hex."""

    name: str
    kind: str
    service: str | None
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status: int
    status_message: str
    links: list[tuple[str, str]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    """Decode an OTLP ``ExportTraceServiceRequest`` (protobuf) into ``ReceivedSpan``s."""
    from eventscope.tracer.ingest import codec  # imported late: protobuf only when receiving

    request = codec.decode(body, codec.PROTOBUF)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                        service=resource.get("service.name"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        status=span.status.code,
                        status_message=span.status.message,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        events=[event.name for event in span.events],
                    )
                )
    return spans


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 that keeps every span it receives.

    Use as a context manager; ``endpoint`` is the base URL to give ``setup()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                spans = decode_spans(body)
                with receiver._lock:
                    receiver.spans.extend(spans)
                    receiver.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()

    def find(self, predicate: Callable[[ReceivedSpan], bool]) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if predicate(span)]

    def wait_for(
        self,
        predicate: Callable[[ReceivedSpan], bool],
        count: int = 1,
        timeout: float = 10.0,
        flush: Callable[[], Any] | None = None,
    ) -> list[ReceivedSpan]:
        """Wait until ``count`` spans match; ``flush`` (e.g. ``provider.force_flush``) first."""
        deadline = time.monotonic() + timeout
        while True:
            if flush is not None:
                flush()
            found = self.find(predicate)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)
