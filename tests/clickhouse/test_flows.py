"""Flow ids on chDB: ``chain()`` reads the root's flow, so the flows must hold every edge a
walk can take, whatever order the edges arrive in; the chains stay DuckDB's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventscope.tracer.ingest.normaliser import normalise
from eventscope.tracer.query import clickhouse as chquery
from eventscope.tracer.query import questions
from eventscope.tracer.store.clickhouse import flows
from eventscope.tracer.store.clickhouse.store import ClickHouseStore
from tests.spans import new_trace, open_store, process, publish, request, sid

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
    ("q0", "q'1\\"),  # ids a query literal must escape
    ("q'1\\", "q2"),
] + [(f"z{i:02}", f"z{i + 1:02}") for i in range(40)]
ROOTS = ["a1", "a2", "b0", "b1", "d0", "d1", "c0", "c1", "c2", "q0", "z00", "z20", "z40", "nobody"]


def _requests() -> list[Any]:
    """One request per edge (the effect's publish, naming its cause), latest edges first, so
    that flows are stored before the edge that joins them arrives; the roots' own publishes last."""
    out = [
        request(publish(trace_id=new_trace(), event_id=effect, causation_id=cause))
        for cause, effect in reversed(EDGES)
    ]
    for event_id, k in (("a2", 1), ("d3", 2)):  # delivery counts for the chain question's rows
        trace = new_trace()
        sent = publish(trace_id=trace, event_id=event_id)  # not sent: the deliveries name the event
        spans = [process(trace_id=trace, parent=sid(sent), event_id=event_id, queue=q) for q in "xy"[:k]]
        out.append(request(*spans, service="worker"))
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


def test_the_chain_question_is_duckdbs_rows_and_the_sql_views_walk(tmp_path: Path, chstore: Any) -> None:
    """The question layer walks the flow in Python: every column and the order are DuckDB's
    chain question's, and the walk (depths, causes) is the SQL view chain(event_id=...)'s."""
    requests = _requests()
    duck = open_store(tmp_path / "question.duckdb", grace_s=0)
    duck.append([normalise(r) for r in requests])
    for message in requests:
        chstore.append([normalise(message)])
    ch, dk = chstore.reader(), duck.reader()
    try:
        for root in ROOTS:
            found = questions.chain(ch, root)
            expected = questions.chain(dk, root)
            assert [list(row) for row in found] == [list(row) for row in expected], root  # same columns
            # DuckDB names any of several causes one level up (arg_min on a tie); the rest is equal
            assert [{**r, "cause_event_id": None} for r in found] == [
                {**r, "cause_event_id": None} for r in expected
            ], root
            view = questions.run_sql(
                ch,
                "SELECT event_id, depth, cause_event_id FROM chain(event_id = {root:String})".replace(
                    "{root:String}", "'" + root.replace("\\", "\\\\").replace("'", "\\'") + "'"
                ),
            ).rows
            assert sorted((r["event_id"], r["depth"], r["cause_event_id"]) for r in found) == sorted(
                tuple(row) for row in view
            ), root
        by_id = {row["event_id"]: row for row in questions.chain(ch, "a1")}
        assert by_id["a2"]["deliveries"] == 1 and by_id["a3"]["deliveries"] == 0
        assert {row["event_id"]: row["deliveries"] for row in questions.chain(ch, "d0")}["d3"] == 2
        quoted = questions.chain(ch, "q0")  # the facts of an id with a quote and a backslash are found
        assert [(r["event_id"], r["event_type"] is not None) for r in quoted] == [
            ("q0", True),
            ("q'1\\", True),
            ("q2", True),
        ]
        assert [(r["event_id"], r["depth"], r["deliveries"]) for r in questions.chain(ch, "nobody")] == [
            ("nobody", 0, 0)
        ]
    finally:
        duck.close()


def test_the_walk_takes_each_event_once_at_its_smallest_depth() -> None:
    edges = [("r", "a"), ("r", "b"), ("b", "c"), ("a", "c"), ("c", "a"), ("c", "r"), ("a", "d"), ("b", "d")]
    assert chquery.walk("r", edges) == {
        "r": (0, None),
        "a": (1, "r"),
        "b": (1, "r"),
        "c": (2, "a"),  # a and b both cause it one level up: the smallest id
        "d": (2, "a"),
    }
    assert chquery.walk("x", edges) == {"x": (0, None)}
    deep = [(f"n{i:03}", f"n{i + 1:03}") for i in range(300)]
    walked = chquery.walk("n000", deep)
    assert len(walked) == 257 and walked["n256"] == (256, "n255")  # as DuckDB's macro: depth <= 256
