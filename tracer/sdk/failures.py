"""Failures inside eventscope's own tracing code: caught, logged once per kind, counted.

Users prefer losing telemetry to a changed application. Every hook that runs inside a
user's call (publish, consume, settle) funnels its exceptions through :func:`record`, so
the application's call goes on as if it were not instrumented, and the failure is still
visible: logged the first time each kind happens, and counted in :func:`counts`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

__all__ = ["counts", "record", "reset"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def record(kind: str, exc: BaseException | None = None) -> None:
    """Count one failure of ``kind``; log it with its traceback the first time only.

    Never raises: it is called from ``except`` blocks on the application's path.
    """
    try:
        with _lock:
            _counts[kind] += 1
            first = _counts[kind] == 1
        if first:
            logger.warning(
                "eventscope: %s failed; the application goes on untraced for this call "
                "(further failures of this kind are counted, not logged)",
                kind,
                exc_info=exc,
            )
    except Exception:  # pragma: no cover - logging itself broke; nothing left to do
        pass


def counts() -> dict[str, int]:
    """How many failures of each kind happened in this process."""
    with _lock:
        return dict(_counts)


def reset() -> None:
    """Forget all counts (tests and long-running processes that scrape and reset)."""
    with _lock:
        _counts.clear()
