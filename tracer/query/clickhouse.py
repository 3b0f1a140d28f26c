"""The read questions in ClickHouse SQL, for a store opened with ``--store chdb://|clickhouse://``.

:mod:`eventscope.tracer.query.questions` hands a question to :func:`answer` when the
connection it was given is a ClickHouse store's (``store.clickhouse.store.ReadConnection``:
its backend hook); :class:`Reader` answers it in ClickHouse SQL.
Answers have the DuckDB questions' shapes (the same keys, ``published_at`` as a datetime), so
the API, the CLI and the dashboard print them unchanged. Questions not written here yet raise
:class:`SqlError` with a clear message rather than running DuckDB SQL on ClickHouse.

Untrusted SQL (``eventscope sql``, ``/api/sql``) runs with ClickHouse's ``readonly = 2``
(reads only, settings allowed), ``max_execution_time`` and ``max_result_rows``: ClickHouse
refuses writes and DDL itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from eventscope.tracer.store.clickhouse.engine import Engine

__all__ = ["Reader", "answer"]

logger = logging.getLogger(__name__)

_READ_STATEMENTS = frozenset({"select", "with", "explain", "(select"})
_ORPHANS = """
SELECT event_id, event_type, exchange, routing_key, queue, reason, published_at, age_s
FROM {source}
WHERE ({reason:Nullable(String)} IS NULL OR reason = {reason:Nullable(String)})
ORDER BY published_at DESC, event_id, queue
LIMIT {limit:UInt64}
"""
_ORPHAN_COUNTS = "SELECT reason, count() AS n FROM orphans GROUP BY reason ORDER BY reason"
_ORPHAN_GAUGES = """
SELECT reason, coalesce(queue, '') AS queue, coalesce(event_type, '') AS event_type, count() AS n
FROM orphans GROUP BY reason, queue, event_type ORDER BY reason, queue, event_type
"""
# The chain question walks the root's flow in Python: its edges by key in one SELECT (the
# flow's edges are one range of edge_flows' primary key, store/clickhouse/flows.py), then
# the found events' facts and delivery counts by key. The SQL view chain(event_id=...) walks
# the same edges in SQL (arrayFold) for SQL users; analysing that expression costs ~16 ms of
# CPU per query however small the flow, more than reading it.
_FLOW_EDGES = """
SELECT DISTINCT cause_event_id, effect_event_id FROM edge_flows
WHERE flow_id = (SELECT argMax(flow_id, version) FROM event_flows WHERE event_id = {event_id:String})
"""
_CHAIN_FACTS = """
SELECT event_id, event_type, exchange, routing_key, producer_service, published_at
FROM events WHERE event_id IN {ids:Array(String)}
"""
# two reads by key, joined in Python: a ClickHouse join of the two costs more than both reads
_CHAIN_DELIVERIES = """
SELECT grp AS event_id, count() AS deliveries FROM derived_deliveries FINAL
WHERE grp IN {ids:Array(String)} GROUP BY grp
"""
_FACT_COLUMNS = ("event_type", "exchange", "routing_key", "producer_service", "published_at")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_CHAIN_MAX_DEPTH = 256  # as the DuckDB macro and the SQL view: cycles stop there
_EVENT = """
SELECT * EXCEPT (routed_known, routed_queues), if(routed_known, routed_queues, NULL) AS routed_queues
FROM events WHERE event_id = {event_id:String}
"""
_EVENT_DELIVERIES = (
    "SELECT * EXCEPT (grp, row_key, version, deleted) FROM derived_deliveries FINAL"
    " WHERE grp = {event_id:String} ORDER BY received_at, queue, span_id"
)
_EVENT_CAUSES = (
    "SELECT cause_event_id, via FROM causal_edges WHERE effect_event_id = {event_id:String} ORDER BY 1"
)
_EVENT_EFFECTS = (
    "SELECT effect_event_id, via FROM causal_edges WHERE cause_event_id = {event_id:String} ORDER BY 1"
)
_EVENT_ORPHANS = "SELECT queue, reason, age_s FROM orphans WHERE event_id = {event_id:String} ORDER BY queue"
_EVENT_PAYLOAD = "SELECT * EXCEPT (event_id) FROM payloads WHERE event_id = {event_id:String}"


class Reader:
    """A read connection of the ClickHouse store: answers the questions it knows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        """Nothing to release: the engine belongs to the store."""

    def _records(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from eventscope.tracer.query.sandbox import jsonable

        rows = self.engine.query_arrow(sql, parameters).to_pylist()
        return [{name: jsonable(value) for name, value in row.items()} for row in rows]

    def answer(self, question: str, *args: Any, **kwargs: Any) -> Any:
        """The question's answer in ClickHouse SQL (the hook of query.questions)."""
        from eventscope.tracer.query import sandbox as questions

        function = getattr(self, f"_q_{question}", None)
        if function is None:
            raise questions.SqlError(f"{question} is not available on a ClickHouse store yet")
        try:
            return function(*args, **kwargs)
        except (questions.SqlError, questions.SqlRejected, questions.SqlTimeout):
            raise
        except Exception as exc:
            message = str(exc)
            if "TIMEOUT_EXCEEDED" in message or "Timeout exceeded" in message:
                raise questions.SqlTimeout(message) from None
            if "READONLY" in message or "readonly" in message:
                raise questions.SqlRejected(message.splitlines()[0]) from None
            raise questions.SqlError(message.splitlines()[0] if message else type(exc).__name__) from None

    def _q_run_sql(
        self, sql: str, *, max_rows: int | None = None, timeout_s: float | None = None, arrow: bool = False
    ) -> Any:
        from eventscope.tracer.query.sandbox import SqlRejected, SqlResult

        text = sql.strip().rstrip(";").strip()
        if ";" in text:
            raise SqlRejected("expected exactly one statement")
        first = text.split(None, 1)[0].lower() if text else ""
        if first not in _READ_STATEMENTS:
            raise SqlRejected(f"only SELECT queries are allowed here, not {first.upper() or 'nothing'}")
        settings: dict[str, Any] = {"readonly": 2}
        if timeout_s is not None:
            settings["max_execution_time"] = max(1, round(timeout_s))
        if max_rows is not None:
            settings["max_result_rows"] = max_rows + 1
            settings["result_overflow_mode"] = "break"
        table = self.engine.query_arrow(text, None, settings=settings)
        truncated = max_rows is not None and table.num_rows > max_rows
        if truncated:
            table = table.slice(0, max_rows)
        columns = list(table.column_names)
        types = [str(field.type) for field in table.schema]
        if arrow:
            return SqlResult(columns, types, [], truncated, table=table)
        rows = [tuple(row[name] for name in columns) for row in table.to_pylist()]
        return SqlResult(columns, types, rows, truncated)

    def _q_orphans(
        self, *, reason: str | None = None, grace_s: float | None = None, limit: int = 1000
    ) -> Any:
        if grace_s is None:
            return self._records(_ORPHANS.replace("{source}", "orphans"), {"reason": reason, "limit": limit})
        sql = _ORPHANS.replace("{source}", "orphans_after(grace_s = {grace_s:Float64})")
        return self._records(sql, {"reason": reason, "limit": limit, "grace_s": grace_s})

    def _q_orphan_counts(self) -> dict[str, int]:
        return {row["reason"]: row["n"] for row in self._records(_ORPHAN_COUNTS)}

    def _q_orphan_gauges(self) -> list[dict[str, Any]]:
        return self._records(_ORPHAN_GAUGES)

    def _q_chain(self, event_id: str) -> list[dict[str, Any]]:
        from eventscope.tracer.query.sandbox import jsonable

        edges = self.engine.query_arrow(_FLOW_EDGES, {"event_id": event_id}).to_pydict()
        pairs = zip(edges.get("cause_event_id", []), edges.get("effect_event_id", []), strict=True)
        found = walk(event_id, pairs)
        ids = {"ids": list(found)}
        facts = self.engine.query_arrow(_CHAIN_FACTS, ids).to_pydict()
        columns = [name for name in _FACT_COLUMNS if name in facts]
        by_id = {
            found_id: dict(zip(columns, values, strict=True))
            for found_id, *values in zip(facts.get("event_id", []), *(facts[c] for c in columns), strict=True)
        }
        counts = self.engine.query_arrow(_CHAIN_DELIVERIES, ids).to_pydict()
        deliveries = dict(zip(counts.get("event_id", []), counts.get("deliveries", []), strict=True))
        rows = []
        for found_id, (depth, cause) in found.items():
            fact = by_id.get(found_id, {})
            row = {"event_id": found_id, "depth": depth, "cause_event_id": cause}
            row.update({name: fact.get(name) for name in _FACT_COLUMNS})
            row["deliveries"] = deliveries.get(found_id, 0)
            rows.append(row)
        # ORDER BY depth, published_at, event_id (NULLs last, as both stores sort them), on the
        # datetimes; then as the other questions' rows: JSON-ready values
        rows.sort(
            key=lambda r: (r["depth"], r["published_at"] is None, r["published_at"] or _EPOCH, r["event_id"])
        )
        for row in rows:
            row["published_at"] = jsonable(row["published_at"])
        return rows

    def _q_event(self, event_id: str) -> dict[str, Any] | None:
        params = {"event_id": event_id}
        found = self._records(_EVENT, params)
        if not found:
            return None
        return {
            "event": found[0],
            "deliveries": self._records(_EVENT_DELIVERIES, params),
            "causes": self._records(_EVENT_CAUSES, params),
            "effects": self._records(_EVENT_EFFECTS, params),
            "orphans": self._records(_EVENT_ORPHANS, params),
            "payload": next(iter(self._records(_EVENT_PAYLOAD, params)), None),
        }


def walk(root: str, edges: Iterable[tuple[str, str]]) -> dict[str, tuple[int, str | None]]:
    """``chain()``'s walk: each event reachable from ``root`` over ``(cause, effect)`` edges, once,
    at its smallest depth, with its cause (the smallest id among its causes one level up), in
    the order found (breadth first). Edges into the root are not taken; depth stops at 256.
    """
    effects: dict[str, list[str]] = {}
    for cause, effect in edges:
        if effect != root:
            effects.setdefault(cause, []).append(effect)
    found: dict[str, tuple[int, str | None]] = {root: (0, None)}
    level = [root]
    depth = 0
    while level and depth < _CHAIN_MAX_DEPTH:
        depth += 1
        causes: dict[str, str] = {}
        for cause in level:
            for effect in effects.get(cause, ()):
                if effect not in found and (effect not in causes or cause < causes[effect]):
                    causes[effect] = cause
        for effect in sorted(causes):
            found[effect] = (depth, causes[effect])
        level = list(causes)
    return found


def answer(engine: Engine, question: str, *args: Any, **kwargs: Any) -> Any:
    """``question`` answered in ClickHouse SQL on ``engine`` (the hook of query.questions)."""
    return Reader(engine).answer(question, *args, **kwargs)
