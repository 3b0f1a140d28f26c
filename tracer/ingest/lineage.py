"""Lineage: what one span cannot tell alone, resolved against the spans seen before it.

Spans arrive out of order: a publish made while handling event A ends (and is exported)
before A's CONSUMER span does; two services export on their own schedules; a settle span may
come a batch after its delivery. The normaliser hands over *needs* (a delivery's event, a
publish's cause, a settle's delivery); :class:`Lineage` answers them from a bounded memory of
recent spans, and parks what it cannot answer yet until the span it waits for arrives.

Bounds and drop policy: at most ``max_spans`` remembered spans (oldest forgotten first,
counted in ``evicted``) and ``max_waiting`` parked needs (oldest dropped first, counted in
``dropped``); a need parked longer than ``wait_s`` is dropped as well (``expired``). A
dropped need loses one causal edge, one delivery's event id or one settle outcome, never a
row. Forgotten spans are looked up in the database (:meth:`Recorder.resolve_missing`).

Used by the writer thread only (through :class:`Recorder`): not thread-safe.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventscope.tracer.ingest.normaliser import (
    KIND_CONSUMER,
    KIND_PRODUCER,
    CauseNeed,
    DeliveryNeed,
    Normalised,
    SettleNeed,
    SpanNode,
)
from eventscope.tracer.store.batches import Resolution

__all__ = ["Lineage", "Resolution"]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_SPANS = 200_000
_DEFAULT_MAX_WAITING = 50_000
_DEFAULT_WAIT_S = 600.0
_MAX_WALK = 64

Key = tuple[str, str]
Need = DeliveryNeed | CauseNeed | SettleNeed


@dataclass(slots=True)
class _Parked:
    need: Need
    since: float
    looked_up: bool = False


class Lineage:
    """Bounded memory of recent spans and the needs waiting for spans not seen yet."""

    def __init__(
        self,
        *,
        max_spans: int = _DEFAULT_MAX_SPANS,
        max_waiting: int = _DEFAULT_MAX_WAITING,
        wait_s: float = _DEFAULT_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_spans < 1 or max_waiting < 1:
            raise ValueError("max_spans and max_waiting must be positive")
        self.max_spans = max_spans
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self._clock = clock
        self._nodes: OrderedDict[Key, SpanNode] = OrderedDict()
        # (trace, parent span) of PRODUCER spans published without an id → their event id:
        # a PRODUCER span wrapping another one is the same publish (instrumentation-pika).
        self._producer_children: OrderedDict[Key, str] = OrderedDict()
        self._waiting: OrderedDict[Key, list[_Parked]] = OrderedDict()
        self._waiting_count = 0
        self.evicted = 0
        self.dropped = 0
        self.expired = 0
        self._rows: dict[Key, dict[str, Any]] = {}
        self._result = Resolution()

    # -- state --------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        """Needs parked until a span arrives."""
        return self._waiting_count

    @property
    def forgot_any(self) -> bool:
        """True once a span was evicted: a miss may then be in the database."""
        return self.evicted > 0

    # -- the one entry point per batch ----------------------------------------------------
    def apply(self, batch: Normalised) -> Resolution:
        """Resolve ``batch``'s needs; edit its rows in place; return changes to older rows."""
        self._rows = {(row["trace_id"], row["span_id"]): row for row in batch.deliveries}
        self._result = Resolution(edges=set(batch.edges))
        try:
            self._fold_wrapped_producers(batch)
            for node in batch.nodes:
                self._remember(node)
            for node in batch.nodes:
                self._wake((node.trace_id, node.span_id))
            for need in (*batch.delivery_needs, *batch.settle_needs, *batch.cause_needs):
                self._run(need, None)
            self._expire()
            return self._result
        finally:
            self._rows = {}

    def learn(self, nodes: list[SpanNode]) -> Resolution:
        """Spans found in the database for :meth:`missing` keys: remember them, wake waiters."""
        self._result = Resolution()
        for node in nodes:
            self._remember(node)
        for node in nodes:
            self._wake((node.trace_id, node.span_id))
        return self._result

    def missing(self, *, older_than_s: float) -> list[Key]:
        """Keys parked for longer than ``older_than_s`` and never looked up in the database."""
        now = self._clock()
        keys = []
        for key, parked in self._waiting.items():
            if any(not p.looked_up and now - p.since >= older_than_s for p in parked):
                keys.append(key)
                for p in parked:
                    p.looked_up = True
        return keys

    # -- internals ----------------------------------------------------------------------
    def _fold_wrapped_producers(self, batch: Normalised) -> None:
        for node in batch.nodes:
            if node.kind == KIND_PRODUCER and node.synthesized and node.parent_span_id:
                self._producer_children[(node.trace_id, node.parent_span_id)] = node.event_id or ""
        while len(self._producer_children) > self.max_spans:
            self._producer_children.popitem(last=False)
        wrappers: dict[str, str] = {}
        for node in batch.nodes:
            if node.kind != KIND_PRODUCER or not node.synthesized:
                continue
            inner = self._producer_children.get((node.trace_id, node.span_id))
            if inner and node.event_id and node.event_id != inner:
                wrappers[node.event_id] = inner
                node.event_id = inner
        if wrappers:
            batch.events[:] = [row for row in batch.events if row["event_id"] not in wrappers]
            for row in batch.spans:
                row["event_id"] = wrappers.get(row["event_id"], row["event_id"])
            batch.cause_needs[:] = [n for n in batch.cause_needs if n.effect_event_id not in wrappers]

    def _remember(self, node: SpanNode) -> None:
        key = (node.trace_id, node.span_id)
        known = self._nodes.get(key)
        if known is not None and known.event_id and not node.event_id:
            node.event_id = known.event_id
        self._nodes[key] = node
        self._nodes.move_to_end(key)
        while len(self._nodes) > self.max_spans:
            self._nodes.popitem(last=False)
            self.evicted += 1

    def _park(self, key: Key, need: Need, parked: _Parked | None) -> None:
        if parked is None:
            parked = _Parked(need, self._clock())
        self._waiting.setdefault(key, []).append(parked)
        self._waiting_count += 1
        while self._waiting_count > self.max_waiting:
            _, dropped = self._waiting.popitem(last=False)
            self._waiting_count -= len(dropped)
            self.dropped += len(dropped)

    def _wake(self, key: Key) -> None:
        parked = self._waiting.pop(key, None)
        if not parked:
            return
        self._waiting_count -= len(parked)
        for p in parked:
            self._run(p.need, p)

    def _expire(self) -> None:
        if not self._waiting:
            return
        deadline = self._clock() - self.wait_s
        for key in list(self._waiting):
            parked = self._waiting[key]
            if parked[0].since > deadline:
                break  # OrderedDict in arrival order: the rest are younger
            keep = [p for p in parked if p.since > deadline]
            self.expired += len(parked) - len(keep)
            self._waiting_count -= len(parked) - len(keep)
            if keep:
                self._waiting[key] = keep
            else:
                del self._waiting[key]

    def _run(self, need: Need, parked: _Parked | None) -> None:
        if isinstance(need, DeliveryNeed):
            wait = self._delivery(need)
        elif isinstance(need, CauseNeed):
            wait = self._cause(need)
        else:
            wait = self._settle(need)
        if wait is not None:
            self._park(wait, need, parked)

    def _delivery(self, need: DeliveryNeed) -> Key | None:
        first_missing = None
        for key in need.producers:
            node = self._nodes.get(key)
            if node is None:
                first_missing = first_missing or key
                continue
            if node.kind == KIND_PRODUCER and node.event_id:
                self._set_delivery_event(need.key, node.event_id)
                return None
        return first_missing

    def _set_delivery_event(self, key: Key, event_id: str) -> None:
        row = self._rows.get(key)
        if row is not None:
            row["event_id"] = event_id
        else:
            self._result.delivery_events[key] = event_id
        consumer = self._nodes.get(key)
        if consumer is not None and consumer.event_id != event_id:
            consumer.event_id = event_id
            self._wake(key)

    def _cause(self, need: CauseNeed) -> Key | None:
        key = need.start
        for _ in range(_MAX_WALK):
            node = self._nodes.get(key)
            if node is None:
                return key
            if node.kind == KIND_CONSUMER:
                if not node.event_id:
                    return key  # woken when the delivery's event is known
                if node.event_id != need.effect_event_id:
                    self._result.edges.add((node.event_id, need.effect_event_id, "parentage"))
                return None
            if node.parent_span_id is None:
                return None
            key = (node.trace_id, node.parent_span_id)
        return None

    def _settle(self, need: SettleNeed) -> Key | None:
        row = self._rows.get(need.delivery)
        if row is not None:
            if row["outcome"] in (None, "error"):
                row["outcome"] = need.outcome
                row["settled_at"] = need.settled_at
            return None
        node = self._nodes.get(need.delivery)
        if node is None:
            return need.delivery
        if node.kind == KIND_CONSUMER:
            self._result.settles[need.delivery] = (need.outcome, need.settled_at)
        return None
