"""The per-row time differences of the dashboard's questions (query/topology.py) read the
stored microseconds instead of calling ``date_diff`` (ICU's calendar, ~1 µs a row): they must
give exactly what ``date_diff`` gives, before and after the epoch, across millisecond edges.
"""

from __future__ import annotations

import duckdb
import pytest

from eventscope.tracer.query.questions import _RATES
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


# what rates asked before (time_bucket per row): the reference
_TIME_BUCKET_RATES = """
WITH published AS (
    SELECT time_bucket(to_microseconds(CAST($bucket_s * 1000000 AS BIGINT)), published_at) AS bucket,
           count(*) AS events
    FROM events GROUP BY 1
),
received AS (
    SELECT time_bucket(to_microseconds(CAST($bucket_s * 1000000 AS BIGINT)), received_at) AS bucket,
           count(*) AS deliveries
    FROM deliveries GROUP BY 1
)
SELECT bucket, coalesce(p.events, 0) / $bucket_s AS events_per_s,
       coalesce(r.deliveries, 0) / $bucket_s AS deliveries_per_s
FROM published p FULL OUTER JOIN received r USING (bucket)
ORDER BY bucket
"""


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_rates_buckets_equal_time_bucket(zone: str) -> None:
    """``rates`` counts per bucket number from the stored microseconds: the same buckets and
    counts as ``time_bucket`` for every width ``_bucket_s`` chooses, before 2000 and after.
    """
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{zone}'")
    con.execute(
        "CREATE TABLE events AS SELECT TIMESTAMPTZ '1998-06-01 00:00:00+00' "
        "+ to_microseconds((i * 982451653) % 400000000000000) AS published_at FROM range(30000) r(i)"
    )
    con.execute(
        "CREATE TABLE deliveries AS SELECT published_at + to_microseconds(1500) AS received_at FROM events"
    )
    for width in (1.0, 7.0, 60.0, 900.0, 3600.0, 86400.0, 604800.0):
        expected = con.execute(_TIME_BUCKET_RATES, {"bucket_s": width}).fetchall()
        assert con.execute(_RATES, {"bucket_s": width}).fetchall() == expected, width
