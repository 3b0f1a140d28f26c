"""The one data module of the dashboard: pages call these functions and nothing else.

Each is a thin call to a :class:`~eventscope.tracer.client.Source` (a DuckDB file opened
read-only, or a running collector over HTTP: ``EVENTSCOPE_DB`` / ``EVENTSCOPE_API`` /
``EVENTSCOPE_TOKEN``, set by ``eventscope dashboard``), whose answers come from the functions
of :mod:`eventscope.tracer.query.questions`, so the dashboard, the CLI and the API always agree.
Answers are cached for a few seconds: a live collector's data refreshes itself, and reruns
of a page (every widget change) do not ask twice.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pandas as pd
import streamlit as st

from eventscope.tracer.query import questions as queries
from eventscope.tracer.query.client import Source, SourceError, open_source

__all__ = [
    "SourceError",
    "alerts",
    "chain",
    "dead_letter_messages",
    "describe_source",
    "event",
    "events_page",
    "facets",
    "failure_groups",
    "fanout",
    "frame",
    "grace",
    "health",
    "incident_alerts",
    "incidents",
    "is_live",
    "lag",
    "orphan_counts",
    "orphan_groups",
    "orphans",
    "orphans_over_time",
    "rates",
    "redrive_history",
    "run_sql",
    "schema",
    "sequence",
    "slowest",
    "summary",
    "to_csv",
    "to_parquet",
    "top_orphaned",
    "topology",
    "upstream",
    "workflows",
]

_TTL_S = 5  # live: a running collector's data changes
_FILE_TTL_S = 600  # post-mortem: nothing writes a file the dashboard holds open
_TIME_COLUMNS = (
    "published_at",
    "received_at",
    "settled_at",
    "fired_at",
    "resolved_at",
    "started_at",
    "last_activity_at",
    "first_at",
    "last_at",
    "bucket",
    "died_at",
    "opened_at",
    "last_seen_at",
    "notified_at",
    "observed_at",
    "requested_at",
    "delivered_at",
    "last_redrive_at",
    "first_seen",
    "last_seen",
)

Spec = tuple[str | None, str | None, str | None]


def _spec() -> Spec:
    """Where the data comes from, as the environment says (``eventscope dashboard`` sets it)."""
    return (
        os.environ.get("EVENTSCOPE_DB") or None,
        os.environ.get("EVENTSCOPE_API") or None,
        os.environ.get("EVENTSCOPE_TOKEN") or None,
    )


@st.cache_resource(show_spinner=False)
def _source(db: str | None, api: str | None, token: str | None) -> Source:
    return open_source(db=db, api=api, token=token)


def _open() -> Source:
    return _source(*_spec())


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def _ask_live(spec: Spec, question: str, params: tuple[tuple[str, Any], ...]) -> Any:
    return _source(*spec).ask(question, **dict(params))


@st.cache_data(ttl=_FILE_TTL_S, show_spinner=False)
def _ask_file(spec: Spec, question: str, params: tuple[tuple[str, Any], ...]) -> Any:
    return _source(*spec).ask(question, **dict(params))


def _answer(question: str, **params: Any) -> Any:
    spec = _spec()
    ask = _ask_file if spec[0] else _ask_live
    return ask(spec, question, tuple(sorted(params.items())))


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """Rows as a DataFrame with the time columns parsed (UTC)."""
    data = pd.DataFrame(rows, columns=columns) if columns or rows else pd.DataFrame()
    for column in _TIME_COLUMNS:
        if column in data.columns:
            data[column] = pd.to_datetime(data[column], utc=True, format="ISO8601")
    return data


def payload_filter_problem(text: str) -> str | None:
    """Why ``text`` is not a payload filter (``field=value``), or None when it is one or empty."""
    try:
        queries.payload_filter(text)
    except queries.SqlRejected as exc:
        return str(exc)
    return None


def is_live() -> bool:
    """True against a running collector (data changes), False on a database file."""
    db, _, _ = _spec()
    return db is None


def describe_source() -> str:
    db, api, _ = _spec()
    if db:
        return f"database file {db} (read-only)"
    return f"collector at {api or os.environ.get('EVENTSCOPE_API') or 'http://127.0.0.1:4318'}"


# -- the questions, one function each ----------------------------------------------------------
def summary() -> dict[str, Any]:
    return _answer("summary")


def health() -> dict[str, Any] | None:
    """The collector's own counters; None on a file (nobody is collecting)."""
    if not is_live():
        return None
    return _health(_spec())


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def _health(spec: Spec) -> dict[str, Any] | None:
    return _source(*spec).health()


