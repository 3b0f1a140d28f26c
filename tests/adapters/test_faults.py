"""The pika adapter never breaks the host application (issue 2's acceptance).

Whatever goes wrong around it (collector down, a span processor that raises, hostile
headers from a foreign producer, a channel that closes under a publish, publisher confirms
that fail) the application sees exactly what it would see without eventscope: the same
return values, the same messages, the same exceptions. Tracing failures are counted in
``eventscope.tracer.sdk.failures``. Everything runs against the real broker and the real
OTLP/HTTP exporter.
"""

from __future__ import annotations

import copy
import decimal
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pika
import pika.exceptions
import pytest
from opentelemetry.sdk.trace import SpanProcessor
from pika.spec import BasicProperties

from eventscope.adapters.pika import instrument_channel
from eventscope.tracer.sdk import failures

pytestmark = pytest.mark.integration

STATUS_ERROR = 2  # OTLP Status.code for ERROR
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
APP_FIELDS = ("message_id", "type", "app_id", "timestamp", "correlation_id", "reply_to")


# -- helpers ------------------------------------------------------------------------------
def _consume_callback(connection: Any, channel: Any, queue: str, count: int) -> list[tuple[Any, Any, Any]]:
    """Deliveries via ``basic_consume``, acked inside the callback with the channel it receives."""
    got: list[tuple[Any, Any, Any]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: Any) -> None:
        got.append((method, properties, body))
        ch.basic_ack(method.delivery_tag)

    tag = channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    channel.basic_cancel(tag)
    return got


def _consume_generator(channel: Any, queue: str, count: int) -> list[tuple[Any, Any, Any]]:
    got: list[tuple[Any, Any, Any]] = []
    messages = channel.consume(queue, inactivity_timeout=5)
    for method, properties, body in messages:
        if method is None:
            break
        got.append((method, properties, body))
        channel.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    messages.close()
    channel.cancel()
    return got


def _consume_get(channel: Any, queue: str, count: int) -> list[tuple[Any, Any, Any]]:
    got: list[tuple[Any, Any, Any]] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is None:
            time.sleep(0.02)
            continue
        got.append((method, properties, body))
        channel.basic_ack(method.delivery_tag)
    return got


def _seen(deliveries: list[tuple[Any, Any, Any]]) -> list[tuple[Any, ...]]:
    """What the application can observe of each delivery, in a comparable form."""
    return [
        (method.exchange, method.routing_key, method.redelivered, dict(vars(properties)), body)
        for method, properties, body in deliveries
    ]


def _raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the call did not raise")


def _publish_span(spans: Any, routing_key: str) -> Any:
    found = spans.wait(
        lambda s: (
            s.kind == "PRODUCER"
            and s.attributes.get("messaging.rabbitmq.destination.routing_key") == routing_key
        )
    )
    assert len(found) == 1, [(s.name, s.attributes) for s in found]
    return found[0]


def _full_properties(**overrides: Any) -> BasicProperties:
    fields: dict[str, Any] = {
        "message_id": "app-message-id",
        "type": "app.event",
        "app_id": "app-service",
        "timestamp": 1_700_000_000,
        "correlation_id": "app-rpc-correlation",
        "reply_to": "app-replies",
        "content_type": "application/json",
        "delivery_mode": 2,
        "priority": 3,
        "user_id": "guest",
        "headers": {
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=value",
            "x-app": "kept",
            "x-causation-id": "app-cause",
            "x-correlation-id": "app-flow",
            "nested": {"list": [1, b"raw", None], "table": {"deep": True}},
        },
    }
    fields.update(overrides)
    return BasicProperties(**fields)


# -- (1) collector not listening ------------------------------------------------------------
_COLLECTOR_DOWN = textwrap.dedent(
    """
    import json, os, socket, sys, time
    import pika
    from eventscope.adapters.pika import instrument_channel
    from eventscope.tracer import setup
    from eventscope.tracer.sdk import failures

    queue, count = sys.argv[1], int(sys.argv[2])
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more
    setup(service="collector-down", endpoint=f"http://127.0.0.1:{port}")
    params = pika.ConnectionParameters(
        "127.0.0.1",
        5672,
        virtual_host=os.environ.get("EVENTSCOPE_TEST_VHOST", "/"),
        credentials=pika.PlainCredentials("guest", "guest"),
    )
    connection = pika.BlockingConnection(params)
    channel = instrument_channel(connection.channel())
    started = time.monotonic()
    for i in range(count):
        channel.basic_publish("", queue, b"m-%d" % i, pika.BasicProperties(message_id=f"id-{i}"))
    published = time.monotonic() - started
    bodies = []

    def on_message(ch, method, properties, body):
        bodies.append(body.decode())
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + 10
    while len(bodies) < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.05)
    consumed = time.monotonic() - started - published
    connection.close()
    print(json.dumps({
        "published_s": published, "consumed_s": consumed, "bodies": bodies,
        "failures": failures.counts(), "main_done": time.time(),
    }), flush=True)
    """
)


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}


