"""Workflows: flows grouped by correlation id — complete, in progress, or stuck and where."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout

_ANY = "(any)"

st.title("Workflows")
if not data.summary()["events"]:
    layout.empty_state()
    st.stop()

left, right = st.columns(2)
stuck_after = left.number_input(
    "In progress until no new event for (s)", min_value=0, value=60, step=10, key="stuck_after_s"
)
status = right.selectbox("Status", [_ANY, "stuck", "in progress", "complete"], key="status")
flows, stuck, shown = data.workflows(stuck_after, None if status == _ANY else status)

row = st.columns(3)
row[0].metric("Flows", f"{flows:,}")
row[1].metric("Stuck", f"{stuck:,}")
row[2].metric("Shown", f"{len(shown):,}")
st.caption(
    "A flow is stuck when one of its events is an orphan, or a delivery is still not settled and nothing "
    "happened for that long; `stuck_at` names the step."
)
st.dataframe(shown, hide_index=True)
stuck_rows = shown[shown["status"] == "stuck"] if not shown.empty else shown
if not stuck_rows.empty:
    labels = {
        f"{row.first_event_type} → {row.stuck_at} · {layout.short(row.flow_id)}": row.flow_id
        for row in stuck_rows.itertuples()
    }
    chosen = st.selectbox("Open a stuck flow", list(labels))
    layout.chain_link(labels[chosen], label=f"Open the flow's chain: {chosen}")
