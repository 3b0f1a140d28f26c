"""The ``[contracts]`` part of ``eventscope.toml``: which AsyncAPI documents, how to check.

Parsed by :func:`parse_section`, which :func:`eventscope.tracer.alerts.rules.load` calls for
the table so the whole file is validated in one pass and the collector refuses to start on any
error (nothing half-configured). Relative paths and globs in ``asyncapi = [...]`` are relative
to the directory of the ``eventscope.toml`` that names them.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventscope.tracer.contracts import asyncapi
from eventscope.tracer.contracts.asyncapi import ContractError, ContractIssue, Document

__all__ = [
    "CONTRACT_REASONS",
    "CONTRACT_RULE",
    "CONTRACT_RULES",
    "SILENT_RULE",
    "ContractsConfig",
    "load_documents",
    "parse_section",
]

CONTRACT_REASONS = (
    "missing_consumer",
    "undeclared_producer",
    "undeclared_consumer",
    "undeclared_type",
    "schema_violation",
    "silent",
)
CONTRACT_RULE = "contracts"  # the implicit rule of the per-event findings (within: the collector's grace)
SILENT_RULE = "silent producers"  # the implicit rule of `silent`, one alert per silence
CONTRACT_RULES = (CONTRACT_RULE, SILENT_RULE)
_KEYS = ("asyncapi", "sample_rate", "silent_factor", "silent_min_rate", "silent_min_events")
_DEFAULT_SAMPLE_RATE = 1.0
_DEFAULT_SILENT_FACTOR = 10.0
_DEFAULT_SILENT_MIN_RATE = 1.0  # events per minute, on average, to qualify as "steady"
_DEFAULT_SILENT_MIN_EVENTS = 10  # gaps observed before a usual gap is trusted


@dataclass(frozen=True)
class ContractsConfig:
    """Everything ``[contracts]`` says, with its documents read and checked."""

    documents: tuple[Document, ...] = ()
    sample_rate: float = _DEFAULT_SAMPLE_RATE
    silent_factor: float = _DEFAULT_SILENT_FACTOR
    silent_min_rate: float = _DEFAULT_SILENT_MIN_RATE
    silent_min_events: int = _DEFAULT_SILENT_MIN_EVENTS


def load_documents(paths: list[str], *, base: Path | None = None) -> tuple[Document, ...]:
    """Read every file (globs expanded, relative to ``base``); raises :class:`ContractError`
    with the problems of every file, and for two documents claiming one service.
    """
    issues: list[ContractIssue] = []
    documents: list[Document] = []
    for pattern in paths:
        full = pattern if Path(pattern).is_absolute() or base is None else str(base / pattern)
        matched = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not matched:
            issues.append(ContractIssue(full, None, "no file matches this pattern"))
        for file in matched:
            try:
                documents.append(asyncapi.load(file))
            except ContractError as exc:
                issues.extend(exc.issues)
    owners: dict[str, str] = {}
    for document in documents:
        if document.service in owners:
            issues.append(
                ContractIssue(
                    document.file,
                    None,
                    f"service {document.service!r} is already described by {owners[document.service]}",
                    "one document per application",
                )
            )
        owners.setdefault(document.service, document.file)
    if issues:
        raise ContractError(issues)
    return tuple(documents)


def parse_section(
    table: Any,
    *,
    base: Path | None,
    error: Callable[[tuple[Any, ...], str, str | None], None],
    issue: Callable[[ContractIssue], None],
) -> ContractsConfig | None:
    """Validate the ``[contracts]`` table. Problems in eventscope.toml go to ``error(path,
    message, hint)``; problems inside the AsyncAPI files to ``issue``. None when invalid.
    """
    here = ("contracts",)
    if not isinstance(table, dict):
        error(here, "must be a table", None)
        return None
    ok = True
    for key in table:
        if key not in _KEYS:
            error((*here, key), "unknown key", f"known keys: {', '.join(_KEYS)}")
            ok = False
    paths = table.get("asyncapi", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        error((*here, "asyncapi"), "must be a list of file names or globs", '["specs/*.yaml"]')
        return None
    options: dict[str, Any] = {}
    for key, minimum, kind in (
        ("sample_rate", 0.0, float),
        ("silent_factor", 1.0, float),
        ("silent_min_rate", 0.0, float),
        ("silent_min_events", 2, int),
    ):
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            error((*here, key), f"must be a number >= {minimum:g}, not {value!r}", None)
            ok = False
        elif kind is int and not isinstance(value, int):
            error((*here, key), f"must be an integer, not {value!r}", None)
            ok = False
        elif key == "sample_rate" and value > 1:
            error((*here, key), f"is a fraction of the payloads, 0 to 1, not {value!r}", "0.1 = one in ten")
            ok = False
        else:
            options[key] = kind(value)
    try:
        documents = load_documents(paths, base=base)
    except ContractError as exc:
        for found in exc.issues:
            issue(found)
        return None
    return ContractsConfig(documents=documents, **options) if ok else None
