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

``flow_summary`` (version 13): one row per flow (``coalesce(correlation_id, event_id)``, as the
workflows page groups events), the derivation ``FLOWS``: its events, start, first and last
event types, last activity (publish, receive or settle) and its deliveries not settled with the
first of them. A batch re-derives the flows of the events it touched (and the flow each touched
event would be alone, in case its correlation id was filled since), reading their events by
``correlation_id`` within the flows' id range.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from eventscope.tracer.store.duck import registered

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

# Per flow: what flow_summary holds. {flow_events} is (flow_id, event_id, event_type,
# published_at) of the flows concerned, {scope} the deliveries' (their events', or `true`).
# Ties (same time) are broken by the value, so the summary and the derivation pick the same.
FLOW_EVENTS = (
    "SELECT coalesce(correlation_id, event_id) AS flow_id, event_id, event_type, published_at FROM events"
)
FLOWS = """
WITH f AS ({flow_events}),
published AS (
    SELECT flow_id, count(*) AS events, min(published_at) AS started_at,
           max(published_at) AS last_published_at,
           arg_min(event_type, (published_at, event_type)) AS first_event_type,
           arg_max(event_type, (published_at, event_type)) AS last_event_type
    FROM f GROUP BY flow_id
),
steps AS (
    SELECT f.flow_id, coalesce(d.settled_at, d.received_at) AS handled_at, d.outcome, d.received_at,
           f.event_type || ' @ ' || coalesce(d.queue, '?') || ' (not settled)' AS step
    FROM (SELECT event_id, queue, outcome, received_at, settled_at FROM deliveries WHERE {scope}) d
    JOIN f ON f.event_id = d.event_id
),
handled AS (
    SELECT flow_id, max(handled_at) AS last_handled_at, count(*) FILTER (WHERE outcome IS NULL) AS unsettled,
           arg_min(step, (received_at, step)) FILTER (WHERE outcome IS NULL) AS unsettled_step
    FROM steps GROUP BY flow_id
)
SELECT p.flow_id, p.events, p.started_at, p.first_event_type, p.last_event_type,
       greatest(p.last_published_at, h.last_handled_at) AS last_activity_at,
       coalesce(h.unsettled, 0) AS unsettled, h.unsettled_step
FROM published p LEFT JOIN handled h USING (flow_id)
"""

# The flows a batch touched: each touched event's flow, and each touched id as a flow of its own
# (an event stored without a correlation id was one until the id was filled).
_TOUCHED_FLOWS = """
SELECT DISTINCT coalesce(correlation_id, event_id) AS flow_id FROM events WHERE {scope}
UNION SELECT event_id FROM _eventscope_touched
"""
# Their events, by correlation id (or own id) in the flows' range: row groups skipped by min/max.
_FLOWS_EVENTS = """
SELECT correlation_id AS flow_id, event_id, event_type, published_at FROM events
WHERE correlation_id BETWEEN $lo AND $hi AND correlation_id IN (SELECT flow_id FROM _eventscope_flows)
UNION ALL
SELECT event_id, event_id, event_type, published_at FROM events
WHERE correlation_id IS NULL AND event_id BETWEEN $lo AND $hi
  AND event_id IN (SELECT flow_id FROM _eventscope_flows)
"""
_FLOWS_DELIVERIES = (
    "event_id BETWEEN $lo AND $hi AND event_id IN (SELECT event_id FROM _eventscope_flow_events)"
)
_FLOW_IDS = pa.schema([("flow_id", pa.string())])


def _refresh_flows(connection: duckdb.DuckDBPyConnection, scope: str, params: dict[str, str]) -> None:
    found = connection.execute(_TOUCHED_FLOWS.replace("{scope}", scope), params).fetchall()
    ids = [flow_id for (flow_id,) in found if flow_id is not None]
    if not ids:
        return
    flow_params = {"lo": min(ids), "hi": max(ids)}
    with registered(
        connection, "_eventscope_flows", pa.table([pa.array(ids, pa.string())], schema=_FLOW_IDS)
    ):
        connection.execute(
            "DELETE FROM flow_summary WHERE flow_id BETWEEN $lo AND $hi "
            "AND flow_id IN (SELECT flow_id FROM _eventscope_flows)",
            flow_params,
        )
        members = connection.sql(_FLOWS_EVENTS, params=flow_params).to_arrow_table()
    if members.num_rows == 0:
        return
    event_ids = members.column("event_id")
    event_params = {"lo": pc.min(event_ids).as_py(), "hi": pc.max(event_ids).as_py()}
    with registered(connection, "_eventscope_flow_events", members):
        flows = FLOWS.replace("{flow_events}", "SELECT * FROM _eventscope_flow_events")
        connection.execute(
            "INSERT INTO flow_summary " + flows.replace("{scope}", _FLOWS_DELIVERIES), event_params
        )


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
    _refresh_flows(connection, scope, params)


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
    connection.execute("DELETE FROM flow_summary")
    flows = FLOWS.replace("{flow_events}", FLOW_EVENTS).replace("{scope}", "true")
    connection.execute("INSERT INTO flow_summary " + flows + " ORDER BY p.flow_id")
