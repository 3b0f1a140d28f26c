"""The aio-pika adapter with the real broker and the real OTLP exporter (issue 13).

Every path the issue lists: publish (named and default exchange, confirms: nack and return),
``queue.consume`` callbacks, ``queue.iterator()`` (settle, next iteration, ``break``),
``message.process()`` outcomes, explicit settles, ``queue.get()``, contexts across interleaved
tasks with prefetch > 1, the RPC pattern, and faults that must never reach the application.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from opentelemetry import trace

from eventscope.adapters.aio_pika import install, instrument_channel, uninstall
from eventscope.tracer import contract as A
from eventscope.tracer.sdk import failures
from tests.conftest import AMQP_URL

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def connection(broker: Any, provider: Any) -> AsyncIterator[Any]:
    opened = await aio_pika.connect_robust(AMQP_URL)
    yield opened
    await opened.close()


@pytest.fixture
async def queues(connection: Any) -> AsyncIterator[Any]:
    """Declares unique queues (and exchanges) on an untraced channel; deletes them afterwards."""
    admin = await connection.channel()
    declared: list[Any] = []

    async def make(kind: str = "queue", **kwargs: Any) -> Any:
        name = f"eventscope-test-aio-{uuid.uuid4().hex[:10]}"
        if kind == "exchange":
            entity = await admin.declare_exchange(name, aio_pika.ExchangeType.TOPIC, **kwargs)
        else:
            entity = await admin.declare_queue(name, **kwargs)
        declared.append((kind, entity))
        return name

    yield make
    for kind, entity in declared:
        if kind == "exchange":
            await entity.delete()
        else:
            await entity.delete(if_unused=False, if_empty=False)
    await admin.close()


async def _get(queue: Any, timeout: float = 5.0) -> Any:
    """``queue.get`` with a short poll (publishes on other channels are not ordered)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None or asyncio.get_running_loop().time() > deadline:
            return message
        await asyncio.sleep(0.02)


async def test_publish_sends_metadata_on_a_copy_and_emits_a_producer_span(connection, queues, spans):
    name = await queues()
    channel = instrument_channel(await connection.channel(), service="orders")
    headers = {"tenant": "acme", "nested": {"a": 1}}
    message = aio_pika.Message(b"hello", headers=headers, correlation_id="rpc-1")
    fields = ("headers", "message_id", "app_id")
    snapshot = {field: copy.deepcopy(getattr(message, field)) for field in fields}

    await channel.default_exchange.publish(message, routing_key=name)

    assert message.headers is headers and headers == {"tenant": "acme", "nested": {"a": 1}}
    assert {field: getattr(message, field) for field in snapshot} == snapshot
    got = await _get(await channel.get_queue(name))
    assert uuid.UUID(got.message_id).version == 7  # eventscope's, not aiormq's uuid4
    assert got.app_id == "orders" and got.timestamp is not None
    assert got.type is None and "x-correlation-id" not in got.headers  # issue 16's lighter contract
    assert got.headers["tenant"] == "acme" and got.correlation_id == "rpc-1"
    (span,) = spans.named("publish")
    assert (span.name, span.kind) == ("publish amq.default", "PRODUCER")
    assert got.headers["traceparent"].split("-")[1:3] == [span.trace_id, span.span_id]
    attributes = span.attributes
    assert attributes[A.MESSAGING_MESSAGE_ID] == got.message_id
    assert attributes[A.MESSAGING_ROUTING_KEY] == name
    assert attributes[A.MESSAGING_CONVERSATION_ID] == "rpc-1"
    assert attributes[A.MESSAGING_BODY_SIZE] == 5
    assert (attributes[A.SERVER_ADDRESS], attributes[A.SERVER_PORT]) == ("127.0.0.1", 5672)
    assert A.EVENT_TYPE not in attributes and A.CORRELATION_ID not in attributes


