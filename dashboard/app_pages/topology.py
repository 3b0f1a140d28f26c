"""Topology: producers → exchanges → queues → consumer services, from observed traffic."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data, layout

st.title("Topology")
if not data.summary()["events"]:
    layout.empty_state()
    st.stop()

graph = data.topology()
producers, routes = graph["producers"], graph["routes"]


def _quote(text: object) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


lines = ["digraph topology {", "rankdir=LR;", 'node [fontname="sans-serif" fontsize=10];']
for edge in producers.itertuples():
    exchange = f"x:{edge.exchange}"
    lines.append(f"{_quote('p:' + str(edge.producer))} [shape=ellipse label={_quote(edge.producer)}];")
    lines.append(f"{_quote(exchange)} [shape=diamond label={_quote(edge.exchange or '(default)')}];")
    label = f"{edge.events:,} events\n{edge.events_per_s:.1f}/s"
    lines.append(f"{_quote('p:' + str(edge.producer))} -> {_quote(exchange)} [label={_quote(label)}];")
routed: set[tuple[str, str]] = set()
for edge in routes.itertuples():
    exchange, queue, consumer = f"x:{edge.exchange}", f"q:{edge.queue}", f"c:{edge.consumer}"
    lines.append(f"{_quote(queue)} [shape=box label={_quote(edge.queue)}];")
    lines.append(f"{_quote(consumer)} [shape=ellipse label={_quote(edge.consumer)}];")
    if (exchange, queue) not in routed:
        routed.add((exchange, queue))
        lines.append(f"{_quote(exchange)} -> {_quote(queue)};")
    label = f"{edge.deliveries:,} · {edge.deliveries_per_s:.1f}/s\np50 wait {edge.wait_p50_ms:.1f} ms"
    colour = ""
    if edge.errors:
        label += f"\n{edge.errors:,} not acked"
        colour = ' color="#dc2626" fontcolor="#dc2626"'
    lines.append(f"{_quote(queue)} -> {_quote(consumer)} [label={_quote(label)}{colour}];")
lines.append("}")
st.graphviz_chart("\n".join(lines))

left, right = st.columns(2)
with left:
    st.subheader("Producers → exchanges")
    st.dataframe(producers, hide_index=True)
with right:
    st.subheader("Exchanges → queues → consumers")
    st.dataframe(routes, hide_index=True)

st.subheader("Consumer groups")
st.caption(
    "Services consuming from one queue compete for its messages; share = their part of the deliveries."
)
st.dataframe(graph["groups"], hide_index=True)

st.subheader("Choreography or orchestration")
st.caption(
    "A service that sends events to two or more services and hears back from them is an orchestrator; "
    "services that only react to events choreograph."
)
collaboration = graph["collaboration"]
for row in collaboration[collaboration["role"] == "orchestrator"].itertuples():
    st.markdown(
        f"**{row.service}** orchestrates: sends to {row.sends_to} services, "
        f"{row.replies_from} of which reply."
    )
st.dataframe(collaboration, hide_index=True)
