"""Overview: is the event system healthy? Rates, orphans, slowest flows, collector health."""

from __future__ import annotations

import altair as alt
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
st.caption(f"Events published from {totals['first_at']} to {totals['last_at']}.")

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
            .encode(x=alt.X("bucket:T", title=None), y=alt.Y("per_s:Q", title="per second"), color="rate:N")
            .properties(height=260)
        )
    st.caption(f"Per {bucket_s:g} s bucket.")
with right:
    st.subheader("Orphans by reason over time")
    if orphan_rates.empty:
        st.success("No orphans.")
    else:
        st.bar_chart(orphan_rates, x="bucket", y="orphans", color="reason", height=260)

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
