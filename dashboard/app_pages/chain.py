"""Event / chain: one event's whole story — causes, effects, queues, waits and outcomes."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from eventscope.dashboard import data, layout, redrive, sequence

st.title("Event / chain")
event_id = st.text_input("Event id", value=st.query_params.get("event", ""), key="event_id").strip()
if not event_id:
    st.info("Give an event id, or open one from the Events, Orphans or Alerts pages.")
    st.stop()
st.query_params["event"] = event_id

detail = data.chain(event_id)
hops = detail["hops"]
root = hops[hops["depth"] == 0]
if root.empty or root["published_at"].isna().all():
    st.warning(f"No event {event_id!r} is stored.")
    st.stop()

facts = root.iloc[0]
own_orphans = detail["orphans"]
if not own_orphans.empty:
    own_orphans = own_orphans[own_orphans["event_id"] == event_id]
st.subheader(f"{facts['event_type']} · published by {facts['producer_service']}")
row = st.columns([3, 3, 1, 1])
# identifiers are never cut: plain text wraps where a metric would end in "…"
row[0].markdown(f"Exchange  \n**{facts['exchange'] or '(default)'}**")
row[1].markdown(f"Routing key  \n**{facts['routing_key'] or '(empty)'}**")
row[2].metric("Deliveries", int(root["queue"].notna().sum()))
row[3].metric("Orphan rows", len(own_orphans))
st.caption(
    f"Published {layout.utc(facts['published_at'])} · trace {facts['trace_id']} · correlation "
    f"{facts['correlation_id']} · source {facts['source']} · {layout.TIME_NOTE}"
)
for orphan in own_orphans.itertuples():
    queue = orphan.queue if isinstance(orphan.queue, str) else "(no queue)"
    st.error(f"Orphan: {orphan.reason} at {queue} ({orphan.age_s:.0f} s old)")

redrive.event_section(event_id, orphan=not own_orphans.empty, facts=facts)

payloads = detail["payloads"]
own_payload = payloads[payloads["event_id"] == event_id] if not payloads.empty else payloads
if not own_payload.empty:
    captured = own_payload.iloc[0]
    notes = [f"{int(captured['size']):,} bytes published", f"{captured['content_type'] or 'no content type'}"]
    if captured["redacted"]:
        notes.append(f"{int(captured['redacted'])} field(s) redacted")
    if captured["truncated"]:
        notes.append("cut to the capture limit")
    with st.expander("Payload (" + " · ".join(notes) + ")", expanded=True):
        if not isinstance(captured["body"], str):
            st.caption(
                "Not kept as text: binary, encoded, too large to parse, or not redactable field by "
                "field (see payloads in docs/sql.md)."
            )
        elif captured["is_json"]:
            st.json(captured["body"])
        else:
            st.code(captured["body"], language=None)

causes = data.upstream(event_id)
if not causes.empty:
    st.markdown("**Caused by** (nearest first)")
    for cause in causes.itertuples():
        layout.chain_link(
            cause.event_id, label=f"{'↑' * int(cause.depth)} {cause.event_type} by {cause.producer_service}"
        )


def _quote(text: object) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot(hops: pd.DataFrame) -> str:
    lines = ["digraph chain {", "rankdir=LR;", 'node [fontname="sans-serif" fontsize=10];']
    events = hops.drop_duplicates("event_id")
    for hop in events.itertuples():
        root = ' style=filled fillcolor="#fde68a"' if hop.depth == 0 else ""
        lines.append(f"{_quote(hop.event_id)} [shape=box label={_quote(hop.event_type)}{root}];")
        producer = f"svc:{hop.producer_service}"
        lines.append(f"{_quote(producer)} [shape=ellipse label={_quote(hop.producer_service)}];")
        lines.append(f"{_quote(producer)} -> {_quote(hop.event_id)} [label=publish];")
    for hop in hops.dropna(subset=["queue"]).itertuples():
        consumer = f"svc:{hop.consumer_service}"
        wait = "" if pd.isna(hop.wait_ms) else f"\n{hop.wait_ms:.1f} ms in queue"
        bad = hop.outcome != "ack"
        colour = ' color="#dc2626" fontcolor="#dc2626"' if bad else ""
        outcome = hop.outcome if isinstance(hop.outcome, str) else "unsettled"
        label = f"{hop.queue}{wait}\n{outcome}"
        lines.append(f"{_quote(consumer)} [shape=ellipse label={_quote(hop.consumer_service)}];")
        lines.append(f"{_quote(hop.event_id)} -> {_quote(consumer)} [label={_quote(label)}{colour}];")
    orphans = detail["orphans"]
    for orphan in orphans.itertuples():
        node = f"orphan:{orphan.event_id}:{orphan.queue}"
        lines.append(
            f'{_quote(node)} [shape=note color="#dc2626" label={_quote(f"{orphan.reason}: {orphan.queue}")}];'
        )
        lines.append(f'{_quote(orphan.event_id)} -> {_quote(node)} [style=dashed color="#dc2626"];')
    lines.append("}")
    return "\n".join(lines)


st.subheader("Conversation: who talked to whom, in order")
sequence.render(data.sequence(event_id=event_id))
conversation = facts["correlation_id"] if isinstance(facts["correlation_id"], str) else event_id
st.page_link(
    layout.CONVERSATION_PAGE,
    label="Open the whole conversation",
    query_params={"correlation": conversation},
    icon=":material/forum:",
)

st.subheader(f"Downstream: {hops['event_id'].nunique()} events")
st.graphviz_chart(_dot(hops))

st.subheader("Waterfall: publish → time in queue → processing")
timed = hops.dropna(subset=["queue"]).copy()
if timed.empty:
    st.caption("No delivery in this chain: nothing consumed these events.")
else:
    timed["step"] = timed["event_type"] + " → " + timed["queue"]
    timed["settled_at"] = timed["settled_at"].fillna(timed["received_at"])
    waits = timed.assign(phase="in queue", start=timed["published_at"], end=timed["received_at"])
    work = timed.assign(phase="processing", start=timed["received_at"], end=timed["settled_at"])
    bars = pd.concat([waits, work])[["step", "phase", "start", "end", "outcome", "wait_ms", "processing_ms"]]
    order = list(dict.fromkeys(timed.sort_values("published_at")["step"]))
    chart = (
        alt.Chart(bars)
        .mark_bar()
        .encode(
            x=layout.time_axis("start"),
            x2="end:T",
            y=alt.Y("step:N", sort=order, title=None, axis=alt.Axis(labelLimit=420, labelOverlap=False)),
            color=alt.Color("phase:N", scale=alt.Scale(domain=["in queue", "processing"])),
            tooltip=["step", "phase", "outcome", "wait_ms", "processing_ms"],
        )
        .properties(height=max(120, 36 * len(order)))
    )
    st.altair_chart(chart)

st.subheader("Deliveries")
st.dataframe(
    hops.dropna(subset=["queue"])[
        [
            "event_type",
            "queue",
            "consumer_service",
            "outcome",
            "redelivered",
            "error",
            "wait_ms",
            "processing_ms",
            "received_at",
            "event_id",
        ]
    ],
    hide_index=True,
)
if not detail["dead_letters"].empty:
    st.subheader("Dead-lettered (x-death)")
    st.dataframe(detail["dead_letters"], hide_index=True)
if not detail["trace_links"].empty:
    st.subheader("Crosses traces (span links)")
    st.dataframe(detail["trace_links"], hide_index=True)
effects = hops[hops["depth"] > 0].drop_duplicates("event_id")
if not effects.empty:
    st.markdown("**Open a downstream event**")
    for effect in effects.itertuples():
        layout.chain_link(effect.event_id, label=f"{'→' * int(effect.depth)} {effect.event_type}")
