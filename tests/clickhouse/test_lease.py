"""The lease on ClickHouse (tracer/store/clickhouse/lease.py), on chDB.

chDB holds one data path per process ("EmbeddedServer already initialized with path …"), and
a path cannot be opened by two processes at once, so two collect instances on one chDB store
cannot run: the lease is for instances on one ClickHouse server. Its logic is tested here with
two instances' leases on one chDB session, which is what two servers' clients see: one table,
one clock.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from eventscope.tracer.store.clickhouse.lease import Lease


def _leases(chstore: Any, ttl_s: float = 2.0) -> tuple[Lease, Lease]:
    chstore.engine.command("TRUNCATE TABLE eventscope_settings")
    return tuple(  # type: ignore[return-value]
        Lease(chstore.engine, holder=name, ttl_s=ttl_s, settle_s=0.05) for name in ("first", "second")
    )


def test_one_holder_at_a_time_and_the_second_takes_over_on_release(chstore: Any) -> None:
    first, second = _leases(chstore)
    assert first.acquire()
    assert not second.acquire()
    assert first.renew() and not second.acquire()
    assert second.state().holder == "first"
    first.release()  # the first instance stops
    assert second.acquire()
    assert not first.acquire()
    assert second.state().holder == "second" and second.held and not first.held


def test_a_holder_that_stops_renewing_loses_the_lease_after_its_term(chstore: Any) -> None:
    first, second = _leases(chstore, ttl_s=0.6)
    assert first.acquire()
    assert not second.acquire()
    time.sleep(0.7)  # the first instance hangs or died: its term runs out
    assert second.acquire()
    assert not first.renew()  # it wakes up: another holds the lease, it must stop
    assert not first.held


def test_simultaneous_claims_have_one_winner(chstore: Any) -> None:
    first, second = _leases(chstore)
    # both saw a free lease and wrote their claim before either read it back
    first._write(first.ttl_s)
    second._write(second.ttl_s)
    winner = first.state().holder
    assert winner == second.state().holder == "second"  # the newest claim wins, for both
    assert not first.renew() and second.renew()


def test_the_term_must_outlast_the_settle_delay(chstore: Any) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        Lease(chstore.engine, ttl_s=0.1, settle_s=0.5)
