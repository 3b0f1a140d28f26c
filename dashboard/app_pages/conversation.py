"""Conversation: every message of one correlation id as a sequence diagram."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from eventscope.dashboard import data, layout, sequence

st.title("Conversation")
correlation = st.text_input(
    "Correlation id (the id of the conversation's first event)",
    value=st.query_params.get("correlation", ""),
    key="correlation_id",
).strip()
if not correlation:
    st.info("Give a correlation id, or open a conversation from an event's page.")
    st.stop()
st.query_params["correlation"] = correlation

answer = data.sequence(correlation_id=correlation)
if not answer["messages"]:
    st.warning(f"No event of conversation {correlation!r} is stored.")
    st.stop()
sequence.render(answer)

st.subheader("Messages")
messages = pd.DataFrame(answer["messages"])
st.dataframe(
    messages[
        [
            "seq",
            "event_type",
            "producer_service",
            "queue",
            "consumer_service",
            "wait_ms",
            "outcome",
            "orphan",
            "compensation",
            "published_at",
            "event_id",
        ]
    ],
    hide_index=True,
)
st.caption(layout.TIME_NOTE)
first = answer["messages"][0]
layout.chain_link(first["event_id"], label=f"Open the first event: {first['event_type']}")
