"""The per-row time differences of the dashboard's questions (query/topology.py) read the
stored microseconds instead of calling ``date_diff`` (ICU's calendar, ~1 µs a row): they must
give exactly what ``date_diff`` gives, before and after the epoch, across millisecond edges.
"""

from __future__ import annotations

import duckdb

from eventscope.tracer.store.summaries import ms_between, us_between


def test_time_differences_equal_date_diff() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS "
        "SELECT TIMESTAMPTZ '2026-01-01 00:00:00.000900+00' + to_microseconds(i * 137 - 500000) AS a, "
        "TIMESTAMPTZ '2026-01-01 00:00:00.001500+00' + to_microseconds((i * 7919) % 3000000 - 1500000) AS b "
        "FROM range(50000) r(i) "
        "UNION ALL "
        "SELECT TIMESTAMPTZ '1969-12-31 23:59:59.999500+00' + to_microseconds(i * 13 - 100000), "
        "TIMESTAMPTZ '1970-01-01 00:00:00.000300+00' + to_microseconds(i * 29 % 200000 - 100000) "
        "FROM range(20000) r(i) "
        "UNION ALL SELECT NULL, TIMESTAMPTZ '2026-01-01 00:00:00+00'"
    )
    (wrong_ms, wrong_us, rows) = con.execute(
        "SELECT count(*) FILTER "
        f"(WHERE date_diff('millisecond', a, b) IS DISTINCT FROM {ms_between('a', 'b')}), "
        f"count(*) FILTER (WHERE date_diff('microsecond', a, b) IS DISTINCT FROM {us_between('a', 'b')}), "
        "count(*) FROM t"
    ).fetchall()[0]
    assert rows == 70001
    assert (wrong_ms, wrong_us) == (0, 0)
