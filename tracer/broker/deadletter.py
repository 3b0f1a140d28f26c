"""The dead-letter tap: what RabbitMQ dead-lettered, from which queue, and why.

The firehose records no dead-lettering (a message nacked into a DLX shows ``publish`` +
``deliver`` and nothing more), so the collector binds a queue of its own,
``eventscope.collector.dlx.<id>`` (exclusive, like every tap's: see :mod:`tap`), to each
dead-letter exchange (DLX) and reads the ``x-death`` header of every copy the broker puts
there: reason ``rejected`` / ``expired`` / ``maxlen`` / ``delivery_limit``, the queue it
died in, how many times, when. Each entry becomes a ``dead_letters`` row keyed by
``(event_id, queue, reason, count)``, so replays and the history repeated in later copies
are stored once.

Which exchanges: those named with ``--dlx`` and, with the management poller, every
``x-dead-letter-exchange`` of a queue's arguments or policy. How to bind depends on the
exchange type (:func:`plan_bindings`):

* ``fanout``: one binding (the key is ignored); ``topic``: ``#``; ``headers``: ``x-match=all``
  with no conditions, which matches every message;
* ``direct``: a direct DLX only routes exact keys. A dead-lettered message keeps its routing
  keys unless the queue sets ``x-dead-letter-routing-key``, so the tap binds with each
  dead-letter routing key of the queues using that DLX and, for queues without one, with
  their own binding keys (wildcard-free ones: a queue bound to a topic exchange by pattern
  cannot be covered exactly; set a dead-letter routing key for it);
* type unknown (``--dlx`` without the management poller): ``#``, which covers fanout, topic
  and headers exchanges; a direct DLX needs ``--management-url`` (a warning says so);
* the default exchange (``""``) cannot be bound: its dead letters are seen only when the
  firehose records the dead-letter queue's deliveries (``x-death`` travels with the copy).

An exchange that does not exist yet is retried every few seconds. Our queue receives
copies; it takes nothing from anyone (a DLX routes to every bound queue).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from eventscope.tracer.broker.records import DeadLetter, Topology, message_event_id, parse_deaths
from eventscope.tracer.broker.tap import AmqpTap
from eventscope.tracer.contract import AMQP_PROPERTIES

__all__ = ["DeadLetterTap", "DlxBinding", "dead_letter_exchanges", "plan_bindings"]

logger = logging.getLogger(__name__)

_RETRY_MISSING_S = 5.0
_WILDCARDS = ("*", "#")
_PROPERTY_NAMES = ("headers", *AMQP_PROPERTIES)


@dataclass(frozen=True, slots=True, order=True)
class DlxBinding:
    """One binding of the tap's queue to a dead-letter exchange."""

    exchange: str
    routing_key: str = "#"
    headers_match_all: bool = False  # headers exchange: x-match=all with no conditions

    @property
    def arguments(self) -> dict[str, Any] | None:
        return {"x-match": "all"} if self.headers_match_all else None


def dead_letter_exchanges(topology: Topology) -> set[str]:
    """The DLXs the queues of ``topology`` use (arguments or policy)."""
    return {q["dead_letter_exchange"] for q in topology.queues if q.get("dead_letter_exchange") is not None}


def plan_bindings(topology: Topology | None, named: Iterable[str] = ()) -> set[DlxBinding]:
    """The bindings that make every copy dead-lettered into the DLXs reach the tap.

    ``named`` are the ``--dlx`` exchanges; ``topology`` (the management poller's snapshot)
    adds the DLXs queues use and tells exchange types. See the module docstring for the rules.
    """
    exchanges: set[str] = set(named)
    types: dict[str, str] = {}
    users: dict[str, list[dict[str, Any]]] = {}
    keys_of: dict[str, set[str]] = {}
    if topology is not None:
        types = {x["name"]: x.get("type") or "" for x in topology.exchanges}
        for queue in topology.queues:
            dlx = queue.get("dead_letter_exchange")
            if dlx is not None:
                exchanges.add(dlx)
                users.setdefault(dlx, []).append(queue)
        for binding in topology.bindings:
            if binding.get("destination_type") == "queue":
                keys_of.setdefault(binding["destination"], set()).add(binding.get("routing_key") or "")
    plan: set[DlxBinding] = set()
    for exchange in exchanges:
        if exchange == "":
            continue  # the default exchange takes no bindings (see module docstring)
        kind = types.get(exchange)
        if kind == "fanout":
            plan.add(DlxBinding(exchange, ""))
        elif kind == "headers":
            plan.add(DlxBinding(exchange, "", headers_match_all=True))
        elif kind == "direct":
            for queue in users.get(exchange, ()):
                if queue.get("dead_letter_routing_key") is not None:
                    plan.add(DlxBinding(exchange, queue["dead_letter_routing_key"]))
                    continue
                for key in keys_of.get(queue["name"], {queue["name"]}):
                    if not any(w in key for w in _WILDCARDS):
                        plan.add(DlxBinding(exchange, key))
        else:  # topic, unknown (no management), or a plugin's type
            plan.add(DlxBinding(exchange, "#"))
    return plan


