"""Alert sinks: where firing and resolved notifications go (``[[alerts.sinks]]``).

Each sink is a tiny component with one method, :meth:`Sink.send`, that raises
:class:`DeliveryError` on failure; everything else — a bounded queue, a worker thread,
retries with exponential backoff and full jitter, counters — is the shared :class:`Deliverer`
around it. So a slow or dead receiver never blocks the alert engine, let alone ingestion:
:meth:`SinkSet.notify` only enqueues. Queue policy ``drop-newest``: a notification that finds
its sink's queue full is dropped, counted, and reported as a failed delivery (the alert row
says so: ``delivered = false``, ``last_error``).

Each delivery's outcome comes back through ``on_result`` (from the worker threads), which
the engine writes onto the alert. Payload fields: docs/alerts.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from eventscope.tracer.alerts.rules import SinkConfig
from eventscope.tracer.metrics import Family, labels

__all__ = [
    "DROP_POLICY",
    "AmqpSink",
    "Deliverer",
    "DeliveryError",
    "DeliveryResult",
    "LogSink",
    "Sink",
    "SinkSet",
    "WebhookSink",
    "build_sink",
    "slack_body",
]

logger = logging.getLogger(__name__)

DROP_POLICY = "drop-newest"
_DEFAULT_BACKOFF_S = 0.5
_DEFAULT_MAX_BACKOFF_S = 10.0
_STOP = object()
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_SLACK_COLORS = {"critical": "#d00000", "warning": "#f2c744", "info": "#439fe0"}


class DeliveryError(RuntimeError):
    """A notification did not get through; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    name: str

    def send(self, payload: dict[str, Any]) -> None:
        """Deliver one notification or raise :class:`DeliveryError`."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one notification at one sink."""

    alert_id: str
    status: str  # firing | resolved
    sink: str
    ok: bool
    attempts: int
    error: str | None = None


