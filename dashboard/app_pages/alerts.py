"""Alerts: firing and resolved, each linking to its event."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout

_ANY = "(all)"

st.title("Alerts")
state = st.selectbox("State", [_ANY, "firing", "resolved"])
rows = data.alerts(None if state == _ANY else state)
if rows.empty:
    st.success("No alerts." if state == _ANY else f"No {state} alerts.")
    st.caption(
        "Alert rules live in eventscope.toml: `eventscope collect --config eventscope.toml` "
        "(docs/alerts.md). Each alert links to its event's chain here."
    )
    st.stop()

row = st.columns(2)
row[0].metric("Firing", f"{(rows['state'] == 'firing').sum():,}")
row[1].metric("Resolved", f"{(rows['state'] == 'resolved').sum():,}")
st.dataframe(rows, hide_index=True)
for alert in rows.itertuples():
    if isinstance(alert.event_id, str):
        severity = f"[{alert.severity}] " if "severity" in rows.columns else ""
        layout.chain_link(
            alert.event_id,
            label=f"{alert.state}: {severity}{alert.rule} · {alert.reason} · {alert.event_type} "
            f"({layout.short(alert.event_id)})",
        )
