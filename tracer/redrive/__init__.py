"""Dead letters back into the flow: browse (never consumes), redrive (confirm, then ack), replay.

* :mod:`browse` — the dead letters and failure groups the collector recorded (read questions);
* :mod:`mover` — the broker side: move messages out of a dead-letter queue, or replay captured
  payloads, with the loop guard and edits;
* :mod:`records` — the ``redrives`` table rows (who, when, from, to, edited, outcome);
* :mod:`service` — the collector's side of a request: resolve, move, record.

docs/redrive.md explains the guarantees; the write endpoint lives in
``eventscope.tracer.server.redrive_api``.
"""

from __future__ import annotations

__all__: list[str] = []