# -- the sinks --------------------------------------------------------------------------------
class LogSink:
    """One JSON object per line on a stream (standard error by default)."""

    def __init__(self, *, name: str = "log", level: str = "warning", stream: IO[str] | None = None) -> None:
        self.name = name
        self.level = level
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, payload: dict[str, Any]) -> None:
        line = json.dumps({"level": self.level, "logger": "eventscope.alerts", **payload}, sort_keys=True)
        with self._lock:
            stream = self._stream or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def close(self) -> None:
        pass


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body (``text`` + one attachment) for one notification."""
    if payload.get("kind") == "incident":
        return _slack_incident(payload)
    status = payload["status"]
    icon = ":rotating_light:" if status == "firing" else ":white_check_mark:"
    where = payload.get("queue") or payload.get("routing_key") or "?"
    text = (
        f"{icon} [{status.upper()}] {payload['rule']} ({payload['severity']}): "
        f"{payload.get('event_type') or 'event'} {payload.get('event_id')} is {payload['reason']} at {where}"
    )
    fields = [
        {"title": key, "value": str(payload[key]), "short": True}
        for key in ("reason", "queue", "exchange", "routing_key", "age_s", "correlation_id", "trace_id")
        if payload.get(key) is not None
    ]
    color = "#2eb886" if status == "resolved" else _SLACK_COLORS.get(payload["severity"], "#f2c744")
    attachment = {"color": color, "fields": fields, "fallback": text}
    if payload.get("dashboard_url"):
        attachment["title"] = "Open in eventscope"
        attachment["title_link"] = payload["dashboard_url"]
    return {"text": text, "attachments": [attachment]}


def _slack_incident(payload: dict[str, Any]) -> dict[str, Any]:
    """An incident as Slack text: what, how many, since when, and links to a few examples."""
    status = payload["status"]
    icon = ":rotating_light:" if status == "firing" else ":white_check_mark:"
    where = payload.get("queue") or "?"
    text = (
        f"{icon} [{status.upper()}] {payload['rule']} ({payload['severity']}): incident "
        f"{payload['notification']}, {payload['event_count']} x {payload.get('event_type') or 'event'} "
        f"{payload.get('reason')} at {where}"
    )
    fields = [
        {"title": key, "value": str(payload[key]), "short": True}
        for key in ("event_count", "open_count", "first_seen", "last_seen", "reason", "queue")
        if payload.get(key) is not None
    ]
    examples = "\n".join(f"<{e['dashboard_url']}|{e['event_id']}>" for e in payload.get("examples", ()))
    color = "#2eb886" if status == "resolved" else _SLACK_COLORS.get(payload["severity"], "#f2c744")
    attachment: dict[str, Any] = {"color": color, "fields": fields, "fallback": text}
    if examples:
        attachment["text"] = f"Examples:\n{examples}"
    if payload.get("dashboard_url"):
        attachment["title"] = "Open the incident in eventscope"
        attachment["title_link"] = payload["dashboard_url"]
    return {"text": text, "attachments": [attachment]}


class WebhookSink:
    """JSON POST to a URL (``format = "slack"``: a Slack-compatible body)."""

    def __init__(
        self,
        *,
        url: str,
        name: str = "webhook",
        format: str = "json",
        timeout_s: float = 5.0,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        import httpx

        self.name = name
        self.url = url
        self.format = format
        self._http = httpx.Client(timeout=timeout_s, headers=dict(headers), trust_env=False)

    def send(self, payload: dict[str, Any]) -> None:
        import httpx

        body = slack_body(payload) if self.format == "slack" else payload
        try:
            response = self._http.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 300:
            retryable = response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS
            raise DeliveryError(f"POST {self.url}: HTTP {response.status_code}", retryable=retryable)

    def close(self) -> None:
        self._http.close()


class AmqpSink:
    """Publishes the JSON payload to an exchange, with its own connection (publisher confirms).

    Only the deliverer's worker thread calls :meth:`send`, so the pika connection stays on one
    thread; it is opened on first use and again after a failure.
    """

    def __init__(
        self, *, url: str, exchange: str, routing_key: str, name: str = "amqp", timeout_s: float = 5.0
    ) -> None:
        self.name = name
        self.url = url
        self.exchange = exchange
        self.routing_key = routing_key
        self.timeout_s = timeout_s
        self._connection: Any = None
        self._channel: Any = None

    def send(self, payload: dict[str, Any]) -> None:
        import pika

        try:
            if self._channel is None or not self._channel.is_open:
                parameters = pika.URLParameters(self.url)
                parameters.socket_timeout = self.timeout_s
                parameters.blocked_connection_timeout = self.timeout_s
                self._connection = pika.BlockingConnection(parameters)
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
            self._channel.basic_publish(
                self.exchange,
                self.routing_key,
                json.dumps(payload).encode(),
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    type=f"eventscope.{payload.get('kind', 'alert')}.{payload['status']}",
                    message_id=f"{payload['alert_id']}:{payload.get('notification', payload['status'])}",
                    app_id="eventscope",
                ),
            )
        except Exception as exc:  # pika raises many kinds; all mean "not delivered"
            self.close()
            raise DeliveryError(f"publish to {self.exchange!r}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # closing a broken connection may fail again
                logger.debug("closing the amqp sink's connection failed", exc_info=True)


def build_sink(config: SinkConfig, *, stream: IO[str] | None = None) -> Sink:
    """The sink a validated ``[[alerts.sinks]]`` entry describes."""
    if config.type == "webhook":
        assert config.url is not None
        return WebhookSink(
            url=config.url,
            name=config.name,
            format=config.format,
            timeout_s=config.timeout_s,
            headers=config.headers,
        )
    if config.type == "amqp":
        assert config.url is not None and config.exchange is not None
        return AmqpSink(
            url=config.url,
            exchange=config.exchange,
            routing_key=config.routing_key,
            name=config.name,
            timeout_s=config.timeout_s,
        )
    return LogSink(name=config.name, level=config.level, stream=stream)


# -- delivery ---------------------------------------------------------------------------------
class Deliverer:
    """A sink behind a bounded queue and a worker thread that retries with backoff and jitter."""

    def __init__(
        self,
        sink: Sink,
        *,
        on_result: Callable[[DeliveryResult], None],
        retries: int = 3,
        queue_size: int = 1000,
        backoff_s: float = _DEFAULT_BACKOFF_S,
        max_backoff_s: float = _DEFAULT_MAX_BACKOFF_S,
        rules: frozenset[str] | None = None,
    ) -> None:
        self.sink = sink
        self.rules = rules
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._on_result = on_result
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"eventscope-sink-{sink.name}", daemon=True)
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> Deliverer:
        self._thread.start()
        return self

    def wants(self, rule: str) -> bool:
        return self.rules is None or rule in self.rules

    def put(self, payload: dict[str, Any]) -> bool:
        """Enqueue; False (counted, reported as a failed delivery) when the queue is full."""
        try:
            self._queue.put_nowait(payload)
            return True
        except queue.Full:
            self.dropped += 1
            self._report(payload, ok=False, attempts=0, error=f"sink queue full (policy {DROP_POLICY})")
            return False

    def close(self, *, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` (retries are cut short), then stop."""
        if not self._thread.is_alive():
            return
        deadline = time.monotonic() + timeout
        while self._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        self._thread.join(max(0.1, deadline - time.monotonic()))
        self.sink.close()

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is _STOP:
                return
            self._deliver(payload)

    def _deliver(self, payload: dict[str, Any]) -> None:
        error: str | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                self.sink.send(payload)
            except DeliveryError as exc:
                error = str(exc)
                if not exc.retryable or attempt > self.retries or self._stopping.is_set():
                    break
                self.retried += 1
                ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                if self._stopping.wait(random.uniform(ceiling / 2, ceiling)):  # jitter
                    break
                continue
            except Exception as exc:  # a sink bug must not kill the worker
                error = f"{type(exc).__name__}: {exc}"
                logger.exception("sink %s failed unexpectedly", self.sink.name)
                break
            self.sent += 1
            self._report(payload, ok=True, attempts=attempt, error=error)
            return
        self.failed += 1
        if self.failed == 1:
            logger.warning("alert sink %s: delivery failed (%s); counted from now on", self.sink.name, error)
        self._report(payload, ok=False, attempts=attempt, error=error)

    def _report(self, payload: dict[str, Any], *, ok: bool, attempts: int, error: str | None) -> None:
        result = DeliveryResult(payload["alert_id"], payload["status"], self.sink.name, ok, attempts, error)
        try:
            self._on_result(result)
        except Exception:
            logger.exception("recording a delivery result failed")


