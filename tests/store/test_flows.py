"""Flow ids on causal edges (tracer/flows.py): connected edges share one, whatever order the
edges arrive in, so chain() and the upstream walk, which read only the root's flow, give what a
walk over every edge gives.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.query import questions as queries
from eventscope.tracer.store import flows
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import new_trace, open_store, publish, request, rows

# chain() as it was before flow ids: a walk over every edge (the reference)
_FULL_CHAIN = """
WITH RECURSIVE walk(event_id, depth, cause_event_id) AS (
    SELECT CAST($root AS VARCHAR), 0, NULL::VARCHAR
    UNION
    SELECT ce.effect_event_id, walk.depth + 1, ce.cause_event_id
    FROM walk JOIN causal_edges ce ON ce.cause_event_id = walk.event_id
    WHERE walk.depth < 256 AND ce.effect_event_id <> CAST($root AS VARCHAR)
)
SELECT event_id, min(depth) AS depth, arg_min(cause_event_id, depth) AS cause_event_id
FROM walk GROUP BY event_id ORDER BY depth, event_id
"""
_FULL_UPSTREAM = """
WITH RECURSIVE walk(event_id, depth) AS (
    SELECT CAST($root AS VARCHAR), 0
    UNION
    SELECT ce.cause_event_id, walk.depth + 1
    FROM walk JOIN causal_edges ce ON ce.effect_event_id = walk.event_id
    WHERE walk.depth < 256 AND ce.cause_event_id <> CAST($root AS VARCHAR)
)
SELECT event_id, min(depth) FROM walk WHERE depth > 0 GROUP BY event_id ORDER BY 2, 1
"""


def _edge_batch(edges: list[tuple[str, str]]):
    """One OTLP request whose publish spans carry these (cause → effect) edges as causation ids."""
    trace_id = new_trace()
    return normalise(
        request(*(publish(trace_id=trace_id, event_id=effect, causation_id=cause) for cause, effect in edges))
    )


def _components_have_one_flow(store: Store) -> None:
    """Connected edges share one flow id, and no edge is stored twice."""
    reader = store.reader()
    try:
        edges = reader.execute("SELECT cause_event_id, effect_event_id, flow_id FROM causal_edges").fetchall()
    finally:
        reader.close()
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        while parent.setdefault(item, item) != item:
            item = parent[item]
        return item

    assert len(edges) == len({(cause, effect) for cause, effect, _ in edges}), "an edge stored twice"
    for cause, effect, _ in edges:
        parent[find(cause)] = find(effect)
    flow_ids: dict[str, set[str | None]] = defaultdict(set)
    for cause, _, flow_id in edges:
        flow_ids[find(cause)].add(flow_id)
    assert all(len(ids) == 1 and None not in ids for ids in flow_ids.values()), flow_ids


def test_assign_names_new_flows_by_their_smallest_id_and_merges_stored_ones() -> None:
    edges = [("b", "c", "causation_id"), ("x", "y", "causation_id"), ("c", "d", "parentage")]
    assigned, renamed = flows.assign(edges, {})
    assert assigned == [
        ("b", "c", "causation_id", "b"),
        ("x", "y", "causation_id", "x"),
        ("c", "d", "parentage", "b"),
    ]
    assert renamed == {}
    # c's flow is stored as "m", d's as "k", y's as "z": the edge c→y joins them all into "k"
    assigned, renamed = flows.assign([("c", "y", "causation_id")], {"c": "m", "y": "z", "d": "k"})
    assert assigned == [("c", "y", "causation_id", "m")]
    assert renamed == {"z": "m"}
    stored = {"c": "m", "y": "z", "d": "k"}
    assigned, renamed = flows.assign([("c", "y", "causation_id"), ("y", "d", "x")], stored)
    assert {edge[3] for edge in assigned} == {"k"}
    assert renamed == {"m": "k", "z": "k"}


def test_out_of_order_edges_are_relabelled_into_one_flow(store: Store) -> None:
    # two flows stored first (B→C and D→E), then A→B and A→D join them: the stored flow with the
    # smallest id names the whole (fewer rows to relabel than renaming it after the new root A)
    store.append([_edge_batch([("B", "C"), ("D", "E")])])
    store.append([_edge_batch([("A", "B"), ("A", "D")])])
    _components_have_one_flow(store)
    reader = store.reader()
    try:
        assert reader.execute("SELECT DISTINCT flow_id FROM causal_edges").fetchall() == [("B",)]
        assert reader.execute("SELECT event_id, depth, cause_event_id FROM chain('A')").fetchall() == [
            ("A", 0, None),
            ("B", 1, "A"),
            ("D", 1, "A"),
            ("C", 2, "B"),
            ("E", 2, "D"),
        ]
        upstream = [(row["event_id"], row["depth"]) for row in queries.upstream(reader, "E")]
        assert upstream == [("D", 1), ("A", 2)]
    finally:
        reader.close()


@pytest.mark.parametrize("seed", range(6))
def test_flow_walks_equal_walks_over_every_edge(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = [f"e{n:03d}" for n in range(rng.randint(30, 90))]
    edges = set()
    for _ in range(len(names)):
        cause, effect = rng.sample(names, 2)
        if rng.random() < 0.85 or not edges:  # mostly forward in time, some cycles and back edges
            cause, effect = min(cause, effect), max(cause, effect)
        edges.add((cause, effect))
    ordered = list(edges)
    rng.shuffle(ordered)
    store = open_store(tmp_path / "s.duckdb", grace_s=0)
    try:
        for start in range(0, len(ordered), rng.randint(1, 7)):
            store.append([_edge_batch(ordered[start : start + rng.randint(1, 7)])])
        if rng.random() < 0.5:  # a restart: flows are found in the file, not in memory
            store.close()
            store = open_store(tmp_path / "s.duckdb", grace_s=0)
            store.append([_edge_batch(ordered[: rng.randint(1, 5)])])
        _components_have_one_flow(store)
        reader = store.reader()
        try:
            for root in [*rng.sample(names, 10), "unknown"]:
                chain = reader.execute("SELECT * FROM chain($root)", {"root": root}).fetchall()
                assert chain == reader.execute(_FULL_CHAIN, {"root": root}).fetchall()
                upstream = [(row["event_id"], row["depth"]) for row in queries.upstream(reader, root)]
                assert upstream == reader.execute(_FULL_UPSTREAM, {"root": root}).fetchall()
        finally:
            reader.close()
    finally:
        store.close()


def test_a_version_4_database_gets_flow_ids_on_migration(tmp_path: Path) -> None:
    path = tmp_path / "v4.duckdb"
    store = open_store(path, grace_s=0)
    try:
        store.append([_edge_batch([("A", "B"), ("B", "C"), ("X", "Y")])])
    finally:
        store.close()
    with duckdb.connect(str(path)) as connection:  # back to version 4: no flow ids
        connection.execute("ALTER TABLE causal_edges DROP COLUMN flow_id")
        connection.execute("DELETE FROM schema_version WHERE version >= 5")
    store = open_store(path, grace_s=0)
    try:
        _components_have_one_flow(store)
        reader = store.reader()
        try:
            assert reader.execute(
                "SELECT cause_event_id, effect_event_id, flow_id FROM causal_edges ORDER BY 1"
            ).fetchall() == [("A", "B", "A"), ("B", "C", "A"), ("X", "Y", "X")]
            assert reader.execute("SELECT event_id FROM chain('B')").fetchall() == [("B",), ("C",)]
        finally:
            reader.close()
    finally:
        store.close()


def test_edges_inserted_by_hand_without_a_flow_are_still_walked(store: Store) -> None:
    store.append([_edge_batch([("A", "B")])])
    reader = store.reader()
    try:
        reader.execute("INSERT INTO causal_edges VALUES ('B', 'H', 'causation_id', NULL)")
        assert reader.execute("SELECT event_id, depth FROM chain('A')").fetchall() == [
            ("A", 0),
            ("B", 1),
            ("H", 2),
        ]
    finally:
        reader.close()


def test_an_edge_written_by_hand_gets_a_flow_when_the_writer_touches_it(store: Store) -> None:
    reader = store.reader()
    try:
        reader.execute("INSERT INTO causal_edges VALUES ('A', 'B', 'causation_id', NULL)")
    finally:
        reader.close()
    store.append([_edge_batch([("B", "C")])])  # joins the hand-made edge: every edge gets a flow
    _components_have_one_flow(store)
    assert rows(store, "SELECT event_id, depth FROM chain('A')") == [("A", 0), ("B", 1), ("C", 2)]


def test_flow_ids_missing_after_an_interrupted_migration_are_filled_on_open(tmp_path: Path) -> None:
    path = tmp_path / "cut.duckdb"
    store = open_store(path, grace_s=0)
    try:
        store.append([_edge_batch([("A", "B"), ("B", "C")])])
    finally:
        store.close()
    with duckdb.connect(str(path)) as connection:  # version 5 committed, its flows never filled
        connection.execute("UPDATE causal_edges SET flow_id = NULL")
    store = open_store(path, grace_s=0)
    try:
        _components_have_one_flow(store)
        assert rows(store, "SELECT event_id FROM chain('A')") == [("A",), ("B",), ("C",)]
    finally:
        store.close()
