"""An OTLP/HTTP traces sink for the benchmarks, run as a process of its own.

It stands in for the collector: it answers every ``POST /v1/traces`` with 200, so the
benchmark process runs the real ``BatchSpanProcessor`` → ``OTLPSpanExporter`` → HTTP path,
while the receiving side's CPU (parsing, counting) is spent in another process and never
holds the benchmark's GIL. ``eventscope.tracer.testing.OtlpReceiver`` builds a Python object
per span, which is right for tests and too heavy here, so this sink only parses the request
(protobuf's C implementation) and counts spans.

Run ``python bench/sink.py``: it binds 127.0.0.1 on a free port and prints ``READY <url>``
on its first stdout line. ``GET /stats`` returns ``{"spans", "requests", "bytes"}`` as JSON:
the benchmark reads it before and after a measurement to check that every span arrived
(none dropped by a full processor queue).
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_lock = threading.Lock()
_stats = {"spans": 0, "requests": 0, "bytes": 0}


def count_spans(body: bytes) -> int:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector does: no TCP connect per batch

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        size = len(body)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        spans = count_spans(body)
        with _lock:
            _stats["spans"] += spans
            _stats["requests"] += 1
            _stats["bytes"] += size
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        with _lock:
            payload = json.dumps(_stats).encode()
        self._answer(payload, "application/json")

    def _answer(self, payload: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"READY http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
