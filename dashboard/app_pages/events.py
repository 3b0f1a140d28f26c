"""Events: every published event, filtered and paged (newest first)."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from eventscope.dashboard import data, layout

_PAGE_SIZE = 100
_ANY = "(any)"
_OUTCOMES = [_ANY, "ack", "nack", "reject", "requeue", "error", "unknown", "unsettled"]

st.title("Events")
facets = data.facets()
if not facets["event_type"]:
    layout.empty_state()
    st.stop()


def _choice(value: str) -> str | None:
    return None if value == _ANY else value


with st.form("filters"):
    row = st.columns(4)
    event_type = row[0].selectbox("Event type", [_ANY, *facets["event_type"]])
    service = row[1].selectbox("Service (producer or consumer)", [_ANY, *facets["service"]])
    exchange = row[2].selectbox("Exchange", [_ANY, *facets["exchange"]])
    queue = row[3].selectbox("Queue", [_ANY, *facets["queue"]])
    row = st.columns(4)
    routing_key = row[0].text_input("Routing key")
    outcome = row[1].selectbox("Delivery outcome", _OUTCOMES)
    trace_id = row[2].text_input("Trace id")
    event_id = row[3].text_input("Event id (or the id that started its flow)")
    row = st.columns(4)
    since = row[0].text_input(
        "Published since (ISO 8601, UTC)", placeholder="2026-01-31T12:00:00", key="since"
    )
    until = row[1].text_input("Published before (ISO 8601, UTC)", key="until")
    payload = row[2].text_input(
        "Payload field (e.g. order_id=42)",
        key="payload",
        help="Matches captured JSON bodies (eventscope collect --firehose --capture-payloads); "
        "nested fields with dots: customer.id=7",
    )
    st.form_submit_button("Apply")


def _time(text: str, label: str) -> str | None:
    """An ISO 8601 time as typed, or None (with a note) when it is not one."""
    text = text.strip()
    if not text:
        return None
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        st.error(f"{label}: {text!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00:00); ignored.")
        return None
    return text


def _payload(text: str) -> str | None:
    """A payload filter as typed, or None (with a note) when it is not field=value."""
    problem = data.payload_filter_problem(text)
    if problem:
        st.error(f"Payload field: {problem}; ignored.")
        return None
    return text.strip() or None


filters = {
    "event_type": _choice(event_type),
    "service": _choice(service),
    "exchange": _choice(exchange),
    "queue": _choice(queue),
    "outcome": _choice(outcome),
    "routing_key": routing_key.strip(),
    "trace_id": trace_id.strip(),
    "event_id": event_id.strip(),
    "since": _time(since, "Published since"),
    "until": _time(until, "Published before"),
    "payload": _payload(payload),
}
total, _ = data.events_page(**filters, limit=0, offset=0)
pages = max(1, -(-total // _PAGE_SIZE))
number = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, value=1, step=1)
total, rows = data.events_page(**filters, limit=_PAGE_SIZE, offset=(number - 1) * _PAGE_SIZE)
first = (number - 1) * _PAGE_SIZE + 1 if total else 0
st.caption(f"{total:,} matching events · showing {first:,} to {(number - 1) * _PAGE_SIZE + len(rows):,}")
st.dataframe(rows, hide_index=True)

if not rows.empty:
    labels = {
        f"{row.event_type} · {row.producer_service} · {layout.short(row.event_id)}": row.event_id
        for row in rows.itertuples()
    }
    chosen = st.selectbox("Open an event of this page", list(labels))
    layout.chain_link(labels[chosen], label=f"Open the chain of {chosen}")
