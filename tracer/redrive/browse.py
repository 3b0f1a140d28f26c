"""Dead letters as the collector recorded them: browsing never touches the broker.

RabbitMQ has no way to read a classic or quorum queue without consuming it (the management
UI's "Get messages" takes and requeues, which marks each message redelivered). So the list
comes from what the collector already stored: the dead-letter tap's ``dead_letters`` rows
(``x-death``: reason, queue, count, time), the event's facts, the captured payload (with
``--capture-payloads``), the consumer's last error and the redrives already done. The
dead-letter queue (DLQ) a message sits in is found from the management poller's topology:
the queues bound to the exchange it was dead-lettered through (the collector's own tap queues
excepted).

Failures are grouped like ServicePulse groups them: event type, the queue it died in, the
reason and the consumer's error type (the part of ``deliveries.error`` before ``:``).

These are read questions like those of :mod:`eventscope.tracer.query.questions` and are
registered in its ``QUESTIONS`` when this module is imported (the collector's redrive API and
the dashboard's redrive component import it), so ``/api/dead_letter_messages``,
``/api/failure_groups`` and ``/api/redrive_history`` answer them, live or from a file.
"""

from __future__ import annotations

from typing import Any

import duckdb

from eventscope.tracer.query import questions

__all__ = [
    "QUESTIONS",
    "dead_letter_messages",
    "dead_letter_queues",
    "failure_groups",
    "orphan_sources",
    "redrive_history",
]

_DEFAULT_LIMIT = 500

# One row per event the dead-letter tap saw die, from its newest death; `in_dlq` is false once
# a redrive was sent after that death (the message left the DLQ).
_DEAD = """
WITH
    latest AS (
        SELECT event_id, queue AS died_in, reason, count, died_at, observed_at,
               coalesce(dead_letter_exchange, first_value(dead_letter_exchange IGNORE NULLS) OVER w) AS dlx
        FROM dead_letters
        WHERE $event_id IS NULL OR event_id = $event_id
        WINDOW w AS (PARTITION BY event_id ORDER BY observed_at DESC
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY observed_at DESC, count DESC) = 1
    ),
    errors AS (
        SELECT event_id, arg_max(error, received_at) AS error
        FROM deliveries
        WHERE error IS NOT NULL AND event_id IN (SELECT event_id FROM latest)
        GROUP BY event_id
    ),
    sent AS (
        SELECT event_id, count(*) AS redrives, max(requested_at) AS last_redrive_at
        FROM redrives
        WHERE outcome = 'sent' AND event_id IN (SELECT event_id FROM latest)
        GROUP BY event_id
    ),
    dl_queues AS (
        SELECT DISTINCT b.source AS dlx, b.destination AS dlq
        FROM bindings b
        WHERE b.present AND b.destination_type = 'queue'
          AND NOT starts_with(b.destination, 'eventscope.collector.')
        UNION
        SELECT '' AS dlx, q.dead_letter_routing_key AS dlq
        FROM queues q
        WHERE q.present AND q.dead_letter_exchange = '' AND q.dead_letter_routing_key IS NOT NULL
    ),
    rows AS (
        SELECT l.event_id, e.event_type, e.exchange, e.routing_key, e.producer_service, e.published_at,
               e.correlation_id, e.causation_id,
               l.died_in, l.reason, l.count AS deaths, l.died_at, l.observed_at,
               l.dlx AS dead_letter_exchange,
               (SELECT string_agg(d.dlq, ',' ORDER BY d.dlq) FROM dl_queues d WHERE d.dlx = l.dlx)
                   AS dead_letter_queue,
               er.error, nullif(trim(split_part(er.error, ':', 1)), '') AS error_type,
               coalesce(s.redrives, 0) AS redrives, s.last_redrive_at,
               (s.last_redrive_at IS NULL OR s.last_redrive_at < l.observed_at) AS in_dlq,
               p.content_type, p.size AS payload_size, p.body AS payload
        FROM latest l
        LEFT JOIN events e USING (event_id)
        LEFT JOIN errors er USING (event_id)
        LEFT JOIN sent s USING (event_id)
        LEFT JOIN payloads p USING (event_id)
    )
SELECT * FROM rows
WHERE ($queue IS NULL OR died_in = $queue OR dead_letter_queue = $queue)
  AND ($event_type IS NULL OR event_type = $event_type)
  AND ($reason IS NULL OR reason = $reason)
  AND ($error_type IS NULL OR error_type = $error_type)
  AND ($all OR in_dlq)
"""

_MESSAGES = _DEAD + "ORDER BY observed_at DESC, event_id LIMIT $limit"

_GROUPS = f"""
SELECT event_type, died_in, reason, error_type, dead_letter_queue, count(*) AS messages,
       min(observed_at) AS first_seen, max(observed_at) AS last_seen
FROM ({_DEAD})
GROUP BY ALL
ORDER BY messages DESC, event_type NULLS LAST, died_in, reason, error_type NULLS LAST
LIMIT $limit
"""

