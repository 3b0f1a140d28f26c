"""The firehose tap: RabbitMQ's own record of what was published, routed and delivered.

With tracing on for a vhost (``rabbitmqctl trace_on -p VHOST``), the broker copies every
publish and every delivery to the topic exchange ``amq.rabbitmq.trace``. A
``publish.<exchange>`` record lists ``routed_queues`` (empty: nothing was bound, the
message was dropped or returned); a ``deliver.<queue>`` record says which queue handed the
message to a consumer (``basic.get`` included). That is broker truth, also for services
eventscope does not instrument. The firehose records neither acks nor dead-lettering:
settle outcomes come from consumer spans, dead-lettering from the dead-letter tap.

:class:`FirehoseTap` consumes the records on a connection of its own (plain pika, never
instrumented), with an exclusive queue named ``eventscope.collector.firehose.*``; records
about the collector's own queues are dropped, so the tool never traces itself. Batches are
handed to a sink and acknowledged only after the sink returns (at-least-once: a record is
stored before the broker forgets it; the store's idempotence removes replays).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pika

from .propagation import CAUSATION_HEADER, CORRELATION_HEADER, TRACEPARENT_HEADER, decode_header

__all__ = [
    "COLLECTOR_QUEUE_PREFIX",
    "FirehoseRecord",
    "FirehoseTap",
    "enable_tracing",
    "parse_record",
]

logger = logging.getLogger(__name__)

TRACE_EXCHANGE = "amq.rabbitmq.trace"
COLLECTOR_QUEUE_PREFIX = "eventscope.collector."
_DEFAULT_BATCH = 500
_DEFAULT_FLUSH_S = 0.2
_DEFAULT_PREFETCH = 2000
_RECONNECT_MAX_S = 10.0


@dataclass(frozen=True, slots=True)
class FirehoseRecord:
    """One firehose record, decoded. ``record_id`` is stable across replays of the record."""

    record_id: str
    kind: str  # "publish" | "deliver"
    observed_at_ns: int
    exchange: str
    routing_keys: tuple[str, ...]
    queue: str | None  # deliver records: the queue the message left
    routed_queues: tuple[str, ...] | None  # publish records: where it went (empty = unroutable)
    redelivered: bool | None
    message_id: str | None
    event_type: str | None
    app_id: str | None
    timestamp_s: int | None
    correlation_id: str | None  # the AMQP property (the application's)
    causation_header: str | None
    correlation_header: str | None
    traceparent: str | None
    body_size: int
    vhost: str | None
    connection: str | None
    channel: int | None
    user: str | None


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(text for text in (decode_header(item) for item in value) if text is not None)


def _routed(value: Any) -> tuple[str, ...]:
    """``routed_queues`` without the collector's own queues (the tool never traces itself)."""
    return tuple(queue for queue in _texts(value) if not queue.startswith(COLLECTOR_QUEUE_PREFIX))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _identity(routing_key: str, headers: Mapping[str, Any], body: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(routing_key.encode("utf-8", "replace"))
    digest.update(repr(sorted((str(k), repr(v)) for k, v in headers.items())).encode("utf-8", "replace"))
    digest.update(body or b"")
    return digest.hexdigest()


def parse_record(
    routing_key: str, headers: Any, body: bytes | None, observed_at_ns: int
) -> FirehoseRecord | None:
    """Decode one message from ``amq.rabbitmq.trace``; ``None`` if it is not a firehose record.

    Tolerant of what pika hands over: table values may be ``bytes`` or ``str``, lists may
    hold either, and any field may be missing.
    """
    kind, _, name = routing_key.partition(".")
    if kind not in ("publish", "deliver") or not isinstance(headers, Mapping):
        return None
    properties = headers.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    message_headers = properties.get("headers")
    message_headers = message_headers if isinstance(message_headers, Mapping) else {}
    redelivered = headers.get("redelivered")
    return FirehoseRecord(
        record_id=_identity(routing_key, headers, body or b""),
        kind=kind,
        observed_at_ns=observed_at_ns,
        exchange=decode_header(headers.get("exchange_name")) or "",
        routing_keys=_texts(headers.get("routing_keys")),
        queue=name if kind == "deliver" else None,
        routed_queues=_routed(headers.get("routed_queues")) if kind == "publish" else None,
        redelivered=bool(redelivered) if kind == "deliver" and redelivered is not None else None,
        message_id=decode_header(properties.get("message_id")),
        event_type=decode_header(properties.get("type")),
        app_id=decode_header(properties.get("app_id")),
        timestamp_s=_int(properties.get("timestamp")),
        correlation_id=decode_header(properties.get("correlation_id")),
        causation_header=decode_header(message_headers.get(CAUSATION_HEADER)),
        correlation_header=decode_header(message_headers.get(CORRELATION_HEADER)),
        traceparent=decode_header(message_headers.get(TRACEPARENT_HEADER)),
        body_size=len(body or b""),
        vhost=decode_header(headers.get("vhost")),
        connection=decode_header(headers.get("connection")),
        channel=_int(headers.get("channel")),
        user=decode_header(headers.get("user")),
    )


def enable_tracing(vhost: str = "/") -> tuple[bool, str]:
    """Turn the firehose on for ``vhost`` with ``rabbitmqctl`` when this process may.

    Returns ``(enabled, message)``; when it cannot, the message says exactly how to do it.
    """
    how = (
        f"turn the firehose on for vhost {vhost!r} on the broker host: rabbitmqctl trace_on -p {vhost!r} "
        f'(or the management API: PUT /api/vhosts/{vhost.replace("/", "%2F")} with {{"tracing": true}})'
    )
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return False, f"rabbitmqctl is not available here; {how}"
    try:
        result = subprocess.run(
            [rabbitmqctl, "trace_on", "-p", vhost], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"rabbitmqctl failed ({exc}); {how}"
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return False, f"rabbitmqctl trace_on failed ({detail[-1] if detail else result.returncode}); {how}"
    return True, f"firehose tracing is on for vhost {vhost!r}"


def disable_tracing(vhost: str = "/") -> bool:
    """Turn the firehose off again (what ``enable_tracing`` turned on)."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return False
    result = subprocess.run(
        [rabbitmqctl, "trace_off", "-p", vhost], capture_output=True, text=True, timeout=30, check=False
    )
    return result.returncode == 0


Sink = Callable[[Sequence[FirehoseRecord]], None]


class FirehoseTap:
    """Consumes ``amq.rabbitmq.trace`` in a thread of its own and hands batches to ``sink``.

    ``sink`` is called from the tap's thread with at most ``batch_size`` records, at least
    every ``flush_interval_s`` while records arrive; the records are acknowledged when it
    returns. If it raises, the batch is requeued (and retried) rather than lost. The tap
    reconnects with backoff after broker restarts; ``stop()`` ends it.
    """

    def __init__(
        self,
        parameters: pika.ConnectionParameters | pika.URLParameters,
        sink: Sink,
        *,
        batch_size: int = _DEFAULT_BATCH,
        flush_interval_s: float = _DEFAULT_FLUSH_S,
        prefetch: int = _DEFAULT_PREFETCH,
    ) -> None:
        if batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("batch_size must be >= 1 and flush_interval_s > 0")
        self.parameters = parameters
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.prefetch = max(prefetch, batch_size)
        self.queue = f"{COLLECTOR_QUEUE_PREFIX}firehose.{uuid.uuid4().hex[:12]}"
        self.received = 0
        self.skipped = 0
        self.sink_failures = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventscope-firehose", daemon=True)

    def start(self) -> FirehoseTap:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._consume()
                backoff = 0.5
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    break
                logger.warning("firehose tap disconnected (%s); reconnecting in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX_S)

    def _consume(self) -> None:
        connection = pika.BlockingConnection(self.parameters)
        try:
            channel = connection.channel()
            channel.queue_declare(self.queue, exclusive=True, auto_delete=True)
            channel.queue_bind(self.queue, TRACE_EXCHANGE, "publish.#")
            channel.queue_bind(self.queue, TRACE_EXCHANGE, "deliver.#")
            channel.basic_qos(prefetch_count=self.prefetch)
            self.connected.set()
            pending: list[FirehoseRecord] = []
            last_tag = 0
            deadline = time.monotonic() + self.flush_interval_s
            for method, properties, body in channel.consume(
                self.queue, inactivity_timeout=self.flush_interval_s
            ):
                if method is not None:
                    last_tag = method.delivery_tag
                    self.received += 1
                    record = parse_record(method.routing_key, properties.headers, body, time.time_ns())
                    if record is None or _is_own(record):
                        self.skipped += 1
                    else:
                        pending.append(record)
                if last_tag and (len(pending) >= self.batch_size or time.monotonic() >= deadline):
                    self._flush(channel, pending, last_tag)
                    pending, last_tag = [], 0
                if method is None or time.monotonic() >= deadline:
                    deadline = time.monotonic() + self.flush_interval_s
                if self._stop.is_set():
                    if last_tag:
                        self._flush(channel, pending, last_tag)
                    channel.cancel()
                    break
        finally:
            self.connected.clear()
            if connection.is_open:
                connection.close()

    def _flush(self, channel: Any, records: list[FirehoseRecord], last_tag: int) -> None:
        try:
            if records:
                self.sink(records)
        except Exception:
            self.sink_failures += 1
            logger.exception("firehose sink failed; %d records go back to the queue", len(records))
            channel.basic_nack(last_tag, multiple=True, requeue=True)
            return
        channel.basic_ack(last_tag, multiple=True)


def _is_own(record: FirehoseRecord) -> bool:
    """Records about the collector's own queues (dead-letter tap and the like)."""
    if record.kind == "deliver":
        return bool(record.queue and record.queue.startswith(COLLECTOR_QUEUE_PREFIX))
    return False
