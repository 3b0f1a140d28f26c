"""Broker truth end to end: the real broker, the adapters, `eventscope collect` with and without
the firehose, the dead-letter tap and the management poller.

One shop flow, four services (one process each, real OTLP exporter), every orphan reason from
a real broker situation:

* ``refund.requested`` — nothing is bound to it (unroutable);
* ``report.daily`` — routed to a queue nobody consumes (unconsumed);
* a fan-out to three subscriber queues, one never read (unconsumed for that queue only);
* ``payment.failed`` — nacked without requeue into a fanout DLX (dead_lettered; failed without
  broker truth);
* a message in a queue with a TTL and no DLX (expired), and in one with a TTL and a direct DLX
  (dead_lettered, x-death reason expired);
* a consumer that takes a message and disconnects without acking (unacked);
* healthy chains: order.placed → billing (acks, publishes invoice.created) and shipping (get +
  ack), the invoice and two fan-out copies consumed;
* a raw pika producer (no message id, no trace context) read by a raw consumer, and an
  opentelemetry-instrumentation-pika producer (no message id, trace context) read by an
  instrumented consumer.

Spans only, the collector knows what spans say and is honest about the rest; with broker
truth every row is exact. The management plugin and firehose tracing are turned on for this
module and restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventscope.tracer.server.app import CollectorConfig
from tests.conftest import AMQP_URL
from tests.processes import CLI, free_port, wait_healthy
from tests.spans import RunningCollector

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANAGEMENT = "http://guest:guest@127.0.0.1:15672"
TTL_MS = 300


# -- broker state: turned on here, restored afterwards ---------------------------------------
def _management_enabled() -> bool:
    out = subprocess.run(["rabbitmq-plugins", "list", "-e", "-m"], capture_output=True, text=True, timeout=60)
    return "rabbitmq_management" in out.stdout.split()


@pytest.fixture(scope="module")
def management(broker: Any) -> Iterator[str]:
    """The management API on 127.0.0.1:15672; disabled again afterwards if it was disabled."""
    was_enabled = _management_enabled()
    if not was_enabled:
        subprocess.run(
            ["rabbitmq-plugins", "enable", "rabbitmq_management"], capture_output=True, timeout=120
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{MANAGEMENT}/api/overview", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the management API did not come up"
            time.sleep(0.2)
        yield MANAGEMENT
    finally:
        if not was_enabled:
            subprocess.run(
                ["rabbitmq-plugins", "disable", "rabbitmq_management"], capture_output=True, timeout=120
            )


# -- the flow -----------------------------------------------------------------------------------
FLOW = textwrap.dedent(
    """
    import json, os, sys, time
    import pika
    from eventscope.tracer import setup
    from eventscope.adapters.pika import instrument_channel

    role, endpoint, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    provider = setup(service=role, endpoint=endpoint, schedule_delay_millis=50)
    parameters = pika.ConnectionParameters("127.0.0.1", 5672, os.environ.get("EVENTSCOPE_TEST_VHOST", "/"))
    connection = pika.BlockingConnection(parameters)
    channel = instrument_channel(connection.channel())
    done = {}

    def until(predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
        assert predicate(), (role, done)

    def handled(name):
        def callback(ch, method, properties, body):
            ch.basic_ack(method.delivery_tag)
            done[name] = True
        return callback

    if role == "orders":
        channel.basic_publish(names["shop"], "order.placed", b'{"order": 1}')
        channel.basic_publish(names["shop"], "refund.requested", b"{}")  # nothing bound
        channel.basic_publish(names["shop"], "report.daily", b"{}")  # nobody reads the queue
        channel.basic_publish(names["shop"], "payment.failed", b"{}")  # nacked into a DLX
        channel.basic_publish(names["notify"], "", b"{}")  # fan-out, one queue never read
        channel.basic_publish("", names["ttl"], b"{}")  # expires, no DLX
        channel.basic_publish("", names["ttl_dlx"], b"{}")  # expires into a direct DLX
        channel.basic_publish("", names["fragile"], b"{}")  # its consumer leaves without ack
    elif role == "billing":
        def on_order(ch, method, properties, body):
            ch.basic_publish(names["shop"], "invoice.created", b"{}")  # caused by order.placed
            ch.basic_ack(method.delivery_tag)
            done["billing"] = True

        def on_payment(ch, method, properties, body):
            ch.basic_nack(method.delivery_tag, requeue=False)
            done["payments"] = True

        channel.basic_consume(names["billing"], on_order)
        channel.basic_consume(names["payments"], on_payment)
        until(lambda: len(done) == 2)
    elif role == "shipping":
        for queue in ("invoices", "email", "sms"):
            channel.basic_consume(names[queue], handled(queue))

        def take_shipping():
            method, properties, body = channel.basic_get(names["shipping"])
            if method is not None:
                channel.basic_ack(method.delivery_tag)  # after the receive span: a settle span
                done["shipping"] = True
            return "shipping" in done

        until(lambda: take_shipping() and len(done) == 4)
        # takes the fragile message and disconnects without acking it
        other = pika.BlockingConnection(parameters)
        fragile = instrument_channel(other.channel())
        fragile.basic_consume(names["fragile"], lambda ch, method, props, body: done.update(fragile=True))
        deadline = time.monotonic() + 20
        while "fragile" not in done and time.monotonic() < deadline:
            other.process_data_events(time_limit=0.05)
        assert "fragile" in done
        other.close()
    elif role == "legacy":
        from opentelemetry.instrumentation.pika import PikaInstrumentor

        raw = connection.channel()  # uninstrumented: no message id, no trace context
        raw.basic_publish("", names["legacy"], b"legacy payload")
        otel = connection.channel()
        PikaInstrumentor.instrument_channel(otel, tracer_provider=provider)
        otel.basic_publish("", names["otel"], b"otel payload")  # trace context, no message id
        channel.basic_consume(names["otel"], handled("otel"))

        def take_legacy():
            method, _, _ = raw.basic_get(names["legacy"], auto_ack=True)
            if method is not None:
                done["legacy"] = True
            return "legacy" in done

        until(lambda: take_legacy() and "otel" in done)
    connection.close()
    assert provider.force_flush(10_000)
    print(role, "done", flush=True)
    """
)
ROLES = ("orders", "billing", "shipping", "legacy")


def declare_shop(amqp: Any) -> dict[str, str]:
    """The shop's exchanges and queues (deleted by the amqp fixture)."""
    n: dict[str, str] = {}
    n["shop"] = amqp.exchange()
    n["notify"] = amqp.exchange(kind="fanout")
    n["dlx_fanout"] = amqp.exchange(kind="fanout")
    n["dlx_direct"] = amqp.exchange(kind="direct")
    for name in ("billing", "shipping", "invoices", "report", "email", "sms", "audit", "fragile"):
        n[name] = amqp.queue()
    for name in ("legacy", "otel"):
        n[name] = amqp.queue()
    n["payments"] = amqp.queue(**{"x-dead-letter-exchange": n["dlx_fanout"]})
    n["ttl"] = amqp.queue(**{"x-message-ttl": TTL_MS})
    n["ttl_dlx"] = amqp.queue(
        **{
            "x-message-ttl": TTL_MS,
            "x-dead-letter-exchange": n["dlx_direct"],
            "x-dead-letter-routing-key": "expired",
        }
    )
    amqp.bind(n["billing"], n["shop"], "order.*")
    amqp.bind(n["shipping"], n["shop"], "order.*")
    amqp.bind(n["invoices"], n["shop"], "invoice.*")
    amqp.bind(n["report"], n["shop"], "report.*")
    amqp.bind(n["payments"], n["shop"], "payment.*")
    for name in ("email", "sms", "audit"):
        amqp.bind(n[name], n["notify"], "")
    return n


def run_flow(url: str, names: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FLOW, role, url, json.dumps(names)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for role in ROLES
    ]
    for process in processes:
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output


# -- reading the store ----------------------------------------------------------------------
def sql(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/api/sql", json={"sql": query}, timeout=30)
    assert response.status_code == 200, response.text
    document = response.json()
    return [dict(zip(document["columns"], row, strict=True)) for row in document["rows"]]


def _in(values: Any) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


LABELS = {
    "order.placed": "order",
    "invoice.created": "invoice",
    "refund.requested": "refund",
    "report.daily": "report",
    "payment.failed": "payment",
}


def snapshot(url: str, names: dict[str, str]) -> dict[str, Any]:
    """Everything the flow left in the store, with event ids replaced by readable labels."""
    ours = _in(names.values())
    events = sql(
        url,
        "SELECT event_id, exchange, routing_key, producer_service, source, routed_queues, causation_id "
        f"FROM events WHERE exchange IN ({ours}) OR routing_key IN ({ours})",
    )
    by_queue = {queue: label for label, queue in names.items()}
    label: dict[str, str] = {}
    for e in events:
        if e["exchange"] == names["notify"]:
            label[e["event_id"]] = "notify"
        else:
            # (opentelemetry-instrumentation-pika names the queue as its destination, not the key)
            label[e["event_id"]] = (
                LABELS.get(e["routing_key"])
                or by_queue.get(e["routing_key"])
                or by_queue.get(e["exchange"], "?")
            )
    ids = _in(label) or "''"

    def q(name: str | None) -> str | None:
        return None if name is None else by_queue.get(name, name)

    return {
        "ids": {v: k for k, v in label.items()},
        "events": sorted(
            (
                label[e["event_id"]],
                e["source"],
                tuple(sorted(q(x) for x in e["routed_queues"])) if e["routed_queues"] is not None else None,
                e["producer_service"],
                label.get(e["causation_id"]) if e["causation_id"] else None,
            )
            for e in events
        ),
        "deliveries": sorted(
            (
                label[d["event_id"]],
                q(d["queue"]),
                d["consumer_service"],
                d["outcome"],
                d["source"],
                d["redelivered"],
            )
            for d in sql(
                url,
                "SELECT event_id, queue, consumer_service, outcome, source, redelivered "
                f"FROM deliveries WHERE event_id IN ({ids})",
            )
        ),
        "edges": sorted(
            (label.get(r["cause_event_id"], "?"), label.get(r["effect_event_id"], "?"))
            for r in sql(
                url,
                "SELECT cause_event_id, effect_event_id FROM causal_edges "
                f"WHERE cause_event_id IN ({ids}) OR effect_event_id IN ({ids})",
            )
        ),
        "orphans": sorted(
            (label[o["event_id"]], q(o["queue"]), o["reason"])
            for o in sql(url, f"SELECT event_id, queue, reason FROM orphans WHERE event_id IN ({ids})")
        ),
        "dead_letters": sorted(
            (label[d["event_id"]], q(d["queue"]), d["reason"], d["count"], q(d["dead_letter_exchange"]))
            for d in sql(
                url,
                "SELECT event_id, queue, reason, count, dead_letter_exchange FROM dead_letters "
                f"WHERE event_id IN ({ids})",
            )
        ),
    }


def settle_on(
    url: str, names: dict[str, str], expected: dict[str, Any], timeout: float = 20.0
) -> dict[str, Any]:
    """Poll until the store shows ``expected`` (or time runs out); return the last snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        found = snapshot(url, names)
        if all(found[key] == value for key, value in expected.items()) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# -- the collector as users run it ------------------------------------------------------------
@contextlib.contextmanager
def collect(tmp_path: Path, *flags: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            *CLI,
            "--log-level",
            "warning",
            "collect",
            "--db",
            str(tmp_path / "broker-truth.duckdb"),
            "--listen",
            f"127.0.0.1:{port}",
            "--grace",
            "0",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, timeout=30)
        yield url
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def healthz(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/healthz", timeout=5).json()


def wait_health(url: str, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = healthz(url)
        if predicate(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


# -- what each mode must find -----------------------------------------------------------------
CONSUMED = [
    ("invoice", "invoices", "shipping", "ack"),
    ("notify", "email", "shipping", "ack"),
    ("notify", "sms", "shipping", "ack"),
    ("order", "billing", "billing", "ack"),
    ("order", "shipping", "shipping", "ack"),
    ("otel", "otel", "legacy", "ack"),
    ("payment", "payments", "billing", "nack"),
    ("fragile", "fragile", "shipping", None),
]


def test_spans_only_is_exact_about_spans_and_honest_about_the_rest(amqp: Any, tmp_path: Path) -> None:
    names = declare_shop(amqp)
    with collect(tmp_path) as url:
        run_flow(url, names)
        expected = {
            "events": sorted(
                [
                    ("order", "span", None, "orders", None),
                    ("invoice", "span", None, "billing", "order"),
                    ("refund", "span", None, "orders", None),
                    ("report", "span", None, "orders", None),
                    ("payment", "span", None, "orders", None),
                    ("notify", "span", None, "orders", None),
                    ("ttl", "span", None, "orders", None),
                    ("ttl_dlx", "span", None, "orders", None),
                    ("fragile", "span", None, "orders", None),
                    ("otel", "span", None, "legacy", None),  # the raw producer is invisible
                ]
            ),
            "deliveries": sorted((*d, "span", False) for d in CONSUMED),
            "edges": [("order", "invoice")],
            "orphans": sorted(
                [
                    ("refund", None, "unconsumed"),  # unroutable: only broker truth can tell
                    ("report", None, "unconsumed"),
                    ("payment", "payments", "failed"),  # dead-lettered: no DLX tap here
                    ("ttl", "ttl", "unconsumed"),  # expired: no queue arguments here
                    ("ttl_dlx", "ttl_dlx", "unconsumed"),
                    ("fragile", "fragile", "unacked"),
                    # the fan-out's unread audit queue: invisible without broker truth
                ]
            ),
            "dead_letters": [],
        }
        found = settle_on(url, names, expected)
        assert {key: found[key] for key in expected} == expected
        order = found["ids"]["order"]
        chain = sql(url, f"SELECT event_id, depth, cause_event_id FROM chain('{order}')")
        assert chain == [
            {"event_id": order, "depth": 0, "cause_event_id": None},
            {"event_id": found["ids"]["invoice"], "depth": 1, "cause_event_id": order},
        ]
        assert found["ids"]["otel"].startswith("otel-")  # synthesized from the producer span


def test_broker_truth_makes_every_orphan_exact(
    amqp: Any, tmp_path: Path, management: str, tracing: None
) -> None:
    names = declare_shop(amqp)
    flags = ["--amqp-url", AMQP_URL, "--firehose", "--dlx", names["dlx_fanout"]]
    flags += ["--management-url", management, "--management-interval", "0.3"]
    with collect(tmp_path, *flags) as url:
        # the direct DLX is found through the management API; wait until the tap is bound to both
        state = wait_health(
            url,
            lambda s: (
                s["firehose"]["connected"]
                and s["management"]["ok"]
                and {names["dlx_fanout"], names["dlx_direct"]} <= set(s["dead_letter_tap"]["exchanges"])
            ),
        )
        assert state["firehose"]["connected"] and state["firehose"]["tracing"]["enabled"], state
        assert {names["dlx_fanout"], names["dlx_direct"]} <= set(state["dead_letter_tap"]["exchanges"]), state
        run_flow(url, names)
        expected = {
            "events": sorted(
                [
                    ("order", "both", ("billing", "shipping"), "orders", None),
                    ("invoice", "both", ("invoices",), "billing", "order"),
                    ("refund", "both", (), "orders", None),
                    ("report", "both", ("report",), "orders", None),
                    ("payment", "both", ("payments",), "orders", None),
                    ("notify", "both", ("audit", "email", "sms"), "orders", None),
                    ("ttl", "both", ("ttl",), "orders", None),
                    ("ttl_dlx", "both", ("ttl_dlx",), "orders", None),
                    ("fragile", "both", ("fragile",), "orders", None),
                    ("otel", "both", ("otel",), "legacy", None),
                    ("legacy", "firehose", ("legacy",), None, None),  # seen only by the broker
                ]
            ),
            "deliveries": sorted(
                [(*d, "both", False) for d in CONSUMED]
                + [("legacy", "legacy", None, None, "firehose", False)]
            ),
            "edges": [("order", "invoice")],
            "orphans": sorted(
                [
                    ("refund", None, "unroutable"),
                    ("report", "report", "unconsumed"),
                    ("notify", "audit", "unconsumed"),  # only the unread one of three
                    ("payment", "payments", "dead_lettered"),  # one row: the broker's fate wins
                    ("ttl", "ttl", "expired"),
                    ("ttl_dlx", "ttl_dlx", "dead_lettered"),
                    ("fragile", "fragile", "unacked"),
                ]
            ),
            "dead_letters": sorted(
                [
                    ("payment", "payments", "rejected", 1, "dlx_fanout"),
                    ("ttl_dlx", "ttl_dlx", "expired", 1, "dlx_direct"),
                ]
            ),
        }
        found = settle_on(url, names, expected)
        assert {key: found[key] for key in expected} == expected
        ids = found["ids"]
        assert ids["legacy"].startswith("amqp-") and ids["otel"].startswith("otel-")
        order = ids["order"]
        chain = sql(url, f"SELECT event_id, depth, cause_event_id FROM chain('{order}')")
        assert chain == [
            {"event_id": order, "depth": 0, "cause_event_id": None},
            {"event_id": ids["invoice"], "depth": 1, "cause_event_id": order},
        ]
        # the producer span's facts survive the merge; the broker's routing is added
        (row,) = sql(url, f"SELECT trace_id, span_id, exchange FROM events WHERE event_id = '{ids['otel']}'")
        assert row["exchange"] == "" and ids["otel"] == f"otel-{row['trace_id']}-{row['span_id']}"
        queues = {
            r["name"]: r for r in sql(url, f"SELECT * FROM queues WHERE name IN ({_in(names.values())})")
        }
        assert queues[names["ttl"]]["message_ttl_ms"] == TTL_MS
        assert queues[names["ttl"]]["dead_letter_exchange"] is None
        assert queues[names["ttl_dlx"]]["dead_letter_exchange"] == names["dlx_direct"]
        bindings = sql(url, f"SELECT destination FROM bindings WHERE source = '{names['notify']}'")
        assert sorted(b["destination"] for b in bindings) == sorted(
            names[q] for q in ("audit", "email", "sms")
        )
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'eventscope_broker_tap_connected{tap="firehose"} 1' in metrics
        assert "eventscope_management_up 1" in metrics


def _close_connection(name: str) -> None:
    """Close the broker connection a tap named itself with (management API)."""
    connections = httpx.get(f"{MANAGEMENT}/api/connections", timeout=5).json()
    (target,) = [c["name"] for c in connections if c.get("user_provided_name") == name]
    response = httpx.delete(
        f"{MANAGEMENT}/api/connections/{urllib.parse.quote(target, safe='')}",
        headers={"X-Reason": "eventscope test: reconnect"},
        timeout=5,
    )
    assert response.status_code in (200, 204), response.text


def test_taps_reconnect_and_the_collector_keeps_serving(
    amqp: Any, tmp_path: Path, management: str, tracing: None
) -> None:
    queue = amqp.queue()
    config = CollectorConfig(
        db_path=str(tmp_path / "reconnect.duckdb"),
        grace_s=0,
        amqp_url=AMQP_URL,
        firehose=True,
        broker_flush_s=0.05,
    )
    running = RunningCollector(config).start()
    try:
        url, receivers = running.url, running.collector.receivers
        assert receivers is not None and receivers.firehose is not None
        tap = receivers.firehose
        assert tap.connected.wait(10)
        deadline = time.monotonic() + 10
        while True:  # the broker may take a moment to list the new connection
            with contextlib.suppress(ValueError):
                _close_connection(f"eventscope collector {tap.queue}")
                break
            assert time.monotonic() < deadline, "the tap's connection is not listed"
            time.sleep(0.2)
        state = wait_health(url, lambda s: s["firehose"]["reconnects"] >= 1 and s["firehose"]["connected"])
        assert state["status"] == "ok" and state["firehose"]["connected"], state
        assert state["firehose"]["reconnects"] == 1
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'eventscope_broker_tap_reconnects_total{tap="firehose"} 1' in metrics
        assert 'eventscope_broker_tap_connected{tap="firehose"} 1' in metrics
        # records after the reconnect are stored again
        amqp.admin.basic_publish("", queue, b"after the reconnect")
        deadline = time.monotonic() + 10
        while not sql(url, f"SELECT event_id FROM events WHERE routing_key = '{queue}'"):
            assert time.monotonic() < deadline, "no firehose record after the reconnect"
            time.sleep(0.1)
        (row,) = sql(url, f"SELECT source, routed_queues FROM events WHERE routing_key = '{queue}'")
        assert row == {"source": "firehose", "routed_queues": [queue]}
    finally:
        running.stop()
