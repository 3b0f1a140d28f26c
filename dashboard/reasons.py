"""What each orphan reason means and what usually fixes it, in plain words.

:func:`diagnose` turns one group of orphans (same reason, exchange, routing key, queue) into a
sentence naming the actual exchange, key and queue, e.g. "no binding on exchange shop matches
routing key refund.requested".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REASONS", "Reason", "diagnose"]


@dataclass(frozen=True)
class Reason:
    title: str
    meaning: str
    fix: str


REASONS: dict[str, Reason] = {
    "unroutable": Reason(
        "Unroutable",
        "The broker accepted the message but no queue was bound to receive it, so it was dropped.",
        "Bind a queue to the exchange with a key that matches, or publish with mandatory=True "
        "and handle returns.",
    ),
    "unconsumed": Reason(
        "Unconsumed",
        "The message reached a queue (or nobody can tell where it went) and no consumer ever took it.",
        "Start a consumer on the queue, or remove the binding if nobody should get these events.",
    ),
    "unacked": Reason(
        "Unacked",
        "A consumer received the message but never acknowledged it (crashed, hung, or the channel closed).",
        "Ack or nack in every code path of the handler; look for exceptions or timeouts in that consumer.",
    ),
    "failed": Reason(
        "Failed",
        "The consumer's handler raised, or it nacked/rejected the message without requeue.",
        "Look at the error of the delivery; fix the handler or the data, then replay the event. "
        "Give the queue a dead-letter exchange so failures are kept.",
    ),
    "dead_lettered": Reason(
        "Dead-lettered",
        "The message was rejected, expired or overflowed its queue and went to a dead-letter exchange.",
        "Inspect the dead-letter queue (x-death says why), fix the cause, then re-publish.",
    ),
    "expired": Reason(
        "Expired",
        "The message waited in its queue longer than the queue's message TTL and was discarded.",
        "Add consumers or raise the TTL; give the queue a dead-letter exchange to keep expired messages.",
    ),
    "missing_consumer": Reason(
        "Missing consumer",
        "A service that is expected to process this event type never processed it.",
        "Check that the service is running and subscribed (queue bound with the right key).",
    ),
}


def diagnose(reason: str, *, exchange: str | None, routing_key: str | None, queue: str | None) -> str:
    """The likely cause for one group of orphans, naming what is involved."""
    x = exchange or "(default exchange)"
    key = routing_key or "(empty)"
    if reason == "unroutable":
        return f"no binding on exchange {x} matches routing key {key}"
    if reason == "unconsumed" and queue is None:
        return (
            f"nothing received events sent to exchange {x} with routing key {key}: either no queue "
            "is bound for that key (turn on the firehose, `eventscope collect --firehose`, to know) "
            "or its queue has no consumer"
        )
    if reason == "unconsumed":
        return f"queue {queue} has no consumer taking events with routing key {key}"
    if reason == "unacked":
        return f"the consumer of queue {queue} received them and never settled them"
    if reason == "failed":
        return f"the consumer of queue {queue} failed or rejected them (no requeue)"
    if reason == "dead_lettered":
        return f"queue {queue} dead-lettered them: see x-death on the event page"
    if reason == "expired":
        return f"they expired in queue {queue} before anyone consumed them"
    if reason == "missing_consumer":
        return f"the expected consumer of {key} never processed them"
    return REASONS.get(reason, Reason(reason, "", "")).meaning
