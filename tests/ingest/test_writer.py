"""The writer's group commit: it waits for batches announced as being decoded, and only for them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from eventscope.tracer.ingest import codec
from eventscope.tracer.ingest.pipeline import Outcome, Pipeline
from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.store.duckdb_store import Store
from tests.spans import new_span_id, new_trace, process, publish, request, rows


def a_request() -> bytes:
    trace_id, producer_id = new_trace(), new_span_id()
    return request(
        publish(trace_id=trace_id, event_id=f"e-{producer_id}", span_id=producer_id),
        process(trace_id=trace_id, parent=producer_id, event_id=f"e-{producer_id}", queue="q"),
    ).SerializeToString()


@pytest.fixture
def store(tmp_path: Path):
    store = Store.open(tmp_path / "w.duckdb")
    yield store
    store.close()


def test_a_commit_waits_for_a_batch_being_decoded(store: Store) -> None:
    writer = Writer(store, max_wait_s=30).start()
    pipeline = Pipeline(writer, max_body=1 << 20)
    commits: list[int] = []
    writer.on_commit = lambda batches: commits.append(len(batches))
    decoding, decoded = threading.Event(), threading.Event()

    def slow_decode():
        decoding.set()
        decoded.wait(30)
        return pipeline.decode_protobuf(a_request())

    second: dict[str, object] = {}
    thread = threading.Thread(target=lambda: second.update(pending=pipeline.start(slow_decode)))
    thread.start()
    assert decoding.wait(30)
    first = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
    assert first.future is not None
    assert not first.future.done()  # waiting for the batch still being decoded …
    decoded.set()
    thread.join(30)
    first.future.result(30)
    second["pending"].future.result(30)  # type: ignore[union-attr]
    assert commits == [2]  # … so both went in one transaction
    assert writer.expected == 0
    writer.close()
    assert rows(store, "SELECT count(*) FROM spans") == [(4,)]


def test_after_a_group_it_waits_for_the_next_requests_to_arrive(store: Store) -> None:
    writer = Writer(store, max_wait_s=30, arrival_wait_s=30).start()
    pipeline = Pipeline(writer, max_body=1 << 20)
    commits: list[int] = []
    writer.on_commit = lambda batches: commits.append(len(batches))
    lone = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
    lone.future.result(30)  # type: ignore[union-attr]  # no group before: no wait
    with writer.expect():  # two at once: one group
        first = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
        second = writer.submit(pipeline.decode_protobuf(a_request()))
    first.future.result(30)  # type: ignore[union-attr]
    second.result(30)
    third = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
    assert not third.future.done()  # type: ignore[union-attr]  # waits for the next to arrive …
    fourth = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
    third.future.result(30)  # type: ignore[union-attr]
    fourth.future.result(30)  # type: ignore[union-attr]
    assert commits == [1, 2, 2]  # … and commits it with the third
    writer.close()


def test_nothing_announced_means_no_wait(store: Store) -> None:
    writer = Writer(store, max_wait_s=3600).start()
    pipeline = Pipeline(writer, max_body=1 << 20)
    pending = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
    assert pending.future is not None
    pending.future.result(30)  # an hour's max_wait_s would time this out
    writer.close()


def test_a_request_that_fails_to_decode_is_no_longer_expected(store: Store) -> None:
    writer = Writer(store, max_wait_s=3600).start()
    pipeline = Pipeline(writer, max_body=1 << 20)

    def broken():
        raise codec.DecodeError("not protobuf")

    assert pipeline.start(broken).result.outcome is Outcome.INVALID  # type: ignore[union-attr]
    assert writer.expected == 0
    pending = pipeline.start(lambda: pipeline.decode_protobuf(a_request()))
    pending.future.result(30)  # type: ignore[union-attr]
    writer.close()


def test_waits_must_not_be_negative(store: Store) -> None:
    with pytest.raises(ValueError):
        Writer(store, max_wait_s=-1)
    with pytest.raises(ValueError):
        Writer(store, arrival_wait_s=-1)
