"""``eventscope contracts check|export`` (docs/contracts.md).

* ``check FILE…`` reads AsyncAPI documents and prints each one's declarations, or every error
  as ``file:line: what is wrong`` (exit 1). With ``--db`` / ``--api`` it also judges the stored
  traffic against them (post-mortem, every captured payload validated) and prints the
  violations (exit 1 when there are any).
* ``export --out DIR`` writes one AsyncAPI 3.0 document per observed service, read live
  (``--api``) or from a database file (``--db``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]

_DEFAULT_LIMIT = 100_000


def _source_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    target = parser.add_mutually_exclusive_group(required=required)
    target.add_argument("--db", metavar="PATH", help="DuckDB file to open read-only (no collector running)")
    target.add_argument("--api", metavar="URL", help="collector base URL, e.g. http://127.0.0.1:4318")
    parser.add_argument(
        "--token", metavar="TOKEN", help="the collector's bearer token (default $EVENTSCOPE_TOKEN)"
    )


def register(subparsers: Any) -> None:
    """Add ``contracts`` to the ``eventscope`` command's subparsers."""
    contracts = subparsers.add_parser(
        "contracts",
        help="AsyncAPI documents: check them (and the traffic against them), or export them from traffic",
        description="AsyncAPI in and out: see docs/contracts.md.",
    )
    contracts.set_defaults(handler=run, needs="collector", quiet=True)
    actions = contracts.add_subparsers(dest="contracts_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate AsyncAPI FILEs; with --db/--api also judge the stored traffic against them",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    _source_arguments(check, required=False)
    check.add_argument(
        "--limit",
        type=int,
        default=_DEFAULT_LIMIT,
        help=f"judge the newest N events (default {_DEFAULT_LIMIT})",
    )
    export = actions.add_parser("export", help="write one AsyncAPI 3.0 document per observed service")
    export.add_argument("--out", required=True, metavar="DIR", help="directory for <service>.yaml files")
    _source_arguments(export, required=False)
    export.add_argument(
        "--samples", type=int, default=50, help="captured payloads per message the schema is inferred from"
    )


def run(args: argparse.Namespace) -> int:
    if args.contracts_command == "check":
        return _check(args)
    return _export(args)


def _open(args: argparse.Namespace) -> Any:
    from eventscope.tracer.query.client import open_source

    return open_source(db=args.db, api=args.api, token=args.token)


def _check(args: argparse.Namespace) -> int:
    from eventscope.tracer.contracts.asyncapi import ContractError
    from eventscope.tracer.contracts.checks import ContractChecks
    from eventscope.tracer.contracts.config import ContractsConfig, load_documents
    from eventscope.tracer.query.client import SourceError

    try:
        documents = load_documents(list(args.files))
    except ContractError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    for document in documents:
        sends = sorted({d.event_type for d in document.declarations if d.role == "send"})
        receives = sorted({d.event_type for d in document.declarations if d.role == "receive"})
        print(
            f"{document.file}: OK, service {document.service!r} (AsyncAPI {document.version}): "
            f"sends {', '.join(sends) or 'nothing'}; receives {', '.join(receives) or 'nothing'}"
        )
    if not (args.db or args.api):
        return 0
    try:
        source = _open(args)
        try:
            rows = source.ask("contract_traffic", limit=args.limit)
        finally:
            source.close()
    except SourceError as exc:
        print(f"eventscope contracts check: {exc}", file=sys.stderr)
        return 1
    violations = ContractChecks(ContractsConfig(documents=documents)).check_traffic(rows)
    for v in violations:
        print(f"{v.kind}\t{v.service or '-'}\t{v.event_type or '-'}\t{v.event_id}\t{v.detail or ''}")
    kinds = Counter(v.kind for v in violations)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no violations"
    print(f"{len(rows)} event(s) judged: {summary}")
    return 1 if violations else 0


def _export(args: argparse.Namespace) -> int:
    from eventscope.tracer.contracts.asyncapi import ContractError
    from eventscope.tracer.contracts.export import export_documents
    from eventscope.tracer.query.client import SourceError

    try:
        source = _open(args)
        try:
            observations = source.ask("contract_observations")
            samples = source.ask("payload_samples", per_type=args.samples)
        finally:
            source.close()
    except SourceError as exc:
        print(f"eventscope contracts export: {exc}", file=sys.stderr)
        return 1
    try:
        documents = export_documents(observations, samples)
    except ContractError as exc:  # a bug: the export would not load
        print(f"eventscope contracts export: the documents would not validate:\n{exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for service, text in documents.items():
        path = out / f"{_file_name(service)}.yaml"
        path.write_text(text, encoding="utf-8")
        print(path)
    if not documents:
        print("no service observed: nothing written", file=sys.stderr)
    return 0


def _file_name(service: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in service) or "service"
