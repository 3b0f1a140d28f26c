"""Overview: is the event system healthy? Rates, orphans, slowest flows, collector health."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from eventscope.dashboard import data, layout, reasons

st.title("Overview")
totals = data.summary()
if not totals["events"]:
    layout.empty_state()
    st.stop()

counts = data.orphan_counts()
orphaned = sum(counts.values())
columns = st.columns(6)
columns[0].metric("Events", f"{totals['events']:,}")
columns[1].metric("Deliveries", f"{totals['deliveries']:,}")
columns[2].metric("Orphans", f"{orphaned:,}")
columns[3].metric("Producing services", f"{totals['producers']:,}")
columns[4].metric("Consuming services", f"{totals['consumers']:,}")
columns[5].metric("Alerts firing", f"{totals['alerts_firing']:,}")
st.caption(
    f"Events published from {layout.utc(totals['first_at'])} to {layout.utc(totals['last_at'])}. "
    f"{layout.TIME_NOTE}"
)


def _orphans_chart(
    rates: pd.DataFrame, *, bucket_s: float, grace_s: float, now: pd.Timestamp, last_event: pd.Timestamp
) -> tuple[alt.LayerChart, pd.Timestamp | None]:
    """Orphans per bucket and reason (stacked), with the buckets still inside the grace shaded;
    and where the pending band starts (None: every bucket has its verdicts).
    """
    bars = (
        alt.Chart(rates.assign(end=rates["bucket"] + pd.Timedelta(seconds=bucket_s)))
        .mark_bar()
        .encode(
            x=layout.time_axis("bucket"),
            x2="end:T",
            y=alt.Y("sum(orphans):Q", title="orphans"),
            color=alt.Color(
                "reason:N", legend=alt.Legend(title="reason", orient="bottom", labelLimit=0, columns=4)
            ),
            tooltip=["bucket:T", "reason:N", "orphans:Q"],
        )
    )
    start = now - pd.Timedelta(seconds=grace_s)
    # up to the newest event, not the newest orphan: pending buckets have no orphans yet
    last = max(rates["bucket"].max() + pd.Timedelta(seconds=bucket_s), last_event)
    if start >= last:
        return alt.layer(bars).properties(height=260), None
    # the same fields as the bars: one shared time axis
    band = pd.DataFrame({"bucket": [max(start, rates["bucket"].min())], "end": [last], "label": ["pending"]})
    shade = (
        alt.Chart(band)
        .mark_rect(color="#94a3b8", opacity=0.25)
        .encode(x=layout.time_axis("bucket"), x2="end:T", tooltip=["label:N"])
    )
    text = (
        alt.Chart(band)
        .mark_text(align="left", baseline="top", dx=3, dy=3, color="#475569")
        .encode(x=layout.time_axis("bucket"), y=alt.value(0), text="label:N")
    )
    return alt.layer(bars, shade, text).properties(height=260), band["bucket"].iloc[0]


bucket_s, rates = data.rates()
_, orphan_rates = data.orphans_over_time()
left, right = st.columns(2)
with left:
    st.subheader("Events/s and deliveries/s")
    if not rates.empty:
        series = rates.melt("bucket", var_name="rate", value_name="per_s")
        st.altair_chart(
            alt.Chart(series)
            .mark_line(point=True)
            .encode(
                x=layout.time_axis("bucket"),
                y=alt.Y("per_s:Q", title="per second"),
                color=alt.Color("rate:N", legend=alt.Legend(orient="bottom", labelLimit=0)),
            )
            .properties(height=260)
        )
    st.caption(f"Per {bucket_s:g} s bucket, UTC.")
with right:
    st.subheader("Orphans by reason over time")
    if orphan_rates.empty:
        st.success("No orphans.")
    else:
        grace_s, now = data.grace()
        chart, pending = _orphans_chart(
            orphan_rates,
            bucket_s=bucket_s,
            grace_s=grace_s,
            now=now,
            last_event=pd.Timestamp(totals["last_at"]).tz_convert("UTC"),
        )
        st.altair_chart(chart)
        st.caption(
            f"Per {bucket_s:g} s bucket, UTC. An event is judged once it is {grace_s:g} s old (the grace): "
            + (
                f"the shaded 'pending' band (after {layout.utc(pending)}) is still waiting for its "
                "verdicts, so it looks healthier than it may turn out."
                if pending is not None
                else "every bucket shown has its verdicts."
            )
        )

st.subheader("Orphans by reason")
if not counts:
    st.success("Every event reached every queue it was routed to and was acknowledged.")
for reason, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
    known = reasons.REASONS.get(reason)
    title = known.title if known else reason
    st.page_link(
        layout.ORPHANS_PAGE,
        label=f"{title}: {n:,} — {known.meaning if known else ''}",
        query_params={"reason": reason},
        icon=":material/report:",
    )

left, right = st.columns(2)
with left:
    st.subheader("Most orphaned event types and queues")
    st.dataframe(data.top_orphaned(), hide_index=True)
with right:
    st.subheader("Slowest time to consistency")
    st.dataframe(
        data.slowest(),
        hide_index=True,
        column_config={"consistent_after_ms": st.column_config.NumberColumn("publish → last settled (ms)")},
    )

st.subheader("Collector health")
health = data.health()
if health is None:
    st.caption(
        "Post-mortem on a database file: the collector's own counters (received, rejected, dropped) "
        "are shown when the dashboard runs against a collector (`eventscope dashboard --api URL`)."
    )
else:
    columns = st.columns(5)
    columns[0].metric("Spans received", f"{health['spans_received']:,.0f}")
    columns[1].metric("Spans rejected", f"{health['spans_rejected']:,.0f}")
    columns[2].metric("Requests refused (503)", f"{health['requests_refused']:,.0f}")
    columns[3].metric("Lineage dropped", f"{health['dropped']:,.0f}")
    columns[4].metric("Write queue", f"{health.get('write_queue_depth', 0)}")
    st.caption(f"Collector status: {health.get('status', '?')}")
