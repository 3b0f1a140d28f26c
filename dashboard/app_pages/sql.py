"""SQL: read-only queries over the public schema, with results to download."""

from __future__ import annotations

import streamlit as st

from eventscope.dashboard import data

_PREVIEW_ROWS = 10_000
EXAMPLES = {
    "Orphans by reason": "SELECT reason, count(*) AS n FROM orphans GROUP BY reason ORDER BY n DESC",
    "Busiest event types": (
        "SELECT event_type, count(*) AS events FROM events GROUP BY event_type ORDER BY events DESC LIMIT 20"
    ),
    "Failed deliveries": (
        "SELECT d.queue, d.consumer_service, d.error, e.event_type, d.received_at\n"
        "FROM deliveries d JOIN events e USING (event_id)\n"
        "WHERE d.outcome IN ('error', 'nack', 'reject')\nORDER BY d.received_at DESC LIMIT 100"
    ),
    "Slowest queues (p95 wait)": (
        "SELECT d.queue,\n"
        "       quantile_cont(date_diff('millisecond', e.published_at, d.received_at), 0.95) AS p95_ms\n"
        "FROM deliveries d JOIN events e USING (event_id) GROUP BY 1 ORDER BY 2 DESC"
    ),
    "A chain": "SELECT * FROM chain((SELECT event_id FROM events ORDER BY published_at LIMIT 1))",
}


def _use_example() -> None:
    st.session_state["query"] = EXAMPLES[st.session_state["example"]]


st.title("SQL")
editor, reference = st.columns([3, 2])
with reference:
    st.subheader("Examples")
    example = st.selectbox("Start from", list(EXAMPLES), key="example", on_change=_use_example)
    st.subheader("Schema")
    columns = data.schema()
    for table, fields in columns.groupby("table", sort=True):
        with st.expander(table):
            st.dataframe(fields[["column", "type"]], hide_index=True)
with editor:
    st.session_state.setdefault("query", EXAMPLES[example])
    query = st.text_area("Query (one read-only SELECT)", height=180, key="query")
    run = st.button("Run", type="primary")

if run or st.session_state.get("ran"):
    st.session_state["ran"] = True
    try:
        table, truncated = data.run_sql(query)
    except data.SourceError as exc:
        st.error(f"The query failed: {exc}")
        st.stop()
    note = " (cut at the collector's row cap)" if truncated else ""
    st.caption(f"{table.num_rows:,} rows{note}")
    st.dataframe(table.slice(0, _PREVIEW_ROWS).to_pandas(), hide_index=True)
    left, right = st.columns(2)
    left.download_button("Download CSV", data.to_csv(table), file_name="eventscope.csv", mime="text/csv")
    right.download_button(
        "Download Parquet",
        data.to_parquet(table),
        file_name="eventscope.parquet",
        mime="application/vnd.apache.parquet",
    )
