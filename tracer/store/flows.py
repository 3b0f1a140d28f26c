"""Flow ids: every causal edge carries the id of its flow, so ``chain()`` reads only its own.

A *flow* is a connected component of ``causal_edges`` (edges taken as undirected): an event,
everything it caused and everything that caused it. The writer keeps one invariant, which is
all ``chain()`` and the upstream walk rely on: **edges that are connected have the same
``flow_id``**. Those queries look up the root's flow id and walk only the edges that carry it,
so their cost follows the size of the flow, not of the table (DuckDB skips every row group
whose min/max rules the flow id out).

A new flow takes the smallest event id among its events; with time-ordered ids (UUIDv7, what
the adapters send) that is its first event, so a flow's edges, written around that time, sit in
few row groups. When an edge joins flows already stored (spans arriving out of order), the
smallest of their ids wins and the others' edges are relabelled. Retention may split a flow
again; its parts keep their common id, which stays correct (the invariant holds, a walk just
reads a few more rows).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa

from eventscope.tracer.store.duck import registered

__all__ = ["assign", "has_unflowed", "rebuild", "write_edges"]

Edge = tuple[str, str, str]  # cause_event_id, effect_event_id, via
FlowEdge = tuple[str, str, str, str]  # the same and its flow_id

_FLOW_NODE = "\x00flow:"  # a stored flow as a node of the union-find (event ids have no NUL)
_IDS = pa.schema([("event_id", pa.string())])
_EDGES = pa.schema(
    [
        ("cause_event_id", pa.string()),
        ("effect_event_id", pa.string()),
        ("via", pa.string()),
        ("flow_id", pa.string()),
    ]
)
_RELABEL = pa.schema([("old_flow", pa.string()), ("new_flow", pa.string())])

# What is stored of a batch's edges (causal_edges has no primary key since schema version 5):
# the flow of each id they touch (NULL flows mean edges written by hand, which the collector
# repairs), and which of the pairs exist already. Both answers have at most the batch's size,
# whatever the fan-out of the ids. The ranges let DuckDB skip row groups by their min/max when
# ids grow with time (UUIDv7); IN alone would read every group.
_STORED_FLOWS = """
SELECT id, min(flow_id) AS flow_id, bool_or(flow_id IS NULL) AS unflowed
FROM (
    SELECT cause_event_id AS id, flow_id FROM causal_edges
    WHERE cause_event_id BETWEEN $lo AND $hi AND cause_event_id IN (SELECT event_id FROM _eventscope_ids)
    UNION ALL
    SELECT effect_event_id AS id, flow_id FROM causal_edges
    WHERE effect_event_id BETWEEN $lo AND $hi AND effect_event_id IN (SELECT event_id FROM _eventscope_ids)
)
GROUP BY id
"""
_STORED_PAIRS = """
SELECT c.cause_event_id, c.effect_event_id
FROM causal_edges c
SEMI JOIN _eventscope_pairs p ON c.cause_event_id = p.cause_event_id AND c.effect_event_id = p.effect_event_id
WHERE c.cause_event_id BETWEEN $lo AND $hi
"""
_PAIRS = pa.schema([("cause_event_id", pa.string()), ("effect_event_id", pa.string())])


class Components:
    """Union-find over ids (iterative: a flow can be thousands of edges deep)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        parent = self._parent
        root = parent.setdefault(item, item)
        while parent[root] != root:
            root = parent[root]
        while item != root:  # path compression
            parent[item], item = root, parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[rb] = ra


def assign(edges: Iterable[Edge], stored: dict[str, str]) -> tuple[list[FlowEdge], dict[str, str]]:
    """Give each new edge its flow id.

    ``stored`` maps an event id to the flow id its stored edges carry. A component's flow id is
    the smallest stored flow id it joins, else its smallest event id. Returns the edges with
    their flow ids, and the stored flow ids to rename (old → new) because an edge joined them to
    a flow with a smaller id.
    """
    edges = list(edges)
    components = Components()
    for cause, effect, _via in edges:
        components.union(cause, effect)
    for event_id, flow_id in stored.items():  # events of one stored flow are connected already
        components.union(event_id, _FLOW_NODE + flow_id)
    joined: dict[str, set[str]] = {}  # component → the stored flow ids it joins
    for flow_id in set(stored.values()):
        joined.setdefault(components.find(_FLOW_NODE + flow_id), set()).add(flow_id)
    smallest: dict[str, str] = {}  # component → its smallest event id
    for cause, effect, _via in edges:
        root = components.find(cause)
        low = min(cause, effect)
        if root not in smallest or low < smallest[root]:
            smallest[root] = low
    flow_of = {root: min(flows) for root, flows in joined.items()}
    for root, low in smallest.items():
        flow_of.setdefault(root, low)
    assigned = [(cause, effect, via, flow_of[components.find(cause)]) for cause, effect, via in edges]
    renamed = {old: flow_of[root] for root, flows in joined.items() for old in flows if old != flow_of[root]}
    return assigned, renamed


