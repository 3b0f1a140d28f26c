"""Rows of the ``redrives`` table (schema v10): one per message a redrive request touched.

Written through the collector's writer thread (DuckDB has one writer), after the broker work:
a crash between the broker's confirm and this write loses the row, never the message (the
message then exists twice at worst: at-least-once).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from eventscope.tracer.ingest.writer import Writer

__all__ = ["REDRIVES_SCHEMA", "RedriveRecord", "new_id", "text_of", "write"]

logger = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
REDRIVES_SCHEMA = pa.schema(
    [
        ("redrive_id", pa.string()),
        ("request_id", pa.string()),
        ("event_id", pa.string()),
        ("actor", pa.string()),
        ("requested_at", _TS),
        ("mode", pa.string()),
        ("from_queue", pa.string()),
        ("to_exchange", pa.string()),
        ("to_routing_key", pa.string()),
        ("redrive_count", pa.int32()),
        ("edited", pa.bool_()),
        ("original_body", pa.string()),
        ("original_headers", pa.string()),
        ("outcome", pa.string()),
        ("error", pa.string()),
    ]
)
_WRITE_TIMEOUT_S = 30.0


def new_id() -> str:
    """A redrive or request id: time-ordered like the adapter's event ids (UUIDv7 layout)."""
    ms = time.time_ns() // 1_000_000
    value = (ms & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (uuid.uuid4().int & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def text_of(body: bytes) -> str:
    """A body as text for the record: UTF-8 as it is, anything else ``base64:`` + base64."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return text_of(bytes(value))
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass
class RedriveRecord:
    """What happened to one message of a request (also the API's and the CLI's answer)."""

    redrive_id: str
    request_id: str
    event_id: str
    actor: str
    mode: str  # dead_letter | capture
    outcome: str  # sent | refused | failed | would_send (dry run: never stored)
    requested_at_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    from_queue: str | None = None
    to_exchange: str | None = None
    to_routing_key: str | None = None
    redrive_count: int | None = None
    edited: bool = False
    original_body: bytes | None = None
    original_headers: Mapping[str, Any] | None = None
    error: str | None = None
    properties: dict[str, Any] | None = None  # what was (or would be) sent: for dry runs and the CLI
    body: bytes | None = None

    def row(self) -> dict[str, Any]:
        return {
            "redrive_id": self.redrive_id,
            "request_id": self.request_id,
            "event_id": self.event_id,
            "actor": self.actor,
            "requested_at": self.requested_at_us,
            "mode": self.mode,
            "from_queue": self.from_queue,
            "to_exchange": self.to_exchange,
            "to_routing_key": self.to_routing_key,
            "redrive_count": self.redrive_count,
            "edited": self.edited,
            "original_body": text_of(self.original_body)
            if self.edited and self.original_body is not None
            else None,
            "original_headers": json.dumps(_json_safe(self.original_headers))
            if self.edited and self.original_headers is not None
            else None,
            "outcome": self.outcome,
            "error": self.error,
        }

    def answer(self) -> dict[str, Any]:
        """The JSON shape of the API answer (and of ``--dry-run``: exactly what is sent)."""
        out = {
            "redrive_id": self.redrive_id,
            "event_id": self.event_id,
            "mode": self.mode,
            "outcome": self.outcome,
            "error": self.error,
            "from_queue": self.from_queue,
            "exchange": self.to_exchange,
            "routing_key": self.to_routing_key,
            "redrive_count": self.redrive_count,
            "edited": self.edited,
        }
        if self.properties is not None:
            out["properties"] = _json_safe(self.properties)
        if self.body is not None:
            out["body"] = text_of(self.body)
        return out


def write(writer: Writer, records: Sequence[RedriveRecord], *, timeout: float = _WRITE_TIMEOUT_S) -> None:
    """Store the records that are not dry runs; waits for the commit."""
    rows = [record.row() for record in records if record.outcome != "would_send"]
    if not rows:
        return
    table = pa.Table.from_pylist(rows, schema=REDRIVES_SCHEMA)
    writer.call(lambda store: store.append_redrives(table)).result(timeout=timeout)
