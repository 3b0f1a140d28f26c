"""The broker side of a redrive: out of a dead-letter queue (confirm, then ack), or a replay.

What callers can rely on:

* **Never lost.** A message leaves a dead-letter queue (DLQ) only by ``basic_ack`` *after* the
  broker confirmed the copy published to its destination (publisher confirms, ``mandatory``):
  a crash (of this process, the connection or the broker) between the two leaves the message
  in the DLQ *and* delivered — a duplicate, never a gap. Anything not acked (not selected,
  refused, failed, a dry run) goes back to the DLQ when the channel nacks or closes.
* **Identity kept.** The copy keeps ``message_id`` (set to the event id when the message had
  none, so that it joins the same event), the properties and every header — ``x-death``
  included, so RabbitMQ counts a later death on top — and carries ``x-eventscope-redrive``
  (1 on the first redrive) and ``x-eventscope-redrive-id``.
* **Loop guard.** A message whose ``x-eventscope-redrive`` already reached ``max_redrives``
  (default 3) is refused and stays.
* **Where to.** The origin is the exchange and routing key of the oldest ``x-death`` entry
  (where the message was first published: every queue bound there gets it again); ``to_queue``
  sends it to one queue through the default exchange. A destination that does not exist is a
  :class:`RedriveError` before anything moves (a named queue) or a ``failed`` record (the
  origin exchange; the run stops, the rest stays).
* **Bounded.** One run reads at most the DLQ's depth when it started (a message that dies
  again into the same DLQ is not picked up twice), and at most ``limit`` messages.

The loop is a plain pika ``BlockingConnection``: never instrumented (the tool does not trace
itself), one connection per run, and not shared between threads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from eventscope.tracer.broker.records import message_event_id, parse_deaths
from eventscope.tracer.contract import AMQP_PROPERTIES
from eventscope.tracer.redrive.records import RedriveRecord, new_id

__all__ = [
    "DEFAULT_MAX_EDIT_BYTES",
    "DEFAULT_MAX_REDRIVES",
    "REDRIVE_HEADER",
    "REDRIVE_ID_HEADER",
    "Capture",
    "Edit",
    "EditError",
    "Mover",
    "RedriveError",
    "redrive_count",
]

logger = logging.getLogger(__name__)

REDRIVE_HEADER = "x-eventscope-redrive"
REDRIVE_ID_HEADER = "x-eventscope-redrive-id"
DEFAULT_MAX_REDRIVES = 3
DEFAULT_MAX_EDIT_BYTES = 1024 * 1024
_DEFAULT_PREFETCH = 500
_MAX_PREFETCH = 65535  # AMQP's prefetch-count is a short: how deep a selection can look
_FIRST_WAIT_S = 2.0
_NEXT_WAIT_S = 0.5
_BROKER_HEADERS = ("x-delivery-count",)  # set by the queue on delivery: a fresh count in the new queue
_PROPERTY_NAMES = AMQP_PROPERTIES


class RedriveError(RuntimeError):
    """The request cannot start (a queue that does not exist, nothing to read): nothing moved."""


class EditError(ValueError):
    """An edit that is not valid JSON, too large, or headers that are not a JSON object."""


@dataclass(frozen=True)
class Edit:
    """A changed body and/or headers. Headers merge over the message's own (``None`` removes one)."""

    body: bytes | None = None
    headers: Mapping[str, Any] | None = None

    @classmethod
    def parse(
        cls,
        *,
        body: str | bytes | None = None,
        headers: Any = None,
        max_bytes: int = DEFAULT_MAX_EDIT_BYTES,
    ) -> Edit | None:
        """Validate an edit: the body must be JSON (a document of any shape), at most
        ``max_bytes``; headers a JSON object of names to strings, numbers, booleans or null.
        """
        if body is None and headers is None:
            return None
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if raw is not None:
            if len(raw) > max_bytes:
                raise EditError(f"edited body is {len(raw)} bytes, above the cap of {max_bytes}")
            try:
                json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise EditError(f"edited body is not valid JSON: {exc}") from None
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise EditError("edited headers must be a JSON object")
            for name, value in headers.items():
                if not isinstance(name, str) or not name:
                    raise EditError("header names must be non-empty strings")
                if name in (REDRIVE_HEADER, REDRIVE_ID_HEADER):
                    raise EditError(f"{name} is set by the redrive itself")
                if value is not None and not isinstance(value, str | int | float | bool):
                    raise EditError(f"header {name!r}: only strings, numbers, booleans or null")
            if len(json.dumps(dict(headers))) > max_bytes:
                raise EditError(f"edited headers above the cap of {max_bytes} bytes")
        return cls(body=raw, headers=dict(headers) if headers is not None else None)


