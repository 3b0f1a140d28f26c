"""The store plus the lineage that resolves what one span cannot tell alone.

The store persists rows; :class:`~eventscope.tracer.ingest.lineage.Lineage` decides what a
batch means for rows written before it (a delivery's event, a settle of an earlier delivery, a
causal edge to an event seen batches ago). :class:`Recorder` is the one place both meet: the
writer thread records every group of batches through it, so persistence never runs inference
and inference never writes SQL.

Used by the writer thread only: not thread-safe (neither is lineage).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventscope.tracer.contract import SPAN_KIND_CODES
from eventscope.tracer.ingest.lineage import Lineage
from eventscope.tracer.ingest.normaliser import SpanNode
from eventscope.tracer.store.batches import BrokerBatch, Resolution
from eventscope.tracer.store.duckdb_store import Store

if TYPE_CHECKING:
    from eventscope.tracer.store.duckdb_store import Batch

__all__ = ["Recorder"]

_DEFAULT_LOOKUP_AGE_S = 1.0


class Recorder:
    """Append batches with their lineage resolved; find forgotten spans in the database."""

    def __init__(self, store: Store, lineage: Lineage | None = None) -> None:
        self.store = store
        self.lineage = lineage or Lineage()

    def append(self, batches: Sequence[Batch]) -> None:
        """Resolve each span batch's needs (editing its rows in place), then store the group
        and the changes to older rows in one transaction.
        """
        resolution = Resolution()
        for batch in batches:
            if not isinstance(batch, BrokerBatch):
                resolution.merge(self.lineage.apply(batch))
        self.store.append(batches, resolution)

    def resolve_missing(self, *, older_than_s: float = _DEFAULT_LOOKUP_AGE_S) -> int:
        """Look up in the database the spans lineage waits for but no longer remembers.

        Only useful when the spans could be there: the file had data when opened, or lineage
        forgot spans. Returns how many were found.
        """
        if not (self.store.had_rows_at_open or self.lineage.forgot_any):
            return 0
        keys = self.lineage.missing(older_than_s=older_than_s)
        if not keys:
            return 0
        nodes = [
            SpanNode(trace_id, span_id, parent, SPAN_KIND_CODES.get(kind, 0), event_id)
            for trace_id, span_id, parent, kind, event_id in self.store.lookup_spans(keys)
        ]
        if nodes:
            self.store.write_resolution(self.lineage.learn(nodes))
        return len(nodes)