async def test_named_exchange_return_and_untraced_channels(connection, queues, spans):
    exchange_name = await queues("exchange")
    name = await queues()
    channel = instrument_channel(await connection.channel())
    exchange = await channel.get_exchange(exchange_name)
    await (await channel.get_queue(name)).bind(exchange, "order.*")

    await exchange.publish(aio_pika.Message(b"{}", type="order.placed.v2"), routing_key="order.placed")
    returned = await exchange.publish(aio_pika.Message(b"{}"), routing_key="nobody.home", mandatory=True)
    plain = await connection.channel()  # not instrumented: no span, no metadata
    await plain.default_exchange.publish(aio_pika.Message(b"raw"), routing_key=name)

    publishes = {span.attributes[A.MESSAGING_ROUTING_KEY]: span for span in spans.named("publish", 2)}
    placed = publishes["order.placed"]
    assert placed.name == f"publish {exchange_name}" and placed.status == 0
    assert placed.attributes[A.EVENT_TYPE] == "order.placed.v2"
    assert isinstance(returned, aiormq_delivered())
    unroutable = publishes["nobody.home"]
    assert unroutable.status == 2
    assert unroutable.attributes[A.ERROR_TYPE] == "basic.return"
    await asyncio.sleep(0.2)
    assert len([s for s in spans.all() if s.name.startswith("publish")]) == 2
    first = await _get(await plain.get_queue(name))
    second = await _get(await plain.get_queue(name))
    assert {first.body, second.body} == {b"{}", b"raw"}
    raw = first if first.body == b"raw" else second
    assert raw.app_id is None and "traceparent" not in raw.headers


def aiormq_delivered() -> type:
    import aiormq

    return aiormq.abc.DeliveredMessage


async def test_consume_callback_span_is_current_and_publishes_inside_are_caused(connection, queues, spans):
    first, second = await queues(), await queues()
    channel = instrument_channel(await connection.channel(), service="billing")
    done = asyncio.Event()
    seen: dict[str, Any] = {}

    async def on_message(message: Any) -> None:
        seen["span"] = trace.get_current_span().get_span_context()
        await channel.default_exchange.publish(aio_pika.Message(b"effect"), routing_key=second)
        await message.ack()
        done.set()

    await (await channel.get_queue(first)).consume(on_message)
    await channel.default_exchange.publish(aio_pika.Message(b"cause"), routing_key=first)
    await asyncio.wait_for(done.wait(), 10)

    (process,) = spans.named("process")
    publishes = {s.attributes[A.MESSAGING_ROUTING_KEY]: s for s in spans.named("publish", 2)}
    cause, effect = publishes[first], publishes[second]
    assert process.kind == "CONSUMER" and process.name == f"process {first}"
    assert process.parent_span_id == cause.span_id and process.trace_id == cause.trace_id
    assert f"{seen['span'].span_id:016x}" == process.span_id
    assert process.attributes[A.SETTLE_OUTCOME] == "ack"
    assert effect.parent_span_id == process.span_id
    cause_id = cause.attributes[A.MESSAGING_MESSAGE_ID]
    assert effect.attributes[A.CAUSATION_ID] == cause_id
    assert effect.attributes[A.CORRELATION_ID] == cause_id
    got = await _get(await channel.get_queue(second))
    assert got.headers["x-causation-id"] == cause_id and got.headers["x-correlation-id"] == cause_id


async def test_iterator_spans_cover_the_loop_body_and_end_on_settle_next_or_break(connection, queues, spans):
    name = await queues()
    channel = instrument_channel(await connection.channel())
    for body in (b"one", b"two", b"three"):
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    queue = await channel.get_queue(name)
    inside: list[str] = []

    async with queue.iterator() as messages:
        async for message in messages:
            inside.append(f"{trace.get_current_span().get_span_context().span_id:016x}")
            if message.body == b"one":
                async with message.process():
                    pass
            elif message.body == b"two":
                await message.ack()  # ends the span, before the next iteration
            else:
                await asyncio.sleep(0.05)
                await message.nack(requeue=True)
                break

    processes = sorted(spans.named("process", 3), key=lambda s: s.start_ns)
    assert [s.span_id for s in processes] == inside  # the context was current in the loop body
    assert [s.attributes[A.SETTLE_OUTCOME] for s in processes] == ["ack", "ack", "requeue"]
    assert processes[2].end_ns - processes[2].start_ns >= 40_000_000
    assert not trace.get_current_span().get_span_context().is_valid  # nothing leaks past the loop


async def test_breaking_out_of_an_iterator_without_settle_ends_its_span(connection, queues, spans):
    name = await queues()
    channel = instrument_channel(await connection.channel())
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
    queue = await channel.get_queue(name)

    async with queue.iterator() as messages:
        async for _message in messages:
            break
    (process,) = spans.named("process")
    assert A.SETTLE_OUTCOME not in process.attributes  # unsettled: the collector calls it unacked


