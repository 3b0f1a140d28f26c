"""What the contracts write to the store (schema v11), on the writer thread: DuckDB has one
writer. Every statement is parameterised; rows go in as Arrow tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from eventscope.tracer.contracts.asyncapi import Document
from eventscope.tracer.contracts.checks import Resolution, Violation

__all__ = ["replace_declarations", "write_violations"]

_TS = pa.timestamp("us", tz="UTC")
_VIOLATIONS = pa.schema(
    [
        ("event_id", pa.string()),
        ("kind", pa.string()),
        ("service", pa.string()),
        ("event_type", pa.string()),
        ("exchange", pa.string()),
        ("routing_key", pa.string()),
        ("document", pa.string()),
        ("detail", pa.string()),
        ("detected_at", _TS),
        ("resolved_at", _TS),
    ]
)
_DECLARATIONS = pa.schema(
    [
        ("service", pa.string()),
        ("role", pa.string()),
        ("event_type", pa.string()),
        ("message", pa.string()),
        ("operation", pa.string()),
        ("channel", pa.string()),
        ("exchange", pa.string()),
        ("routing_key", pa.string()),
        ("queue", pa.string()),
        ("payload_schema", pa.string()),
        ("document", pa.string()),
        ("line", pa.int32()),
    ]
)
# one row per (event, kind, service): a recheck or a restart inserts nothing twice
_INSERT = """
INSERT INTO contract_violations
SELECT r.* FROM _eventscope_violations r
WHERE NOT EXISTS (
    SELECT 1 FROM contract_violations v
    WHERE v.event_id = r.event_id AND v.kind = r.kind AND v.service IS NOT DISTINCT FROM r.service
)
"""
_RESOLVE = """
UPDATE contract_violations SET resolved_at = r.resolved_at
FROM _eventscope_resolutions r
WHERE contract_violations.event_id = r.event_id AND contract_violations.kind = r.kind
  AND contract_violations.service IS NOT DISTINCT FROM r.service AND contract_violations.resolved_at IS NULL
"""


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1_000_000)


def write_violations(store: Any, violations: Sequence[Violation], resolutions: Sequence[Resolution]) -> None:
    """Insert new violations, resolve those that ended (a silence over, a late consumer);
    one transaction.
    """
    if not violations and not resolutions:
        return
    rows = pa.Table.from_pylist(
        [
            {
                "event_id": v.event_id,
                "kind": v.kind,
                "service": v.service,
                "event_type": v.event_type,
                "exchange": v.exchange,
                "routing_key": v.routing_key,
                "document": v.document,
                "detail": v.detail,
                "detected_at": _us(v.detected_at_s),
                "resolved_at": _us(v.resolved_at_s),
            }
            for v in violations
        ],
        schema=_VIOLATIONS,
    )
    resolved = pa.table(
        {
            "event_id": pa.array([r[0] for r in resolutions], pa.string()),
            "kind": pa.array([r[1] for r in resolutions], pa.string()),
            "service": pa.array([r[2] for r in resolutions], pa.string()),
            "resolved_at": pa.array([_us(r[3]) for r in resolutions], _TS),
        }
    )
    connection = store.reader()
    try:
        connection.register("_eventscope_violations", rows)
        connection.register("_eventscope_resolutions", resolved)
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute(_INSERT)
            connection.execute(_RESOLVE)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()


def replace_declarations(store: Any, documents: Sequence[Document]) -> None:
    """The declarations of the documents the collector runs with, instead of the last run's."""
    table = pa.Table.from_pylist(
        [
            {
                "service": d.service,
                "role": d.role,
                "event_type": d.event_type,
                "message": d.message,
                "operation": d.operation,
                "channel": d.channel,
                "exchange": d.exchange,
                "routing_key": d.routing_key,
                "queue": d.queue,
                "payload_schema": d.schema_json,
                "document": d.file,
                "line": d.line,
            }
            for document in documents
            for d in document.declarations
        ],
        schema=_DECLARATIONS,
    )
    connection = store.reader()
    try:
        connection.register("_eventscope_declarations", table)
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute("DELETE FROM contract_declarations")
            connection.execute("INSERT INTO contract_declarations SELECT * FROM _eventscope_declarations")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()