def test_collector_down_never_blocks_or_raises(amqp: Any) -> None:
    queue = amqp.queue()
    count = 200
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECTOR_DOWN, queue, str(count)],
        capture_output=True,
        text=True,
        timeout=30,  # provider shutdown at exit must not hang
        env=_clean_env(),
    )
    exited = time.time()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bodies"] == [f"m-{i}" for i in range(count)]
    assert result["published_s"] < 5.0, result["published_s"]  # default export timeout is 5 s
    assert result["consumed_s"] < 5.0, result["consumed_s"]
    assert result["failures"] == {}
    assert exited - result["main_done"] < 20.0, "provider shutdown at exit took too long"
    assert exited - started < 30.0


# -- (2) + (6) a span processor that raises ---------------------------------------------
class _RaisingProcessor(SpanProcessor):
    def __init__(self, *, on_start: bool, on_end: bool) -> None:
        self.raise_on_start = on_start
        self.raise_on_end = on_end

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.raise_on_start:
            raise RuntimeError("span processor on_start is broken")

    def on_end(self, span: Any) -> None:
        if self.raise_on_end:
            raise RuntimeError("span processor on_end is broken")


@pytest.fixture(params=["on_start", "on_end", "both"])
def raising_processor(request: pytest.FixtureRequest, provider: Any) -> Iterator[_RaisingProcessor]:
    multi = provider._active_span_processor
    saved = multi._span_processors
    processor = _RaisingProcessor(
        on_start=request.param in ("on_start", "both"), on_end=request.param in ("on_end", "both")
    )
    provider.add_span_processor(processor)
    try:
        yield processor
    finally:
        with multi._lock:
            multi._span_processors = saved


def _tracing_failures(*kinds: str) -> int:
    counts = failures.counts()
    return sum(counts.get(kind, 0) for kind in kinds)


def test_raising_span_processor_never_reaches_the_application(
    amqp: Any, raising_processor: _RaisingProcessor
) -> None:
    queues = [amqp.queue() for _ in range(3)]  # one per consuming API
    channel = instrument_channel(amqp.connection.channel())
    publish_failures = _tracing_failures("publish tracing")
    consume_failures = _tracing_failures("consume tracing", "settle tracing")

    sent = []
    for i, queue in enumerate(queues):
        properties = _full_properties(message_id=f"raising-{i}")
        before = copy.deepcopy(properties)
        assert channel.basic_publish("", queue, f"body-{i}".encode(), properties) is None
        assert vars(properties) == vars(before)
        sent.append(before)

    got = _consume_callback(amqp.connection, channel, queues[0], 1)
    got += _consume_generator(channel, queues[1], 1)
    got += _consume_get(channel, queues[2], 1)

    assert [body for _, _, body in got] == [b"body-0", b"body-1", b"body-2"]
    for (_, properties, _), original in zip(got, sent, strict=True):
        for field in (*APP_FIELDS, "content_type", "delivery_mode", "priority", "user_id"):
            assert getattr(properties, field) == getattr(original, field), field
        assert properties.headers == original.headers
    # (6) every tracing failure was counted, though the application saw none
    assert _tracing_failures("publish tracing") >= publish_failures + 3
    assert _tracing_failures("consume tracing", "settle tracing") >= consume_failures + 3


def test_raising_processor_is_counted_and_publish_still_returns(
    amqp: Any, raising_processor: _RaisingProcessor
) -> None:
    queue = amqp.queue()
    channel = instrument_channel(amqp.connection.channel())
    before = failures.counts()
    channel.basic_publish("", queue, b"counted")
    after = failures.counts()
    assert sum(after.values()) == sum(before.values()) + 1, (before, after)
    assert after.get("publish tracing", 0) == before.get("publish tracing", 0) + 1
    _, _, body = amqp.get(queue)
    assert body == b"counted"


