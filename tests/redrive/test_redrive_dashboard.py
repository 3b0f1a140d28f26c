"""The dashboard's redrive component against a live collector: browsing changes nothing on the
broker (DLQ depth and redelivered flags as they were); the confirmed button moves the group.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pytest
from streamlit.testing.v1 import AppTest

from tests.broker.test_broker_truth import management  # noqa: F401  (fixture)
from tests.conftest import amqp_parameters
from tests.dashboard.dashboard_helpers import APP, texts
from tests.redrive.rig import TOKEN, Rig, wait

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, tracing: None, management: str) -> Iterator[Rig]:  # noqa: F811
    rig = Rig(tmp_path_factory.mktemp("redrive-dashboard"), management)
    yield rig
    rig.close()


def _page(rig: Rig, monkeypatch: pytest.MonkeyPatch, page: str, **query: str) -> AppTest:
    monkeypatch.delenv("EVENTSCOPE_DB", raising=False)
    monkeypatch.setenv("EVENTSCOPE_API", rig.url)
    monkeypatch.setenv("EVENTSCOPE_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=60)
    for name, value in query.items():
        at.query_params[name] = value
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _flags(queue: str) -> list[bool]:
    """The redelivered flag of every message in ``queue`` (read, then handed back by the close)."""
    connection = pika.BlockingConnection(amqp_parameters())
    channel = connection.channel()
    flags = []
    while True:
        method, _, _ = channel.basic_get(queue)
        if method is None:
            break
        flags.append(method.redelivered)
    connection.close()
    return flags


def test_browsing_changes_nothing_and_the_confirmed_button_redrives(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"dash.{uuid.uuid4().hex[:6]}"
    queue = rig.queue(dead_letter=True)
    rig.channel.queue_bind(queue, rig.shop, key)
    ids = [rig.publish(key, type="dash.test") for _ in range(2)]
    for event_id in ids:
        method = rig.take(queue, event_id)
        rig.channel.basic_reject(method.delivery_tag, requeue=False)
    for event_id in ids:
        rig.wait_orphan(event_id, "dead_lettered")
    depth = rig.depth(rig.dlq)

    orphans = _page(rig, monkeypatch, "orphans")
    chain = _page(rig, monkeypatch, "chain", event=ids[0])

    assert "Dead letters" in texts(orphans)
    groups = next(
        d.value for d in orphans.dataframe if "died_in" in d.value.columns and "messages" in d.value.columns
    )
    assert list(groups[groups["died_in"] == queue]["messages"]) == [2]
    assert "Redrive this dead letter" in [e.proto.label for e in chain.expander]
    assert rig.depth(rig.dlq) == depth  # browsing consumed nothing ...
    assert _flags(rig.dlq) == [False] * depth  # ... and requeued nothing

    orphans.selectbox(key="redrive-group").select(
        next(o for o in orphans.selectbox(key="redrive-group").options if queue in o)
    )
    orphans.run()
    assert orphans.button(key="redrive-group-form-go").disabled  # not confirmed yet
    orphans.checkbox(key="redrive-group-form-confirm").check().run()
    orphans.button(key="redrive-group-form-go").click().run()

    assert not orphans.exception, [e.value for e in orphans.exception]
    assert "Redrive: 2 sent, 0 refused, 0 failed" in texts(orphans) + "\n".join(
        s.value for s in orphans.success
    )
    assert rig.depth(rig.dlq) == depth - 2
    got = []
    for _ in ids:
        method, properties, _ = rig.get(queue)
        rig.channel.basic_ack(method.delivery_tag)
        got.append(properties.message_id)
    assert sorted(got) == sorted(ids)
    wait(lambda: all(not rig.orphans(event_id) for event_id in ids), what="the orphans resolved")
    actors = rig.sql("SELECT DISTINCT actor FROM redrives WHERE event_id IN (?, ?)", *ids)
    assert actors == [("dashboard via api@127.0.0.1",)]
