"""Alerts: incidents first (grouped alerts, each expandable to its events), then every alert,
each linking to its event.
"""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout

_ANY = "(all)"
_SORTS = {"largest first": "size", "oldest first": "age", "latest event first": "newest"}
_EXAMPLES_SHOWN = 50

st.title("Alerts")
st.caption(layout.TIME_NOTE)
wanted = st.query_params.get("incident", "")

st.subheader("Incidents")
row = st.columns(2)
status = row[0].selectbox("Incident status", [_ANY, "open", "resolved"], key="incident_status")
order = row[1].selectbox("Sort incidents", list(_SORTS), key="incident_sort")
incidents = data.incidents(None if status == _ANY else status, _SORTS[order])
if incidents.empty:
    st.caption(
        "No incidents. Rules with `group_by` gather their alerts into incidents, one notification per "
        'group instead of one per event: group_by = ["reason", "event_type", "queue"] (docs/alerts.md).'
    )
else:
    counts = st.columns(2)
    counts[0].metric("Open incidents", f"{(incidents['status'] == 'open').sum():,}")
    counts[1].metric(
        "Events in open incidents", f"{incidents.loc[incidents['status'] == 'open', 'open_count'].sum():,}"
    )
    for incident in incidents.itertuples():
        where = incident.queue if isinstance(incident.queue, str) else "(no queue)"
        title = (
            f"{'🔴' if incident.status == 'open' else '✅'} {incident.status}: [{incident.severity}] "
            f"{incident.rule} · {incident.reason} · {incident.event_type} · {where} — "
            f"{incident.event_count:,} events, open for {incident.age_s:,.0f} s"
        )
        with st.expander(title, expanded=incident.incident_id == wanted):
            st.markdown(
                f"First seen **{layout.utc(incident.opened_at)}**, "
                f"last seen **{layout.utc(incident.last_seen_at)}**"
                + (
                    f", resolved **{layout.utc(incident.resolved_at)}**"
                    if incident.status == "resolved"
                    else ""
                )
                + f" · {incident.open_count:,} of {incident.event_count:,} events still firing"
                + f" · {incident.notifications} notification(s), delivered: {bool(incident.delivered)}"
            )
            members = data.incident_alerts(incident.incident_id)
            st.dataframe(members, hide_index=True)
            for member in members.head(_EXAMPLES_SHOWN).itertuples():
                layout.chain_link(
                    member.event_id,
                    label=f"{member.state}: {member.event_type} · {member.reason} "
                    f"({layout.short(member.event_id)})",
                )
            if len(members) > _EXAMPLES_SHOWN:
                st.caption(
                    f"Links to the first {_EXAMPLES_SHOWN} of {len(members):,} events; all are in the table."
                )

st.subheader("Every alert")
state = st.selectbox("State", [_ANY, "firing", "resolved"], key="alert_state")
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
with st.expander(f"Links to the events of the {min(len(rows), _EXAMPLES_SHOWN)} newest alerts"):
    for alert in rows.head(_EXAMPLES_SHOWN).itertuples():
        if isinstance(alert.event_id, str):
            severity = f"[{alert.severity}] " if "severity" in rows.columns else ""
            layout.chain_link(
                alert.event_id,
                label=f"{alert.state}: {severity}{alert.rule} · {alert.reason} · {alert.event_type} "
                f"({layout.short(alert.event_id)})",
            )
