"""The collector's broker receivers: firehose tap, dead-letter tap and management poller.

:class:`BrokerReceivers` starts what the configuration asks for, feeds each one's batches
through the collector's single writer (:meth:`Writer.write`: a tap acknowledges its records
only once they are committed) and reports their state for ``/healthz`` and ``/metrics``.
Each receiver runs in a thread of its own and reconnects or retries by itself; none of
them can stop the collector from serving.

Turning the firehose on: with ``trace_on`` (the default), ``rabbitmqctl trace_on`` runs
for the vhost of the AMQP URL when the broker is on this host; otherwise, or when that
fails, the log (and ``/healthz``) say exactly how to do it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pika

from eventscope.tracer.broker.deadletter import DeadLetterTap
from eventscope.tracer.broker.firehose import (
    FirehoseRecord,
    FirehoseTap,
    enable_tracing,
    how_to_enable_tracing,
)
from eventscope.tracer.broker.management import ManagementPoller
from eventscope.tracer.broker.payloads import PayloadCapture
from eventscope.tracer.broker.records import (
    BrokerBatch,
    DeadLetter,
    Topology,
    normalise_dead_letters,
    normalise_firehose,
)
from eventscope.tracer.ingest.writer import Writer
from eventscope.tracer.metrics import Family, labels

__all__ = ["BrokerReceivers"]

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class BrokerReceivers:
    """Firehose tap, dead-letter tap and management poller of one collector (each optional)."""

    def __init__(
        self,
        writer: Writer,
        *,
        amqp_url: str | None = None,
        firehose: bool = False,
        trace_on: bool = True,
        dlx: Sequence[str] = (),
        management_url: str | None = None,
        management_interval_s: float = 5.0,
        flush_interval_s: float = 0.2,
        capture: PayloadCapture | None = None,
        tap_queue: str | None = None,
    ) -> None:
        if (firehose or dlx) and not amqp_url:
            raise ValueError("the firehose and dead-letter taps need an AMQP URL (--amqp-url)")
        self.writer = writer
        self.parameters = pika.URLParameters(amqp_url) if amqp_url else None
        self.vhost = self.parameters.virtual_host if self.parameters is not None else "/"
        self.tracing: dict[str, Any] | None = None
        self.firehose: FirehoseTap | None = None
        self.dead_letters: DeadLetterTap | None = None
        self.management: ManagementPoller | None = None
        self.firehose_records = 0
        self.dead_letter_copies = 0
        if firehose and self.parameters is not None:
            self.tracing = self._turn_tracing_on(trace_on)
            self.firehose = FirehoseTap(
                self.parameters,
                self._write_firehose,
                flush_interval_s=flush_interval_s,
                capture=capture,
                durable_name=tap_queue,
            )
        if self.parameters is not None and (dlx or management_url):
            self.dead_letters = DeadLetterTap(
                self.parameters,
                self._write_dead_letters,
                exchanges=dlx,
                flush_interval_s=flush_interval_s,
                durable_name=tap_queue,
            )
        if management_url:
            listeners = (self.dead_letters.watch,) if self.dead_letters is not None else ()
            self.management = ManagementPoller(
                management_url,
                self._write_topology,
                vhost=self.vhost,
                interval_s=management_interval_s,
                listeners=listeners,
            )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> BrokerReceivers:
        for receiver in (self.firehose, self.dead_letters, self.management):
            if receiver is not None:
                receiver.start()
        return self

    def stop(self) -> None:
        """Stop every receiver; taps flush what they read (the writer must still accept)."""
        for receiver in (self.management, self.dead_letters, self.firehose):
            if receiver is not None:
                receiver.stop()

    def _turn_tracing_on(self, trace_on: bool) -> dict[str, Any]:
        assert self.parameters is not None
        how = how_to_enable_tracing(self.vhost)
        if not trace_on:
            message = f"not turning the firehose on (told not to); if it is off, {how}"
            logger.info(message)
            return {"enabled": None, "message": message}
        if self.parameters.host not in _LOCAL_HOSTS:
            message = f"the broker {self.parameters.host} is not on this host: {how}"
            logger.warning(message)
            return {"enabled": None, "message": message}
        enabled, message = enable_tracing(self.vhost)
        if enabled:
            logger.info(message)
        else:
            logger.warning("firehose: %s", message)
        return {"enabled": enabled, "message": message}

    # -- sinks (each in its receiver's thread) ------------------------------------------------
    def _write_firehose(self, records: Sequence[FirehoseRecord]) -> None:
        self.writer.write(normalise_firehose(records))
        self.firehose_records += len(records)

    def _write_dead_letters(self, copies: Sequence[DeadLetter]) -> None:
        self.writer.write(normalise_dead_letters(copies))
        self.dead_letter_copies += len(copies)

    def _write_topology(self, topology: Topology) -> None:
        self.writer.write(BrokerBatch(topology=topology))

    # -- reporting -----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Per receiver that runs: connection state, counters, last error (for /healthz)."""
        state: dict[str, Any] = {}
        if self.firehose is not None:
            state["firehose"] = {
                **self.firehose.state(),
                "stored": self.firehose_records,
                "tracing": self.tracing,
            }
        if self.dead_letters is not None:
            state["dead_letter_tap"] = {**self.dead_letters.state(), "stored": self.dead_letter_copies}
        if self.management is not None:
            state["management"] = self.management.state()
        return state

    def metric_families(self) -> list[Family]:
        """Prometheus families: connection state, records, reconnects, sink failures, polls."""
        taps = [(name, tap) for name, tap in (("firehose", self.firehose), ("dlx", self.dead_letters)) if tap]
        families: list[Family] = []
        if taps:
            families += [
                (
                    "broker_tap_connected",
                    "gauge",
                    "1 while a broker tap is connected and consuming.",
                    [(labels(tap=name), float(tap.connected.is_set())) for name, tap in taps],
                ),
                (
                    "broker_tap_received_total",
                    "counter",
                    "Messages a broker tap received (firehose records, dead-lettered copies).",
                    [(labels(tap=name), tap.received) for name, tap in taps],
                ),
                (
                    "broker_tap_reconnects_total",
                    "counter",
                    "Connections a broker tap made after its first (broker restarts, network).",
                    [(labels(tap=name), tap.reconnects) for name, tap in taps],
                ),
                (
                    "broker_tap_sink_failures_total",
                    "counter",
                    "Batches a broker tap could not store (requeued to the broker, retried).",
                    [(labels(tap=name), tap.sink_failures) for name, tap in taps],
                ),
            ]
        if self.firehose is not None:
            families.append(
                (
                    "firehose_records_stored_total",
                    "counter",
                    "Firehose records committed.",
                    [("", self.firehose_records)],
                )
            )
        if self.dead_letters is not None:
            families.append(
                (
                    "dead_letters_stored_total",
                    "counter",
                    "Dead-lettered copies committed.",
                    [("", self.dead_letter_copies)],
                )
            )
        if self.management is not None:
            families += [
                (
                    "management_up",
                    "gauge",
                    "1 when the latest management poll worked.",
                    [("", float(self.management.ok))],
                ),
                (
                    "management_polls_total",
                    "counter",
                    "Management API polls by result.",
                    [
                        ('{result="ok"}', self.management.polls),
                        ('{result="error"}', self.management.failures),
                    ],
                ),
            ]
        return families
