"""Flow ids on chDB: ``chain()`` reads the root's flow, so the flows must hold every edge a
walk can take, whatever order the edges arrive in; the chains stay DuckDB's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.query import questions
from eventscope.tracer.store.clickhouse import flows
from eventscope.tracer.store.clickhouse.store import ClickHouseStore
from tests.spans import new_trace, open_store, publish, request

# (cause, effect): two chains that a late edge joins (b1 -> a3), a diamond, a cycle and a
# chain deeper than a handful of steps, written one edge per batch, effects before causes.
EDGES = [
    ("a1", "a2"),
    ("a2", "a3"),
    ("b0", "b1"),
    ("b1", "a3"),
    ("d0", "d1"),
    ("d0", "d2"),
    ("d1", "d3"),
    ("d2", "d3"),
    ("c0", "c1"),
    ("c1", "c2"),
    ("c2", "c0"),
] + [(f"z{i:02}", f"z{i + 1:02}") for i in range(40)]
ROOTS = ["a1", "a2", "b0", "b1", "d0", "d1", "c0", "c1", "c2", "z00", "z20", "z40", "nobody"]


def _requests() -> list[Any]:
    """One request per edge (the effect's publish, naming its cause), latest edges first, so
    that flows are stored before the edge that joins them arrives; the roots' own publishes last."""
    out = [
        request(publish(trace_id=new_trace(), event_id=effect, causation_id=cause))
        for cause, effect in reversed(EDGES)
    ]
    causes = {cause for cause, _ in EDGES} - {effect for _, effect in EDGES}
    return out + [request(publish(trace_id=new_trace(), event_id=root)) for root in sorted(causes)]


def _chain(reader: Any, root: str) -> list[tuple[str, int]]:
    return [(row["event_id"], row["depth"]) for row in questions.chain(reader, root)]


def test_chains_read_through_flows_are_duckdbs_whatever_the_edge_order(tmp_path: Path, chstore: Any) -> None:
    requests = _requests()
    duck = open_store(tmp_path / "flows.duckdb", grace_s=0)
    duck.append([normalise(r) for r in requests])
    for message in requests:  # one derive per edge
        chstore.append([normalise(message)])
    ch, dk = chstore.reader(), duck.reader()
    try:
        for root in ROOTS:
            assert _chain(ch, root) == _chain(dk, root), root
        assert _chain(ch, "b0") == [("b0", 0), ("b1", 1), ("a3", 2)]  # across the late join
        assert len(_chain(ch, "z00")) == 41
        assert _chain(ch, "c1") == [("c1", 0), ("c2", 1), ("c0", 2)]  # the cycle stops
        # the diamond's d3 has two causes one level up: the smallest id is named
        assert [row["cause_event_id"] for row in questions.chain(ch, "d0")] == [None, "d0", "d0", "d1"]
        flows_of = dict(
            questions.run_sql(
                ch, "SELECT event_id, argMax(flow_id, version) FROM event_flows GROUP BY event_id"
            ).rows
        )
        assert {flows_of[e] for e in ("a1", "a2", "a3", "b0", "b1")} == {"a1"}  # one flow, smallest id
        assert {flows_of[e] for e in ("z00", "z17", "z40")} == {"z00"}
    finally:
        duck.close()


def test_a_store_derived_before_flow_ids_is_labelled_on_open(chstore: Any) -> None:
    for message in _requests():
        chstore.append([normalise(message)])
    expected = {root: _chain(chstore.reader(), root) for root in ROOTS}
    for table in ("edge_flows", "event_flows"):
        chstore.engine.command(f"TRUNCATE TABLE {table}")
    assert _chain(chstore.reader(), "b0") == [("b0", 0)]  # no flows: the walk sees no edges
    reopened = ClickHouseStore(chstore.engine, chstore.url, grace_s=0)
    assert {root: _chain(reopened.reader(), root) for root in ROOTS} == expected
    assert not flows.rebuild_if_missing(chstore.engine)  # once


def test_assign_takes_the_smallest_id_and_relabels_the_flows_it_joins() -> None:
    flow_of, relabel = flows.assign([("m", "n"), ("n", "x")], {"m": "k", "x": "b", "q": "q"})
    assert flow_of == {"m": "b", "n": "b", "x": "b"}  # q joins nothing: it keeps its flow
    assert relabel == {"k": "b"}
    flow_of, relabel = flows.assign([("p", "r")], {})
    assert flow_of == {"p": "p", "r": "p"} and relabel == {}