_HISTORY = """
SELECT r.redrive_id, r.request_id, r.actor, r.requested_at, r.mode, r.from_queue, r.to_exchange,
       r.to_routing_key, r.redrive_count, r.edited, r.outcome, r.error,
       (SELECT min(d.received_at) FROM deliveries d
        WHERE d.event_id = r.event_id AND d.received_at >= r.requested_at) AS delivered_at,
       (SELECT arg_max(coalesce(d.outcome, CASE WHEN d.trace_id IS NULL THEN 'delivered' END), d.received_at)
        FROM deliveries d
        WHERE d.event_id = r.event_id AND d.received_at >= r.requested_at) AS delivery_outcome
FROM redrives r
WHERE r.event_id = $event_id
ORDER BY r.requested_at, r.redrive_id
"""

_DLQ_OF = """
SELECT DISTINCT b.destination AS dlq,
       (b.routing_key IN (coalesce(q.dead_letter_routing_key, ''), $routing_key, $died_in)) AS exact
FROM bindings b
LEFT JOIN queues q ON q.present AND q.name = $died_in
WHERE b.present AND b.source = $dlx AND b.destination_type = 'queue'
  AND NOT starts_with(b.destination, 'eventscope.collector.')
UNION
SELECT q.dead_letter_routing_key AS dlq, true AS exact
FROM queues q
WHERE $dlx = '' AND q.present AND q.name = $died_in AND q.dead_letter_routing_key IS NOT NULL
ORDER BY exact DESC, dlq
"""

_SOURCES = """
SELECT ids.event_id, (e.event_id IS NOT NULL OR dl.queue IS NOT NULL) AS known, e.exchange,
       e.routing_key, e.event_type, e.producer_service, e.correlation_id, e.causation_id,
       p.content_type, p.body, p.event_id IS NOT NULL AS captured,
       coalesce(p.truncated, false) AS truncated, coalesce(p.redacted, 0) AS redacted,
       (SELECT count(*) FROM redrives r WHERE r.event_id = ids.event_id AND r.outcome = 'sent')
           AS prior_redrives,
       dl.queue AS died_in, dl.dlx, dl.first_routing_key
FROM (SELECT DISTINCT unnest($event_ids) AS event_id) ids
LEFT JOIN events e USING (event_id)
LEFT JOIN payloads p USING (event_id)
LEFT JOIN (
    SELECT event_id, arg_max(queue, observed_at) AS queue,
           arg_max(dead_letter_exchange, observed_at) FILTER (WHERE dead_letter_exchange IS NOT NULL) AS dlx,
           arg_min(routing_keys[1], observed_at) AS first_routing_key
    FROM dead_letters
    GROUP BY event_id
) dl USING (event_id)
ORDER BY ids.event_id
"""


def _records(connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return questions._records(connection, sql, params)


def _filters(**given: Any) -> dict[str, Any]:
    return {name: given.get(name) for name in ("queue", "event_type", "reason", "error_type")}


def dead_letter_messages(
    connection: duckdb.DuckDBPyConnection,
    *,
    queue: str | None = None,
    event_type: str | None = None,
    reason: str | None = None,
    error_type: str | None = None,
    event_id: str | None = None,
    include_redriven: bool = False,
    limit: int = _DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """The dead-lettered messages the collector saw, newest death first, with their facts,
    ``x-death`` (reason, queue, count, time), the consumer's last error, the captured payload
    and how often they were redriven. ``queue`` matches the queue they died in or their DLQ.
    """
    params = _filters(queue=queue, event_type=event_type, reason=reason, error_type=error_type)
    params.update(event_id=event_id, all=include_redriven, limit=limit)
    return _records(connection, _MESSAGES, params)


def failure_groups(
    connection: duckdb.DuckDBPyConnection,
    *,
    queue: str | None = None,
    include_redriven: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Dead letters grouped by (event type, queue died in, reason, error type), largest first."""
    params = _filters(queue=queue)
    params.update(event_id=None, all=include_redriven, limit=limit)
    return _records(connection, _GROUPS, params)


def redrive_history(connection: duckdb.DuckDBPyConnection, *, event_id: str) -> list[dict[str, Any]]:
    """Every redrive of an event (who, when, from, to, edited, outcome) and what became of the
    copy: the first delivery after it and that delivery's outcome.
    """
    return _records(connection, _HISTORY, {"event_id": event_id})


def dead_letter_queues(
    connection: duckdb.DuckDBPyConnection, *, dlx: str, died_in: str, routing_key: str | None = None
) -> list[str]:
    """The queues a message dead-lettered from ``died_in`` through ``dlx`` may sit in, best first
    (an exact binding key before a catch-all); empty without the management poller's topology.
    """
    rows = _records(connection, _DLQ_OF, {"dlx": dlx, "died_in": died_in, "routing_key": routing_key or ""})
    return list(dict.fromkeys(row["dlq"] for row in rows))


def orphan_sources(connection: duckdb.DuckDBPyConnection, *, event_ids: list[str]) -> list[dict[str, Any]]:
    """What a redrive needs to know of each event: where it died (and through which DLX), or the
    facts and captured payload a replay is built from.
    """
    if not event_ids:
        return []
    return _records(connection, _SOURCES, {"event_ids": event_ids})


QUESTIONS: dict[str, Any] = {
    "dead_letter_messages": dead_letter_messages,
    "failure_groups": failure_groups,
    "redrive_history": redrive_history,
}
questions.QUESTIONS.update(QUESTIONS)
