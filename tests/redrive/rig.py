"""A collector with every broker receiver and redrive on, and the broker set-up around it.

One per test module (module-scoped fixture in each module): the firehose (with payload
capture), the dead-letter tap on a fanout DLX with one dead-letter queue (DLQ) bound, the
management poller, and ``--allow-redrive`` with a token. Everything it declares lives in the
run's vhost and is deleted at teardown.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pika

from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.server.app import CollectorConfig
from tests.conftest import AMQP_URL, amqp_parameters
from tests.spans import RunningCollector

TOKEN = "redrive-test-token"


def wait(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Rig:
    """The running collector, a channel, and helpers that read what the collector stored."""

    def __init__(self, tmp: Path, management: str, **config: Any) -> None:
        self.connection = pika.BlockingConnection(amqp_parameters())
        self.channel = self.connection.channel()
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        suffix = uuid.uuid4().hex[:8]
        self.shop = self.exchange(f"eventscope-test-shop-{suffix}", "topic")
        self.dlx = self.exchange(f"eventscope-test-dlx-{suffix}", "fanout")
        self.dlq = self.queue(f"eventscope-test-dlq-{suffix}")
        self.channel.queue_bind(self.dlq, self.dlx, "")
        settings: dict[str, Any] = dict(
            db_path=str(tmp / "collector.duckdb"),
            grace_s=0,
            amqp_url=AMQP_URL,
            firehose=True,
            trace_on=False,
            dlx=(self.dlx,),
            management_url=management,
            management_interval_s=0.5,
            broker_flush_s=0.1,
            capture=PayloadCapture(),
            token=TOKEN,
            allow_redrive=True,
        )
        settings.update(config)
        self.running = RunningCollector(CollectorConfig(**settings)).start()
        self.url = self.running.url
        wait(self._taps_ready, what="the broker taps")
        wait(lambda: self.sql("SELECT 1 FROM bindings WHERE destination = ?", self.dlq), what="the topology")

    def _taps_ready(self) -> bool:
        state = self.running.collector.receivers.state()
        return state["firehose"]["connected"] and bool(self.running.collector.receivers.dead_letters.bound)

    # -- broker ---------------------------------------------------------------------------
    def exchange(self, name: str, kind: str) -> str:
        self.channel.exchange_declare(name, exchange_type=kind)
        self.exchanges.append(name)
        return name

    def queue(self, name: str | None = None, *, dead_letter: bool = False, **arguments: Any) -> str:
        name = name or f"eventscope-test-q-{uuid.uuid4().hex[:10]}"
        if dead_letter:
            arguments["x-dead-letter-exchange"] = self.dlx
        durable = arguments.get("x-queue-type") == "quorum"
        self.channel.queue_declare(name, durable=durable, arguments=arguments or None)
        self.queues.append(name)
        return name

    def publish(
        self, routing_key: str, body: bytes = b'{"n":1}', *, exchange: str | None = None, **props: Any
    ) -> str:
        event_id = props.pop("message_id", None) or str(uuid.uuid4())
        properties = pika.BasicProperties(message_id=event_id, content_type="application/json", **props)
        self.channel.basic_publish(self.shop if exchange is None else exchange, routing_key, body, properties)
        return event_id

    def get(self, queue: str, *, timeout: float = 10.0) -> tuple[Any, Any, Any]:
        return wait(
            lambda: _got(self.channel.basic_get(queue)), timeout=timeout, what=f"a message in {queue}"
        )

    def take(self, queue: str, event_id: str) -> Any:
        """basic_get one message (not acked), once the collector recorded that delivery.

        The firehose and dead-letter taps read in threads of their own: settling before the
        deliver record is stored could let the dead-letter copy be observed first.
        """
        (seen,) = self.sql("SELECT count(*) FROM deliveries WHERE event_id = ?", event_id)[0]
        method, _, _ = self.get(queue)
        wait(
            lambda: self.sql("SELECT count(*) FROM deliveries WHERE event_id = ?", event_id)[0][0] > seen,
            what="the delivery recorded",
        )
        return method

    def depth(self, queue: str) -> int:
        return self.channel.queue_declare(queue, passive=True).method.message_count

    # -- collector ------------------------------------------------------------------------
    def sql(self, query: str, *params: Any) -> list[tuple]:
        reader = self.running.collector.store.reader()
        try:
            return reader.execute(query, list(params)).fetchall()
        finally:
            reader.close()

    def orphans(self, event_id: str) -> list[tuple[str | None, str]]:
        return self.sql("SELECT queue, reason FROM orphans WHERE event_id = ? ORDER BY ALL", event_id)

    def wait_orphan(self, event_id: str, reason: str) -> None:
        wait(lambda: any(r == reason for _, r in self.orphans(event_id)), what=f"{event_id} {reason}")

    def wait_resolved(self, event_id: str) -> None:
        wait(lambda: not self.orphans(event_id), what=f"{event_id} resolved")

    def post(self, document: dict[str, Any], *, token: str | None = TOKEN, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(f"{self.url}/api/redrive", json=document, headers=headers, timeout=120)

    def redrive(self, **document: Any) -> dict[str, Any]:
        response = self.post({"actor": "tests", **document})
        assert response.status_code == 200, response.text
        return response.json()

    def ask(self, question: str, **params: Any) -> Any:
        response = httpx.get(
            f"{self.url}/api/{question}",
            params=params,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def close(self) -> None:
        self.running.stop()
        for queue in self.queues:
            with contextlib.suppress(Exception):
                self.channel.queue_delete(queue)
        for exchange in self.exchanges:
            with contextlib.suppress(Exception):
                self.channel.exchange_delete(exchange)
        with contextlib.suppress(Exception):
            self.connection.close()


def _got(result: tuple[Any, Any, Any]) -> tuple[Any, Any, Any] | None:
    return result if result[0] is not None else None
