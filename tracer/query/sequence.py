"""A conversation as a sequence diagram: who talked to whom, in what order (docs/dashboard.md).

:func:`sequence` answers for a correlation id (the id of the flow's first event; every event
the adapters publish while handling one carries it) or for any event of the conversation.
What callers can rely on:

* **Lifelines** are services. Members of one consumer group that report numbered names
  (``payments-1``, ``payments-2``: one service scaled out) are folded into one lifeline that
  says how many members it had. A message nobody took goes to the lifeline ``(no consumer)``.
* **Messages** come one per (event, queue delivered to), in publish order (then delivery
  order), with the queue, the time in queue and the outcome; a message with an orphan row is
  marked with its reason, a failed delivery (nack, reject, error, never settled) as failed.
* **Compensation**: an event whose type names an undo (``compensate``, ``cancel``,
  ``release``, ``refund``, ``revert``, ``rollback``, ``undo``) is marked as a compensation step,
  as a saga's compensating commands and their outcomes are named.
* **Bounded**: the first ``limit`` messages (default 200) of ``total``.
"""

from __future__ import annotations

import re
from typing import Any

import duckdb

from eventscope.tracer.query import sandbox

__all__ = ["NO_CONSUMER", "lifeline_of", "sequence"]

NO_CONSUMER = "(no consumer)"
_DEFAULT_LIMIT = 200
_MEMBER = re.compile(r"^(?P<base>.+?)[-_.]\d+$")
_COMPENSATION = re.compile(r"compensat|cancel|release|refund|revert|rollback|undo", re.IGNORECASE)
_FAILED = frozenset({"nack", "reject", "error", "requeue"})

_CORRELATION = "SELECT coalesce(correlation_id, event_id) AS cid FROM events WHERE event_id = $event_id"

# one row per (event, queue, attempt) and per orphan row without any delivery in its queue, and
# one per event with neither (not delivered yet, or no queue known)
_MESSAGES = """
WITH
    ev AS MATERIALIZED (
        SELECT event_id, event_type, routing_key, exchange, producer_service, published_at, causation_id
        FROM events WHERE correlation_id = $cid OR event_id = $cid
    ),
    o AS MATERIALIZED (
        SELECT event_id, queue, reason FROM orphans WHERE event_id IN (SELECT event_id FROM ev)
    ),
    d AS (
        SELECT event_id, queue, consumer_service, received_at, settled_at, outcome, error
        FROM deliveries WHERE event_id IN (SELECT event_id FROM ev)
    ),
    arrows AS (
        SELECT e.*, d.queue, d.consumer_service, d.received_at, d.outcome, d.error,
               date_diff('microsecond', e.published_at, d.received_at) / 1000.0 AS wait_ms,
               date_diff('microsecond', d.received_at, d.settled_at) / 1000.0 AS processing_ms,
               (SELECT min(o.reason) FROM o WHERE o.event_id = e.event_id AND o.queue = d.queue) AS orphan
        FROM ev e JOIN d USING (event_id)
        UNION ALL
        SELECT e.*, o.queue, NULL, NULL, NULL, NULL, NULL, NULL, o.reason
        FROM ev e JOIN o USING (event_id)
        WHERE NOT EXISTS (
            SELECT 1 FROM d WHERE d.event_id = o.event_id AND d.queue IS NOT DISTINCT FROM o.queue
        )
        UNION ALL
        SELECT e.*, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM ev e
        WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.event_id = e.event_id)
          AND NOT EXISTS (SELECT 1 FROM o WHERE o.event_id = e.event_id)
    )
SELECT *, count(*) OVER () AS total FROM arrows
ORDER BY published_at, event_id, received_at NULLS LAST, queue
LIMIT $limit
"""


def lifeline_of(service: str | None) -> str:
    """The lifeline a service draws on: numbered members of a group fold into their base name."""
    if not service:
        return "(unknown service)"
    match = _MEMBER.match(service)
    return match.group("base") if match else service


def sequence(
    connection: duckdb.DuckDBPyConnection,
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
    limit: int = _DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The conversation of ``correlation_id`` (or of the conversation ``event_id`` is part of):
    ``lifelines`` (name, members, services, in order of first appearance), ``messages`` (the first
    ``limit``, in publish order) and ``total`` (every message of the conversation).
    """
    cid = correlation_id
    if cid is None and event_id is not None:
        found = sandbox.records(connection, _CORRELATION, {"event_id": event_id})
        cid = found[0]["cid"] if found else None
    if cid is None:
        return {"correlation_id": None, "total": 0, "lifelines": [], "messages": []}
    rows = sandbox.records(connection, _MESSAGES, {"cid": cid, "limit": int(limit)})
    lifelines: dict[str, set[str]] = {}
    messages: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        source = lifeline_of(row["producer_service"])
        lifelines.setdefault(source, set()).add(row["producer_service"] or source)
        if row["consumer_service"] is not None:
            target = lifeline_of(row["consumer_service"])
            lifelines.setdefault(target, set()).add(row["consumer_service"])
        else:
            target = NO_CONSUMER
            lifelines.setdefault(target, set())
        failed = row["outcome"] in _FAILED  # a firehose-only delivery has no outcome: not a failure
        messages.append(
            {
                "seq": number,
                "event_id": row["event_id"],
                "event_type": row["event_type"] or row["routing_key"],
                "source": source,
                "target": target,
                "producer_service": row["producer_service"],
                "consumer_service": row["consumer_service"],
                "queue": row["queue"],
                "published_at": row["published_at"],
                "received_at": row["received_at"],
                "wait_ms": row["wait_ms"],
                "processing_ms": row["processing_ms"],
                "outcome": row["outcome"],
                "error": row["error"],
                "orphan": row["orphan"],
                "failed": bool(failed or row["orphan"]),
                "compensation": bool(_COMPENSATION.search(row["event_type"] or row["routing_key"] or "")),
                "causation_id": row["causation_id"],
            }
        )
    if NO_CONSUMER in lifelines:  # drawn last, at the right edge
        lifelines[NO_CONSUMER] = lifelines.pop(NO_CONSUMER)
    return {
        "correlation_id": cid,
        "total": rows[0]["total"] if rows else 0,
        "lifelines": [
            {"lifeline": name, "members": len(services), "services": sorted(services)}
            for name, services in lifelines.items()
        ],
        "messages": messages,
    }


# Served as GET /api/<name>: registered by questions.QUESTIONS.
QUESTIONS = {"sequence": sequence}
