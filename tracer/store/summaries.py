"""Summaries the writer keeps with every batch, so that dashboard pages at millions of events
read a narrow table instead of joining ``events`` with ``deliveries`` (docs/sql.md,
"Summaries"; schema versions 12 and 13).

``event_consistency``: one row per event with at least one delivery: its type, publish time,
deliveries and *time to consistency* (milliseconds from the publish to the last delivery
settled, or received when not settled). It is the derivation ``CONSISTENCY`` below, kept the
way ``delivery_state`` is: in the transaction of each batch, the rows of every event the batch
touched (the same ids as the delivery state: its events, deliveries, settles, resolved and
paired deliveries) are deleted and derived again; retention and the migration rebuild it
whole. So it always equals the derivation from the tables for what the collector wrote
(tests/store/test_summaries.py compares them over random scenarios); after editing the tables
by hand, :func:`rebuild` (or a retention pass) brings it back.

``delivery_summary`` (version 13): one row per delivery whose event is stored, the derivation
``DELIVERIES`` below: the event's type, exchange and producer beside the delivery's queue,
consumer, outcome and times, with the microseconds it waited in the queue and took to process.
The fan-out, topology and lag pages group it and take its exact percentiles without the join;
kept, rebuilt and tested as ``event_consistency`` is.
"""

from __future__ import annotations

import duckdb

__all__ = [
    "CONSISTENCY",
    "DELIVERIES",
    "VERSION",
    "VERSIONS",
    "ms_between",
    "rebuild",
    "refresh",
    "us_between",
]

VERSION = 12  # the migration that adds the first summary
VERSIONS = (12, 13)  # the migrations that add summaries: fill them for the rows already there


def _floor_ms(ts: str) -> str:
    """Milliseconds since the epoch, floored: integer arithmetic on the stored microseconds."""
    return f"(epoch_us({ts}) // 1000 - (epoch_us({ts}) % 1000 < 0)::BIGINT)"


# Differences of TIMESTAMPTZ per row: ``date_diff`` goes through ICU's calendar (~1 µs a row,
# most of a pass over millions of deliveries), these through the stored microseconds. The same
# values: ``date_diff('microsecond', a, b)`` is ``epoch_us(b) - epoch_us(a)``, and
# ``date_diff('millisecond', a, b)`` the difference of the floored milliseconds
# (tests/query/test_time_arithmetic.py).
def us_between(start: str, end: str) -> str:
    return f"(epoch_us({end}) - epoch_us({start}))"


def ms_between(start: str, end: str) -> str:
    return f"({_floor_ms(end)} - {_floor_ms(start)})"


# Per event with deliveries: what event_consistency holds. {scope} restricts both tables to the
# events concerned (the writer's touched ids and their range, as delivery_state.sql), or `true`.
CONSISTENCY = f"""
SELECT e.event_id, e.event_type, e.published_at,
       {ms_between("e.published_at", "max(coalesce(d.settled_at, d.received_at))")} AS consistent_after_ms,
       count(*) AS deliveries
FROM (SELECT event_id, event_type, published_at FROM events WHERE {{scope}}) e
JOIN (SELECT event_id, settled_at, received_at FROM deliveries WHERE {{scope}}) d ON d.event_id = e.event_id
GROUP BY e.event_id, e.event_type, e.published_at
"""

# Per delivery whose event is stored: what delivery_summary holds ({scope} as above).
DELIVERIES = f"""
SELECT d.event_id, e.event_type, e.exchange, e.producer_service, d.queue, d.consumer_service, d.outcome,
       d.redelivered, d.received_at, {us_between("e.published_at", "d.received_at")} AS wait_us,
       {us_between("d.received_at", "d.settled_at")} AS processing_us
FROM (SELECT event_id, event_type, exchange, producer_service, published_at FROM events WHERE {{scope}}) e
JOIN (
    SELECT event_id, queue, consumer_service, outcome, redelivered, received_at, settled_at
    FROM deliveries WHERE {{scope}}
) d ON d.event_id = e.event_id
"""

# The summaries and their derivations; a touched event's rows are found by its id within the
# batch's id range (row groups skipped by their min/max, ids growing with time).
_TABLES = {"event_consistency": CONSISTENCY, "delivery_summary": DELIVERIES}
_TOUCHED = "event_id BETWEEN $lo AND $hi AND event_id IN (SELECT event_id FROM _eventscope_touched)"


def refresh(connection: duckdb.DuckDBPyConnection, scope: str, params: dict[str, str]) -> None:
    """Derive the summaries of the events in ``scope`` again, in the caller's transaction
    (``_eventscope_touched`` holds their ids; ``params`` their range, ``lo`` and ``hi``).
    """
    for table, derivation in _TABLES.items():
        connection.execute(f"DELETE FROM {table} WHERE {_TOUCHED}", params)
        connection.execute(f"INSERT INTO {table} " + derivation.replace("{scope}", scope), params)


def rebuild(connection: duckdb.DuckDBPyConnection) -> None:
    """Derive every summary from the tables (after the migration, after retention)."""
    connection.execute("DELETE FROM event_consistency")
    connection.execute(
        "INSERT INTO event_consistency " + CONSISTENCY.replace("{scope}", "true") + " ORDER BY published_at"
    )
    connection.execute("DELETE FROM delivery_summary")
    connection.execute(
        "INSERT INTO delivery_summary " + DELIVERIES.replace("{scope}", "true") + " ORDER BY d.received_at"
    )
