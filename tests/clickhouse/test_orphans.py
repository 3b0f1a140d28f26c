"""The orphan rules on chDB that need the broker's topology: a message the broker routed to a
queue nobody consumed is ``expired`` once it outlived the queue's message TTL (the lowest of
argument and policy, the lowest over vhosts holding a queue of that name), ``unconsumed``
before that or without a TTL; the same answers as the DuckDB store's, for the whole history
and for a window of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from eventscope.tracer.broker.management import queue_row
from eventscope.tracer.query import questions
from eventscope.tracer.store.batches import BrokerBatch, Topology
from tests.spans import open_store

_OLD_US = 1_700_000_000_000_000  # 2023: past every TTL below but the ten-year one
_HOUR_MS = 3_600_000
_TEN_YEARS_MS = 10 * 365 * 24 * _HOUR_MS
# (event, routed to, published): a queue's TTL decides between expired and unconsumed
EVENTS = [
    ("old-short", ["short"], _OLD_US),  # 1 s TTL, long past: expired
    ("old-long", ["long"], _OLD_US),  # ten years: unconsumed
    ("old-none", ["plain"], _OLD_US),  # no TTL: unconsumed
    ("old-policy", ["by-policy"], _OLD_US),  # the policy's TTL is lower than the argument's: expired
    ("old-two", ["two-vhosts"], _OLD_US),  # ten years on "/", 1 s on "other": the lowest wins
    ("old-both", ["short", "long"], _OLD_US),  # one row per queue
    ("new-hour", ["hour"], 0),  # published now, 1 h TTL: unconsumed
    ("new-short", ["short"], -5_000_000),  # 5 s ago, 1 s TTL: expired
]


def _queues(polled_us: int) -> list[BrokerBatch]:
    def queue(name: str, vhost: str = "/", **arguments: Any) -> dict[str, Any]:
        policy = arguments.pop("policy", {})
        entry = {"name": name, "vhost": vhost, "arguments": arguments, "effective_policy_definition": policy}
        return queue_row(entry, polled_us)

    main = [
        queue("short", **{"x-message-ttl": 1000}),
        queue("long", **{"x-message-ttl": _TEN_YEARS_MS}),
        queue("plain"),
        queue("by-policy", **{"x-message-ttl": _TEN_YEARS_MS, "policy": {"message-ttl": 1000}}),
        queue("two-vhosts", **{"x-message-ttl": _TEN_YEARS_MS}),
        queue("hour", **{"x-message-ttl": _HOUR_MS}),
    ]
    other = [queue("two-vhosts", "other", **{"x-message-ttl": 1000})]
    return [
        BrokerBatch(topology=Topology("/", polled_us, queues=main)),
        BrokerBatch(topology=Topology("other", polled_us, queues=other)),
    ]


def _events(now_us: int) -> BrokerBatch:
    batch = BrokerBatch()
    for event_id, routed, published in EVENTS:
        batch.events.append(
            {
                "event_id": event_id,
                "event_type": "ttl",
                "exchange": "shop",
                "routing_key": "ttl",
                "producer_service": None,
                "published_at": published if published > 0 else now_us + published,
                "trace_id": None,
                "span_id": None,
                "causation_id": None,
                "correlation_id": None,
                "routed_queues": routed,
                "payload_size": 3,
                "source": "firehose",
            }
        )
    return batch


def _found(reader: Any, **options: Any) -> list[tuple[str, str, str]]:
    return sorted((o["event_id"], o["queue"], o["reason"]) for o in questions.orphans(reader, **options))


def _window(reader: Any, since: str) -> list[tuple]:
    sql = (
        "SELECT event_id, queue, reason FROM orphans_after(grace_s = 0)"
        f" WHERE published_at > toDateTime64('{since}', 6, 'UTC') ORDER BY 1, 2"
    )
    duck = sql.replace("orphans_after(grace_s = 0)", "orphans_after(0)").replace(
        f"toDateTime64('{since}', 6, 'UTC')", f"TIMESTAMPTZ '{since}+00'"
    )
    is_duck = "duckdb" in type(reader).__module__
    return [tuple(row) for row in questions.run_sql(reader, duck if is_duck else sql).rows]


def test_a_message_past_its_queues_ttl_is_expired_as_on_duckdb(tmp_path: Path, chstore: Any) -> None:
    now_us = int(time.time() * 1e6)
    batches = [*_queues(now_us), _events(now_us)]
    duck = open_store(tmp_path / "ttl.duckdb", grace_s=0)
    duck.append(batches)
    chstore.append(batches)
    ch, dk = chstore.reader(), duck.reader()
    try:
        expected = [
            ("new-hour", "hour", "unconsumed"),
            ("new-short", "short", "expired"),
            ("old-both", "long", "unconsumed"),
            ("old-both", "short", "expired"),
            ("old-long", "long", "unconsumed"),
            ("old-none", "plain", "unconsumed"),
            ("old-policy", "by-policy", "expired"),
            ("old-short", "short", "expired"),
            ("old-two", "two-vhosts", "expired"),
        ]
        assert _found(dk, grace_s=0) == expected
        assert _found(ch, grace_s=0) == expected  # orphans_after(grace_s = 0)
        assert _found(ch) == expected  # the orphans view (the collector's grace: 0 here)
        assert _found(ch, reason="expired") == [row for row in expected if row[2] == "expired"]
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now_us / 1e6 - 15 * 60))
        recent = [("new-hour", "hour", "unconsumed"), ("new-short", "short", "expired")]
        assert _window(ch, since) == _window(dk, since) == recent
        # a grace longer than the recent events' age: they are not orphans yet
        assert [o["event_id"] for o in questions.orphans(ch, grace_s=3600)] == [
            o["event_id"] for o in questions.orphans(dk, grace_s=3600)
        ]
    finally:
        duck.close()
