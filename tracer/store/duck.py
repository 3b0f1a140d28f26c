"""DuckDB idioms every writer and reader of the store shares: a registered Arrow table and a
transaction, each as a context manager, so no caller writes register/unregister or
BEGIN/COMMIT/ROLLBACK by hand; and :class:`Written`, what the writer knows it has not stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import duckdb

__all__ = ["CLUSTER_GAP_US", "Written", "registered", "time_clusters", "transaction"]

_O = TypeVar("_O", int, str)
_DEFAULT_MEMORY = 1 << 18
CLUSTER_GAP_US = 600 * 1_000_000  # start times further apart than this are looked up apart


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


class Written(Generic[_O]):
    """Which keys of a table the writer knows, without asking the table, are not stored.

    Each key has an order (a span's start time, an event's id): ``floor`` is at least the
    highest order stored (``None``: nothing stored), taken from the table when the store opens.
    The writer is the table's only writer, and :meth:`add` what it committed; the hash of each
    key added since ``floor`` was last raised is remembered. A key above ``floor`` whose hash
    is not remembered cannot be stored: nothing stored is above ``floor`` but what was added
    since. Any other key (a replay, an old order, a hash shared by chance) must be looked up.
    Bounded: past ``memory`` hashes, ``floor`` rises to the highest order added and the hashes
    are forgotten (keys from before need a lookup again). Deleted rows change nothing: a key
    said new is not stored; a deleted one is only looked up.
    """

    def __init__(self, floor: _O | None, *, memory: int = _DEFAULT_MEMORY) -> None:
        self.floor = floor
        self.top = floor
        self.memory = memory
        self._hashes: set[int] = set()

    def new(self, order: _O, key: object) -> bool:
        """Is ``key`` (of ``order``) surely not stored?"""
        return (self.floor is None or order > self.floor) and hash(key) not in self._hashes

    def add(self, items: Iterable[tuple[_O, object]]) -> None:
        """Remember keys just committed, each with its order."""
        for order, key in items:
            self._hashes.add(hash(key))
            if self.top is None or order > self.top:
                self.top = order
        if len(self._hashes) > self.memory:
            self.floor = self.top
            self._hashes.clear()


def time_clusters(times_us: Iterable[int]) -> list[tuple[int, int]]:
    """The (first, last) of each run of sorted times with no gap above ``CLUSTER_GAP_US``."""
    clusters: list[tuple[int, int]] = []
    for at in sorted(times_us):
        if clusters and at - clusters[-1][1] <= CLUSTER_GAP_US:
            clusters[-1] = (clusters[-1][0], at)
        else:
            clusters.append((at, at))
    return clusters