@dataclass(frozen=True)
class Capture:
    """What the collector recorded of an orphan that left no message behind (a replay's source)."""

    event_id: str
    exchange: str | None
    routing_key: str | None
    event_type: str | None = None
    producer_service: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    content_type: str | None = None
    body: str | None = None  # NULL: not captured as text
    captured: bool = False  # a payloads row exists
    truncated: bool = False
    redacted: int = 0
    prior_redrives: int = 0  # sent redrives of this event already recorded


def redrive_count(headers: Any) -> int:
    """The ``x-eventscope-redrive`` value of a header table (0 when absent or malformed)."""
    if not isinstance(headers, Mapping):
        return 0
    value = headers.get(REDRIVE_HEADER)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return max(0, int(value)) if value is not None and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0


def _properties_table(properties: pika.BasicProperties) -> dict[str, Any]:
    table = {
        name: getattr(properties, name) for name in _PROPERTY_NAMES if getattr(properties, name) is not None
    }
    if properties.headers is not None:
        table["headers"] = properties.headers
    return table


def _redriven(
    properties: pika.BasicProperties, *, event_id: str, count: int, redrive_id: str, edit: Edit | None
) -> pika.BasicProperties:
    """New properties for the copy; the message's own objects are never changed."""
    headers = dict(properties.headers or {})
    for name in _BROKER_HEADERS:
        headers.pop(name, None)
    if edit is not None and edit.headers is not None:
        for name, value in edit.headers.items():
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
    headers[REDRIVE_HEADER] = count
    headers[REDRIVE_ID_HEADER] = redrive_id
    fields = {name: getattr(properties, name) for name in _PROPERTY_NAMES}
    if not fields.get("message_id"):
        fields["message_id"] = event_id  # the copy must join the same event
    return pika.BasicProperties(headers=headers, **fields)


def _shown(properties: pika.BasicProperties) -> dict[str, Any]:
    shown = {
        name: getattr(properties, name) for name in _PROPERTY_NAMES if getattr(properties, name) is not None
    }
    shown["headers"] = dict(properties.headers or {})
    return shown


