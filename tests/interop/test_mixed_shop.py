"""A mixed shop: clients and instrumentations nobody here wrote, against the real broker and
`eventscope collect`, with broker truth off and on — zero false orphans, every real one.

Services (one process each, see services.py and node/service.js):

* eventscope's pika adapter publishes to a Node.js consumer traced by
  ``@opentelemetry/instrumentation-amqplib``, which acks, nacks, rejects, requeues and closes
  its channel mid-message; to consumers traced by ``opentelemetry-instrumentation-pika``
  (``basic_consume`` and ``consume()``) and ``opentelemetry-instrumentation-aio-pika``; through
  an alternate exchange, an exchange-to-exchange binding, and the default exchange to a queue
  that does not exist (a real orphan);
* the Node service, the OTel pika and the aio-pika services publish to an eventscope consumer
  (the Node one also to a key nothing is bound to: a real orphan);
* eventscope → OTel-only pika service → eventscope → eventscope is one chain;
* pika's direct reply-to RPC example under ``install()``; a second client leaves before its
  reply (a real orphan: the reply has nowhere to go).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.broker.test_broker_truth import collect, sql
from tests.broker.test_broker_truth import management as management  # a fixture
from tests.conftest import AMQP_URL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="session")
def node_service() -> Path:
    """node/service.js with its locked dependencies (``npm ci`` into node/node_modules, which
    is gitignored; re-run only when package-lock.json is newer than the install).
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Node.js amqplib service")
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return NODE_DIR / "service.js"


def declare(amqp: Any) -> dict[str, Any]:
    n: dict[str, Any] = {"shop": amqp.exchange(), "ae_alt": amqp.exchange(kind="fanout")}
    n["ae_main"] = amqp.name("x")
    amqp.admin.exchange_declare(n["ae_main"], "direct", arguments={"alternate-exchange": n["ae_alt"]})
    amqp.exchanges.append(n["ae_main"])
    n["e2e_src"] = amqp.exchange()
    n["e2e_dst"] = amqp.exchange()
    amqp.admin.exchange_bind(destination=n["e2e_dst"], source=n["e2e_src"], routing_key="e2e.#")
    bindings = {
        "node_in": "node.#",
        "otel_basic": "otel.basic",
        "otel_gen": "otel.gen",
        "aio_in": "aio.in",
        "chain_in": "chain.start",
        "chain_mid": "chain.mid",
        "chain_end": "chain.end",
        "es_in": "from.#",
    }
    for name, key in bindings.items():
        n[name] = amqp.queue()
        amqp.bind(n[name], n["shop"], key)
    n["ae_q"] = amqp.queue()
    amqp.bind(n["ae_q"], n["ae_alt"], "")
    n["e2e_q"] = amqp.queue()
    amqp.bind(n["e2e_q"], n["e2e_dst"], "#")
    n["rpc"] = amqp.queue()
    n["rpc_late"] = amqp.queue()
    n["missing"] = amqp.name("never-declared")
    n["node_id"] = f"node-{uuid.uuid4().hex}"
    n["node_lost_id"] = f"node-lost-{uuid.uuid4().hex}"
    return n


def run_shop(url: str, names: dict[str, Any], node: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    blob = json.dumps(names)
    commands = [
        [sys.executable, "-m", "tests.interop.services", role, url, blob]
        for role in ("eventscope_consumer", "otel_pika", "otel_aio_pika", "rpc", "eventscope_producer")
    ]
    node_producer = {
        "publish": [
            [names["shop"], "from.node", names["node_id"]],
            [names["shop"], "nowhere.node", names["node_lost_id"]],
        ]
    }
    node_consumer = {"queue": names["node_in"], "expect": 10}  # settles, redeliveries included
    commands.append(["node", str(node), url, AMQP_URL, "producer", json.dumps(node_producer)])
    commands.append(["node", str(node), url, AMQP_URL, "consumer", json.dumps(node_consumer)])
    processes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env
        )
        for command in commands
    ]
    failures = []
    for command, process in zip(commands, processes, strict=True):
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            failures.append(f"{command[:4]}: {output}")
    assert not failures, "\n".join(failures)


def ordered(rows: Any) -> list[tuple]:
    """Rows sorted with None before any text."""
    return sorted(rows, key=lambda row: tuple("" if x is None else str(x) for x in row))


def label_of(names: dict[str, Any], event: dict[str, Any]) -> str:
    key = event["routing_key"] or ""
    if event["event_id"].startswith("mid-"):
        return "chain.mid"  # opentelemetry-instrumentation-pika records no routing key
    if key.startswith("amq.rabbitmq.reply-to"):
        return "reply"
    by_queue = {v: k for k, v in names.items() if isinstance(v, str)}
    if event["exchange"] in ("", "amq.default"):
        return by_queue.get(key, key)
    if event["exchange"] == names["ae_main"]:
        return "ae"
    if event["exchange"] == names["e2e_src"]:
        return "e2e"
    return key


