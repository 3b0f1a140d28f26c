"""Every question asked of the store, one function each: the API, the CLI and the dashboard
call these and nothing else.

All take a DuckDB connection (a :meth:`Store.reader` of a running collector, or a file
opened with :func:`store.connect_read_only`) and run inside a read-only transaction.
:func:`run_sql` is the way untrusted SQL gets in: one ``SELECT`` (or ``EXPLAIN``) statement,
a read-only transaction, a time limit enforced with ``connection.interrupt()``, and a row
cap. The sandbox of the store (no external access, locked configuration) is the layer
underneath; this module is the second.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import logging
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import duckdb

__all__ = [
    "SqlError",
    "SqlRejected",
    "SqlResult",
    "SqlTimeout",
    "chain",
    "event",
    "jsonable",
    "orphan_counts",
    "orphans",
    "run_sql",
]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_ROWS = 10_000
_DEFAULT_TIMEOUT_S = 10.0
_ARROW_BATCH_ROWS = 8192
_ALLOWED_STATEMENTS = frozenset({"StatementType.SELECT", "StatementType.EXPLAIN"})


class SqlRejected(ValueError):
    """Not a single read-only query (→ 400)."""


class SqlError(ValueError):
    """DuckDB refused or failed the query (→ 400); the message is DuckDB's."""


class SqlTimeout(TimeoutError):
    """The query ran past its time limit and was interrupted."""


