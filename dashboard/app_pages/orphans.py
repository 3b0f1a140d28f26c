"""Orphans: events that did not end well, why, and the likely fix; fan-out completeness."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout, reasons, redrive

_ALL = "(all)"

st.title("Orphans")
if not data.summary()["events"]:
    layout.empty_state()
    st.stop()

counts = data.orphan_counts()
if not counts:
    st.success("No orphans: every event reached the queues it was routed to and was acknowledged.")
else:
    columns = st.columns(len(counts))
    for column, (reason, n) in zip(columns, sorted(counts.items()), strict=True):
        column.metric(reasons.REASONS[reason].title if reason in reasons.REASONS else reason, f"{n:,}")

    choices = [_ALL, *sorted(counts)]
    wanted = st.query_params.get("reason", _ALL)
    reason = st.selectbox("Reason", choices, index=choices.index(wanted) if wanted in choices else 0)
    if reason == _ALL:
        st.query_params.pop("reason", None)
    else:
        st.query_params["reason"] = reason
    rows = data.orphans(reason=None if reason == _ALL else reason)

    groups = data.orphan_groups()
    if reason != _ALL:
        groups = groups[groups["reason"] == reason]
    for group in groups.itertuples():
        why, exchange, routing_key = group.reason, group.exchange, group.routing_key
        queue = group.queue if isinstance(group.queue, str) else None
        known = reasons.REASONS.get(why)
        with st.container(border=True):
            st.markdown(f"**{known.title if known else why}** · {group.n:,} of {group.event_type}")
            st.markdown(
                "Likely cause: "
                f"{reasons.diagnose(why, exchange=exchange, routing_key=routing_key, queue=queue)}."
            )
            if known:
                st.caption(f"{known.meaning} Fix: {known.fix}")

    st.subheader(f"Newest {len(rows):,} orphan rows")
    st.dataframe(rows, hide_index=True)
    labels = {
        f"{row.reason} · {row.event_type} · {row.queue if isinstance(row.queue, str) else '(no queue)'}"
        f" · {layout.short(row.event_id)}": row.event_id
        for row in rows.itertuples()
    }
    chosen = st.selectbox("Open an orphan", list(labels))
    if chosen:
        layout.chain_link(labels[chosen], label=f"Open its chain: {chosen}")

redrive.orphans_section()

st.subheader("Fan-out completeness")
st.caption(
    "Per event type and queue it was seen in: how many of the type's events were delivered there, "
    "acknowledged, failed, dead-lettered, or never arrived (missing)."
)
st.dataframe(data.fanout(), hide_index=True)