# -- (3) hostile headers on the consumer side ---------------------------------------------
_HOSTILE: list[tuple[str, dict[str, Any] | None]] = [
    ("bytes-traceparent", {"traceparent": TRACEPARENT.encode()}),
    ("int-traceparent", {"traceparent": 42, "tracestate": 7}),
    ("none-values", {"traceparent": None, "tracestate": None, "baggage": None, "x-death": None}),
    ("nested-tables", {"traceparent": {"a": {"b": [1, 2]}}, "meta": {"deep": {"er": {"x": b"\x00"}}}}),
    ("lists", {"traceparent": [TRACEPARENT], "tracestate": [1, "a"], "baggage": [[], {}, None]}),
    ("huge-traceparent", {"traceparent": "00-" + "a" * 10_240}),
    (
        "garbage-traceparent",
        {"traceparent": "not a traceparent \u2603", "tracestate": "==,,", "baggage": "=;%"},
    ),
    ("non-utf8-bytes", {"traceparent": b"\xff\xfe\x00", "x-correlation-id": b"\xc3\x28", "baggage": b"\x80"}),
    ("x-death-not-list", {"x-death": "rejected", "x-first-death-reason": 5}),
    ("x-death-table", {"x-death": {"count": 3, "reason": "expired"}}),
    (
        "x-death-garbage",
        {
            "x-death": [
                None,
                1,
                "x",
                [],
                {"count": "7", "reason": {"r": 1}},
                {"count": True},
                {"reason": b"\xff"},
            ]
        },
    ),
    ("causation-int", {"x-causation-id": 12345, "x-correlation-id": 678}),
    ("typed-values", {"traceparent": True, "x-death": decimal.Decimal("1.5"), "x-correlation-id": False}),
    ("empty-headers", {}),
    ("no-properties", None),
]


def test_hostile_headers_reach_the_application_unchanged(amqp: Any, spans: Any) -> None:
    fanout = amqp.exchange(kind="fanout")
    queues = {api: amqp.queue() for api in ("reference", "callback", "generator", "get")}
    for queue in queues.values():
        amqp.bind(queue, fanout, "")
    raw = amqp.connection.channel()
    for index, (name, headers) in enumerate(_HOSTILE):
        properties = None if headers is None else BasicProperties(message_id=name, headers=headers)
        raw.basic_publish(fanout, f"hostile.{index}", f"body {name}".encode(), properties)

    count = len(_HOSTILE)
    reference = [amqp.get(queues["reference"]) for _ in range(count)]
    assert all(method is not None for method, _, _ in reference)

    counted = failures.counts()
    consumer_connection = amqp.connect()
    channel = instrument_channel(consumer_connection.channel())
    received = {
        "callback": _consume_callback(consumer_connection, channel, queues["callback"], count),
        "generator": _consume_generator(channel, queues["generator"], count),
        "get": _consume_get(channel, queues["get"], count),
    }
    for api, deliveries in received.items():
        assert _seen(deliveries) == _seen(reference), api
    assert failures.counts() == counted

    for api in ("callback", "generator", "get"):
        queue = queues[api]
        found = spans.wait(
            lambda s, q=queue: s.kind == "CONSUMER" and s.attributes.get("eventscope.queue") == q, count
        )
        assert len(found) == count, (api, [s.attributes.get("messaging.message.id") for s in found])
        by_key = {s.attributes.get("messaging.rabbitmq.destination.routing_key"): s for s in found}
        for index, (name, _) in enumerate(_HOSTILE):
            span = by_key[f"hostile.{index}"]
            if name == "bytes-traceparent":
                assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_ID), api
            else:
                assert span.parent_span_id is None, (api, name)


