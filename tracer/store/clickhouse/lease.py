"""One instance at a time among the collect instances of one ClickHouse store: a lease, for the
work that must run once (deriving what the OpenTelemetry Collector wrote, :mod:`.derive`; the
alert evaluator, once alerts run on ClickHouse).

ClickHouse has no compare-and-set, so the lease is a row per name in ``eventscope_settings``
(a ReplacingMergeTree: the newest write wins) and a protocol over it:

* every time is ClickHouse's clock (``now64()`` in the statements), never the instances';
* an instance claims the lease only when nobody holds it or the holder's term ran out
  (``ttl_s`` after its last renewal), by writing ``holder expires_at_us``;
* after a claim it waits ``settle_s`` (longer than an insert takes to be visible) and reads the
  row again: the newest claim won. Two instances that claimed at once read the same winner,
  so the loser never starts;
* the holder renews its term (every ``ttl_s / 3`` is plenty) and re-reads the row on every
  renewal: if another instance holds it (its own term ran out while it was paused), it stops;
* :meth:`Lease.release` ends the term at once, so that a second instance takes over on its next
  try instead of after ``ttl_s``.

What the caller can rely on: when :meth:`Lease.acquire` or :meth:`Lease.renew` returns True, no
other instance's call returned True for a term that has not ended.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from eventscope.tracer.store.clickhouse.engine import Engine

__all__ = ["Lease", "LeaseState"]

logger = logging.getLogger(__name__)

_DEFAULT_TTL_S = 15.0
_DEFAULT_SETTLE_S = 0.5

_READ = """
SELECT argMax(value, updated_at) AS value, toUnixTimestamp64Micro(now64(6)) AS now_us
FROM eventscope_settings
WHERE name = {name:String}
"""
_WRITE = """
INSERT INTO eventscope_settings (name, value, updated_at)
SELECT {name:String},
       concat({holder:String}, ' ', toString(toUnixTimestamp64Micro(now64(6)) + {ttl_us:Int64})),
       now64(6)
"""


@dataclass(frozen=True)
class LeaseState:
    """Who holds the lease (None: nobody ever did) and whether their term still runs."""

    holder: str | None
    expires_at_us: int
    now_us: int

    @property
    def live(self) -> bool:
        return self.holder is not None and self.expires_at_us > self.now_us


class Lease:
    """The lease ``name`` for this instance (``holder``: host, pid and a random suffix)."""

    def __init__(
        self,
        engine: Engine,
        *,
        name: str = "alerts",
        holder: str | None = None,
        ttl_s: float = _DEFAULT_TTL_S,
        settle_s: float = _DEFAULT_SETTLE_S,
    ) -> None:
        if ttl_s <= settle_s:
            raise ValueError(f"the lease's ttl_s ({ttl_s}) must be longer than settle_s ({settle_s})")
        self.engine = engine
        self.name = f"lease.{name}"
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if " " in self.holder:
            raise ValueError("a lease holder's name has no spaces")
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.held = False

    def state(self) -> LeaseState:
        row = self.engine.query_arrow(_READ, {"name": self.name}).to_pylist()
        value = row[0]["value"] if row else ""
        now_us = int(row[0]["now_us"]) if row else 0
        holder, _, expires = (value or "").partition(" ")
        if not holder or not expires:
            return LeaseState(None, 0, now_us)
        return LeaseState(holder, int(expires), now_us)

    def _write(self, ttl_s: float) -> None:
        self.engine.command(
            _WRITE, {"name": self.name, "holder": self.holder, "ttl_us": int(ttl_s * 1_000_000)}
        )

    def acquire(self) -> bool:
        """Take the lease if it is free (or already ours); True when this instance holds it."""
        current = self.state()
        if current.live and current.holder != self.holder:
            self.held = False
            return False
        self._write(self.ttl_s)
        time.sleep(self.settle_s)
        self.held = self.state().holder == self.holder
        if self.held:
            logger.info("this instance (%s) holds the %s lease", self.holder, self.name)
        return self.held

    def renew(self) -> bool:
        """Extend our term; False (and stop acting) if another instance holds the lease now."""
        current = self.state()
        if current.holder != self.holder or not current.live:
            if self.held:
                logger.warning("lost the %s lease to %s", self.name, current.holder)
            self.held = False
            return self.acquire() if not current.live else False
        self._write(self.ttl_s)
        self.held = True
        return True

    def release(self) -> None:
        """End our term now (on stop), so that another instance takes over on its next try."""
        if self.held and self.state().holder == self.holder:
            self._write(0)
        self.held = False