@dataclass
class SqlResult:
    """Columns, their DuckDB types, rows (at most the cap) and whether rows were cut.

    With ``arrow=True`` the rows come as ``table`` (a ``pyarrow.Table`` with DuckDB's own
    types) and ``rows`` is empty.
    """

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool
    table: Any = None

    def records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready objects (one per row, keyed by column)."""
        return [dict(zip(self.columns, (jsonable(v) for v in row), strict=True)) for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "types": self.types,
            "rows": [[jsonable(v) for v in row] for row in self.rows],
            "row_count": len(self.rows),
            "truncated": self.truncated,
        }


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON: timestamps ISO 8601, intervals in seconds, blobs base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return str(value)


def run_sql(
    connection: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    max_rows: int | None = _DEFAULT_MAX_ROWS,
    timeout_s: float | None = _DEFAULT_TIMEOUT_S,
    arrow: bool = False,
) -> SqlResult:
    """Run one untrusted read-only statement; at most ``max_rows`` rows (``None``: all)."""
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(str(exc)) from None
    if len(statements) != 1:
        raise SqlRejected(f"expected exactly one statement, got {len(statements)}")
    kind = str(statements[0].type)
    if kind not in _ALLOWED_STATEMENTS:
        raise SqlRejected(f"only SELECT queries are allowed here, not {kind.rsplit('.', 1)[-1]}")
    return _read(connection, sql, None, max_rows=max_rows, timeout_s=timeout_s, arrow=arrow)


def _fetch_rows(
    connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None, max_rows: int | None
) -> tuple[list[Any], list[str], list[str], bool]:
    """Python rows, reading at most one row past the cap."""
    connection.execute(sql, params)
    columns = [d[0] for d in connection.description or ()]
    types = [str(d[1]) for d in connection.description or ()]
    if max_rows is None:
        return connection.fetchall(), columns, types, False
    rows = connection.fetchmany(max_rows + 1)
    return rows[:max_rows], columns, types, len(rows) > max_rows


def _fetch_arrow(
    connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None, max_rows: int | None
) -> tuple[Any, list[str], list[str], bool]:
    """The result as a pyarrow Table (DuckDB's types kept), reading at most one row past the cap."""
    import pyarrow as pa

    relation = connection.sql(sql, params=params)
    columns, types = list(relation.columns), [str(t) for t in relation.types]
    reader = relation.to_arrow_reader(_ARROW_BATCH_ROWS)
    batches = []
    count = 0
    for batch in reader:
        batches.append(batch)
        count += batch.num_rows
        if max_rows is not None and count > max_rows:
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    if max_rows is not None and table.num_rows > max_rows:
        return table.slice(0, max_rows), columns, types, True
    return table, columns, types, False


def _read(
    connection: duckdb.DuckDBPyConnection,
    sql: str,
    params: dict[str, Any] | None,
    *,
    max_rows: int | None,
    timeout_s: float | None,
    arrow: bool = False,
) -> SqlResult:
    timer = None
    timed_out = threading.Event()
    if timeout_s is not None:

        def interrupt() -> None:
            timed_out.set()
            connection.interrupt()

        timer = threading.Timer(timeout_s, interrupt)
        timer.daemon = True
    connection.execute("BEGIN TRANSACTION READ ONLY")
    try:
        if timer is not None:
            timer.start()
        try:
            if arrow:
                table, columns, types, truncated = _fetch_arrow(connection, sql, params, max_rows)
                rows: list[Any] = []
            else:
                table = None
                rows, columns, types, truncated = _fetch_rows(connection, sql, params, max_rows)
        except duckdb.InterruptException:
            raise SqlTimeout(f"query interrupted after {timeout_s:g} s") from None
        except duckdb.Error as exc:
            if timed_out.is_set():
                raise SqlTimeout(f"query interrupted after {timeout_s:g} s") from None
            raise SqlError(str(exc)) from None
        finally:
            if timer is not None:
                timer.cancel()
    finally:
        with contextlib.suppress(duckdb.Error):
            connection.execute("ROLLBACK")
    return SqlResult(columns, types, [tuple(row) for row in rows], truncated, table)


def _records(connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return _read(connection, sql, params, max_rows=None, timeout_s=_DEFAULT_TIMEOUT_S).records()


# -- the questions ----------------------------------------------------------------------------
_ORPHANS = """
SELECT event_id, event_type, exchange, routing_key, queue, reason, published_at, age_s
FROM orphans
WHERE ($reason IS NULL OR reason = $reason)
ORDER BY published_at DESC, event_id, queue
LIMIT $limit
"""

_ORPHANS_AFTER = """
SELECT event_id, event_type, exchange, routing_key, queue, reason, published_at, age_s
FROM orphans_after($grace_s)
WHERE ($reason IS NULL OR reason = $reason)
ORDER BY published_at DESC, event_id, queue
LIMIT $limit
"""

_ORPHAN_COUNTS = "SELECT reason, count(*) AS n FROM orphans GROUP BY reason ORDER BY reason"

_EVENT = "SELECT * FROM events WHERE event_id = $event_id"
_EVENT_DELIVERIES = """
SELECT * FROM deliveries WHERE event_id = $event_id ORDER BY received_at, queue, span_id
"""
_EVENT_CAUSES = "SELECT cause_event_id, via FROM causal_edges WHERE effect_event_id = $event_id ORDER BY 1"
_EVENT_EFFECTS = "SELECT effect_event_id, via FROM causal_edges WHERE cause_event_id = $event_id ORDER BY 1"
_EVENT_ORPHANS = "SELECT queue, reason, age_s FROM orphans WHERE event_id = $event_id ORDER BY queue"

_CHAIN = """
SELECT c.event_id, c.depth, c.cause_event_id, e.event_type, e.exchange, e.routing_key,
       e.producer_service, e.published_at,
       (SELECT count(*) FROM deliveries d WHERE d.event_id = c.event_id) AS deliveries
FROM chain($event_id) c
LEFT JOIN events e USING (event_id)
ORDER BY c.depth, e.published_at, c.event_id
"""


def orphans(
    connection: duckdb.DuckDBPyConnection,
    *,
    reason: str | None = None,
    grace_s: float | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Orphans, newest first; ``grace_s`` overrides the collector's grace."""
    if grace_s is None:
        return _records(connection, _ORPHANS, {"reason": reason, "limit": limit})
    return _records(
        connection,
        _ORPHANS_AFTER,
        {"reason": reason, "limit": limit, "grace_s": grace_s},
    )


def orphan_counts(connection: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """How many orphans there are of each reason (for /metrics and the overview)."""
    return {row["reason"]: row["n"] for row in _records(connection, _ORPHAN_COUNTS, {})}


def event(connection: duckdb.DuckDBPyConnection, event_id: str) -> dict[str, Any] | None:
    """One event with its deliveries, causes, effects and orphan rows; None if unknown."""
    params = {"event_id": event_id}
    found = _records(connection, _EVENT, params)
    if not found:
        return None
    return {
        "event": found[0],
        "deliveries": _records(connection, _EVENT_DELIVERIES, params),
        "causes": _records(connection, _EVENT_CAUSES, params),
        "effects": _records(connection, _EVENT_EFFECTS, params),
        "orphans": _records(connection, _EVENT_ORPHANS, params),
    }


def chain(connection: duckdb.DuckDBPyConnection, event_id: str) -> list[dict[str, Any]]:
    """The event and everything downstream of it, with depth and cause, shallowest first."""
    return _records(connection, _CHAIN, {"event_id": event_id})
