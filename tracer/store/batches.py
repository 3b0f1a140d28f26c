"""What the store accepts besides span batches: broker truth, and what lineage resolved.

These are plain data, defined here so that every producer of rows (the normaliser and lineage
in :mod:`eventscope.tracer.ingest`, the taps in :mod:`eventscope.tracer.broker`) imports them
from the store, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BrokerBatch", "Key", "Resolution", "Topology"]

Key = tuple[str, str]  # (trace_id, span_id)


@dataclass
class Topology:
    """One management-API snapshot of a vhost: queues, exchanges and bindings as rows."""

    vhost: str
    polled_at_us: int
    queues: list[dict[str, Any]] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)
    bindings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BrokerBatch:
    """Rows of broker truth for one write: the store merges them with the span side's."""

    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    topology: Topology | None = None
    payloads: list[dict[str, Any]] = field(default_factory=list)  # with payload capture on

    @property
    def accepted(self) -> int:
        """Rows in the batch (the writer's group-commit measure)."""
        rows = len(self.events) + len(self.deliveries) + len(self.dead_letters) + len(self.payloads)
        return rows + (self.topology is not None)


@dataclass
class Resolution:
    """What one batch changes beyond its own rows (those are edited in place): causal edges,
    the event id of deliveries seen before their event, settle outcomes of earlier deliveries.
    """

    edges: set[tuple[str, str, str]] = field(default_factory=set)
    delivery_events: dict[Key, str] = field(default_factory=dict)
    settles: dict[Key, tuple[str, int]] = field(default_factory=dict)

    def merge(self, other: Resolution) -> None:
        self.edges |= other.edges
        self.delivery_events.update(other.delivery_events)
        self.settles.update(other.settles)
