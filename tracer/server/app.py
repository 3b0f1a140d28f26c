"""The collector's composition root: the store, its writer, the ingest pipeline and its
transports, the broker receivers and the alert engine, wired once; and the ASGI app over them.

``eventscope collect`` calls :func:`serve`. The pieces live where their names say:
:mod:`eventscope.tracer.server.config` (what can be configured), :mod:`eventscope.tracer.ingest`
(OTLP in, over HTTP and gRPC), :mod:`eventscope.tracer.server.api` (the read API, health,
metrics, auth), :mod:`eventscope.tracer.broker` (broker truth), :mod:`eventscope.tracer.alerts`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware

from eventscope.tracer.alerts.engine import AlertEngine
from eventscope.tracer.broker.receivers import BrokerReceivers
from eventscope.tracer.ingest.http import HttpReceiver
from eventscope.tracer.ingest.pipeline import Pipeline
from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.metrics import Family, labels
from eventscope.tracer.server import api, redrive_api
from eventscope.tracer.server.config import CollectorConfig
from eventscope.tracer.store.duckdb_store import Store
from eventscope.tracer.store.urls import open_store, parse_store_url

if TYPE_CHECKING:
    from eventscope.tracer.ingest.grpc import GrpcReceiver

__all__ = ["Collector", "CollectorConfig", "create_app", "serve"]

logger = logging.getLogger(__name__)


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
        self.pipeline = Pipeline(writer, max_body=config.max_body, max_attributes=config.max_attributes)
        self.http = HttpReceiver(self.pipeline, retry_after_s=config.retry_after_s)
        self.grpc: GrpcReceiver | None = None
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
                engine = AlertEngine(
                    config.alerts, store=store, writer=writer, grace_s=config.grace_s
                ).start()
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

                collector.grpc = GrpcReceiver(
                    collector.pipeline, config.grpc_listen, token=config.token
                ).start()
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

    def metric_families(self) -> list[Family]:
        """The collector's own health, every component's families (rendered by the API)."""
        lineage = self.writer.recorder.lineage
        families: list[Family] = [
            *self.pipeline.metric_families(),
            ("write_failures_total", "counter", "Batches not written.", [("", self.writer.failed)]),
            (
                "dropped_total",
                "counter",
                "Lineage needs given up (a causal edge, delivery event id or settle outcome lost).",
                [(labels(reason="overflow"), lineage.dropped), (labels(reason="expired"), lineage.expired)],
            ),
            ("write_queue_depth", "gauge", "Batches waiting for the writer.", [("", self.writer.depth)]),
            ("write_queue_capacity", "gauge", "Write queue bound.", [("", self.writer.max_pending)]),
            ("lineage_waiting", "gauge", "Needs parked until a span arrives.", [("", lineage.waiting)]),
            *self.http.metric_families(),
        ]
        if self.grpc is not None:
            families += self.grpc.metric_families()
        if self.receivers is not None:
            families += self.receivers.metric_families()
        if self.alerts is not None:
            families += self.alerts.metric_families()
        return families


def create_app(collector: Collector) -> Starlette:
    """The ASGI app over an open collector; its lifespan shutdown closes the collector."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(collector.close)

    app = Starlette(
        routes=[collector.http.route(), *api.routes(), *redrive_api.ROUTES],
        lifespan=lifespan,
        middleware=[Middleware(api.BearerToken, token=collector.config.token)]
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
    folder = parse_store_url(config.db_path).path  # a DuckDB file or a chDB folder; '' for a server
    if folder:  # the folder of the URL's path, never a folder named after the URL ('duckdb:', 'chdb:')
        Path(folder).parent.mkdir(parents=True, exist_ok=True)
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