class Mover:
    """Runs redrives against one broker. Not thread-safe: one run at a time per instance."""

    def __init__(
        self,
        parameters: pika.ConnectionParameters | pika.URLParameters,
        *,
        max_redrives: int = DEFAULT_MAX_REDRIVES,
        prefetch: int = _DEFAULT_PREFETCH,
    ) -> None:
        if max_redrives < 1 or prefetch < 1:
            raise ValueError("max_redrives and prefetch must be >= 1")
        self.parameters = parameters
        self.max_redrives = max_redrives
        self.prefetch = prefetch

    def _connect(self) -> pika.BlockingConnection:
        parameters = self.parameters
        if isinstance(parameters, pika.URLParameters | pika.ConnectionParameters):
            import copy

            parameters = copy.copy(parameters)
            properties = dict(parameters.client_properties or {})
            properties.setdefault("connection_name", "eventscope redrive")
            parameters.client_properties = properties
        return pika.BlockingConnection(parameters)

    # -- out of a dead-letter queue -------------------------------------------------------
    def from_queue(
        self,
        queue: str,
        *,
        request_id: str,
        actor: str,
        event_ids: Iterable[str] | None = None,
        to_queue: str | None = None,
        edit: Edit | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> list[RedriveRecord]:
        """Move the messages of ``queue`` (all, or those of ``event_ids``) back into the flow.

        Returns one record per message looked at and selected (sent, refused, failed or, for a
        dry run, ``would_send``). Raises :class:`RedriveError` when ``queue`` or ``to_queue``
        does not exist: nothing moved.
        """
        wanted = frozenset(event_ids) if event_ids is not None else None
        connection = self._connect()
        try:
            depth = self._check_queues(connection, queue, to_queue)
            channel = connection.channel()
            channel.confirm_delivery()
            budget = depth if limit is None else min(depth, limit)
            if budget == 0 or (wanted is not None and not wanted):
                return []
            prefetch = min(_MAX_PREFETCH, depth) if wanted is not None or dry_run else self.prefetch
            channel.basic_qos(prefetch_count=max(1, min(prefetch, _MAX_PREFETCH)))
            return self._drain(
                channel,
                queue,
                budget=budget,
                wanted=wanted,
                request_id=request_id,
                actor=actor,
                to_queue=to_queue,
                edit=edit,
                dry_run=dry_run,
            )
        finally:
            if connection.is_open:
                try:
                    connection.close()
                except Exception as exc:  # already closed by the broker
                    logger.debug("closing the redrive connection failed: %s", exc)

    def _check_queues(self, connection: pika.BlockingConnection, queue: str, to_queue: str | None) -> int:
        """The dead-letter queue's depth, once both queues are known to exist."""
        depth = self._check_queue(connection, queue, role="dead-letter queue")
        if to_queue is not None:
            self._check_queue(connection, to_queue, role="destination queue")
        return depth

    @staticmethod
    def _check_queue(connection: pika.BlockingConnection, name: str, *, role: str) -> int:
        channel = connection.channel()
        try:
            declared = channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise RedriveError(f"the {role} {name!r} does not exist; nothing moved") from None
            raise RedriveError(f"the {role} {name!r}: {exc.reply_text}; nothing moved") from None
        channel.close()
        return declared.method.message_count

    def _drain(
        self,
        channel: Any,
        queue: str,
        *,
        budget: int,
        wanted: frozenset[str] | None,
        request_id: str,
        actor: str,
        to_queue: str | None,
        edit: Edit | None,
        dry_run: bool,
    ) -> list[RedriveRecord]:
        records: list[RedriveRecord] = []
        found: set[str] = set()
        seen = 0
        wait = _FIRST_WAIT_S
        try:
            for method, properties, body in channel.consume(queue, inactivity_timeout=wait):
                if method is None:
                    break  # the queue is empty (or what is left is held by others)
                seen += 1
                event_id = message_event_id(
                    _properties_table(properties),
                    body,
                    exchange=method.exchange,
                    routing_keys=[method.routing_key],
                )
                if wanted is None or event_id in wanted:
                    found.add(event_id)
                    record = self._one(
                        channel,
                        method,
                        properties,
                        body,
                        queue=queue,
                        event_id=event_id,
                        request_id=request_id,
                        actor=actor,
                        to_queue=to_queue,
                        edit=edit,
                        dry_run=dry_run,
                    )
                    records.append(record)
                    if record.outcome == "failed" and not channel.is_open:
                        break  # the broker closed the channel (e.g. the exchange is gone)
                if seen >= budget or (wanted is not None and found >= wanted):
                    break
        finally:
            if channel.is_open:
                try:
                    channel.cancel()
                    channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)  # what we hold goes back
                    channel.close()
                except Exception as exc:
                    logger.debug("releasing the dead-letter queue failed (the close returns them): %s", exc)
        return records

    def _one(
        self,
        channel: Any,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
        *,
        queue: str,
        event_id: str,
        request_id: str,
        actor: str,
        to_queue: str | None,
        edit: Edit | None,
        dry_run: bool,
    ) -> RedriveRecord:
        count = redrive_count(properties.headers) + 1
        record = RedriveRecord(
            redrive_id=new_id(),
            request_id=request_id,
            event_id=event_id,
            actor=actor,
            mode="dead_letter",
            outcome="refused",
            from_queue=queue,
            redrive_count=count,
            edited=edit is not None,
            original_body=body if edit is not None and edit.body is not None else None,
            original_headers=dict(properties.headers or {}) if edit is not None else None,
        )
        if count > self.max_redrives:
            record.error = (
                f"loop guard: redriven {count - 1} times already (limit {self.max_redrives}); "
                f"it stays in {queue}"
            )
            return record
        if to_queue is not None:
            exchange, routing_key = "", to_queue
        else:
            deaths = parse_deaths(properties.headers)
            if not deaths:
                record.error = "no x-death header: not a dead-lettered message; name a --to-queue"
                return record
            origin = deaths[-1]
            exchange = origin.exchange or ""
            routing_key = origin.routing_keys[0] if origin.routing_keys else origin.queue
        record.to_exchange, record.to_routing_key = exchange, routing_key
        new_properties = _redriven(
            properties, event_id=event_id, count=count, redrive_id=record.redrive_id, edit=edit
        )
        new_body = edit.body if edit is not None and edit.body is not None else body
        if dry_run:
            record.outcome = "would_send"
            record.properties, record.body = _shown(new_properties), new_body
            return record
        try:
            channel.basic_publish(exchange, routing_key, new_body, new_properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            record.outcome = "failed"
            record.error = f"unroutable: no queue bound to exchange {exchange!r} with key {routing_key!r}"
            return record
        except pika.exceptions.NackError:
            record.outcome = "failed"
            record.error = "the broker refused the copy (nack)"
            return record
        except pika.exceptions.ChannelClosedByBroker as exc:
            record.outcome = "failed"
            record.error = f"the broker refused the copy: {exc.reply_text}"
            return record
        channel.basic_ack(method.delivery_tag)  # only now: the copy is confirmed
        record.outcome = "sent"
        return record

    # -- replay from capture ---------------------------------------------------------------
    def replay(
        self,
        captures: Sequence[Capture],
        *,
        request_id: str,
        actor: str,
        to_queue: str | None = None,
        edit: Edit | None = None,
        dry_run: bool = False,
    ) -> list[RedriveRecord]:
        """Republish orphans that left no message behind from their captured payloads.

        Refused (with the reason) when no payload was captured, or when the capture is not the
        whole body (truncated, redacted, binary): a replay must not send something else.
        """
        records: list[RedriveRecord] = []
        connection: pika.BlockingConnection | None = None
        channel: Any = None
        try:
            for capture in captures:
                record = self._replay_one(
                    capture, request_id=request_id, actor=actor, to_queue=to_queue, edit=edit
                )
                records.append(record)
                if record.outcome != "refused" and not dry_run:
                    if connection is None:
                        connection = self._connect()
                        if to_queue is not None:
                            self._check_queue(connection, to_queue, role="destination queue")
                        channel = connection.channel()
                        channel.confirm_delivery()
                    if not channel.is_open:
                        channel = connection.channel()
                        channel.confirm_delivery()
                    self._publish_replay(channel, record)
                elif record.outcome != "refused":
                    record.outcome = "would_send"
        finally:
            if connection is not None and connection.is_open:
                try:
                    connection.close()
                except Exception as exc:
                    logger.debug("closing the replay connection failed: %s", exc)
        return records

    def _replay_one(
        self, capture: Capture, *, request_id: str, actor: str, to_queue: str | None, edit: Edit | None
    ) -> RedriveRecord:
        count = capture.prior_redrives + 1
        record = RedriveRecord(
            redrive_id=new_id(),
            request_id=request_id,
            event_id=capture.event_id,
            actor=actor,
            mode="capture",
            outcome="refused",
            redrive_count=count,
            edited=edit is not None,
        )
        if count > self.max_redrives:
            record.error = f"loop guard: redriven {count - 1} times already (limit {self.max_redrives})"
            return record
        edited_body = edit.body if edit is not None else None
        if edited_body is None:
            if not capture.captured:
                record.error = (
                    "no message left and no captured payload: run the collector with "
                    "--firehose --capture-payloads to replay such orphans (or give the body with --edit-body)"
                )
                return record
            if capture.body is None or capture.truncated or capture.redacted:
                why = (
                    "truncated"
                    if capture.truncated
                    else "redacted"
                    if capture.redacted
                    else "not kept as text"
                )
                record.error = f"the captured payload is {why}: replaying it would send another message"
                return record
        if to_queue is None and capture.exchange is None:
            record.error = "the event's exchange is unknown: name a --to-queue"
            return record
        record.to_exchange, record.to_routing_key = (
            ("", to_queue) if to_queue is not None else (capture.exchange or "", capture.routing_key or "")
        )
        headers: dict[str, Any] = {}
        if capture.correlation_id:
            headers["x-correlation-id"] = capture.correlation_id
        if capture.causation_id:
            headers["x-causation-id"] = capture.causation_id
        original_headers = dict(headers)
        if edit is not None and edit.headers is not None:
            for name, value in edit.headers.items():
                if value is None:
                    headers.pop(name, None)
                else:
                    headers[name] = value
        headers[REDRIVE_HEADER] = count
        headers[REDRIVE_ID_HEADER] = record.redrive_id
        properties = pika.BasicProperties(
            message_id=capture.event_id,
            type=capture.event_type,
            app_id=capture.producer_service,
            content_type=capture.content_type,
            delivery_mode=2,
            timestamp=int(time.time()),
            headers=headers,
        )
        if record.edited:
            record.original_body = capture.body.encode("utf-8") if capture.body is not None else None
            record.original_headers = original_headers
        record.properties = _shown(properties)
        record.body = edited_body if edited_body is not None else (capture.body or "").encode("utf-8")
        record.outcome = "ready"
        return record

    def _publish_replay(self, channel: Any, record: RedriveRecord) -> None:
        properties = pika.BasicProperties(**(record.properties or {}))
        try:
            channel.basic_publish(
                record.to_exchange or "",
                record.to_routing_key or "",
                record.body or b"",
                properties,
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            record.outcome = "failed"
            record.error = (
                f"unroutable: no queue bound to exchange {record.to_exchange!r} "
                f"with key {record.to_routing_key!r}"
            )
        except pika.exceptions.NackError:
            record.outcome, record.error = "failed", "the broker refused the copy (nack)"
        except pika.exceptions.ChannelClosedByBroker as exc:
            record.outcome, record.error = "failed", f"the broker refused the copy: {exc.reply_text}"
        else:
            record.outcome = "sent"