def write_edges(connection: duckdb.DuckDBPyConnection, edges: Iterable[Edge]) -> None:
    """Insert the ``edges`` not stored yet (same cause and effect) with their flow ids,
    relabelling the stored flows they join; in the caller's transaction.
    """
    unique: dict[tuple[str, str], str] = {}
    for cause, effect, via in sorted(set(edges)):
        unique.setdefault((cause, effect), via)  # one edge per pair, as the primary key had it
    if not unique:
        return
    causes = [pair[0] for pair in unique]
    pairs = pa.table(
        {"cause_event_id": causes, "effect_event_id": [pair[1] for pair in unique]}, schema=_PAIRS
    )
    with registered(connection, "_eventscope_pairs", pairs):
        found = connection.execute(_STORED_PAIRS, {"lo": min(causes), "hi": max(causes)}).fetchall()
    for pair in found:
        unique.pop(pair, None)
    if not unique:
        return
    stored = _stored_flows(connection, sorted({event_id for pair in unique for event_id in pair}))
    if stored is None:  # edges without a flow (written by hand) touch these: give every edge one
        rebuild(connection)
        stored = _stored_flows(connection, sorted({event_id for pair in unique for event_id in pair})) or {}
    assigned, renamed = assign([(c, e, via) for (c, e), via in unique.items()], stored)
    if renamed:
        relabel = pa.table({"old_flow": list(renamed), "new_flow": list(renamed.values())}, schema=_RELABEL)
        with registered(connection, "_eventscope_relabel", relabel):
            connection.execute(
                "UPDATE causal_edges SET flow_id = r.new_flow FROM _eventscope_relabel r "
                "WHERE causal_edges.flow_id = r.old_flow"
            )
    columns = list(zip(*assigned, strict=True))
    data = pa.table(dict(zip(_EDGES.names, columns, strict=True)), schema=_EDGES)
    connection.from_arrow(data).insert_into("causal_edges")


def _stored_flows(connection: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, str] | None:
    """The flow id of each of ``ids`` that stored edges touch; None if one of those edges has
    no flow id.
    """
    with registered(connection, "_eventscope_ids", pa.table({"event_id": ids}, schema=_IDS)):
        rows = connection.execute(_STORED_FLOWS, {"lo": ids[0], "hi": ids[-1]}).fetchall()
    if any(unflowed for _, _, unflowed in rows):
        return None
    return {event_id: flow_id for event_id, flow_id, _ in rows}


def has_unflowed(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether any edge lacks a flow id (a migration cut short, or edges written by hand)."""
    found = connection.execute(
        "SELECT count(*) FROM (SELECT 1 FROM causal_edges WHERE flow_id IS NULL LIMIT 1)"
    )
    return found.fetchall()[0][0] > 0


def rebuild(connection: duckdb.DuckDBPyConnection) -> int:
    """Compute every edge's flow id from scratch (the migration that adds the column);
    returns how many flows there are.
    """
    edges = connection.execute("SELECT cause_event_id, effect_event_id, via FROM causal_edges").fetchall()
    if not edges:
        return 0
    assigned, _ = assign(edges, {})
    data = pa.table(
        {
            "cause_event_id": [edge[0] for edge in assigned],
            "effect_event_id": [edge[1] for edge in assigned],
            "flow_id": [edge[3] for edge in assigned],
        }
    )
    with registered(connection, "_eventscope_flows", data):
        connection.execute(
            "UPDATE causal_edges SET flow_id = f.flow_id FROM _eventscope_flows f "
            "WHERE causal_edges.cause_event_id = f.cause_event_id "
            "AND causal_edges.effect_event_id = f.effect_event_id"
        )
    return len({edge[3] for edge in assigned})
