"""Flow ids on ClickHouse: ``chain()`` reads one flow's edges by key instead of walking
``derived_edges`` one recursive step at a time (a ClickHouse recursive CTE plans every step
again, ~1.5 ms each before it reads anything).

A *flow* is a connected component of the causal edges (taken as undirected), as in the DuckDB
store (``store/flows.py``): an event, everything it caused and everything that caused it. The
derive keeps one invariant, which is all ``chain()`` relies on: **connected events have the
same flow id** (their newest row in ``event_flows``) **and every edge is stored in
``edge_flows`` under the flow id of its events**. So ``chain(event_id='…')`` looks the root's
flow up by key, reads that flow's edges by key (one range of ``edge_flows``' primary key) and
walks them in memory.

A new flow takes the smallest event id among its events; with time-ordered ids (UUIDv7, what the
adapters send) that is its first event and later events join it without relabelling. When an
edge joins flows already stored (spans arriving out of order), the smallest id wins and the
other flows' edges and events are written again under it (a newer version); their old rows
stay behind under an id no event points to any more, until retention drops them.

Each derive labels the edges of the events it touched (every new edge has a touched effect:
the send or broker publish that carries the causation id, or the publish whose parentage the
derive found), so the work follows the batch. Two collect instances deriving, at the same
moment, batches that join the same two flows could each miss the other's label; a later batch
touching either flow repairs it (docs/scaling.md says so).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import pyarrow as pa

from eventscope.tracer.store.clickhouse.engine import Engine
from eventscope.tracer.store.flows import Components

__all__ = ["label", "rebuild_if_missing"]

_FLOW_NODE = "\x00flow:"  # a stored flow as a node of the union-find (event ids have no NUL)
_KEYS = pa.schema([("derive_id", pa.uint64()), ("kind", pa.string()), ("id", pa.string())])
_EDGE_FLOWS = pa.schema(
    [
        ("flow_id", pa.string()),
        ("cause_event_id", pa.string()),
        ("effect_event_id", pa.string()),
    ]
)
_EVENT_FLOWS = pa.schema([("event_id", pa.string()), ("flow_id", pa.string()), ("version", pa.uint64())])

# The edges of the events a derive touched; derived_edges is ordered by cause, so the effect
# is found through its bloom filter index (idx_effect, derive.sql).
_TOUCHED_EDGES = """
SELECT DISTINCT cause_event_id, effect_event_id FROM derived_edges
WHERE effect_event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'event')
"""
_STORED_FLOWS = """
SELECT event_id, argMax(flow_id, version) AS flow_id FROM event_flows
WHERE event_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'node')
GROUP BY event_id
"""
_FLOW_EDGES = """
SELECT DISTINCT flow_id, cause_event_id, effect_event_id FROM edge_flows
WHERE flow_id IN (SELECT id FROM derive_keys WHERE derive_id = {derive:UInt64} AND kind = 'flow')
"""
_ALL_EDGES = "SELECT DISTINCT cause_event_id, effect_event_id FROM derived_edges"
_MISSING = (
    "SELECT (SELECT count() FROM event_flows) = 0 AND (SELECT count() FROM derived_edges) > 0 AS missing"
)


def _keys(engine: Engine, derive_id: int, kind: str, ids: Iterable[str]) -> None:
    ids = list(ids)
    engine.insert_arrow(
        "derive_keys",
        pa.table({"derive_id": [derive_id] * len(ids), "kind": [kind] * len(ids), "id": ids}, schema=_KEYS),
    )


def assign(edges: Sequence[tuple[str, str]], stored: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The flow of each id of ``edges`` and the relabelling of stored flows (old id → new id).

    ``stored`` is the flow each id already has; a component's flow is the smallest of its ids
    and of the stored flows it joins.
    """
    components = Components()
    for cause, effect in edges:
        components.union(cause, effect)
    for event_id, flow in stored.items():
        components.union(event_id, _FLOW_NODE + flow)
    nodes = {node for edge in edges for node in edge} | {_FLOW_NODE + flow for flow in stored.values()}
    smallest: dict[str, str] = {}
    for node in nodes:
        root, name = components.find(node), node.removeprefix(_FLOW_NODE)
        if root not in smallest or name < smallest[root]:
            smallest[root] = name
    flow_of = {node: smallest[components.find(node)] for node in nodes if not node.startswith(_FLOW_NODE)}
    relabel = {
        flow: smallest[components.find(_FLOW_NODE + flow)]
        for flow in set(stored.values())
        if smallest[components.find(_FLOW_NODE + flow)] != flow
    }
    return flow_of, relabel


def label(engine: Engine, derive_id: int) -> None:
    """Label the edges of the events the derive ``derive_id`` touched with their flows."""
    edges = [
        (row["cause_event_id"], row["effect_event_id"])
        for row in engine.query_arrow(_TOUCHED_EDGES, {"derive": derive_id}).to_pylist()
    ]
    if not edges:
        return
    _keys(engine, derive_id, "node", sorted({node for edge in edges for node in edge}))
    stored = {
        row["event_id"]: row["flow_id"]
        for row in engine.query_arrow(_STORED_FLOWS, {"derive": derive_id}).to_pylist()
        if row["flow_id"]
    }
    flow_of, relabel = assign(edges, stored)
    rows = [(flow_of[cause], cause, effect) for cause, effect in edges]
    events = {event_id: flow for event_id, flow in flow_of.items() if stored.get(event_id) != flow}
    if relabel:
        _keys(engine, derive_id, "flow", sorted(relabel))
        for row in engine.query_arrow(_FLOW_EDGES, {"derive": derive_id}).to_pylist():
            flow = relabel[row["flow_id"]]
            rows.append((flow, row["cause_event_id"], row["effect_event_id"]))
            events[row["cause_event_id"]] = events[row["effect_event_id"]] = flow
    _write(engine, rows, events)


def _write(engine: Engine, rows: Sequence[tuple[str, str, str]], events: dict[str, str]) -> None:
    version = time.time_ns()
    engine.insert_arrow(
        "edge_flows",
        pa.Table.from_pylist(
            [{"flow_id": f, "cause_event_id": c, "effect_event_id": e} for f, c, e in rows],
            schema=_EDGE_FLOWS,
        ),
    )
    engine.insert_arrow(
        "event_flows",
        pa.Table.from_pylist(
            [
                {"event_id": event_id, "flow_id": flow, "version": version}
                for event_id, flow in events.items()
            ],
            schema=_EVENT_FLOWS,
        ),
    )


def rebuild_if_missing(engine: Engine) -> bool:
    """Label every stored edge when a store derived before flow ids existed has none yet."""
    if not engine.query_arrow(_MISSING).to_pylist()[0]["missing"]:
        return False
    edges = [
        (row["cause_event_id"], row["effect_event_id"]) for row in engine.query_arrow(_ALL_EDGES).to_pylist()
    ]
    flow_of, _ = assign(edges, {})
    _write(engine, [(flow_of[cause], cause, effect) for cause, effect in edges], flow_of)
    return True
