"""Broker truth → rows: firehose records, dead-lettered copies and management snapshots.

The span side has :mod:`eventscope.tracer.ingest.normaliser`; this is its counterpart for what
RabbitMQ itself says. Pure and per batch, like the normaliser: the store merges the rows
(see docs/sql.md, "Broker truth").

Event identity is what joins the two sides. :func:`message_event_id` gives the event id of
a message as the broker taps see it: its ``message_id`` when set (the eventscope adapter
always sets one); else the producer span named by its ``traceparent`` header, which is the
id the span side synthesizes for the same publish (:func:`normaliser.synthesized_event_id`),
so an OpenTelemetry-instrumented producer without message ids still joins; else a
fingerprint of the message's content, stable across the publish record, every deliver
record and the dead-lettered copies of the same message. Byte-identical messages without
``message_id``, ``timestamp`` or trace context are indistinguishable to the broker too, and
share one event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventscope.tracer.contract import decode_header, parse_traceparent
from eventscope.tracer.ingest.normaliser import synthesized_event_id
from eventscope.tracer.store.batches import BrokerBatch, Topology

if TYPE_CHECKING:
    from eventscope.tracer.broker.firehose import FirehoseRecord

__all__ = [
    "DEATH_REASONS",
    "BrokerBatch",
    "DeadLetter",
    "Death",
    "Topology",
    "message_event_id",
    "normalise_dead_letters",
    "normalise_firehose",
    "parse_deaths",
]

DEATH_REASONS = frozenset({"rejected", "expired", "maxlen", "delivery_limit"})
_FINGERPRINT_PREFIX = "amqp-"
# What the broker adds or moves when it dead-letters a message: not part of its identity.
_DEATH_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
        "CC",
        "BCC",
    }
)
_VOLATILE_PROPERTIES = frozenset({"headers", "expiration"})  # expiration moves into x-death
_MAX_DEATHS = 64


def _canonical(value: Any) -> Any:
    """A header value in one form, whichever way pika decoded it (bytes or str, ...)."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return ["bytes", bytes(value).hex()]
    if isinstance(value, Mapping):
        return [[str(k), _canonical(v)] for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, dt.datetime):
        return int(value.timestamp())
    if value is None or isinstance(value, bool | int | str):
        return value
    return repr(value)


def message_event_id(
    properties: Mapping[str, Any], body: bytes | None, *, exchange: str, routing_keys: Sequence[str]
) -> str:
    """The event id of a message seen by a broker tap (see the module docstring).

    ``properties`` is the message's property table as the firehose carries it (keys
    ``message_id``, ``headers``, ``timestamp``, ...); ``exchange`` / ``routing_keys`` are
    where it was published (for a dead-lettered copy, the original ones are taken from its
    ``x-death`` header).
    """
    message_id = decode_header(properties.get("message_id"))
    if message_id:
        return message_id
    headers = properties.get("headers")
    headers = headers if isinstance(headers, Mapping) else {}
    parent = parse_traceparent(decode_header(headers.get("traceparent")))
    if parent is not None:
        return synthesized_event_id(f"{parent[0]:032x}", f"{parent[1]:016x}")
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[-1], Mapping):
        first = deaths[-1]  # the oldest death names where the message was first published
        exchange = decode_header(first.get("exchange")) or ""
        keys = first.get("routing-keys")
        routing_keys = [k for k in (decode_header(v) for v in keys or ()) if k is not None]
    content = {
        "exchange": exchange,
        "routing_key": routing_keys[0] if routing_keys else "",
        "properties": _canonical(
            {k: v for k, v in properties.items() if k not in _VOLATILE_PROPERTIES and v is not None}
        ),
        "headers": _canonical({k: v for k, v in headers.items() if k not in _DEATH_HEADERS}),
    }
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    digest.update(body or b"")
    return _FINGERPRINT_PREFIX + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Death:
    """One entry of an ``x-death`` header: the message died ``count`` times in ``queue``."""

    queue: str
    reason: str
    count: int
    died_at_us: int | None
    exchange: str | None
    routing_keys: tuple[str, ...]


