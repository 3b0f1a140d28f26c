"""Every redrivable orphan reason, redriven on the real broker: consumed, resolved, in the chain.

Dead-lettered (rejected, expired, maxlen, delivery_limit) messages are moved out of the DLQ to
the exchange and routing key of their ``x-death``; orphans that left no message (unroutable,
expired without a DLX, failed without a DLX) are replayed from the captured payload.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventscope.tracer.contract import OUTCOME_REJECT
from tests.broker.test_broker_truth import management  # noqa: F401  (fixture)
from tests.redrive.rig import TOKEN, Rig, wait
from tests.spans import _T0, new_trace, process, request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, tracing: None, management: str) -> Iterator[Rig]:  # noqa: F811
    rig = Rig(tmp_path_factory.mktemp("redrive"), management)
    yield rig
    rig.close()


def _dead_lettered(rig: Rig, reason: str) -> tuple[str, str, str]:
    """A message that died in a queue of its own for ``reason``: (event id, queue, routing key)."""
    key = f"{reason}.{uuid.uuid4().hex[:6]}"
    if reason == "rejected":
        queue = rig.queue(dead_letter=True)
    elif reason == "expired":
        queue = rig.queue(dead_letter=True, **{"x-message-ttl": 1500})
    elif reason == "maxlen":
        queue = rig.queue(dead_letter=True, **{"x-max-length": 1})
    else:
        queue = rig.queue(dead_letter=True, **{"x-queue-type": "quorum", "x-delivery-limit": 1})
    rig.channel.queue_bind(queue, rig.shop, key)
    event_id = rig.publish(key, b'{"order":42}')
    if reason == "rejected":
        method = rig.take(queue, event_id)
        rig.channel.basic_reject(method.delivery_tag, requeue=False)
    elif reason == "maxlen":
        other = rig.publish(key, b'{"order":43}')  # pushes the first out of the head
        method, properties, _ = rig.get(queue)
        assert properties.message_id == other
        rig.channel.basic_ack(method.delivery_tag)
    elif reason == "delivery_limit":

        def nack_once() -> bool:
            if rig.depth(queue):
                rig.channel.basic_nack(rig.take(queue, event_id).delivery_tag, requeue=True)
            return bool(rig.sql("SELECT 1 FROM dead_letters WHERE event_id = ?", event_id))

        wait(nack_once, what="the delivery limit")
    rig.wait_orphan(event_id, "dead_lettered")
    (died,) = rig.sql("SELECT DISTINCT reason FROM dead_letters WHERE event_id = ?", event_id)[0]
    assert died == reason
    return event_id, queue, key


@pytest.mark.parametrize("reason", ["rejected", "expired", "maxlen", "delivery_limit"])
def test_dead_lettered_message_goes_back_to_its_origin(rig: Rig, reason: str) -> None:
    event_id, queue, key = _dead_lettered(rig, reason)
    listed = rig.ask("dead_letter_messages", event_id=event_id)
    assert [(m["died_in"], m["reason"], m["dead_letter_queue"]) for m in listed] == [(queue, reason, rig.dlq)]
    depth = rig.depth(rig.dlq)

    answer = rig.redrive(event_ids=[event_id])

    assert (answer["sent"], answer["refused"], answer["failed"]) == (1, 0, 0), answer
    (sent,) = answer["messages"]
    assert (sent["exchange"], sent["routing_key"], sent["from_queue"]) == (rig.shop, key, rig.dlq)
    assert rig.depth(rig.dlq) == depth - 1
    method, properties, body = rig.get(queue)
    rig.channel.basic_ack(method.delivery_tag)
    assert body == b'{"order":42}'
    assert properties.message_id == event_id  # the same event
    assert properties.headers["x-eventscope-redrive"] == 1
    assert properties.headers["x-eventscope-redrive-id"] == sent["redrive_id"]
    assert "x-death" in properties.headers  # history kept: a later death counts on top
    rig.wait_resolved(event_id)
    (history,) = wait(lambda: [h for h in rig.ask("redrive_history", event_id=event_id) if h["delivered_at"]])
    assert (history["outcome"], history["from_queue"], history["edited"]) == ("sent", rig.dlq, False)
    assert history["actor"].startswith("tests via api@127.0.0.1")
    assert rig.ask("dead_letter_messages", event_id=event_id) == []  # no longer in the DLQ


def test_unroutable_is_replayed_from_its_capture_once_a_queue_is_bound(rig: Rig) -> None:
    key = f"lost.{uuid.uuid4().hex[:6]}"
    event_id = rig.publish(
        key, b'{"refund":7}', correlation_id="conv-1", headers={"x-correlation-id": "root-1"}
    )
    rig.wait_orphan(event_id, "unroutable")
    queue = rig.queue()
    rig.channel.queue_bind(queue, rig.shop, "lost.#")  # the fix: somebody listens now

    answer = rig.redrive(event_ids=[event_id])

    assert answer["sent"] == 1, answer
    assert answer["messages"][0]["mode"] == "capture"
    method, properties, body = rig.get(queue)
    rig.channel.basic_ack(method.delivery_tag)
    assert body == b'{"refund":7}'
    assert properties.message_id == event_id
    assert properties.headers["x-eventscope-redrive"] == 1
    assert properties.headers["x-correlation-id"] == "root-1"
    rig.wait_resolved(event_id)
    history = rig.ask("redrive_history", event_id=event_id)
    assert [(h["mode"], h["outcome"]) for h in history] == [("capture", "sent")]


def test_expired_without_a_dead_letter_exchange_is_replayed(rig: Rig) -> None:
    key = f"exp.{uuid.uuid4().hex[:6]}"
    queue = rig.queue(**{"x-message-ttl": 1500})
    rig.channel.queue_bind(queue, rig.shop, key)
    wait(lambda: rig.sql("SELECT 1 FROM queues WHERE name = ? AND message_ttl_ms = 1500", queue))
    event_id = rig.publish(key, b'{"report":1}')
    wait(lambda: rig.depth(queue) == 0, what="the TTL")
    rig.wait_orphan(event_id, "expired")

    answer = rig.redrive(event_ids=[event_id])

    assert answer["sent"] == 1, answer
    method, properties, body = rig.get(queue)
    rig.channel.basic_ack(method.delivery_tag)
    assert (body, properties.message_id) == (b'{"report":1}', event_id)
    rig.wait_resolved(event_id)


def test_failed_without_a_dead_letter_exchange_is_replayed(rig: Rig) -> None:
    key = f"fail.{uuid.uuid4().hex[:6]}"
    queue = rig.queue()
    rig.channel.queue_bind(queue, rig.shop, key)
    event_id = rig.publish(key, b'{"payment":3}')
    method = rig.take(queue, event_id)
    rig.channel.basic_reject(method.delivery_tag, requeue=False)  # gone: no DLX
    now_ms = (time.time_ns() - _T0) // 1_000_000
    consumer = process(
        trace_id=new_trace(),
        parent=None,
        event_id=event_id,
        queue=queue,
        outcome=OUTCOME_REJECT,
        error=True,
        start_ms=now_ms,
        end_ms=now_ms + 5,
    )
    response = httpx.post(
        f"{rig.url}/v1/traces",
        content=request(consumer, service="payments").SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200
    rig.wait_orphan(event_id, "failed")

    answer = rig.redrive(event_ids=[event_id])

    assert answer["sent"] == 1, answer
    method, properties, body = rig.get(queue)
    rig.channel.basic_ack(method.delivery_tag)
    assert (body, properties.headers["x-eventscope-redrive"]) == (b'{"payment":3}', 1)
    rig.wait_resolved(event_id)


def test_a_whole_failure_group_goes_to_a_named_queue_with_an_edit(rig: Rig) -> None:
    key = f"group.{uuid.uuid4().hex[:6]}"
    queue = rig.queue(dead_letter=True)
    rig.channel.queue_bind(queue, rig.shop, key)
    ids = [rig.publish(key, b'{"v":1}', type="group.test") for _ in range(3)]
    for event_id in ids:
        method = rig.take(queue, event_id)
        rig.channel.basic_reject(method.delivery_tag, requeue=False)
    for event_id in ids:
        rig.wait_orphan(event_id, "dead_lettered")
    groups = rig.ask("failure_groups", queue=queue)
    assert [(g["event_type"], g["reason"], g["messages"]) for g in groups] == [("group.test", "rejected", 3)]
    target = rig.queue()

    preview = rig.redrive(group={"died_in": queue}, to_queue=target, body='{"v":2}', dry_run=True)
    assert preview["would_send"] == 3 and preview["sent"] == 0
    assert {m["body"] for m in preview["messages"]} == {'{"v":2}'}
    assert all(m["properties"]["headers"]["x-eventscope-redrive"] == 1 for m in preview["messages"])
    assert rig.depth(target) == 0  # a dry run sends nothing

    answer = rig.redrive(group={"died_in": queue}, to_queue=target, body='{"v":2}')

    assert answer["sent"] == 3, answer
    got = []
    for _ in ids:
        method, properties, body = rig.get(target)
        rig.channel.basic_ack(method.delivery_tag)
        got.append((properties.message_id, body))
    assert sorted(got) == sorted((event_id, b'{"v":2}') for event_id in ids)
    stored = rig.sql(
        "SELECT edited, original_body, to_routing_key FROM redrives WHERE event_id = ? AND outcome = 'sent'",
        ids[0],
    )
    assert stored == [(True, '{"v":1}', target)]  # the original is kept


def _json(response: httpx.Response) -> Any:
    return response.json()


def test_refusals_leave_the_message_where_it_is(rig: Rig) -> None:
    event_id, _, _ = _dead_lettered(rig, "rejected")
    depth = rig.depth(rig.dlq)

    assert rig.post({"event_ids": [event_id]}, token=None).status_code == 401
    assert rig.post({"event_ids": [event_id]}, token="wrong").status_code == 401
    assert (
        httpx.get(f"{rig.url}/api/redrive", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
    )
    cross = rig.post({"event_ids": [event_id]}, origin="https://evil.example")
    assert cross.status_code == 403 and "cross-site" in _json(cross)["error"]
    form = httpx.post(
        f"{rig.url}/api/redrive",
        data={"event_ids": event_id},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert form.status_code == 415
    gone = rig.post({"event_ids": [event_id], "to_queue": "eventscope-test-no-such-queue"})
    assert gone.status_code == 409 and "does not exist" in _json(gone)["error"]
    bad_edit = rig.post({"event_ids": [event_id], "body": "{not json"})
    assert bad_edit.status_code == 400 and "JSON" in _json(bad_edit)["error"]
    assert rig.depth(rig.dlq) == depth  # nothing moved

    listed = rig.ask("dead_letter_messages", event_id=event_id)
    assert len(listed) == 1  # still there, and still listed


def test_loop_guard_refuses_a_message_redriven_too_often(rig: Rig) -> None:
    key = f"loop.{uuid.uuid4().hex[:6]}"
    queue = rig.queue(dead_letter=True)
    rig.channel.queue_bind(queue, rig.shop, key)
    event_id = rig.publish(key, headers={"x-eventscope-redrive": 3})  # redriven three times already
    method = rig.take(queue, event_id)
    rig.channel.basic_reject(method.delivery_tag, requeue=False)
    rig.wait_orphan(event_id, "dead_lettered")
    depth = rig.depth(rig.dlq)

    answer = rig.redrive(event_ids=[event_id])

    assert (answer["sent"], answer["refused"]) == (0, 1), answer
    assert "loop guard" in answer["messages"][0]["error"]
    assert rig.depth(rig.dlq) == depth
    assert rig.sql("SELECT outcome FROM redrives WHERE event_id = ?", event_id) == [("refused",)]


def test_a_collector_without_allow_redrive_refuses_with_403(
    tmp_path: Path,
    tracing: None,
    management: str,  # noqa: F811
) -> None:
    rig = Rig(tmp_path, management, allow_redrive=False)
    try:
        assert rig.post({"queue": rig.dlq}, token=None).status_code == 401
        refused = rig.post({"queue": rig.dlq})
        assert refused.status_code == 403 and "--allow-redrive" in _json(refused)["error"]
    finally:
        rig.close()


def test_allow_redrive_without_a_token_does_not_start() -> None:
    from eventscope.tracer.server.app import CollectorConfig

    with pytest.raises(ValueError, match="--token"):
        CollectorConfig(db_path="unused.duckdb", allow_redrive=True, amqp_url="amqp://127.0.0.1")
