"""The SQL sandbox: how untrusted SQL gets in, and how every question reads.

:func:`run_sql` takes one ``SELECT`` (or ``EXPLAIN``) statement and runs it in a read-only
transaction, with a time limit enforced by ``connection.interrupt()`` from a timer thread and
a row cap; JSON-ready rows or an Arrow table come out. The sandbox of the store (no external
access, locked configuration: :mod:`eventscope.tracer.store.duckdb_store`) is the layer
underneath; this module is the second. :func:`records` is the same path for the questions'
own, parameterised SQL.
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
import pyarrow as pa

__all__ = [
    "SqlError",
    "SqlRejected",
    "SqlResult",
    "SqlTimeout",
    "jsonable",
    "plain_records",
    "records",
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
    engine = getattr(connection, "clickhouse_engine", None)  # a ClickHouse store runs its own SQL
    if engine is not None:
        from eventscope.tracer.query import clickhouse

        return clickhouse.answer(engine, "run_sql", sql, max_rows=max_rows, timeout_s=timeout_s, arrow=arrow)
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


def records(connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return _read(connection, sql, params, max_rows=None, timeout_s=_DEFAULT_TIMEOUT_S).records()


def plain_records(
    connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows as dicts of Python values (not made JSON-ready): for callers in this process."""
    result = _read(connection, sql, params, max_rows=None, timeout_s=_DEFAULT_TIMEOUT_S)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]
