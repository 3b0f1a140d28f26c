"""Helpers of the alert tests: an engine driven tick by tick, and a webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from eventscope.tracer.alerts import rules
from eventscope.tracer.alerts.engine import AlertEngine
from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import request

T0 = 1_700_000_000.0  # collector_helpers' span clock, in seconds


class Harness:
    """A store, its writer and an alert engine whose clock the test sets (``at(seconds)``)."""

    def __init__(self, path: Path, toml: str, **engine_options: Any) -> None:
        self.config = rules.parse(toml, filename="test.toml")
        self.store = Store.open(path, grace_s=0)
        self.writer = Writer(self.store).start()
        self.now = T0
        engine_options.setdefault("sink_backoff_s", 0.01)
        self.engine = AlertEngine(
            self.config, store=self.store, writer=self.writer, clock=lambda: self.now, **engine_options
        ).start(thread=False)

    def ingest(self, *spans: Span, service: str = "orders") -> None:
        self.writer.submit(normalise(request(*spans, service=service))).result(10)

    def tick(self, at: float) -> Any:
        """Evaluate at ``at`` seconds after the spans' time zero."""
        self.now = T0 + at
        return self.engine.tick()

    def alerts(self) -> list[dict[str, Any]]:
        connection = self.store.reader()
        try:
            cursor = connection.execute(
                "SELECT * FROM alerts JOIN alert_details USING (alert_id) ORDER BY fired_at, alert_id"
            )
            columns = [d[0] for d in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            connection.close()

    def wait_for(
        self, predicate: Callable[[], bool], *, timeout: float = 10.0, at: float | None = None
    ) -> None:
        """Tick (delivery outcomes are recorded at ticks) until ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.02)
            self.tick(at if at is not None else self.now - T0)

    def close(self) -> None:
        self.engine.stop(timeout=2)
        self.writer.close()
        self.store.close()


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records JSON bodies; ``fail`` answers 500 instead."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.fail = False
        self.delay_s = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                receiver.requests += 1
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver.fail:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int, *, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count:
            assert time.monotonic() < deadline, f"webhook got {len(self.bodies)} of {count} bodies"
            time.sleep(0.02)
        return self.bodies