def parse_deaths(headers: Any) -> tuple[Death, ...]:
    """The ``x-death`` entries of a header table, newest first; malformed entries are skipped."""
    if not isinstance(headers, Mapping):
        return ()
    entries = headers.get("x-death")
    if not isinstance(entries, list | tuple):
        return ()
    deaths = []
    for entry in entries[:_MAX_DEATHS]:
        if not isinstance(entry, Mapping):
            continue
        queue = decode_header(entry.get("queue"))
        reason = decode_header(entry.get("reason"))
        count = entry.get("count")
        if not queue or reason is None or isinstance(count, bool) or not isinstance(count, int):
            continue
        died = entry.get("time")
        died_at_us = None
        if isinstance(died, dt.datetime):
            if died.tzinfo is None:
                died = died.replace(tzinfo=dt.timezone.utc)
            died_at_us = int(died.timestamp() * 1_000_000)
        elif isinstance(died, int) and not isinstance(died, bool):
            died_at_us = died * 1_000_000
        keys = entry.get("routing-keys")
        deaths.append(
            Death(
                queue=queue,
                reason=reason,
                count=count,
                died_at_us=died_at_us,
                exchange=decode_header(entry.get("exchange")),
                routing_keys=tuple(
                    k for k in (decode_header(v) for v in (keys if isinstance(keys, list) else ())) if k
                ),
            )
        )
    return tuple(deaths)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered copy as the dead-letter tap received it from ``dead_letter_exchange``."""

    event_id: str
    dead_letter_exchange: str
    observed_at_ns: int
    deaths: tuple[Death, ...]


def _death_rows(
    event_id: str, deaths: Sequence[Death], dead_letter_exchange: str | None, observed_at_us: int
) -> list[dict[str, Any]]:
    """Rows of ``dead_letters``: the newest death was observed now; older ones when they died."""
    rows = []
    for index, death in enumerate(deaths):
        observed = observed_at_us if index == 0 or death.died_at_us is None else death.died_at_us
        rows.append(
            {
                "event_id": event_id,
                "queue": death.queue,
                "reason": death.reason,
                "count": death.count,
                "died_at": death.died_at_us,
                "observed_at": min(observed, observed_at_us),
                "exchange": death.exchange,
                "routing_keys": list(death.routing_keys),
                "dead_letter_exchange": dead_letter_exchange if index == 0 else None,
            }
        )
    return rows


def normalise_firehose(records: Iterable[FirehoseRecord]) -> BrokerBatch:
    """Publish records → ``events`` rows (source ``firehose``), deliver records → ``deliveries``
    rows without a span, ``x-causation-id`` → causal edges, ``x-death`` of delivered
    dead-lettered copies → ``dead_letters`` rows.
    """
    out = BrokerBatch()
    for record in records:
        observed_us = record.observed_at_ns // 1000
        if record.kind == "publish":
            parent = parse_traceparent(record.traceparent)
            routing_key = record.routing_keys[0] if record.routing_keys else None
            out.events.append(
                {
                    "event_id": record.event_id,
                    "event_type": record.event_type or routing_key,
                    "exchange": record.exchange,
                    "routing_key": routing_key,
                    "producer_service": record.app_id,
                    "published_at": observed_us,
                    "trace_id": f"{parent[0]:032x}" if parent else None,
                    "span_id": f"{parent[1]:016x}" if parent else None,
                    "causation_id": record.causation_header,
                    # adapters leave the header out on a root event, which is its own flow
                    "correlation_id": record.correlation_header
                    or (record.event_id if not record.causation_header else None),
                    "routed_queues": list(record.routed_queues or ()),
                    "payload_size": record.body_size,
                    "source": "firehose",
                }
            )
            if record.payload is not None:
                out.payloads.append(
                    {"event_id": record.event_id, "captured_at": observed_us, **record.payload}
                )
            cause = record.causation_header
            if cause and cause != record.event_id:
                out.edges.append((cause, record.event_id, "causation_id"))
        elif record.kind == "deliver":
            out.deliveries.append(
                {
                    "event_id": record.event_id,
                    "queue": record.queue,
                    "consumer_service": None,
                    "received_at": observed_us,
                    "settled_at": None,
                    "outcome": None,
                    "redelivered": record.redelivered,
                    "error": None,
                    "trace_id": None,
                    "span_id": None,
                    "source": "firehose",
                    "record_id": record.record_id,
                }
            )
            if record.deaths:
                out.dead_letters.extend(
                    _death_rows(record.event_id, record.deaths, record.exchange, observed_us)
                )
    return out


def normalise_dead_letters(copies: Iterable[DeadLetter]) -> BrokerBatch:
    """Dead-lettered copies → ``dead_letters`` rows (one per ``x-death`` entry)."""
    out = BrokerBatch()
    for copy in copies:
        out.dead_letters.extend(
            _death_rows(copy.event_id, copy.deaths, copy.dead_letter_exchange, copy.observed_at_ns // 1000)
        )
    return out
