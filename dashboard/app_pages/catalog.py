"""Catalog: per event type, what the AsyncAPI contracts declare beside what really flows."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout

_ALL = "(all)"
_STATUS = {"match": "✅ match", "missing": "⚠️ missing", "undeclared": "❓ undeclared"}

st.title("Catalog")
entries = data.catalog()
if not entries:
    layout.empty_state()
    st.stop()
declared = [entry for entry in entries if entry["declared"]]
if not declared:
    st.info(
        "No contract loaded: list your AsyncAPI documents in eventscope.toml "
        '(`[contracts] asyncapi = ["specs/*.yaml"]`) and start the collector with `--config`, or '
        "write them from this traffic with `eventscope contracts export --out specs/`."
    )

total = sum(sum(entry["violations"].values()) for entry in entries)
columns = st.columns(3)
columns[0].metric("Event types declared", f"{len(declared):,}")
columns[1].metric("Event types observed", f"{sum(1 for e in entries if e['events']):,}")
columns[2].metric("Contract violations", f"{total:,}")

for entry in entries:
    with st.container(border=True):
        state = "declared" if entry["declared"] else "undeclared"
        last = entry["last_seen"] or "never"
        st.markdown(
            f"**{entry['event_type']}** · {state} · {entry['events']:,} events · "
            f"{entry['rate_per_s']:.2f}/s · last seen {last}"
        )
        left, right = st.columns(2)
        for column, label in ((left, "producers"), (right, "consumers")):
            rows = [{"service": p["service"], "status": _STATUS[p["status"]]} for p in entry[label]]
            column.caption(label.capitalize())
            if rows:
                column.dataframe(rows, hide_index=True)
            else:
                column.markdown("none declared or seen")
        if entry["violations"]:
            st.caption(
                "Violations: " + ", ".join(f"{kind} {n:,}" for kind, n in sorted(entry["violations"].items()))
            )

st.subheader("Violations")
kinds = sorted({kind for entry in entries for kind in entry["violations"]})
kind = st.selectbox("Kind", [_ALL, *kinds])
rows = data.contract_violations(kind=None if kind == _ALL else kind)
if rows.empty:
    st.success("No contract violations.")
    st.stop()
st.dataframe(rows, hide_index=True)
labels = {
    f"{row.kind} · {row.event_type} · {row.service} · {layout.short(row.event_id)}": row.event_id
    for row in rows.itertuples()
}
chosen = st.selectbox("Example", list(labels))
if chosen:
    event_id = labels[chosen]
    layout.chain_link(event_id, label=f"Open its chain: {chosen}")
    event = data.event(event_id) or {}
    payload = event.get("payload")
    if payload and payload.get("body"):
        st.caption("Captured payload, redacted as payload capture stores it")
        st.code(payload["body"], language="json" if payload.get("is_json") else None)
    else:
        st.caption("No payload captured for this event (payload capture is off, or the body was not kept).")
