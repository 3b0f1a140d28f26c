"""Lag: time in queue vs processing; time to consistency per event type; outliers."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout

st.title("Lag")
if not data.summary()["events"]:
    layout.empty_state()
    st.stop()

lag = data.lag()
queues = lag["queues"]
st.subheader("Time in queue vs processing, per queue")
if not queues.empty:
    st.bar_chart(
        queues,
        x="queue",
        y=["wait_p95_ms", "processing_p95_ms"],
        horizontal=True,
        stack=False,
        height=max(160, 40 * len(queues)),
    )
st.dataframe(queues, hide_index=True)

st.subheader("Time to consistency (publish → last subscriber done), per event type")
st.dataframe(lag["consistency"], hide_index=True)

st.subheader("Eventual-consistency outliers (above their type's p99)")
outliers = lag["outliers"]
if outliers.empty:
    st.caption("None.")
else:
    st.dataframe(outliers, hide_index=True)
    worst = outliers.iloc[0]
    layout.chain_link(worst["event_id"], label=f"Open the slowest: {worst['event_type']}")
