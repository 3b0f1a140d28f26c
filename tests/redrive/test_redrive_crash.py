"""Nothing lost: a 1,000-message DLQ redrive with the collector killed (SIGKILL) mid-way.

Redrive runs inside the collector, so the collector is what dies. Invariant right after the
crash and again after a restart finishes the job: every message is still in the dead-letter
queue or was published to its destination — never neither. Duplicates (confirmed, not yet
acked when the process died) are allowed: at-least-once.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from tests.conftest import AMQP_URL, Amqp
from tests.processes import collect, free_port, wait_healthy
from tests.redrive.rig import wait

pytestmark = pytest.mark.integration

_MESSAGES = 1000
_TOKEN = "crash-test-token"


def _ids(channel: Any, queue: str) -> list[str]:
    """Every message id in ``queue``, read without acking (they go back when the channel closes)."""
    ids = []
    while True:
        method, properties, _ = channel.basic_get(queue)
        if method is None:
            return ids
        ids.append(properties.message_id)


@pytest.fixture
def dead_letters(amqp: Amqp) -> Iterator[tuple[str, str, set[str]]]:
    """A DLQ holding ``_MESSAGES`` dead-lettered (expired) messages, and an empty target queue."""
    dlx = amqp.exchange(kind="fanout")
    dlq = amqp.queue()
    amqp.bind(dlq, dlx, "")
    source = amqp.queue(**{"x-dead-letter-exchange": dlx})
    target = amqp.queue()
    ids = {str(uuid.uuid4()) for _ in range(_MESSAGES)}
    for event_id in ids:
        amqp.admin.basic_publish(
            "", source, b'{"n":1}', pika.BasicProperties(message_id=event_id, expiration="0")
        )
    wait(
        lambda: amqp.admin.queue_declare(dlq, passive=True).method.message_count == _MESSAGES, what="the DLQ"
    )
    yield dlq, target, ids


def _collector(tmp_path: Path, port: int) -> Any:
    process = collect(
        str(tmp_path / "crash.duckdb"),
        port,
        "--amqp-url",
        AMQP_URL,
        "--token",
        _TOKEN,
        "--allow-redrive",
    )
    wait_healthy(f"http://127.0.0.1:{port}", process)
    return process


def _redrive(port: int, dlq: str, target: str, out: dict[str, Any]) -> None:
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/redrive",
            json={"queue": dlq, "to_queue": target, "actor": "crash-test"},
            headers={"Authorization": f"Bearer {_TOKEN}"},
            timeout=120,
        )
        out["status"], out["answer"] = response.status_code, response.json()
    except httpx.HTTPError as exc:
        out["error"] = exc


def test_killing_the_collector_mid_redrive_loses_nothing(
    tmp_path: Path, broker: Any, dead_letters: tuple[str, str, set[str]]
) -> None:
    dlq, target, ids = dead_letters
    port = free_port()
    process = _collector(tmp_path, port)
    watcher = pika.BlockingConnection(pika.URLParameters(AMQP_URL)).channel()
    try:
        out: dict[str, Any] = {}
        thread = threading.Thread(target=_redrive, args=(port, dlq, target, out))
        thread.start()
        wait(lambda: watcher.queue_declare(target, passive=True).method.message_count >= 100, timeout=30)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        thread.join(30)
        assert "error" in out, "the redrive finished before the kill: nothing was tested"

        reader = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = reader.channel()
        still = wait(lambda: _ids(channel, dlq) or None, what="the DLQ after the crash")  # unacked came back
        sent = _ids(channel, target)
        reader.close()
        assert 0 < len(set(sent)) < _MESSAGES  # killed mid-way
        assert set(still) | set(sent) == ids  # every message somewhere: never neither
        assert len(still) + len(set(sent)) - len(set(still) & set(sent)) == _MESSAGES

        process = _collector(tmp_path, port)  # restarted: finish the job
        finish: dict[str, Any] = {}
        _redrive(port, dlq, target, finish)
        assert finish.get("status") == 200, finish
        assert finish["answer"]["sent"] == len(still)
        assert watcher.queue_declare(dlq, passive=True).method.message_count == 0
        reader = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        delivered = _ids(reader.channel(), target)
        reader.close()
        assert set(delivered) == ids  # all there; duplicates allowed (at-least-once)
        assert len(delivered) - len(set(delivered)) <= len(set(still) & set(sent))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        watcher.connection.close()