async def test_an_iterator_left_by_break_without_async_with_ends_its_span_at_the_break(
    connection, queues, spans
):
    name, other = await queues(), await queues()
    channel = instrument_channel(await connection.channel())
    for body in (b"one", b"two"):
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    queue = await channel.get_queue(name)
    iterator = queue.iterator()  # held by the application: it is not collected after the loop
    async for _message in iterator:
        inside = trace.get_current_span().get_span_context().span_id
        break
    # the span ended at the break and its context is no longer current in this task
    assert not trace.get_current_span().get_span_context().is_valid
    (process,) = spans.named("process")
    assert process.span_id == f"{inside:016x}" and process.end_ns >= process.start_ns
    await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=other)
    (after,) = spans.named("publish", 3)[2:]
    assert after.parent_span_id != process.span_id and A.CAUSATION_ID not in after.attributes
    await iterator.close()
    assert len(spans.named("process")) == 1  # closing later adds nothing


async def test_process_context_records_the_exception_and_the_reject_it_chose(connection, queues, spans):
    name = await queues()
    channel = instrument_channel(await connection.channel())
    done = asyncio.Event()

    async def on_message(message: Any) -> None:
        try:
            async with message.process(requeue=False):
                raise RuntimeError("handler bug")
        except RuntimeError:
            pass  # an exception escaping a callback ends up in the loop's handler (aio-pika's way)
        finally:
            done.set()

    await (await channel.get_queue(name)).consume(on_message)
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
    await asyncio.wait_for(done.wait(), 10)
    (process,) = spans.named("process")
    assert process.status == 2
    assert process.attributes[A.ERROR_TYPE] == "RuntimeError"
    assert process.attributes[A.SETTLE_OUTCOME] == "reject"
    assert process.events.count("exception") == 1


async def test_get_is_a_receive_span_and_a_later_ack_a_settle_span(connection, queues, spans):
    name = await queues()
    channel = instrument_channel(await connection.channel())
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
    queue = await channel.get_queue(name)
    message = None
    for _ in range(100):
        message = await queue.get(fail=False)
        if message is not None:
            break
        await asyncio.sleep(0.02)
    assert message is not None
    await message.reject(requeue=False)
    (receive,) = spans.named("receive")
    (settle,) = spans.named("reject")
    assert receive.kind == "CONSUMER" and receive.attributes[A.MESSAGING_OPERATION_TYPE] == "receive"
    assert settle.parent_span_id == receive.span_id
    assert settle.attributes[A.SETTLE_OUTCOME] == "reject"


async def test_interleaved_tasks_with_prefetch_never_share_a_context(connection, queues, spans):
    source, sink = await queues(), await queues()
    channel = instrument_channel(await connection.channel())
    await channel.set_qos(prefetch_count=10)
    count = 10
    finished = asyncio.Event()
    handled: list[str] = []
    later: list[asyncio.Task[Any]] = []

    async def outlives(message_id: str) -> None:
        await asyncio.sleep(0.05)  # after the callback returned and other messages started
        await channel.default_exchange.publish(aio_pika.Message(message_id.encode()), routing_key=sink)

    async def on_message(message: Any) -> None:
        await asyncio.sleep(0.01 * (count - int(message.body)))  # finish in reverse order
        later.append(asyncio.create_task(outlives(message.message_id)))
        await message.ack()
        handled.append(message.message_id)
        if len(handled) == count:
            finished.set()

    await (await channel.get_queue(source)).consume(on_message)
    for index in range(count):
        await channel.default_exchange.publish(aio_pika.Message(str(index).encode()), routing_key=source)
    await asyncio.wait_for(finished.wait(), 15)
    await asyncio.gather(*later)

    effects = [s for s in spans.named("publish", 2 * count) if s.attributes[A.MESSAGING_ROUTING_KEY] == sink]
    processes = {s.attributes[A.MESSAGING_MESSAGE_ID]: s for s in spans.named("process", count)}
    assert len(effects) == count
    for effect in effects:
        # the effect's body is the id of the message whose callback started the task
        got = effect.attributes[A.CAUSATION_ID]
        assert effect.parent_span_id == processes[got].span_id
    assert sorted(s.attributes[A.CAUSATION_ID] for s in effects) == sorted(processes)


