"""The shop's API gateway, with a transactional outbox.

``POST /orders`` and ``POST /checkout`` are the roots of every causal chain: each request
runs in a SERVER span. An order is stored together with its ``order.placed`` event in one
SQLite transaction (the outbox), including the trace context of the request; a relay
publishes outbox rows afterwards *with that stored context*, so the chain survives the hop
(eventscope keeps a ``traceparent`` the application supplies). Everything runs in one
thread, as pika's connections want.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pika
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from eventscope.tracer.sdk.propagation import inject

from .topology import EXCHANGE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    routing_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    headers TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
"""
_RELAY_BATCH = 100


class Outbox:
    """Orders and their events in one local transaction; a relay publishes the events later."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(_SCHEMA)

    def place_order(self, order_id: int, amount: int) -> None:
        """Store the order and its event atomically, with the current trace context."""
        headers: dict[str, Any] = {}
        span = trace.get_current_span()
        inject(headers, span)
        with self.db:
            self.db.execute("INSERT INTO orders VALUES (?, ?, 'placed')", (order_id, amount))
            self.db.execute(
                "INSERT INTO outbox (routing_key, payload, headers) VALUES (?, ?, ?)",
                ("order.placed", json.dumps({"order_id": order_id, "amount": amount}), json.dumps(headers)),
            )

    def relay(self, channel: Any) -> int:
        """Publish pending events in order, each with the trace context it was stored with."""
        rows = self.db.execute(
            "SELECT id, routing_key, payload, headers FROM outbox WHERE published = 0 ORDER BY id LIMIT ?",
            (_RELAY_BATCH,),
        ).fetchall()
        for row_id, routing_key, payload, headers in rows:
            properties = pika.BasicProperties(content_type="application/json", headers=json.loads(headers))
            channel.basic_publish(EXCHANGE, routing_key, payload.encode(), properties)
            with self.db:
                self.db.execute("UPDATE outbox SET published = 1 WHERE id = ?", (row_id,))
        return len(rows)


def serve(channel: Any, port: int, state_dir: Path, stop: Callable[[], bool]) -> None:
    """Answer HTTP on 127.0.0.1:``port`` and relay the outbox until ``stop()``."""
    tracer = trace.get_tracer("eventscope.demo.gateway")
    outbox = Outbox(state_dir / "gateway-outbox.sqlite")
    counter = {"order": 0, "checkout": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            with tracer.start_as_current_span(f"POST {self.path}", kind=SpanKind.SERVER) as span:
                span.set_attribute("http.request.method", "POST")
                span.set_attribute("url.path", self.path)
                if self.path == "/orders":
                    counter["order"] += 1
                    outbox.place_order(counter["order"], int(body.get("amount", 10)))
                    answer = {"order_id": counter["order"]}
                elif self.path == "/checkout":
                    counter["checkout"] += 1
                    payload = {"checkout_id": counter["checkout"], "amount": int(body.get("amount", 10))}
                    channel.basic_publish(
                        EXCHANGE,
                        "checkout.requested",
                        json.dumps(payload).encode(),
                        pika.BasicProperties(content_type="application/json"),
                    )
                    answer = payload
                else:
                    self.send_error(404)
                    span.set_attribute("http.response.status_code", 404)
                    return
                span.set_attribute("http.response.status_code", 202)
            data = json.dumps(answer).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    server.timeout = 0.05
    try:
        while not stop():
            server.handle_request()
            outbox.relay(channel)
            channel.connection.process_data_events(time_limit=0)
        outbox.relay(channel)
    finally:
        server.server_close()
