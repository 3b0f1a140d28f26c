"""eventscope dashboard: ``streamlit run dashboard/app.py`` (``eventscope dashboard`` does it).

The entry only sets the page up, lists the pages (``app_pages/``) and shows where the data
comes from; pages lay out what :mod:`eventscope.dashboard.data` answers.
"""

from __future__ import annotations

import time

import streamlit as st

from eventscope.dashboard import data, layout

_REFRESH_S = 10

st.set_page_config(page_title="eventscope", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/events.py", title="Events", icon=":material/list:"),
    # /chain?event=ID and /alerts?incident=ID: the links notifications carry (tracer/alerts/), keep them
    st.Page("app_pages/chain.py", title="Event / chain", icon=":material/account_tree:", url_path="chain"),
    st.Page("app_pages/orphans.py", title="Orphans", icon=":material/report:"),
    st.Page("app_pages/topology.py", title="Topology", icon=":material/lan:"),
    st.Page("app_pages/lag.py", title="Lag", icon=":material/timer:"),
    st.Page("app_pages/workflows.py", title="Workflows", icon=":material/conversion_path:"),
    st.Page(
        "app_pages/conversation.py", title="Conversation", icon=":material/forum:", url_path="conversation"
    ),
    st.Page("app_pages/sql.py", title="SQL", icon=":material/terminal:"),
    st.Page("app_pages/alerts.py", title="Alerts", icon=":material/notifications:", url_path="alerts"),
    st.Page("app_pages/catalog.py", title="Catalog", icon=":material/menu_book:"),
]

page = st.navigation(PAGES)
st.session_state["_full_run_at"] = time.monotonic()

with st.sidebar:
    st.caption(f"Data: {data.describe_source()}")
    st.caption(layout.TIME_NOTE)
    live = data.is_live() and st.toggle("Refresh every 10 s", value=True, key="auto_refresh")

if live:

    @st.fragment(run_every=_REFRESH_S)
    def _refresh() -> None:
        if time.monotonic() - st.session_state.get("_full_run_at", 0.0) >= _REFRESH_S - 0.5:
            st.rerun()

    _refresh()

try:
    page.run()
except data.SourceError as exc:
    st.error(f"eventscope cannot read its data: {exc}")