# -- (3) hostile input on the publish side -------------------------------------------------
class _ReadOnlyHeaders(Mapping[str, Any]):
    """A headers table that is a Mapping but not a dict (pika encodes it through .items())."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _publish_both(amqp: Any, body: Any, properties: Any) -> tuple[Any, Any, Any, Any]:
    """Publish the same thing raw and traced; return what each queue received."""
    raw_queue, traced_queue = amqp.queue(), amqp.queue()
    amqp.connection.channel().basic_publish("", raw_queue, body, properties)
    instrument_channel(amqp.connection.channel()).basic_publish("", traced_queue, body, properties)
    _, raw_props, raw_body = amqp.get(raw_queue)
    _, traced_props, traced_body = amqp.get(traced_queue)
    return raw_props, raw_body, traced_props, traced_body


@pytest.mark.parametrize(
    ("body", "properties"),
    [
        pytest.param(b"none", None, id="properties-none"),
        pytest.param(b"no-headers", BasicProperties(message_id="m", headers=None), id="headers-none"),
        pytest.param(b"mapping", BasicProperties(headers=_ReadOnlyHeaders({"x-app": "1"})), id="mapping"),
        pytest.param("str body \u00e9", BasicProperties(type="t"), id="str-body"),
        pytest.param(b"", BasicProperties(type="t"), id="empty-body"),
        pytest.param(b"full", _full_properties(), id="every-field"),
    ],
)
def test_publish_input_is_delivered_with_every_field_the_app_set(
    amqp: Any, spans: Any, body: Any, properties: Any
) -> None:
    before = copy.deepcopy(properties)
    headers = getattr(properties, "headers", None)
    headers_before = copy.deepcopy(dict(headers)) if headers is not None else None

    raw_props, raw_body, traced_props, traced_body = _publish_both(amqp, body, properties)

    if properties is not None:
        assert vars(properties) == vars(before)
        assert properties.headers is headers
    if headers is not None:
        assert dict(headers) == headers_before
    assert traced_body == raw_body
    for field, value in vars(raw_props).items():
        if field == "headers":
            continue
        if value is not None:
            assert getattr(traced_props, field) == value, field
    for key, value in (raw_props.headers or {}).items():
        assert traced_props.headers[key] == value, key
    assert "traceparent" in traced_props.headers
    if properties is not None and "traceparent" in (properties.headers or {}):
        producer = spans.wait(
            lambda s: (
                s.kind == "PRODUCER" and s.attributes.get("messaging.message.id") == properties.message_id
            )
        )
        assert [(s.trace_id, s.parent_span_id) for s in producer] == [(TRACE_ID, PARENT_ID)]


def test_publish_headers_that_cannot_be_encoded_fail_like_pika(amqp: Any, spans: Any) -> None:
    properties = BasicProperties(message_id="not-a-table", headers=[("x-app", "1")])
    before = copy.deepcopy(properties)
    raw_error = _raised(lambda: amqp.connection.channel().basic_publish("", "nowhere", b"b", properties))
    routing_key = amqp.name("rk")
    channel = instrument_channel(amqp.connection.channel())
    traced_error = _raised(lambda: channel.basic_publish("", routing_key, b"b", properties))
    assert type(traced_error) is type(raw_error)
    assert traced_error.args == raw_error.args
    assert vars(properties) == vars(before)
    span = _publish_span(spans, routing_key)
    assert span.status == STATUS_ERROR
    assert span.attributes["error.type"] == type(raw_error).__qualname__


def test_non_text_metadata_headers_the_app_set_are_not_overwritten(amqp: Any) -> None:
    """DESIGN "Wire metadata": the adapter fills what is missing, never overwrites what the app set."""
    trigger, outside, inside = amqp.queue(), amqp.queue(), amqp.queue()
    channel = instrument_channel(amqp.connection.channel())
    channel.basic_publish("", outside, b"outside", BasicProperties(headers={"x-correlation-id": 42}))
    channel.basic_publish("", trigger, b"trigger")

    def handle(ch: Any, method: Any, properties: Any, body: Any) -> None:
        headers = {"x-causation-id": 7, "x-correlation-id": b"\xff\xfe"}
        ch.basic_publish("", inside, b"inside", BasicProperties(headers=headers))
        ch.basic_ack(method.delivery_tag)

    tag = channel.basic_consume(trigger, handle)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        amqp.connection.process_data_events(time_limit=0.05)
        method, properties, _ = amqp.admin.basic_get(inside, auto_ack=True)
        if method is not None:
            break
    channel.basic_cancel(tag)
    assert method is not None, "the handler did not publish"
    assert properties.headers["x-causation-id"] == 7
    assert properties.headers["x-correlation-id"] == b"\xff\xfe"
    _, properties, _ = amqp.get(outside)
    assert properties.headers["x-correlation-id"] == 42


def test_str_body_size_counts_encoded_bytes(amqp: Any, spans: Any) -> None:
    """``messaging.message.body.size`` is in bytes; pika sends a str body as UTF-8."""
    queue = amqp.queue()
    body = "h\u00e9llo \u2603"
    instrument_channel(amqp.connection.channel()).basic_publish(
        "", queue, body, BasicProperties(message_id=queue)
    )
    _, _, wire = amqp.get(queue)
    assert wire == body.encode("utf-8")
    span = _publish_span(spans, queue)
    assert span.attributes["messaging.message.body.size"] == len(wire)


# -- (4) channel or connection closed under a publish -------------------------------------
def _closed_channel(amqp: Any) -> Any:
    channel = amqp.connection.channel()
    channel.close()
    return channel


def _closed_connection(amqp: Any) -> Any:
    connection = amqp.connect()
    channel = connection.channel()
    connection.close()
    return channel


def _closed_by_broker(amqp: Any) -> Any:
    channel = amqp.connection.channel()
    channel.confirm_delivery()
    return channel


@pytest.mark.parametrize(
    ("make_channel", "to_missing_exchange"),
    [
        pytest.param(_closed_channel, False, id="channel-closed"),
        pytest.param(_closed_connection, False, id="connection-closed"),
        pytest.param(_closed_by_broker, True, id="closed-by-broker"),
    ],
)
def test_publish_on_a_closed_channel_raises_like_pika(
    amqp: Any, spans: Any, make_channel: Callable[[Any], Any], to_missing_exchange: bool
) -> None:
    exchange = amqp.name("missing") if to_missing_exchange else ""
    raw_error = _raised(lambda: make_channel(amqp).basic_publish(exchange, "rk", b"lost"))
    routing_key = amqp.name("rk")
    traced = instrument_channel(make_channel(amqp))
    properties = BasicProperties(message_id="closed", headers={"x-app": "1"})
    before = copy.deepcopy(properties)
    traced_error = _raised(lambda: traced.basic_publish(exchange, routing_key, b"lost", properties))
    assert type(traced_error) is type(raw_error)
    assert traced_error.args == raw_error.args
    assert vars(properties) == vars(before)
    span = _publish_span(spans, routing_key)
    assert span.status == STATUS_ERROR
    assert span.attributes["error.type"] == type(raw_error).__qualname__


# -- (5) publisher confirms ---------------------------------------------------------------
def _returned(error: Any) -> list[tuple[Any, ...]]:
    return [
        (
            message.method.reply_code,
            message.method.reply_text,
            message.method.exchange,
            message.method.routing_key,
            message.body,
            {field: getattr(message.properties, field) for field in APP_FIELDS},
            {key: message.properties.headers.get(key) for key in ("x-app",)},
        )
        for message in error.messages
    ]


def test_unroutable_mandatory_publish_raises_unchanged(amqp: Any, spans: Any) -> None:
    exchange = amqp.exchange(kind="direct")  # no binding: every message is unroutable
    routing_key = amqp.name("rk")
    properties = _full_properties()
    before = copy.deepcopy(properties)

    raw = amqp.connection.channel()
    raw.confirm_delivery()
    raw_error = _raised(
        lambda: raw.basic_publish(exchange, routing_key, b"nobody", properties, mandatory=True)
    )
    traced = instrument_channel(amqp.connection.channel())
    traced.confirm_delivery()
    traced_error = _raised(
        lambda: traced.basic_publish(exchange, routing_key, b"nobody", properties, mandatory=True)
    )

    assert isinstance(raw_error, pika.exceptions.UnroutableError)
    assert type(traced_error) is type(raw_error)
    assert traced_error.args == raw_error.args
    assert _returned(traced_error) == _returned(raw_error)
    assert vars(properties) == vars(before)
    span = _publish_span(spans, routing_key)
    assert span.status == STATUS_ERROR
    assert span.attributes["error.type"] == "UnroutableError"

    # the channel stays usable, as a raw one does
    queue = amqp.queue()
    traced.basic_publish("", queue, b"after")
    assert amqp.get(queue)[2] == b"after"


def test_nacked_publish_raises_unchanged(amqp: Any, spans: Any) -> None:
    queue = amqp.queue(**{"x-max-length": 0, "x-overflow": "reject-publish"})  # the broker nacks all

    raw = amqp.connection.channel()
    raw.confirm_delivery()
    raw_error = _raised(lambda: raw.basic_publish("", queue, b"refused"))
    traced = instrument_channel(amqp.connection.channel())
    traced.confirm_delivery()
    traced_error = _raised(lambda: traced.basic_publish("", queue, b"refused"))

    assert isinstance(raw_error, pika.exceptions.NackError)
    assert type(traced_error) is type(raw_error)
    assert traced_error.args == raw_error.args
    assert [m.body for m in traced_error.messages] == [m.body for m in raw_error.messages]
    span = _publish_span(spans, queue)
    assert span.status == STATUS_ERROR
    assert span.attributes["error.type"] == "NackError"