def snapshot(url: str, names: dict[str, Any]) -> dict[str, Any]:
    events = sql(url, "SELECT event_id, exchange, routing_key FROM events")
    labels = {e["event_id"]: label_of(names, e) for e in events}
    queues = {v: k for k, v in names.items() if isinstance(v, str)}
    # what the consumer spans say (firehose-only attempts have no outcome to check)
    deliveries = sql(url, "SELECT event_id, queue, outcome FROM deliveries WHERE trace_id IS NOT NULL")
    orphans = sql(url, "SELECT event_id, queue, reason FROM orphans")
    return {
        "labels": labels,
        "events": sorted((labels[e["event_id"]], e["exchange"], e["routing_key"]) for e in events),
        "outcomes": ordered(
            (labels.get(d["event_id"], "?"), queues.get(d["queue"], d["queue"]), d["outcome"])
            for d in deliveries
        ),
        "orphans": ordered(
            (labels.get(o["event_id"], "?"), queues.get(o["queue"], o["queue"]), o["reason"]) for o in orphans
        ),
    }


def settle_on(url: str, names: dict[str, Any], orphans: list[tuple], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = snapshot(url, names)
        if found["orphans"] == orphans or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


NODE_OUTCOMES = [
    ("node.ack", "node_in", "ack"),
    ("node.ack", "node_in", "ack"),
    ("node.ack", "node_in", "ack"),
    ("node.close", "node_in", None),  # the channel closed mid-message: no outcome
    ("node.close", "node_in", "ack"),  # ... and its redelivery acked
    ("node.nack", "node_in", "nack"),
    ("node.nack-requeue", "node_in", "ack"),
    ("node.nack-requeue", "node_in", "requeue"),
    ("node.reject", "node_in", "reject"),
    ("node.reject-requeue", "node_in", "ack"),
    ("node.reject-requeue", "node_in", "requeue"),
]


def check_shop(found: dict[str, Any], names: dict[str, Any], orphans: list[tuple]) -> None:
    assert found["orphans"] == orphans, found
    events = found["events"]
    # aio-pika's "EXCHANGE,ROUTING_KEY" destination, read as exchange and routing key
    assert ("from.aio", names["shop"], "from.aio") in events, events
    assert ("es_in", "", names["es_in"]) in events, events
    # amqplib's producer: exchange and routing key; the default exchange stays ""
    assert ("from.node", names["shop"], "from.node") in events, events
    outcomes = found["outcomes"]
    assert [o for o in outcomes if o[0].startswith("node.") and o[1] == "node_in"] == NODE_OUTCOMES, outcomes
    # the OTel-only consumers cannot tell an ack from "still processing"
    for key in ("otel.basic", "otel.gen", "aio.in", "chain.start"):
        assert [o[2] for o in outcomes if o[0] == key and o[1] is None] == ["unknown"], (key, outcomes)
    # the direct reply delivered to its pseudo-consumer
    assert ("reply", "amq.rabbitmq.reply-to", "ack") in outcomes, outcomes


def check_chain(url: str, labels: dict[str, str]) -> None:
    start = next(event_id for event_id, label in labels.items() if label == "chain.start")
    chain = sql(url, f"SELECT event_id, depth FROM chain('{start}')")
    assert sorted((labels.get(r["event_id"], "?"), r["depth"]) for r in chain) == [
        ("chain.end", 2),
        ("chain.mid", 1),
        ("chain.start", 0),
    ], chain


def test_mixed_shop_spans_only(amqp: Any, tmp_path: Path, node_service: Path) -> None:
    names = declare(amqp)
    expected = ordered(
        [
            ("node.nack", "node_in", "failed"),
            ("node.reject", "node_in", "failed"),
            ("nowhere.node", None, "unconsumed"),  # unroutable: only broker truth can tell
            ("missing", "missing", "unconsumed"),  # likewise
            ("reply", None, "unroutable"),  # its client had left: a direct reply has no queue
        ]
    )
    with collect(tmp_path) as url:
        run_shop(url, names, node_service)
        found = settle_on(url, names, expected)
        check_shop(found, names, expected)
        check_chain(url, found["labels"])


def test_mixed_shop_with_broker_truth(
    amqp: Any, tmp_path: Path, node_service: Path, management: str, tracing: None
) -> None:
    names = declare(amqp)
    expected = ordered(
        [
            ("node.nack", "node_in", "failed"),
            ("node.reject", "node_in", "failed"),
            ("nowhere.node", None, "unroutable"),
            ("missing", None, "unroutable"),
            ("reply", None, "unroutable"),
        ]
    )
    flags = ["--amqp-url", AMQP_URL, "--firehose"]
    flags += ["--management-url", management, "--management-interval", "0.3"]
    with collect(tmp_path, *flags) as url:
        run_shop(url, names, node_service)
        found = settle_on(url, names, expected)
        check_shop(found, names, expected)
        check_chain(url, found["labels"])
