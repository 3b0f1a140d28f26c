"""The lifecycle every broker receiver shares: one daemon thread, a stop event, a bounded join.

The taps and the management poller each run a loop in a thread of their own that must never
take the collector down and must stop promptly: :class:`Worker` is that thread, once.
"""

from __future__ import annotations

import threading
from typing import TypeVar

__all__ = ["Worker"]

_W = TypeVar("_W", bound="Worker")
_DEFAULT_STOP_TIMEOUT_S = 10.0


class Worker:
    """Runs ``self._run`` in a daemon thread named ``thread_name`` until :meth:`stop`.

    ``_run`` should return soon after ``self._stop`` is set (wait on it, never sleep).
    """

    def __init__(self, thread_name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self: _W) -> _W:
        self._thread.start()
        return self

    def stop(self, timeout: float = _DEFAULT_STOP_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
