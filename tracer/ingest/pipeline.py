"""The ingest sequence every OTLP transport shares: decode → count → submit → commit → outcome.

OTLP/HTTP (:mod:`.http`) and OTLP/gRPC (:mod:`.grpc`) differ only in how they read a request
and how they say the answer (an HTTP status or a gRPC code). Everything between is here, once:

1. :meth:`Pipeline.start` decodes the body into rows (the wire reader first, the protobuf
   runtime for what it cannot vouch for; JSON through the runtime), counts the spans received
   and hands the batch to the single writer. It never raises: a request that cannot be
   decoded, or a full write queue, comes back as a finished :class:`Result`.
2. The transport waits for the returned future in its own way (``await`` in the event loop,
   ``result(timeout)`` in a gRPC worker thread): the answer is sent only once the batch is
   committed.
3. :meth:`Pipeline.finish` turns what the wait gave into the final :class:`Result` and counts
   the spans accepted.

What callers can rely on: an ``OK`` result means every accepted span is committed;
``Outcome`` says which error class the transport must report, and whether an exporter may
retry is the transport's mapping (503/``UNAVAILABLE`` for ``BUSY`` and ``NOT_COMMITTED``).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from eventscope.tracer.ingest import codec
from eventscope.tracer.ingest.normaliser import Normalised, normalise, normalise_protobuf
from eventscope.tracer.ingest.writer import DROP_POLICY, WriteQueueFull, Writer
from eventscope.tracer.metrics import Family

__all__ = ["Outcome", "Pending", "Pipeline", "Result"]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_ATTRIBUTES = 1024


class Outcome(enum.Enum):
    OK = "ok"
    UNSUPPORTED = "unsupported"  # unknown content type or encoding
    TOO_LARGE = "too large"  # above the body limit after decompression
    INVALID = "invalid"  # does not decode: never retried
    BUSY = "busy"  # the write queue is full: retry later
    NOT_COMMITTED = "not committed"  # no commit within the transport's wait: retry (stored once)
    FAILED = "failed"  # storing failed: the same batch would fail again


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str = ""
    batch: Normalised | None = None


@dataclass(frozen=True)
class Pending:
    """What :meth:`Pipeline.start` hands back: a finished result, or a commit to wait for."""

    batch: Normalised | None
    future: Future[None] | None = None
    result: Result | None = None


class NotCommitted(Exception):
    """Raised by a transport into :meth:`Pipeline.finish` when its wait for the commit ran out."""


class Pipeline:
    """Decoding limits, the writer, and the span counters ``/metrics`` reports."""

    def __init__(
        self, writer: Writer, *, max_body: int, max_attributes: int = _DEFAULT_MAX_ATTRIBUTES
    ) -> None:
        self.writer = writer
        self.max_body = max_body
        self.max_attributes = max_attributes
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, body: bytes, encoding: str | None, media: str) -> Normalised:
        """An OTLP/HTTP body → rows; raises the :mod:`codec` errors."""
        raw = codec.decompress(body, encoding, max_size=self.max_body)
        if media == codec.PROTOBUF:
            return self.decode_protobuf(raw)
        return normalise(codec.decode(raw, media), max_attributes=self.max_attributes)

    def decode_protobuf(self, raw: bytes) -> Normalised:
        """An uncompressed protobuf request → rows; raises :class:`codec.DecodeError`. The wire
        reader first; what it cannot vouch for goes through the protobuf runtime.
        """
        batch = normalise_protobuf(raw, max_attributes=self.max_attributes)
        if batch is not None:
            return batch
        return normalise(codec.decode(raw, codec.PROTOBUF), max_attributes=self.max_attributes)

    # -- the sequence --------------------------------------------------------------------------
    def start(self, decode: Callable[[], Normalised]) -> Pending:
        """Decode (``decode`` raises the codec's errors), count, submit; never raises. The
        writer knows a batch is on its way while it is decoded (group commit).
        """
        with self.writer.expect():
            return self._start(decode)

    def _start(self, decode: Callable[[], Normalised]) -> Pending:
        try:
            batch = decode()
        except codec.UnsupportedMediaType as exc:
            return Pending(None, result=Result(Outcome.UNSUPPORTED, str(exc)))
        except codec.TooLarge as exc:
            return Pending(None, result=Result(Outcome.TOO_LARGE, str(exc)))
        except codec.DecodeError as exc:
            return Pending(None, result=Result(Outcome.INVALID, str(exc)))
        with self._lock:
            self.counters["spans_received"] += batch.accepted + batch.rejected
            self.counters["spans_rejected"] += batch.rejected
        if not batch.accepted:
            return Pending(batch, result=Result(Outcome.OK, batch=batch))
        try:
            return Pending(batch, future=self.writer.submit(batch))
        except WriteQueueFull as exc:
            return Pending(batch, result=Result(Outcome.BUSY, str(exc), batch))

    def finish(self, pending: Pending, error: BaseException | None = None) -> Result:
        """The final result once the transport's wait for the commit ended (``error`` is what
        the wait raised: :class:`NotCommitted`, or the writer's failure).
        """
        if pending.result is not None:
            return pending.result
        if isinstance(error, NotCommitted):
            return Result(Outcome.NOT_COMMITTED, "the batch was not committed in time", pending.batch)
        if error is not None:
            logger.error("a batch could not be stored", exc_info=error)
            return Result(Outcome.FAILED, "the batch could not be stored", pending.batch)
        assert pending.batch is not None
        with self._lock:
            self.counters["spans_accepted"] += pending.batch.accepted
        return Result(Outcome.OK, batch=pending.batch)

    def metric_families(self) -> list[Family]:
        c = self.counters
        return [
            ("spans_received_total", "counter", "Spans decoded (OTLP).", [("", c["spans_received"])]),
            ("spans_accepted_total", "counter", "Spans committed to the store.", [("", c["spans_accepted"])]),
            ("spans_rejected_total", "counter", "Invalid spans.", [("", c["spans_rejected"])]),
            (
                "requests_refused_total",
                "counter",
                f"OTLP requests refused with 503: write queue full (policy {DROP_POLICY}).",
                [("", self.writer.refused)],
            ),
        ]