def _properties_table(properties: Any) -> dict[str, Any]:
    """``BasicProperties`` as the firehose carries them: a table of the fields that are set."""
    table = {}
    for name in _PROPERTY_NAMES:
        value = getattr(properties, name, None)
        if value is not None:
            table[name] = value
    return table


class DeadLetterTap(AmqpTap[DeadLetter]):
    """Binds an exclusive queue of its own to the dead-letter exchanges and reads ``x-death``.

    ``exchanges`` are the ``--dlx`` names; :meth:`watch` adds what the management poller
    finds. ``unbound`` maps an exchange the tap could not bind (yet) to the broker's reason.
    """

    name = "dlx"

    def __init__(
        self,
        parameters: pika.ConnectionParameters | pika.URLParameters,
        sink: Callable[[Sequence[DeadLetter]], None],
        *,
        exchanges: Iterable[str] = (),
        **options: Any,
    ) -> None:
        super().__init__(parameters, sink, **options)
        self._named = frozenset(exchanges)
        self._lock = threading.Lock()
        self._wanted: set[DlxBinding] = plan_bindings(None, self._named)
        self._bound: set[DlxBinding] = set()
        self._retry_at: dict[DlxBinding, float] = {}
        self._warned_direct: set[str] = set()
        self.unbound: dict[str, str] = {}

    @property
    def bound(self) -> set[DlxBinding]:
        """Bindings in place on the current connection."""
        with self._lock:
            return set(self._bound)

    def watch(self, topology: Topology) -> None:
        """Learn exchange types and DLXs from a management snapshot (any thread)."""
        plan = plan_bindings(topology, self._named)
        known = {x["name"]: x.get("type") for x in topology.exchanges}
        with self._lock:
            # a name from --dlx bound with '#' while its type was unknown stays bound: harmless
            self._wanted |= plan
        for exchange in self._named:
            unbindable = known.get(exchange) == "direct" and not any(b.exchange == exchange for b in plan)
            if unbindable and exchange not in self._warned_direct:
                self._warned_direct.add(exchange)
                logger.warning(
                    "direct DLX %r: no queue with a dead-letter routing key or exact binding key "
                    "uses it, so the dead-letter tap cannot bind it",
                    exchange,
                )

    def _declare(self, connection: pika.BlockingConnection, channel: Any) -> None:
        self._declare_queue(channel)
        with self._lock:
            self._bound = set()
        self._retry_at = {}
        self._bind_new(connection)

    def _tick(self, connection: pika.BlockingConnection) -> None:
        self._bind_new(connection)

    def _bind_new(self, connection: pika.BlockingConnection) -> None:
        now = time.monotonic()
        with self._lock:
            todo = sorted(b for b in self._wanted - self._bound if self._retry_at.get(b, 0.0) <= now)
        if not todo:
            return
        channel = connection.channel()  # a failed bind closes its channel: not the consuming one
        try:
            for binding in todo:
                if not channel.is_open:
                    channel = connection.channel()
                try:
                    channel.queue_bind(
                        self.queue, binding.exchange, binding.routing_key, arguments=binding.arguments
                    )
                except pika.exceptions.ChannelClosedByBroker as exc:
                    self._retry_at[binding] = now + _RETRY_MISSING_S
                    if self.unbound.get(binding.exchange) != exc.reply_text:
                        logger.warning("dead-letter tap cannot bind %r: %s", binding.exchange, exc.reply_text)
                    with self._lock:
                        self.unbound[binding.exchange] = exc.reply_text
                    continue
                with self._lock:
                    self._bound.add(binding)
                    self.unbound.pop(binding.exchange, None)
                logger.info("dead-letter tap bound to %r (%r)", binding.exchange, binding.routing_key)
        finally:
            if channel.is_open:
                channel.close()

    def _parse(self, method: Any, properties: Any, body: bytes, observed_at_ns: int) -> DeadLetter | None:
        headers = getattr(properties, "headers", None)
        deaths = parse_deaths(headers)
        if not deaths:
            return None  # published to the DLX directly: not a dead letter
        event_id = message_event_id(
            _properties_table(properties),
            body,
            exchange=method.exchange or "",
            routing_keys=[method.routing_key or ""],
        )
        return DeadLetter(event_id, method.exchange or "", observed_at_ns, deaths)

    def state(self) -> dict[str, Any]:
        state = super().state()
        with self._lock:
            state["exchanges"] = sorted({b.exchange for b in self._bound})
            state["unbound"] = dict(self.unbound)
        return state
