"""The sequence diagram of a conversation, drawn with Vega-Lite (Altair, which Streamlit ships
and renders offline): lifelines per service, one arrow per message in publish order.

Pages call :func:`render` with the answer of :func:`eventscope.dashboard.data.sequence`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

__all__ = ["chart", "frames", "render"]

_ROW_PX = 30
_HEADER_PX = 60
_OK = "#334155"
_FAILED = "#dc2626"
_COMPENSATION = "#b45309"


def frames(answer: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lifelines (with their x position) and the messages (with their x, x2 and label)."""
    lifelines = pd.DataFrame(answer["lifelines"], columns=["lifeline", "members", "services"])
    lifelines["x"] = range(len(lifelines))
    lifelines["title"] = [
        f"{row.lifeline} ({row.members} members)" if row.members > 1 else row.lifeline
        for row in lifelines.itertuples()
    ]
    position = dict(zip(lifelines["lifeline"], lifelines["x"], strict=True))
    messages = pd.DataFrame(answer["messages"])
    if messages.empty:
        return lifelines, messages
    messages["x"] = messages["source"].map(position)
    messages["x2"] = messages["target"].map(position)
    messages["mid"] = (messages["x"] + messages["x2"]) / 2
    messages["kind"] = [
        "failed" if row.failed else "compensation" if row.compensation else "ok"
        for row in messages.itertuples()
    ]
    messages["label"] = [_label(row) for row in messages.itertuples()]
    messages["head"] = [
        "triangle-right" if row.x2 >= row.x else "triangle-left" for row in messages.itertuples()
    ]
    return lifelines, messages


def _label(row: object) -> str:
    parts = [f"{row.seq}. {row.event_type}" + (f" via {row.queue}" if isinstance(row.queue, str) else "")]
    if pd.notna(row.wait_ms):
        parts.append(f"{row.wait_ms:,.0f} ms in queue")
    if isinstance(row.orphan, str):
        parts.append(f"✗ {row.orphan}")
    elif isinstance(row.outcome, str) and row.outcome != "ack":
        parts.append(f"✗ {row.outcome}")
    if row.compensation:
        parts.append("↺ compensation")
    return " · ".join(parts)


def chart(answer: dict) -> alt.LayerChart:
    """Lifelines as vertical rules under their names; messages as arrows, top to bottom."""
    lifelines, messages = frames(answer)
    rows = max(1, len(messages))
    y_scale = alt.Scale(domain=[-1.2, rows + 0.5], reverse=True)
    x_scale = alt.Scale(domain=[-0.5, max(0.5, len(lifelines) - 0.5)])
    x = alt.X("x:Q", scale=x_scale, axis=None)
    lines = (
        alt.Chart(lifelines.assign(top=-0.6, bottom=rows + 0.5))
        .mark_rule(color="#94a3b8", strokeDash=[4, 4])
        .encode(x=x, y=alt.Y("top:Q", scale=y_scale, axis=None), y2="bottom:Q")
    )
    heads = (
        alt.Chart(lifelines.assign(top=-0.9))
        .mark_text(fontWeight="bold", fontSize=13, baseline="bottom", limit=220)
        .encode(x=x, y=alt.Y("top:Q", scale=y_scale, axis=None), text="title:N", tooltip=["services:N"])
    )
    layers: list[alt.Chart] = [lines, heads]
    if not messages.empty:
        colour = alt.Color(
            "kind:N",
            scale=alt.Scale(domain=["ok", "failed", "compensation"], range=[_OK, _FAILED, _COMPENSATION]),
            legend=None,  # the caption says what the colours mean: a legend would eat the height
        )
        tooltip = [
            "seq:Q",
            "event_type:N",
            "producer_service:N",
            "queue:N",
            "consumer_service:N",
            "wait_ms:Q",
            "processing_ms:Q",
            "outcome:N",
            "orphan:N",
            "compensation:N",
            "published_at:N",
            "event_id:N",
        ]
        base = alt.Chart(messages)
        y = alt.Y("seq:Q", scale=y_scale, axis=None)
        layers += [
            base.mark_rule(strokeWidth=2).encode(
                x=x,
                x2="x2:Q",
                y=y,
                color=colour,
                strokeDash=alt.condition("datum.compensation", alt.value([6, 3]), alt.value([1, 0])),
                tooltip=tooltip,
            ),
            base.mark_point(filled=True, size=90, opacity=1).encode(
                x=alt.X("x2:Q", scale=x_scale, axis=None),
                y=y,
                shape=alt.Shape("head:N", scale=None, legend=None),
                color=colour,
                tooltip=tooltip,
            ),
            base.mark_text(dy=-8, fontSize=11, baseline="bottom", limit=420).encode(
                x=alt.X("mid:Q", scale=x_scale, axis=None), y=y, text="label:N", color=colour, tooltip=tooltip
            ),
        ]
    return alt.layer(*layers).properties(height=_HEADER_PX + _ROW_PX * rows)


def render(answer: dict) -> None:
    """The diagram, what it shows of how many, and how to read it (or why there is none)."""
    if not answer["messages"]:
        st.caption("No messages in this conversation yet.")
        return
    shown, total = len(answer["messages"]), answer["total"]
    members = ", ".join(
        f"{line['lifeline']} = {' + '.join(line['services'])}"
        for line in answer["lifelines"]
        if line["members"] > 1
    )
    scope = f"first {shown} of {total:,} messages" if total > shown else f"{total:,} messages"
    st.caption(
        f"Conversation {answer['correlation_id']}: {scope}, in publish order (top to bottom). "
        "Red: failed or orphaned; amber and dashed: a compensation step. "
        + (f"Consumer groups folded into one lifeline: {members}." if members else "")
    )
    st.altair_chart(chart(answer), width="stretch")