def rates() -> tuple[float, pd.DataFrame]:
    """Bucket width (s), and events/s and deliveries/s per bucket."""
    answer = _answer("rates")
    return answer["bucket_s"], frame(answer["rates"])


def _orphan_report() -> dict[str, Any]:
    """One pass over the orphans view, shared by the overview and the orphans page."""
    return _answer("orphan_report")


def orphan_counts() -> dict[str, int]:
    return _orphan_report()["counts"]


def orphan_groups() -> pd.DataFrame:
    """Orphans per (reason, event type, exchange, routing key, queue), largest first."""
    return frame(
        _orphan_report()["groups"], ["reason", "event_type", "exchange", "routing_key", "queue", "n"]
    )


def orphans_over_time() -> tuple[float, pd.DataFrame]:
    report = _orphan_report()
    return report["bucket_s"], frame(report["over_time"], ["bucket", "reason", "orphans"])


def top_orphaned(limit: int = 10) -> pd.DataFrame:
    return frame(queries.orphaned_groups(_orphan_report()["groups"], limit=limit))


def slowest(limit: int = 10) -> pd.DataFrame:
    return frame(_answer("slowest", limit=limit))


def facets() -> dict[str, list[str]]:
    return _answer("facets")


def events_page(**filters: Any) -> tuple[int, pd.DataFrame]:
    """How many events match, and one page of them (``limit``/``offset`` among the filters)."""
    answer = _answer("events_page", **{k: v for k, v in filters.items() if v not in (None, "")})
    return answer["total"], frame(answer["rows"])


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def _orphans(spec: Spec, reason: str | None, limit: int) -> list[dict[str, Any]]:
    return _source(*spec).orphans(reason=reason, limit=limit)


_ORPHAN_COLUMNS = [
    "event_id",
    "event_type",
    "exchange",
    "routing_key",
    "queue",
    "reason",
    "published_at",
    "age_s",
]


def orphans(reason: str | None = None) -> pd.DataFrame:
    """The newest 1000 orphan rows (of one reason, or of all)."""
    if reason is None:
        return frame(_orphan_report()["rows"], _ORPHAN_COLUMNS)
    return frame(_orphans(_spec(), reason, 1000), _ORPHAN_COLUMNS)


def fanout() -> pd.DataFrame:
    """Fan-out completeness (event type x queue), its orphan half from the shared report."""
    matrix = queries.fanout_matrix(
        _answer("fanout_delivered"), _orphan_report()["groups"], _answer("event_types")
    )
    return frame(matrix)


@st.cache_data(ttl=_TTL_S, show_spinner=False)
def _event(spec: Spec, event_id: str) -> dict[str, Any] | None:
    return _source(*spec).event(event_id)


def event(event_id: str) -> dict[str, Any] | None:
    """The event with its deliveries, causes, effects and orphan rows; None if unknown."""
    return _event(_spec(), event_id)


def chain(event_id: str) -> dict[str, pd.DataFrame]:
    """Hops (one per event and delivery attempt, with wait and processing), orphans, x-deaths, trace links."""
    answer = _answer("chain_detail", event_id=event_id)
    return {name: frame(rows) for name, rows in answer.items()}


def upstream(event_id: str) -> pd.DataFrame:
    return frame(_answer("upstream", event_id=event_id))


