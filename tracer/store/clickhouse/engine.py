"""One ClickHouse SQL engine behind two transports: chDB in-process, or a server over HTTP.

Everything else in the package talks to :class:`Engine` only: ``command`` (DDL and writes),
``insert_arrow`` (bulk rows) and ``query_arrow`` (reads, with ``{name:Type}`` parameters
bound by ClickHouse itself, never formatted into the text). chDB is the ClickHouse engine
in a Python process (the same SQL as the server): CI runs every statement of this package on
it, and a single machine can use it instead of DuckDB. One process holds one chDB data path
(chDB's own limit), so :func:`open_engine` keeps one session per process and refuses a
second path.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import pyarrow as pa

__all__ = ["ChdbEngine", "Engine", "HttpEngine", "open_chdb", "open_http"]

logger = logging.getLogger(__name__)

_SESSION_LOCK = threading.Lock()
_SESSION: tuple[str, Any] | None = None  # (path, chdb Session): one per process
# One statement at a time on the process's chDB session: its query parameters are connection
# state, so two threads querying at once lost each other's (`Substitution ... is not set`).
_QUERY_LOCK = threading.RLock()


class Engine(Protocol):
    """What the store, the loader and the questions need from ClickHouse."""

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None: ...

    def query_arrow(
        self, sql: str, parameters: dict[str, Any] | None = None, *, settings: dict[str, Any] | None = None
    ) -> pa.Table: ...

    def close(self) -> None: ...


def _params(parameters: dict[str, Any] | None) -> dict[str, str] | None:
    """Query parameters as chDB binds them: the text of each value (ClickHouse parses it by
    the ``{name:Type}`` placeholder's type)."""
    if not parameters:
        return None
    return {name: _param_text(value) for name, value in parameters.items()}


def _param_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (list, tuple)):  # Array(String) / Array(number): a ClickHouse array literal
        return "[" + ",".join(_literal(item) for item in value) + "]"
    return str(value)


def _literal(item: Any) -> str:
    if isinstance(item, str):
        return "'" + item.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "NULL" if item is None else str(item)


def _with_settings(sql: str, settings: dict[str, Any] | None) -> str:
    """chDB takes per-query settings in the statement: appended to a SELECT."""
    stripped = sql.strip().rstrip(";")
    if not settings:
        return stripped
    values = ", ".join(
        f"{name} = '{value}'" if isinstance(value, str) else f"{name} = {value}"
        for name, value in settings.items()
    )
    return f"{stripped} SETTINGS {values}"


class ChdbEngine:
    """chDB: ClickHouse in this process, tables on disk under ``path``."""

    def __init__(self, path: str, session: Any) -> None:
        self.path = path
        self._session = session

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        with _QUERY_LOCK:
            self._session.query(_with_settings(sql, None), params=_params(parameters))

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        # chDB reads the Python variable named in the statement from the caller's frame
        _eventscope_rows = data
        with _QUERY_LOCK:
            self._session.query(f"INSERT INTO {table} ({columns}) SELECT * FROM Python(_eventscope_rows)")

    def query_arrow(
        self, sql: str, parameters: dict[str, Any] | None = None, *, settings: dict[str, Any] | None = None
    ) -> pa.Table:
        sql = _with_settings(sql, settings)
        with _QUERY_LOCK:
            result = self._session.query(sql, "ArrowTable", params=_params(parameters))
        return result if isinstance(result, pa.Table) else pa.table({})

    def close(self) -> None:
        """The session stays open for the process (chDB cannot reopen another path)."""


def open_chdb(path: str) -> ChdbEngine:
    """The process's chDB session on ``path`` (created on first use)."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is not None:
            if _SESSION[0] != path:
                raise RuntimeError(
                    f"this process already uses the chDB data path {_SESSION[0]!r}; "
                    "chDB allows one per process"
                )
            return ChdbEngine(path, _SESSION[1])
        try:
            from chdb import session as chdb_session
        except ImportError:
            raise RuntimeError("chdb:// stores need chDB: pip install 'eventscope[clickhouse]'") from None
        session = chdb_session.Session(path)
        _SESSION = (path, session)
        return ChdbEngine(path, session)


class HttpEngine:
    """A ClickHouse server over HTTP (clickhouse-connect)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        self._client.command(
            sql,
            parameters=parameters,
        )

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        if data.num_rows:
            self._client.insert_arrow(table, data)

    def query_arrow(
        self, sql: str, parameters: dict[str, Any] | None = None, *, settings: dict[str, Any] | None = None
    ) -> pa.Table:
        return self._client.query_arrow(sql, parameters=parameters, settings=settings)

    def close(self) -> None:
        self._client.close()


def open_http(
    *, host: str, port: int, database: str, username: str, password: str, secure: bool
) -> HttpEngine:
    try:
        import clickhouse_connect
    except ImportError:
        raise RuntimeError(
            "clickhouse:// stores need clickhouse-connect: pip install 'eventscope[clickhouse]'"
        ) from None
    client = clickhouse_connect.get_client(
        host=host, port=port, username=username, password=password, secure=secure
    )
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database.replace('`', '')}`")
    client.close()
    client = clickhouse_connect.get_client(
        host=host, port=port, username=username, password=password, database=database, secure=secure
    )
    return HttpEngine(client)
