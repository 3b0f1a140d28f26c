"""``eventscope rules check FILE``: validate an ``eventscope.toml`` before a collector loads it.

Needs no extra: the rules parser is the standard library's ``tomllib`` and plain Python.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(commands: Any) -> None:
    rules = commands.add_parser(
        "rules",
        help="check an eventscope.toml",
        description="Alert rules: `eventscope rules check FILE` validates a configuration file.",
    )
    actions = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate FILE: OK and a summary, or every error with its line (exit 1)",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=run_check, quiet=True)


def run_check(args: argparse.Namespace) -> int:
    from eventscope.tracer.alerts.rules import ConfigError, load

    try:
        config = load(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{args.file}: {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: OK, {config.summary()}")
    return 0
