"""Lag: time in queue vs processing; time to consistency per event type; outliers."""

from __future__ import annotations

import altair as alt
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
    bars = queues.assign(
        consumer=queues["queue"] + " · " + queues["consumer_service"].fillna("(uninstrumented consumer)")
    ).melt(
        id_vars=["consumer", "queue", "consumer_service", "deliveries"],
        value_vars=["wait_p95_ms", "processing_p95_ms"],
        var_name="phase",
        value_name="ms",
    )
    bars["phase"] = bars["phase"].map({"wait_p95_ms": "time in queue", "processing_p95_ms": "processing"})
    st.altair_chart(
        alt.Chart(bars)
        .mark_bar()
        .encode(
            y=alt.Y(
                "consumer:N",
                title=None,  # in the chart's title: a rotated axis title collides with long labels
                sort=list(dict.fromkeys(bars["consumer"])),
                axis=alt.Axis(labelLimit=0, labelOverlap=False),
            ),
            yOffset="phase:N",
            x=alt.X("ms:Q", title="p95 (ms)"),
            color=alt.Color("phase:N", title=None, legend=alt.Legend(orient="top", labelLimit=0)),
            tooltip=["queue:N", "consumer_service:N", "deliveries:Q", "phase:N", "ms:Q"],
        )
        # the legend counts in the height Streamlit fits the chart into
        .properties(
            height=120 + 48 * len(queues),
            title=alt.TitleParams("queue · consumer", anchor="start", fontSize=12, fontWeight="normal"),
        )
    )
    st.caption(
        "One bar pair per queue and consumer service: members of a consumer group (e.g. payments-1 and "
        "payments-2 on one queue) each get their labelled bars."
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