async def test_rpc_reply_links_to_the_request(connection, queues, spans):
    requests = await queues()
    server = instrument_channel(await connection.channel(), service="pricing")
    client = instrument_channel(await connection.channel(), service="checkout")
    callback_queue = await client.declare_queue(exclusive=True, auto_delete=True)
    reply_future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def serve(message: Any) -> None:
        async with message.process():
            reply = aio_pika.Message(b"42", correlation_id=message.correlation_id)
            await server.default_exchange.publish(reply, routing_key=message.reply_to)

    async def on_reply(message: Any) -> None:
        async with message.process():
            if not reply_future.done():
                reply_future.set_result(message)

    await (await server.get_queue(requests)).consume(serve)
    await callback_queue.consume(on_reply)
    request = aio_pika.Message(b"price?", correlation_id="rpc-7", reply_to=callback_queue.name)
    await client.default_exchange.publish(request, routing_key=requests)
    reply = await asyncio.wait_for(reply_future, 10)

    publishes = {s.attributes[A.MESSAGING_ROUTING_KEY]: s for s in spans.named("publish", 2)}
    request_span, reply_span = publishes[requests], publishes[callback_queue.name]
    request_id = request_span.attributes[A.MESSAGING_MESSAGE_ID]
    assert reply.correlation_id == "rpc-7" and reply.headers["x-causation-id"] == request_id
    assert reply_span.attributes[A.CAUSATION_ID] == request_id
    assert reply_span.attributes[A.MESSAGING_CONVERSATION_ID] == "rpc-7"
    assert reply_span.trace_id == request_span.trace_id


async def test_install_traces_channels_of_robust_connections_until_uninstall(connection, queues, spans):
    name = await queues()
    install(service="installed")
    try:
        traced = await connection.channel()
    finally:
        uninstall()
    plain = await connection.channel()
    await traced.default_exchange.publish(aio_pika.Message(b"a"), routing_key=name)
    await plain.default_exchange.publish(aio_pika.Message(b"b"), routing_key=name)
    (span,) = spans.named("publish")
    got = await _get(await plain.get_queue(name))
    assert got.app_id == "installed" and span.attributes[A.MESSAGING_MESSAGE_ID] == got.message_id
    await asyncio.sleep(0.2)
    assert len([s for s in spans.all() if s.name.startswith("publish")]) == 1


# -- faults never reach the application -----------------------------------------------------
class _Raising:
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor on_start")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("processor on_end")

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


async def test_hostile_headers_and_a_raising_processor_never_reach_the_app(connection, queues, provider):
    name = await queues()
    channel = instrument_channel(await connection.channel())
    hostile = [
        {"traceparent": "\u00ff-not-hex", "x-correlation-id": 42, "baggage": "=;=,"},
        {"traceparent": "0" * 10_000, "x-causation-id": 7, "x-correlation-id": None},
        {"x-death": "not a list", "traceparent": True, "nested": {"traceparent": 1}},
    ]
    received = asyncio.Queue()

    async def on_message(message: Any) -> None:
        await message.ack()
        await received.put(message)

    await (await channel.get_queue(name)).consume(on_message)
    for headers in hostile:
        await channel.default_exchange.publish(aio_pika.Message(b"h", headers=headers), routing_key=name)
    for _ in hostile:
        await asyncio.wait_for(received.get(), 10)

    processor = _Raising()
    provider._active_span_processor._span_processors += (processor,)
    try:
        await channel.default_exchange.publish(aio_pika.Message(b"p"), routing_key=name)
        message = await asyncio.wait_for(received.get(), 10)
    finally:
        provider._active_span_processor._span_processors = tuple(
            p for p in provider._active_span_processor._span_processors if p is not processor
        )
    assert message.body == b"p"
    assert failures.counts()


async def test_closed_channel_and_cancelled_task_raise_only_aio_pikas_own_errors(connection, queues, spans):
    name = await queues()
    channel = instrument_channel(await connection.channel())
    exchange = channel.default_exchange
    await channel.close()
    with pytest.raises(aio_pika.exceptions.ChannelInvalidStateError):
        await exchange.publish(aio_pika.Message(b"x"), routing_key=name)

    channel = instrument_channel(await connection.channel())
    started = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []

    async def on_message(message: Any) -> None:
        tasks.append(asyncio.current_task())
        started.set()
        await asyncio.sleep(30)

    await (await channel.get_queue(name)).consume(on_message)
    await channel.default_exchange.publish(aio_pika.Message(b"slow"), routing_key=name)
    await asyncio.wait_for(started.wait(), 10)
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    # this queue's span only: a slower SDK may still deliver an earlier test's spans now
    (process,) = spans.wait(lambda s: s.name.startswith("process") and name in s.name)
    assert process.attributes[A.ERROR_TYPE] == "CancelledError"
    assert process.attributes[A.SETTLE_OUTCOME] == "error"
    await channel.close()


async def test_a_broker_nack_is_recorded_and_aio_pikas_error_raised(connection, queues, spans):
    name = await queues(arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    channel = instrument_channel(await connection.channel())  # publisher confirms: aio-pika's default
    with pytest.raises(aio_pika.exceptions.DeliveryError):
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=name)
    (span,) = spans.named("publish")
    assert span.status == 2 and span.attributes[A.ERROR_TYPE] == "DeliveryError"
