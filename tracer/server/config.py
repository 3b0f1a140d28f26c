"""What ``eventscope collect`` can be told: one frozen dataclass, validated on construction.

Defaults are the documented ones (docs/collector.md). A bad value fails here, before anything
opens the store or listens, with a message that names the option.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from eventscope.tracer.alerts.rules import AlertsConfig
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.server import redrive_api

__all__ = ["CollectorConfig"]

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
    allow_redrive: bool = False  # POST /api/redrive (redrive_api.py); needs token and amqp_url
    max_redrives: int = 3  # loop guard: a message redriven this many times is refused
    redrive_origins: tuple[str, ...] = ()  # Origins besides the collector's own allowed to redrive

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
        redrive_api.check_config(
            allow_redrive=self.allow_redrive,
            token=self.token,
            amqp_url=self.amqp_url,
            max_redrives=self.max_redrives,
        )
