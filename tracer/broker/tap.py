"""A queue of the collector's own, consumed in a thread of its own: the shape of every broker tap.

The firehose tap and the dead-letter tap differ only in what they bind and how they read a
message; the rest is shared here, once: a plain pika connection (never instrumented, named
``eventscope collector <queue>`` so operators can find it), a queue of its own (below),
batches handed to a sink and acknowledged only after the sink returns (at-least-once: a
record is stored before the broker forgets it; the store's idempotence removes replays),
and reconnection with backoff after broker restarts.

What callers can rely on: ``sink`` is called from the tap's thread, with at most
``batch_size`` items, at least every ``flush_interval_s`` while messages arrive; if it
raises, the batch goes back to the queue (counted in ``sink_failures``) and comes again.
``connected`` is set while the tap consumes; ``reconnects`` counts connections made after
the first one. ``stop()`` flushes what was read and ends the thread.

The queue: by default exclusive, ``eventscope.collector.<tap>.<id>``, gone with the
connection (what is published while the collector is down is lost). With ``durable_name``
it is ``eventscope.collector.<tap>.<durable_name>``: durable, not exclusive, so it outlives
the collector (a deploy, a crash) and the instances of one deployment that share the name
consume it as competing consumers. It is bounded so that a long outage cannot hurt the
broker: ``x-max-length`` (``max_length`` records) and ``x-max-length-bytes`` (``max_bytes``)
with ``x-overflow = drop-head`` — the *oldest* records are dropped first, the newest kept.
The broker does not count what it drops, so the tap reports ``backlog`` (the records waiting
when it connected) and ``capped`` (that backlog was at a cap: records were dropped); the log
says so too. Delete the queue (``rabbitmqctl delete_queue``) when a deployment is retired.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import pika

from eventscope.tracer.broker.worker import Worker

__all__ = ["COLLECTOR_QUEUE_PREFIX", "AmqpTap"]

logger = logging.getLogger(__name__)

COLLECTOR_QUEUE_PREFIX = "eventscope.collector."
_DEFAULT_BATCH = 500
_DEFAULT_FLUSH_S = 0.2
_DEFAULT_PREFETCH = 2000
_RECONNECT_MIN_S = 0.5
_RECONNECT_MAX_S = 10.0
_DEFAULT_MAX_LENGTH = 1_000_000  # records a durable tap queue keeps while no collector reads it
_DEFAULT_MAX_BYTES = 1 << 30
DURABLE_DROP_POLICY = "drop-head"

T = TypeVar("T")


class AmqpTap(Worker, Generic[T]):
    """Consume an exclusive queue of the collector's own; subclasses declare, bind and parse."""

    name = "tap"

    def __init__(
        self,
        parameters: pika.ConnectionParameters | pika.URLParameters,
        sink: Callable[[Sequence[T]], None],
        *,
        batch_size: int = _DEFAULT_BATCH,
        flush_interval_s: float = _DEFAULT_FLUSH_S,
        prefetch: int = _DEFAULT_PREFETCH,
        durable_name: str | None = None,
        max_length: int = _DEFAULT_MAX_LENGTH,
        max_bytes: int = _DEFAULT_MAX_BYTES,
    ) -> None:
        if batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("batch_size must be >= 1 and flush_interval_s > 0")
        if durable_name is not None and (not durable_name or max_length < 1 or max_bytes < 1):
            raise ValueError("durable_name must be non-empty, max_length and max_bytes >= 1")
        self.parameters = parameters
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.prefetch = max(prefetch, batch_size)
        self.durable_name = durable_name
        self.max_length = max_length
        self.max_bytes = max_bytes
        self.queue = f"{COLLECTOR_QUEUE_PREFIX}{self.name}.{durable_name or uuid.uuid4().hex[:12]}"
        self.backlog: int | None = None
        self.capped = False
        self.received = 0
        self.skipped = 0
        self.sink_failures = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.connected = threading.Event()
        self._connections = 0
        Worker.__init__(self, f"eventscope-{self.name}")

    # -- for subclasses ---------------------------------------------------------------------
    def _declare(self, connection: pika.BlockingConnection, channel: Any) -> None:
        """Declare (:meth:`_declare_queue`) and bind ``self.queue``."""
        raise NotImplementedError

    def _declare_queue(self, channel: Any) -> None:
        """The tap's queue: exclusive, or durable and bounded with ``durable_name`` (module doc)."""
        if self.durable_name is None:
            channel.queue_declare(self.queue, exclusive=True, auto_delete=True)
            return
        ok = channel.queue_declare(
            self.queue,
            durable=True,
            arguments={
                "x-max-length": self.max_length,
                "x-max-length-bytes": self.max_bytes,
                "x-overflow": DURABLE_DROP_POLICY,
            },
        )
        self.backlog = ok.method.message_count
        self.capped = self.backlog >= self.max_length
        if self.capped:
            logger.warning(
                "%s tap: %s holds %d records, its cap: the oldest records were dropped (%s)",
                self.name,
                self.queue,
                self.backlog,
                DURABLE_DROP_POLICY,
            )
        elif self.backlog:
            logger.info("%s tap: %d records waited in %s", self.name, self.backlog, self.queue)

    def _parse(self, method: Any, properties: Any, body: bytes, observed_at_ns: int) -> T | None:
        """One message → one item for the sink, or ``None`` to skip it (counted)."""
        raise NotImplementedError

    def _tick(self, connection: pika.BlockingConnection) -> None:
        """Called between messages and at every flush interval (e.g. to add bindings)."""

    def _connection_parameters(self) -> pika.ConnectionParameters | pika.URLParameters:
        parameters = copy.copy(self.parameters)  # the caller's object stays as it was
        properties = dict(parameters.client_properties or {})
        properties.setdefault("connection_name", f"eventscope collector {self.queue}")
        parameters.client_properties = properties
        return parameters

    def _run(self) -> None:
        backoff = _RECONNECT_MIN_S
        while not self._stop.is_set():
            try:
                self._consume()
                backoff = _RECONNECT_MIN_S
            except Exception as exc:
                self.connected.clear()
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._stop.is_set():
                    break
                logger.warning("%s tap disconnected (%s); reconnecting in %.1fs", self.name, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX_S)

    def _consume(self) -> None:
        connection = pika.BlockingConnection(self._connection_parameters())
        try:
            channel = connection.channel()
            self._declare(connection, channel)
            channel.basic_qos(prefetch_count=self.prefetch)
            if self._connections:
                self.reconnects += 1
            self._connections += 1
            self.last_error = None
            self.connected.set()
            logger.info("%s tap consuming %s", self.name, self.queue)
            pending: list[T] = []
            last_tag = 0
            deadline = time.monotonic() + self.flush_interval_s
            for method, properties, body in channel.consume(
                self.queue, inactivity_timeout=self.flush_interval_s
            ):
                if method is not None:
                    last_tag = method.delivery_tag
                    self.received += 1
                    item = self._parse(method, properties, body, time.time_ns())
                    if item is None:
                        self.skipped += 1
                    else:
                        pending.append(item)
                if last_tag and (len(pending) >= self.batch_size or time.monotonic() >= deadline):
                    self._flush(channel, pending, last_tag)
                    pending, last_tag = [], 0
                if method is None or time.monotonic() >= deadline:
                    deadline = time.monotonic() + self.flush_interval_s
                    self._tick(connection)
                if self._stop.is_set():
                    if last_tag:
                        self._flush(channel, pending, last_tag)
                    channel.cancel()
                    break
        finally:
            self.connected.clear()
            if connection.is_open:
                try:
                    connection.close()
                except Exception as exc:  # already half-closed by the broker
                    logger.debug("%s tap: closing the connection failed: %s", self.name, exc)

    def _flush(self, channel: Any, items: list[T], last_tag: int) -> None:
        try:
            if items:
                self.sink(items)
        except Exception:
            self.sink_failures += 1
            logger.exception("%s sink failed; %d items go back to the queue", self.name, len(items))
            channel.basic_nack(last_tag, multiple=True, requeue=True)
            return
        channel.basic_ack(last_tag, multiple=True)

    def state(self) -> dict[str, Any]:
        """What /healthz reports of this tap."""
        return {
            "connected": self.connected.is_set(),
            "queue": self.queue,
            "durable": self.durable_name is not None,
            "backlog": self.backlog,
            "capped": self.capped,
            "received": self.received,
            "reconnects": self.reconnects,
            "sink_failures": self.sink_failures,
            "last_error": self.last_error,
        }
