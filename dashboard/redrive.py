"""The redrive component of the Orphans and Event pages: list, preview, confirm, redrive.

Listing and the preview read what the collector recorded (:mod:`data`): they never touch the
broker, so opening a page changes no queue (depth and redelivered flags stay as they were).
Only the confirmed button writes: it calls the collector's ``POST /api/redrive`` with the
dashboard's token, and the collector does the move (publisher confirms, then ack) and
records it with the actor ``dashboard``. Against a database file, or a collector without
``--allow-redrive``, the button says why it cannot.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st

from eventscope.dashboard import data, layout

__all__ = ["event_section", "orphans_section"]

_TIMEOUT_S = 300.0
_ACTOR = "dashboard"
_PREVIEW_COLUMNS = [
    "event_id",
    "event_type",
    "died_in",
    "reason",
    "error_type",
    "dead_letter_queue",
    "exchange",
    "routing_key",
    "redrives",
    "payload",
]


def _post(document: dict[str, Any]) -> tuple[bool, str, dict[str, Any] | None]:
    import httpx

    api = (os.environ.get("EVENTSCOPE_API") or "http://127.0.0.1:4318").rstrip("/")
    token = os.environ.get("EVENTSCOPE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(
            f"{api}/api/redrive", json={"actor": _ACTOR, **document}, headers=headers, timeout=_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return False, f"cannot reach the collector at {api}: {exc}", None
    if response.status_code != 200:
        try:
            message = response.json().get("error")
        except ValueError:
            message = response.text[:200]
        return False, f"refused ({response.status_code}): {message}", None
    answer = response.json()
    summary = f"{answer['sent']} sent, {answer['refused']} refused, {answer['failed']} failed"
    return answer["sent"] > 0 and not answer["failed"], summary, answer


def _redrive_form(key: str, rows: pd.DataFrame, *, what: str) -> None:
    """Preview (recorded facts), a confirmation, and the button; ``rows`` are dead_letter_messages."""
    if not data.is_live():
        st.caption("Redrive needs a running collector (`eventscope dashboard --api …`), not a database file.")
        return
    to_queue = st.text_input(
        "Send to queue (empty: back to its origin exchange and routing key)", key=f"{key}-to"
    )
    preview = rows[[c for c in _PREVIEW_COLUMNS if c in rows.columns]].copy()
    if to_queue.strip():
        preview["exchange"], preview["routing_key"] = "", to_queue.strip()
    st.markdown(
        f"**Preview** — {len(preview)} message(s) {what} would be published, then acked from the DLQ:"
    )
    st.dataframe(preview, hide_index=True)
    confirmed = st.checkbox(f"Yes, redrive these {len(preview)} message(s)", key=f"{key}-confirm")
    if st.button(
        f"Redrive {len(preview)}", key=f"{key}-go", disabled=not confirmed or preview.empty, type="primary"
    ):
        document: dict[str, Any] = {"event_ids": list(preview["event_id"])}
        if to_queue.strip():
            document["to_queue"] = to_queue.strip()
        ok, summary, answer = _post(document)
        st.session_state[f"{key}-result"] = (ok, summary, answer)
        st.cache_data.clear()
    result = st.session_state.get(f"{key}-result")
    if result is not None:
        ok, summary, answer = result
        (st.success if ok else st.error)(f"Redrive: {summary}")
        if answer is not None:
            problems = [m for m in answer["messages"] if m["outcome"] != "sent"]
            if problems:
                st.dataframe(pd.DataFrame(problems)[["event_id", "outcome", "error"]], hide_index=True)


def orphans_section() -> None:
    """The dead letters still in a DLQ, grouped by failure; redrive a group or one message."""
    st.subheader("Dead letters")
    groups = data.failure_groups()
    if groups.empty:
        st.caption("No dead letters waiting in a dead-letter queue (as the dead-letter tap recorded them).")
        return
    st.caption("Read from what the collector recorded: browsing never consumes or requeues.")
    st.dataframe(groups, hide_index=True)
    labels = {
        f"{g.messages} of {g.event_type} · died in {g.died_in} · {g.reason}"
        f"{' · ' + g.error_type if isinstance(g.error_type, str) else ''}": g
        for g in groups.itertuples()
    }
    chosen = st.selectbox("Failure group", list(labels), key="redrive-group")
    group = labels[chosen]
    rows = data.dead_letter_messages(
        queue=group.died_in,
        event_type=group.event_type if isinstance(group.event_type, str) else None,
        reason=group.reason,
        error_type=group.error_type if isinstance(group.error_type, str) else None,
    )
    with st.expander(f"Redrive this group ({len(rows)})"):
        _redrive_form("redrive-group-form", rows, what="of this group")
    if not rows.empty:
        layout.chain_link(rows.iloc[0]["event_id"], label="Open the newest of the group")


def event_section(event_id: str, *, orphan: bool = False, facts: Any = None) -> None:
    """One event's redrives (who, when, from, to, edited, outcome) and its redrive button: out of
    its DLQ when it is a dead letter, else (``orphan``) a replay from its captured payload.
    """
    history = data.redrive_history(event_id)
    if not history.empty:
        st.subheader("Redrives")
        st.dataframe(history, hide_index=True)
    rows = data.dead_letter_messages(event_id=event_id)
    if not rows.empty:
        with st.expander("Redrive this dead letter"):
            _redrive_form(f"redrive-{event_id}", rows, what="")
    elif orphan:
        replay = pd.DataFrame(
            [
                {
                    "event_id": event_id,
                    "exchange": getattr(facts, "get", lambda *_: None)("exchange"),
                    "routing_key": getattr(facts, "get", lambda *_: None)("routing_key"),
                    "payload": "the captured payload (refused when none was captured)",
                }
            ]
        )
        with st.expander("Replay this orphan from its captured payload"):
            _redrive_form(f"replay-{event_id}", replay, what="")
