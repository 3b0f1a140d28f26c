"""The write queue: one thread owns the store; requests wait for their batch's commit.

HTTP handlers :meth:`Writer.submit` a normalised batch and await the returned future; the
broker taps (firehose, dead-letter tap, management poller) submit their batches of broker
truth the same way and wait in their own threads. The writer thread takes what is queued (up
to ``max_group_spans`` rows), writes it in one transaction (group commit) and completes the
futures. So a 200 means committed, and a tap acknowledges records only once they are.

Group commit waits for what is on its way: a transport announces a batch with
:meth:`Writer.expect` while it decodes the request. When the queue is empty but batches are
still being decoded, the writer waits for them (at most ``max_wait_s`` after it took the
group's first batch) instead of committing a small group: a commit costs ~30 ms of DuckDB
work whatever its size, so three exporters' requests committed together cost about a third
of three commits. When the last commit grouped several requests (exporters send at once),
it also waits up to ``arrival_wait_s`` for requests about to arrive, until the group is as
large as the last one: the exporters it just answered send their next ones, and the group
stays whole instead of splitting in turns.

Bounded with a named drop policy: at most ``max_pending`` batches wait; beyond that
:meth:`submit` raises :class:`WriteQueueFull` at once (policy ``refuse-newest``, counted in
``refused``) and the HTTP layer answers 503 + Retry-After, which OTLP exporters retry. Nothing
accepted is ever dropped. The taps wait for room instead (:meth:`Writer.write`): their records
stay unacknowledged in the broker meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventscope.tracer.ingest.recorder import Recorder
from eventscope.tracer.store.duckdb_store import Store

if TYPE_CHECKING:
    from eventscope.tracer.store.duckdb_store import Batch

__all__ = ["DROP_POLICY", "WriteQueueFull", "Writer"]

logger = logging.getLogger(__name__)

DROP_POLICY = "refuse-newest"
_DEFAULT_MAX_PENDING = 64
_DEFAULT_MAX_GROUP_SPANS = 20_000
_DEFAULT_LOOKUP_INTERVAL_S = 2.0
_DEFAULT_RETENTION_INTERVAL_S = 3600.0
_DEFAULT_WRITE_TIMEOUT_S = 30.0
_DEFAULT_MAX_WAIT_S = 0.05
_DEFAULT_ARRIVAL_WAIT_S = 0.005
_WAIT_POLL_S = 0.002
_FULL_RETRY_S = 0.05
_STOP = object()


class WriteQueueFull(RuntimeError):
    """The write queue is full: try again later (→ 503 + Retry-After)."""


@dataclass
class _Job:
    batch: Batch
    future: Future[None]


@dataclass
class _Call:
    """Other writes (the alerts table): ``action(store)`` runs on the writer thread."""

    action: Callable[[Store], Any]
    future: Future[Any]


class Writer:
    """The store's only writer thread, fed by a bounded queue of batches."""

    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = _DEFAULT_MAX_PENDING,
        max_group_spans: int = _DEFAULT_MAX_GROUP_SPANS,
        lookup_interval_s: float = _DEFAULT_LOOKUP_INTERVAL_S,
        retention_s: float | None = None,
        retention_interval_s: float = _DEFAULT_RETENTION_INTERVAL_S,
        max_wait_s: float = _DEFAULT_MAX_WAIT_S,
        arrival_wait_s: float = _DEFAULT_ARRIVAL_WAIT_S,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        if max_wait_s < 0 or arrival_wait_s < 0:
            raise ValueError("max_wait_s and arrival_wait_s must be >= 0")
        self.store = store
        self.recorder = Recorder(store)
        self.max_pending = max_pending
        self.max_group_spans = max_group_spans
        self.lookup_interval_s = lookup_interval_s
        self.retention_s = retention_s
        self.retention_interval_s = retention_interval_s
        self.max_wait_s = max_wait_s
        self.arrival_wait_s = min(arrival_wait_s, max_wait_s)
        self._last_group = 0  # requests in the last commit
        self._expected = 0  # batches being decoded that will be submitted (see expect())
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="eventscope-writer", daemon=True)
        self._accepting = True
        self.refused = 0  # submits refused (queue full): from HTTP, gRPC and tap threads at once
        self.failed = 0
        self._count_lock = threading.Lock()
        # called on the writer thread with the batches of each commit (the alert engine's feed);
        # it must be quick and must not raise
        self.on_commit: Callable[[list[Batch]], None] | None = None

    @property
    def depth(self) -> int:
        """Batches waiting to be written."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        """Is the writer thread running?"""
        return self._thread.is_alive()

    @property
    def expected(self) -> int:
        """Batches announced by :meth:`expect` and not yet submitted."""
        return self._expected

    @contextmanager
    def expect(self) -> Iterator[None]:
        """Announce, for the block, a batch on its way (a request being decoded): the writer
        may wait for it to commit it with the group it is gathering. Leave the block right
        after :meth:`submit` (or once it is clear that nothing will be submitted).
        """
        with self._count_lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._expected -= 1

    def start(self) -> Writer:
        self._thread.start()
        return self

    def submit(self, batch: Batch) -> Future[None]:
        """Queue ``batch``; the future completes when it is committed (or fails)."""
        try:
            return self._put(batch)
        except queue.Full:
            with self._count_lock:
                self.refused += 1
            raise WriteQueueFull(f"write queue full ({self.max_pending} batches waiting)") from None

    def _put(self, batch: Batch) -> Future[None]:
        if not self._accepting:
            raise WriteQueueFull("the collector is shutting down")
        job = _Job(batch, Future())
        self._queue.put_nowait(job)
        return job.future

    def call(self, action: Callable[[Store], Any]) -> Future[Any]:
        """Run ``action(store)`` on the writer thread, between batches; the future holds its
        result. Raises :class:`WriteQueueFull` (not counted in ``refused``) when there is no room.
        """
        if not self._accepting:
            raise WriteQueueFull("the collector is shutting down")
        job = _Call(action, Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise WriteQueueFull(f"write queue full ({self.max_pending} batches waiting)") from None
        return job.future

    def write(self, batch: Batch, *, timeout: float = _DEFAULT_WRITE_TIMEOUT_S) -> None:
        """Submit ``batch`` and wait until it is committed, waiting for room in the queue.

        For the broker taps' threads: raises :class:`WriteQueueFull` when there is no room
        within ``timeout`` (or the collector shuts down), the store's error if writing failed,
        ``TimeoutError`` if the commit takes longer. The caller then leaves its records
        unacknowledged, and the broker delivers them again.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                future = self._put(batch)
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    raise WriteQueueFull(f"write queue full for {timeout:g} s") from None
                time.sleep(_FULL_RETRY_S)
        future.result(timeout=max(0.0, deadline - time.monotonic()))

    def close(self, *, timeout: float = 30.0) -> None:
        """Stop accepting, write everything queued, stop the thread; idempotent."""
        if not self._accepting:
            return
        self._accepting = False
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("writer did not finish within %.0f s; %d batches unwritten", timeout, self.depth)

    # -- thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        next_lookup = time.monotonic() + self.lookup_interval_s
        next_retention = time.monotonic()
        stopping = False
        while not stopping:
            try:
                item = self._queue.get(timeout=self.lookup_interval_s)
            except queue.Empty:
                item = None
            jobs: list[_Job] = []
            spans = 0
            wait_until = arrivals_until = 0.0
            last_group = 0
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                if isinstance(item, _Call):
                    if jobs:
                        self._write(jobs)
                        jobs, spans = [], 0
                    self._call(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                    continue
                assert isinstance(item, _Job)
                if not jobs:
                    first_at = time.monotonic()
                    wait_until = first_at + self.max_wait_s
                    arrivals_until = first_at + self.arrival_wait_s
                    last_group = self._last_group
                jobs.append(item)
                spans += item.batch.accepted
                if spans >= self.max_group_spans:
                    break
                item = self._next(wait_until, arrivals_until if len(jobs) < last_group else 0.0)
            if jobs:
                self._write(jobs)
            now = time.monotonic()
            if now >= next_lookup:
                next_lookup = now + self.lookup_interval_s
                self._housekeeping("lineage lookup", lambda: self.recorder.resolve_missing())
            if self.retention_s is not None and now >= next_retention:
                next_retention = now + self.retention_interval_s
                self._housekeeping("retention", self._retain)

    def _next(self, wait_until: float, arrivals_until: float) -> object | None:
        """The next queued item; while the queue is empty, wait for announced batches until
        ``wait_until``, and for any until ``arrivals_until`` (0: not). None: commit what was
        taken.
        """
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic()
            if self._expected > 0 and now < wait_until:
                until = wait_until
            elif now < arrivals_until:
                until = arrivals_until
            else:
                return None
            try:
                return self._queue.get(timeout=min(until - now, _WAIT_POLL_S))
            except queue.Empty:
                continue

    def _retain(self) -> None:
        if self.retention_s is not None:
            self.store.retain(max_age_s=self.retention_s)

    def _write(self, jobs: list[_Job]) -> None:
        self._last_group = len(jobs)
        try:
            self.recorder.append([job.batch for job in jobs])
        except Exception as exc:
            if len(jobs) == 1:
                self.failed += 1
                logger.exception("writing a batch failed")
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:  # isolate the batch that fails from the others
                self._write([job])
            return
        for job in jobs:
            job.future.set_result(None)
        if self.on_commit is not None:
            try:
                self.on_commit([job.batch for job in jobs])
            except Exception:
                logger.exception("on_commit failed")

    def _call(self, job: _Call) -> None:
        try:
            result = job.action(self.store)
        except Exception as exc:
            logger.warning("a write call failed: %s", exc)
            job.future.set_exception(exc)
            return
        job.future.set_result(result)

    def _housekeeping(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:
            logger.exception("%s failed", what)