def _redrive_questions() -> None:
    """Register the dead-letter questions (tracer/redrive/browse.py) for a database file too."""
    from eventscope.tracer.redrive import browse  # noqa: F401


def dead_letter_messages(**filters: Any) -> pd.DataFrame:
    """Dead letters still in their DLQ, as the collector recorded them (tracer/redrive/browse.py)."""
    _redrive_questions()
    return frame(_answer("dead_letter_messages", **{k: v for k, v in filters.items() if v is not None}))


def failure_groups() -> pd.DataFrame:
    _redrive_questions()
    return frame(_answer("failure_groups"))


def redrive_history(event_id: str) -> pd.DataFrame:
    _redrive_questions()
    return frame(_answer("redrive_history", event_id=event_id))


def topology() -> dict[str, pd.DataFrame]:
    return {name: frame(rows) for name, rows in _answer("topology").items()}


def lag(outliers: int = 20) -> dict[str, pd.DataFrame]:
    return {name: frame(rows) for name, rows in _answer("lag", outliers=outliers).items()}


def workflows(
    stuck_after_s: float, status: str | None = None, limit: int = 200
) -> tuple[int, int, pd.DataFrame]:
    """Number of flows, number stuck, and the flows shown (stuck first)."""
    answer = _answer("workflows", stuck_after_s=float(stuck_after_s), status=status, limit=limit)
    return answer["flows"], answer["stuck"], frame(answer["flows_shown"])


def alerts(state: str | None = None) -> pd.DataFrame:
    return frame(_answer("alerts", state=state))


def incidents(status: str | None = None, sort: str = "size") -> pd.DataFrame:
    """Incidents (grouped alerts), open first, by size (``size``) or age (``age``)."""
    return frame(_answer("incidents", status=status, sort=sort))


def incident_alerts(incident_id: str) -> pd.DataFrame:
    """The per-event alerts of one incident, oldest first."""
    return frame(_answer("incident_alerts", incident_id=incident_id))


def sequence(*, event_id: str | None = None, correlation_id: str | None = None) -> dict[str, Any]:
    """The conversation an event is part of (or of a correlation id): lifelines and messages."""
    params = {"event_id": event_id, "correlation_id": correlation_id}
    return _answer("sequence", **{k: v for k, v in params.items() if v})


_GRACE_SQL = (
    "SELECT coalesce((SELECT TRY_CAST(value AS DOUBLE) FROM collector_settings WHERE name = 'grace_s'), "
    "30.0) AS grace_s, now() AS now"
)


def grace() -> tuple[float, pd.Timestamp]:
    """The grace the orphan verdicts wait for (seconds), and the store's clock now (UTC): the
    buckets after ``now - grace`` still have verdicts pending.
    """
    table, _ = run_sql(_GRACE_SQL)
    row = table.to_pylist()[0]
    return float(row["grace_s"]), pd.Timestamp(row["now"]).tz_convert("UTC")


def schema() -> pd.DataFrame:
    return frame(_answer("schema"))


@st.cache_data(ttl=_TTL_S, show_spinner=False, max_entries=16)
def _sql(spec: Spec, query: str) -> tuple[Any, bool]:
    result = _source(*spec).sql(query, arrow=True)
    return result.table, result.truncated


def run_sql(query: str) -> tuple[Any, bool]:
    """A ``pyarrow.Table`` and whether the collector cut it at its row cap; SourceError if the
    query is refused or fails (the message is DuckDB's).
    """
    return _sql(_spec(), query)


def to_csv(table: Any) -> bytes:
    import pyarrow.csv as pa_csv

    sink = io.BytesIO()
    pa_csv.write_csv(table, sink)
    return sink.getvalue()


def to_parquet(table: Any) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def catalog() -> list[dict[str, Any]]:
    """Per event type: declared vs observed producers and consumers (query/contracts.py)."""
    return _answer("catalog")


def contract_violations(kind: str | None = None, limit: int = 200) -> pd.DataFrame:
    return frame(_answer("contract_violations", kind=kind, limit=limit))
