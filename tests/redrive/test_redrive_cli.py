"""``eventscope redrive`` as scripts run it: no terminal, so never a prompt; exit codes say how it went."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.test_broker_truth import management  # noqa: F401  (fixture)
from tests.processes import CLI, free_port
from tests.redrive.rig import TOKEN, Rig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, tracing: None, management: str) -> Iterator[Rig]:  # noqa: F811
    rig = Rig(tmp_path_factory.mktemp("redrive-cli"), management)
    yield rig
    rig.close()


def _cli(*args: str, api: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "redrive", "--api", api, *args],
        stdin=subprocess.DEVNULL,  # not a terminal: it must not ask
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _dead_letter(rig: Rig) -> tuple[str, str]:
    key = f"cli.{uuid.uuid4().hex[:6]}"
    queue = rig.queue(dead_letter=True)
    rig.channel.queue_bind(queue, rig.shop, key)
    event_id = rig.publish(key, b'{"cli":1}')
    method = rig.take(queue, event_id)
    rig.channel.basic_reject(method.delivery_tag, requeue=False)
    rig.wait_orphan(event_id, "dead_lettered")
    return event_id, queue


def test_list_dry_run_then_redrive_without_a_terminal(rig: Rig, tmp_path: Path) -> None:
    event_id, queue = _dead_letter(rig)
    depth = rig.depth(rig.dlq)

    listed = _cli("--token", TOKEN, "--list", "--died-in", queue, api=rig.url)
    assert listed.returncode == 0, listed.stderr
    assert event_id in listed.stdout and "rejected" in listed.stdout

    dry = _cli("--token", TOKEN, event_id, "--dry-run", api=rig.url)
    assert dry.returncode == 0, dry.stderr
    assert f"would_send {event_id}" in dry.stdout
    assert '"x-eventscope-redrive": 1' in dry.stdout and 'body: {"cli":1}' in dry.stdout
    assert "nothing moved" in dry.stdout
    assert rig.depth(rig.dlq) == depth

    edit = tmp_path / "fixed.json"
    edit.write_text('{"cli":2}')
    done = _cli("--token", TOKEN, event_id, "--edit-body", str(edit), api=rig.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 sent, 0 refused, 0 failed" in done.stdout and "edited" in done.stdout
    method, properties, body = rig.get(queue)
    rig.channel.basic_ack(method.delivery_tag)
    assert (body, properties.message_id) == (b'{"cli":2}', event_id)
    (actor,) = rig.sql("SELECT actor FROM redrives WHERE event_id = ? AND outcome = 'sent'", event_id)[0]
    assert actor.endswith("(cli) via api@127.0.0.1")


def test_exit_codes_say_why_not(rig: Rig, tmp_path: Path) -> None:
    event_id, _ = _dead_letter(rig)
    depth = rig.depth(rig.dlq)

    wrong = _cli("--token", "wrong", event_id, api=rig.url)
    assert wrong.returncode == 2 and "refused (401)" in wrong.stderr
    unknown = _cli("--token", TOKEN, "no-such-event", api=rig.url)
    assert unknown.returncode == 1 and "unknown event" in unknown.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    edit = _cli("--token", TOKEN, event_id, "--edit-body", str(bad), api=rig.url)
    assert edit.returncode == 2 and "not valid JSON" in edit.stderr
    gone = _cli("--token", TOKEN, event_id, "--to-queue", "eventscope-test-gone", api=rig.url)
    assert gone.returncode == 2 and "does not exist" in gone.stderr
    nothing = _cli("--token", TOKEN, api=rig.url)
    assert nothing.returncode == 2
    down = _cli("--token", TOKEN, event_id, api=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3 and "cannot reach" in down.stderr
    assert rig.depth(rig.dlq) == depth  # none of these moved anything