class SinkSet:
    """Every configured sink, each behind its own :class:`Deliverer`."""

    def __init__(
        self,
        configs: Sequence[SinkConfig],
        *,
        on_result: Callable[[DeliveryResult], None],
        backoff_s: float = _DEFAULT_BACKOFF_S,
        sinks: Sequence[Sink] | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        """``sinks`` replaces the sinks ``configs`` would build (tests), one per config."""
        built = list(sinks) if sinks is not None else [build_sink(c, stream=stream) for c in configs]
        self.deliverers = [
            Deliverer(
                sink,
                on_result=on_result,
                retries=config.retries,
                queue_size=config.queue_size,
                backoff_s=backoff_s,
                rules=config.rules,
            )
            for sink, config in zip(built, configs, strict=True)
        ]

    def start(self) -> SinkSet:
        for deliverer in self.deliverers:
            deliverer.start()
        return self

    def targets(self, rule: str) -> list[Deliverer]:
        return [d for d in self.deliverers if d.wants(rule)]

    def close(self, *, timeout: float = 5.0) -> None:
        for deliverer in self.deliverers:
            deliverer.close(timeout=timeout)

    def metric_families(self) -> list[Family]:
        notifications: list[tuple[str, float]] = []
        depth: list[tuple[str, float]] = []
        for d in self.deliverers:
            sink = d.sink.name.replace("\\", "\\\\").replace('"', '\\"')
            notifications += [
                (labels(sink=sink, result="sent"), d.sent),
                (labels(sink=sink, result="failed"), d.failed),
                (labels(sink=sink, result="dropped"), d.dropped),
                (labels(sink=sink, result="retried"), d.retried),
            ]
            depth.append((labels(sink=sink), d.depth))
        return [
            (
                "alert_notifications_total",
                "counter",
                f"Alert notifications by sink and result (queue policy {DROP_POLICY}).",
                notifications,
            ),
            ("alert_sink_queue_depth", "gauge", "Notifications waiting per sink.", depth),
        ]
