"""Layout pieces several pages share: the empty state and links to an event's chain."""

from __future__ import annotations

import streamlit as st

__all__ = ["CHAIN_PAGE", "EVENTS_PAGE", "ORPHANS_PAGE", "chain_link", "empty_state", "short"]

CHAIN_PAGE = "app_pages/chain.py"
ORPHANS_PAGE = "app_pages/orphans.py"
EVENTS_PAGE = "app_pages/events.py"

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
