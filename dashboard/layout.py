"""Layout pieces several pages share: the empty state, links to an event's chain, and the one
time convention (UTC, 24-hour clock) of every page, its charts included.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

__all__ = [
    "ALERTS_PAGE",
    "CHAIN_PAGE",
    "CONVERSATION_PAGE",
    "EVENTS_PAGE",
    "ORPHANS_PAGE",
    "TIME_NOTE",
    "chain_link",
    "empty_state",
    "short",
    "time_axis",
    "utc",
]

CHAIN_PAGE = "app_pages/chain.py"
ORPHANS_PAGE = "app_pages/orphans.py"
EVENTS_PAGE = "app_pages/events.py"
ALERTS_PAGE = "app_pages/alerts.py"
CONVERSATION_PAGE = "app_pages/conversation.py"
TIME_NOTE = "All times are UTC, 24-hour clock."
_TIME_FORMAT = "%H:%M:%S"

_ADAPTER_SNIPPET = """\
from eventscope.tracer import setup
from eventscope.adapters.pika import instrument_channel

setup(service="orders")                       # OTLP/HTTP to the collector on 127.0.0.1:4318
channel = instrument_channel(connection.channel())   # the one line around your pika channel"""


def empty_state() -> None:
    """What a new user sees before any event is stored: how to send some."""
    st.info("No events yet. Send some, and this page fills in.")
    st.markdown("**See it work in one command** — a small shop with healthy flows and every kind of orphan:")
    st.code("eventscope demo", language="bash")
    st.markdown("**Or trace your own services** — run a collector, then wrap your pika channels:")
    st.code("eventscope collect --db eventscope.duckdb", language="bash")
    st.code(_ADAPTER_SNIPPET, language="python")
    st.caption(
        "Then open this dashboard against the collector: `eventscope dashboard --api http://127.0.0.1:4318`."
    )


def short(event_id: str | None) -> str:
    return "?" if not event_id else (event_id if len(event_id) <= 13 else f"{event_id[:8]}…{event_id[-4:]}")


def chain_link(event_id: str, label: str | None = None) -> None:
    st.page_link(CHAIN_PAGE, label=label or f"Chain of {short(event_id)}", query_params={"event": event_id})


def utc(value: Any) -> str:
    """A time as the dashboard writes it everywhere: ``2026-11-29 22:05:03 UTC``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "?"
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S UTC")


def time_axis(field: str, *, title: str = "time (UTC)", **options: Any) -> alt.X:
    """An x axis of times in UTC on a 24-hour clock (Vega's default is local time, 12-hour)."""
    return alt.X(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        # labelExpr, not format + formatType "utc": Streamlit's Vega ignores that pair's format
        axis=alt.Axis(
            labelExpr=f"utcFormat(datum.value, '{_TIME_FORMAT}')",
            labelAngle=0,
            labelOverlap=True,
            tickMinStep=1000,  # whole seconds: the labels have no fractions
        ),
        **options,
    )
