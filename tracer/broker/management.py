"""The management poller: queues, exchanges and bindings of a vhost, from RabbitMQ's HTTP API.

Every ``interval_s`` seconds it reads ``/api/queues/{vhost}``, ``/api/exchanges/{vhost}``
and ``/api/bindings/{vhost}`` and hands one :class:`broker.Topology` to the sink (the store
upserts the ``queues``, ``exchanges`` and ``bindings`` tables: see docs/sql.md) and to the
listeners (the dead-letter tap learns the DLXs from it). The orphan classifier uses queue
arguments: a message routed to a queue with a message TTL that was never delivered and
whose TTL ran out is ``expired``.

What to know: queue arguments and policies are current at each poll; message counts are
the management plugin's statistics, which lag by its collection interval (5 s by default).
A failed poll is logged once per kind of failure and counted; the previous snapshot stays.
The URL may carry credentials (``http://user:pass@host:15672``); the default is
guest/guest, which RabbitMQ accepts from localhost only.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from eventscope.tracer.broker.records import Topology
from eventscope.tracer.broker.worker import Worker

__all__ = ["ManagementPoller", "exchange_row", "plugin_enabled", "queue_row", "set_plugin"]

logger = logging.getLogger(__name__)

_DEFAULT_INTERVAL_S = 5.0
_DEFAULT_TIMEOUT_S = 5.0
_QUEUE_COLUMNS = (
    "name,vhost,type,durable,auto_delete,exclusive,arguments,policy,effective_policy_definition,"
    "messages,messages_ready,messages_unacknowledged,consumers,state"
)
_EXCHANGE_COLUMNS = "name,vhost,type,durable,auto_delete,internal,arguments"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _lower(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json(value: Any) -> str | None:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str) if value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def queue_row(queue: Mapping[str, Any], polled_at_us: int) -> dict[str, Any]:
    """One ``/api/queues`` entry → a ``queues`` row, with the effective DLX and TTL.

    RabbitMQ's rules: for the message TTL and the max length, the lower of argument and
    policy applies; for the dead-letter exchange and routing key, the argument wins.
    """
    arguments = _mapping(queue.get("arguments"))
    policy = _mapping(queue.get("effective_policy_definition"))
    dlx = arguments.get("x-dead-letter-exchange", policy.get("dead-letter-exchange"))
    dlrk = arguments.get("x-dead-letter-routing-key", policy.get("dead-letter-routing-key"))
    return {
        "vhost": queue.get("vhost") or "/",
        "name": queue["name"],
        "type": queue.get("type") or arguments.get("x-queue-type") or "classic",
        "durable": queue.get("durable"),
        "auto_delete": queue.get("auto_delete"),
        "exclusive": queue.get("exclusive"),
        "arguments": _json(dict(arguments)),
        "policy": queue.get("policy") or None,
        "message_ttl_ms": _lower(_int(arguments.get("x-message-ttl")), _int(policy.get("message-ttl"))),
        "dead_letter_exchange": dlx if isinstance(dlx, str) else None,
        "dead_letter_routing_key": dlrk if isinstance(dlrk, str) else None,
        "max_length": _lower(_int(arguments.get("x-max-length")), _int(policy.get("max-length"))),
        "overflow": _text(arguments.get("x-overflow", policy.get("overflow"))),
        "messages": _int(queue.get("messages")),
        "messages_ready": _int(queue.get("messages_ready")),
        "messages_unacknowledged": _int(queue.get("messages_unacknowledged")),
        "consumers": _int(queue.get("consumers")),
        "state": queue.get("state"),
        "first_seen_at": polled_at_us,
        "last_seen_at": polled_at_us,
        "present": True,
    }


def exchange_row(exchange: Mapping[str, Any], polled_at_us: int) -> dict[str, Any]:
    """One ``/api/exchanges`` entry → an ``exchanges`` row."""
    return {
        "vhost": exchange.get("vhost") or "/",
        "name": exchange.get("name") or "",
        "type": exchange.get("type"),
        "durable": exchange.get("durable"),
        "auto_delete": exchange.get("auto_delete"),
        "internal": exchange.get("internal"),
        "arguments": _json(dict(_mapping(exchange.get("arguments")))),
        "first_seen_at": polled_at_us,
        "last_seen_at": polled_at_us,
        "present": True,
    }


def binding_row(binding: Mapping[str, Any], polled_at_us: int) -> dict[str, Any]:
    """One ``/api/bindings`` entry → a ``bindings`` row."""
    return {
        "vhost": binding.get("vhost") or "/",
        "source": binding.get("source") or "",
        "destination": binding.get("destination") or "",
        "destination_type": binding.get("destination_type") or "queue",
        "routing_key": binding.get("routing_key") or "",
        "arguments": _json(dict(_mapping(binding.get("arguments")))),
        "properties_key": binding.get("properties_key") or binding.get("routing_key") or "",
        "first_seen_at": polled_at_us,
        "last_seen_at": polled_at_us,
        "present": True,
    }


class ManagementPoller(Worker):
    """Polls one vhost's topology in a thread of its own; never raises into the collector."""

    def __init__(
        self,
        url: str,
        sink: Callable[[Topology], None],
        *,
        vhost: str = "/",
        interval_s: float = _DEFAULT_INTERVAL_S,
        timeout_s: float = _DEFAULT_TIMEOUT_S,
        listeners: tuple[Callable[[Topology], None], ...] = (),
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--management-url must be http(s)://[user:pass@]host:port, not {url!r}")
        user = urllib.parse.unquote(parts.username) if parts.username else "guest"
        password = urllib.parse.unquote(parts.password) if parts.password else "guest"
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        path = parts.path.rstrip("/")
        if path.endswith("/api"):
            path = path[: -len("/api")]
        self.url = urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))
        self.vhost = vhost
        self.sink = sink
        self.listeners = listeners
        self.interval_s = interval_s
        self._auth = (user, password)
        self._timeout_s = timeout_s
        self.polls = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_poll_at: float | None = None
        self.last_topology: Topology | None = None
        Worker.__init__(self, "eventscope-management")

    @property
    def ok(self) -> bool:
        """Did the latest poll succeed?"""
        return self.last_poll_at is not None and self.last_error is None

    def fetch(self) -> Topology:
        """One snapshot; raises ``httpx.HTTPError`` or ``ValueError`` on failure."""
        vhost = urllib.parse.quote(self.vhost, safe="")
        polled_at_us = time.time_ns() // 1000
        with httpx.Client(base_url=self.url, auth=self._auth, timeout=self._timeout_s) as client:
            queues = self._get(client, f"/api/queues/{vhost}", {"columns": _QUEUE_COLUMNS})
            exchanges = self._get(client, f"/api/exchanges/{vhost}", {"columns": _EXCHANGE_COLUMNS})
            bindings = self._get(client, f"/api/bindings/{vhost}", None)
        return Topology(
            vhost=self.vhost,
            polled_at_us=polled_at_us,
            queues=[queue_row(q, polled_at_us) for q in queues if isinstance(q, Mapping) and q.get("name")],
            exchanges=[exchange_row(x, polled_at_us) for x in exchanges if isinstance(x, Mapping)],
            bindings=[binding_row(b, polled_at_us) for b in bindings if isinstance(b, Mapping)],
        )

    @staticmethod
    def _get(client: httpx.Client, path: str, params: dict[str, str] | None) -> list[Any]:
        response = client.get(path, params=params)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, list):
            raise ValueError(f"{path}: expected a JSON array")
        return document

    def poll_once(self) -> Topology | None:
        """Fetch, hand to the sink and the listeners; failures are logged and counted."""
        try:
            topology = self.fetch()
        except (httpx.HTTPError, ValueError) as exc:
            self.failures += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self.last_error:
                logger.warning("management poll of %s failed: %s", self.url, error)
            self.last_error = error
            return None
        for listener in self.listeners:
            try:
                listener(topology)
            except Exception:
                logger.exception("a management listener failed")
        try:
            self.sink(topology)
        except Exception as exc:
            self.failures += 1
            self.last_error = f"store: {exc}"
            logger.warning("management snapshot not stored: %s", exc)
            return None
        if self.last_error is not None:
            logger.info("management poll of %s works again", self.url)
        self.polls += 1
        self.last_error = None
        self.last_poll_at = time.time()
        self.last_topology = topology
        return topology

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval_s)

    def state(self) -> dict[str, Any]:
        """What /healthz reports of the poller."""
        return {
            "ok": self.ok,
            "url": self.url,
            "vhost": self.vhost,
            "polls": self.polls,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_poll_at": self.last_poll_at,
        }


def plugin_enabled() -> bool | None:
    """Is the management plugin enabled on this host's broker? ``None`` when it cannot tell."""
    tool = shutil.which("rabbitmq-plugins")
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "list", "-e", "-m"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return "rabbitmq_management" in out.stdout.split() if out.returncode == 0 else None


def set_plugin(enabled: bool) -> bool:
    """Enable or disable the management plugin on this host's broker; True if it worked."""
    tool = shutil.which("rabbitmq-plugins")
    if tool is None:
        return False
    action = "enable" if enabled else "disable"
    try:
        result = subprocess.run(
            [tool, action, "rabbitmq_management"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0
