"""DuckDB idioms every writer and reader of the store shares: a registered Arrow table and a
transaction, each as a context manager, so no caller writes register/unregister or
BEGIN/COMMIT/ROLLBACK by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

__all__ = ["registered", "transaction"]


@contextmanager
def registered(connection: duckdb.DuckDBPyConnection, name: str, data: Any) -> Iterator[str]:
    """``data`` (an Arrow table) visible to SQL as ``name`` for the block, unregistered after
    it whatever happens (a name left registered would shadow the next caller's).
    """
    connection.register(name, data)
    try:
        yield name
    finally:
        connection.unregister(name)


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN … COMMIT, or ROLLBACK and re-raise if the block raises (anything, even a
    KeyboardInterrupt: a half-written batch is never committed).
    """
    connection.execute("BEGIN TRANSACTION")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
