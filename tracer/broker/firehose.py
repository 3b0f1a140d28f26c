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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pika

from eventscope.tracer.broker import payloads
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.broker.records import Death, message_event_id, parse_deaths
from eventscope.tracer.broker.tap import COLLECTOR_QUEUE_PREFIX, AmqpTap
from eventscope.tracer.contract import (
    CAUSATION_HEADER,
    CORRELATION_HEADER,
    TRACEPARENT_HEADER,
    decode_header,
)

__all__ = [
    "COLLECTOR_QUEUE_PREFIX",
    "FirehoseRecord",
    "FirehoseTap",
    "disable_tracing",
    "enable_tracing",
    "how_to_enable_tracing",
    "parse_record",
    "tracing_enabled",
]

logger = logging.getLogger(__name__)

TRACE_EXCHANGE = "amq.rabbitmq.trace"


@dataclass(frozen=True, slots=True)
class FirehoseRecord:
    """One firehose record, decoded. ``record_id`` is stable across replays of the record;
    ``event_id`` is :func:`broker.message_event_id` of the message it records.
    """

    record_id: str
    event_id: str
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
    deaths: tuple[Death, ...] = ()  # x-death of a dead-lettered copy (deliver records)
    payload: Mapping[str, Any] | None = None  # publish records, with payload capture on (payloads.py)


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
    routing_key: str,
    headers: Any,
    body: bytes | None,
    observed_at_ns: int,
    *,
    capture: PayloadCapture | None = None,
) -> FirehoseRecord | None:
    """Decode one message from ``amq.rabbitmq.trace``; ``None`` if it is not a firehose record.

    Tolerant of what pika hands over: table values may be ``bytes`` or ``str``, lists may
    hold either, and any field may be missing. With ``capture``, a publish record keeps what
    :func:`payloads.capture` keeps of the body (redacted, capped); the body itself is never kept.
    """
    kind, _, name = routing_key.partition(".")
    if kind not in ("publish", "deliver") or not isinstance(headers, Mapping):
        return None
    properties = headers.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    message_headers = properties.get("headers")
    message_headers = message_headers if isinstance(message_headers, Mapping) else {}
    redelivered = headers.get("redelivered")
    exchange = decode_header(headers.get("exchange_name")) or ""
    routing_keys = _texts(headers.get("routing_keys"))
    return FirehoseRecord(
        record_id=_identity(routing_key, headers, body or b""),
        event_id=message_event_id(properties, body, exchange=exchange, routing_keys=routing_keys),
        kind=kind,
        observed_at_ns=observed_at_ns,
        exchange=exchange,
        routing_keys=routing_keys,
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
        deaths=parse_deaths(message_headers) if kind == "deliver" else (),
        payload=(
            payloads.capture(
                body,
                content_type=decode_header(properties.get("content_type")),
                content_encoding=decode_header(properties.get("content_encoding")),
                policy=capture,
            )
            if capture is not None and kind == "publish"
            else None
        ),
    )


def enable_tracing(vhost: str = "/") -> tuple[bool, str]:
    """Turn the firehose on for ``vhost`` with ``rabbitmqctl`` when this process may.

    Returns ``(enabled, message)``; when it cannot, the message says exactly how to do it.
    """
    how = how_to_enable_tracing(vhost)
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


def how_to_enable_tracing(vhost: str = "/") -> str:
    """What an operator runs to turn the firehose on for ``vhost``."""
    return (
        f"turn the firehose on for vhost {vhost!r} on the broker host: rabbitmqctl trace_on -p {vhost!r} "
        f'(or the management API: PUT /api/vhosts/{vhost.replace("/", "%2F")} with {{"tracing": true}})'
    )


def disable_tracing(vhost: str = "/") -> bool:
    """Turn the firehose off again (what ``enable_tracing`` turned on)."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return False
    result = subprocess.run(
        [rabbitmqctl, "trace_off", "-p", vhost], capture_output=True, text=True, timeout=30, check=False
    )
    return result.returncode == 0


def tracing_enabled(vhost: str = "/") -> bool | None:
    """Is the firehose on for ``vhost``? ``None`` when ``rabbitmqctl`` cannot tell."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return None
    try:
        result = subprocess.run(
            [rabbitmqctl, "list_vhosts", "name", "tracing"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        name, _, state = line.partition("\t")
        if name == vhost:
            return state.strip() == "true"
    return None


Sink = Callable[[Sequence[FirehoseRecord]], None]


class FirehoseTap(AmqpTap[FirehoseRecord]):
    """Consumes ``amq.rabbitmq.trace`` in a thread of its own and hands batches to ``sink``.

    ``sink`` is called from the tap's thread with at most ``batch_size`` records, at least
    every ``flush_interval_s`` while records arrive; the records are acknowledged when it
    returns. If it raises, the batch is requeued (and retried) rather than lost. The tap
    reconnects with backoff after broker restarts; ``stop()`` ends it (see :mod:`tap`).
    """

    name = "firehose"

    def __init__(self, *args: Any, capture: PayloadCapture | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capture = capture

    def _declare(self, connection: pika.BlockingConnection, channel: Any) -> None:
        self._declare_queue(channel)
        channel.queue_bind(self.queue, TRACE_EXCHANGE, "publish.#")
        channel.queue_bind(self.queue, TRACE_EXCHANGE, "deliver.#")

    def _parse(self, method: Any, properties: Any, body: bytes, observed_at_ns: int) -> FirehoseRecord | None:
        record = parse_record(
            method.routing_key, properties.headers, body, observed_at_ns, capture=self.capture
        )
        if record is None or _is_own(record):
            return None
        return record


def _is_own(record: FirehoseRecord) -> bool:
    """Records about the collector's own queues (dead-letter tap and the like)."""
    if record.kind == "deliver":
        return bool(record.queue and record.queue.startswith(COLLECTOR_QUEUE_PREFIX))
    return False
