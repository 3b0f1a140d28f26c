"""The collector's side of a redrive request: resolve what to move, move it, record it.

A request names messages three ways — event ids, a dead-letter queue (every message in it),
or a failure group (filters over what :mod:`browse` lists) — and each event is handled the way
its fate allows: a dead-lettered one is moved out of its dead-letter queue (DLQ) by
:class:`Mover`; one that left no message (unroutable, expired or failed without a DLX) is
replayed from its captured payload. Every message touched becomes a ``redrives`` row with
the request's actor; dry runs are answered, never stored.

Runs on a worker thread of the collector, one request at a time (the lock): two redrives of
the same DLQ at once would only hand each other's messages back and forth.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pika

from eventscope.tracer.redrive import browse, records
from eventscope.tracer.redrive.mover import DEFAULT_MAX_REDRIVES, Capture, Edit, Mover, RedriveError
from eventscope.tracer.redrive.records import RedriveRecord, new_id

if TYPE_CHECKING:
    from eventscope.tracer.ingest.writer import Writer
    from eventscope.tracer.store.duckdb_store import Store

__all__ = ["RedriveRequest", "RedriveService"]

logger = logging.getLogger(__name__)

_MAX_IDS = 10_000
_GROUP_FILTERS = ("event_type", "reason", "error_type", "died_in")
_MAX_ACTOR_CHARS = 200


@dataclass(frozen=True)
class RedriveRequest:
    """What to redrive, where to, and who asks. Built from the API's JSON by :meth:`from_json`."""

    actor: str
    event_ids: tuple[str, ...] = ()
    queue: str | None = None
    group: Mapping[str, str] = field(default_factory=dict)
    to_queue: str | None = None
    edit: Edit | None = None
    dry_run: bool = False
    limit: int | None = None

    @classmethod
    def from_json(cls, document: Any, *, caller: str) -> RedriveRequest:
        """Validate the endpoint's body; ``ValueError`` (``EditError`` for edits) says what is wrong.

        ``caller`` is what the collector knows of the caller (its address); the ``actor`` the
        body gives is kept next to it, never instead of it.
        """
        if not isinstance(document, Mapping):
            raise ValueError("the body must be a JSON object")
        unknown = set(document) - {
            "event_ids",
            "queue",
            "group",
            "to_queue",
            "body",
            "headers",
            "dry_run",
            "limit",
            "actor",
        }
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        ids = document.get("event_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise ValueError("event_ids must be a list of event ids")
        if len(ids) > _MAX_IDS:
            raise ValueError(f"at most {_MAX_IDS} event ids per request")
        group = document.get("group") or {}
        if not isinstance(group, Mapping) or set(group) - set(_GROUP_FILTERS):
            raise ValueError(f"group filters: {', '.join(_GROUP_FILTERS)}")
        if not all(isinstance(v, str) for v in group.values()):
            raise ValueError("group filter values must be strings")
        queue, to_queue = document.get("queue"), document.get("to_queue")
        for name, value in (("queue", queue), ("to_queue", to_queue)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a queue name")
        if not ids and not queue and not group:
            raise ValueError("say what to redrive: event_ids, a dead-letter queue, or a failure group")
        limit = document.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError("limit must be a positive integer")
        dry_run = document.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ValueError("dry_run must be true or false")
        actor = document.get("actor")
        if actor is not None and not isinstance(actor, str):
            raise ValueError("actor must be a string")
        who = f"{actor.strip()[:_MAX_ACTOR_CHARS]} via {caller}" if actor and actor.strip() else caller
        return cls(
            actor=who,
            event_ids=tuple(dict.fromkeys(ids)),
            queue=queue,
            group=dict(group),
            to_queue=to_queue,
            edit=Edit.parse(body=document.get("body"), headers=document.get("headers")),
            dry_run=dry_run,
            limit=limit,
        )


class RedriveService:
    """Redrives for one collector: its broker, its store (to read), its writer (to record)."""

    def __init__(
        self, *, amqp_url: str, store: Store, writer: Writer, max_redrives: int = DEFAULT_MAX_REDRIVES
    ) -> None:
        self.store = store
        self.writer = writer
        self.mover = Mover(pika.URLParameters(amqp_url), max_redrives=max_redrives)
        self._lock = threading.Lock()

    def run(self, request: RedriveRequest) -> dict[str, Any]:
        """Do the request; the answer lists every message touched. Raises :class:`RedriveError`
        when nothing could start (a queue that does not exist): nothing moved.
        """
        request_id = new_id()
        with self._lock:
            done = self._run(request, request_id)
            records.write(self.writer, done)
        counts = {
            outcome: sum(r.outcome == outcome for r in done) for outcome in ("sent", "refused", "failed")
        }
        return {
            "request_id": request_id,
            "actor": request.actor,
            "dry_run": request.dry_run,
            **counts,
            "would_send": sum(r.outcome == "would_send" for r in done),
            "messages": [r.answer() for r in done],
        }

    def _run(self, request: RedriveRequest, request_id: str) -> list[RedriveRecord]:
        common = {
            "request_id": request_id,
            "actor": request.actor,
            "to_queue": request.to_queue,
            "edit": request.edit,
            "dry_run": request.dry_run,
        }
        if request.queue and not request.event_ids and not request.group:
            return self.mover.from_queue(request.queue, limit=request.limit, **common)
        ids = list(request.event_ids)
        if request.group:
            ids += [
                row["event_id"] for row in self._read(browse.dead_letter_messages, **self._group(request))
            ]
        ids = list(dict.fromkeys(ids))[: request.limit]
        sources = self._read(browse.orphan_sources, event_ids=ids)
        done: list[RedriveRecord] = []
        by_dlq: dict[str, list[str]] = {}
        captures: list[Capture] = []
        for source in sources:
            event_id = source["event_id"]
            if not source["known"]:
                done.append(
                    self._refused(request, request_id, event_id, "unknown event: the collector never saw it")
                )
            elif source["died_in"] is not None:
                dlq = request.queue or self._dlq_of(source)
                if dlq is None:
                    why = (
                        f"dead-lettered from {source['died_in']!r} through {source['dlx']!r}, but the "
                        "dead-letter queue is not known (no management poller): name it with --queue"
                    )
                    done.append(self._refused(request, request_id, event_id, why))
                else:
                    by_dlq.setdefault(dlq, []).append(event_id)
            else:
                captures.append(self._capture(source))
        for dlq, wanted in by_dlq.items():
            moved = self.mover.from_queue(dlq, event_ids=wanted, **common)
            done += moved
            missing = set(wanted) - {r.event_id for r in moved}
            for event_id in sorted(missing):
                why = f"not in the dead-letter queue {dlq!r} (redriven already, consumed or expired there)"
                done.append(self._refused(request, request_id, event_id, why, from_queue=dlq))
        if captures:
            done += self.mover.replay(captures, **common)
        return done

    @staticmethod
    def _group(request: RedriveRequest) -> dict[str, Any]:
        group = dict(request.group)
        died_in = group.pop("died_in", None)
        return {**group, "queue": died_in or request.queue, "limit": request.limit or _MAX_IDS}

    def _read(self, function: Any, **params: Any) -> Any:
        connection = self.store.reader()
        try:
            return function(connection, **params)
        finally:
            connection.close()

    def _dlq_of(self, source: Mapping[str, Any]) -> str | None:
        found = self._read(
            browse.dead_letter_queues,
            dlx=source["dlx"] or "",
            died_in=source["died_in"],
            routing_key=source["first_routing_key"],
        )
        return found[0] if found else None

    @staticmethod
    def _capture(source: Mapping[str, Any]) -> Capture:
        return Capture(
            event_id=source["event_id"],
            exchange=source["exchange"],
            routing_key=source["routing_key"],
            event_type=source["event_type"],
            producer_service=source["producer_service"],
            correlation_id=source["correlation_id"],
            causation_id=source["causation_id"],
            content_type=source["content_type"],
            body=source["body"],
            captured=bool(source["captured"]),
            truncated=bool(source["truncated"]),
            redacted=int(source["redacted"] or 0),
            prior_redrives=int(source["prior_redrives"] or 0),
        )

    @staticmethod
    def _refused(
        request: RedriveRequest, request_id: str, event_id: str, why: str, *, from_queue: str | None = None
    ) -> RedriveRecord:
        return RedriveRecord(
            redrive_id=new_id(),
            request_id=request_id,
            event_id=event_id,
            actor=request.actor,
            mode="dead_letter" if from_queue else "capture",
            outcome="refused",
            from_queue=from_queue,
            edited=request.edit is not None,
            error=why,
        )


__all__ += ["RedriveError"]
