"""``eventscope demo``: a collector, the dashboard and a small shop on RabbitMQ, in one command.

The demo's options live with the demo (``eventscope.demo.runner.add_arguments``, shared with
``python -m eventscope.demo``) and are parsed here only when the demo runs: the runner
imports the collector's parts, which every other command (and ``--help``) should not pay
for, and which the base install does not have (``main`` then says what to install).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]

_DESCRIPTION = (
    "Start a collector and a demo shop on RabbitMQ (one process per service), print a live "
    "summary, and stop everything on Ctrl-C or after --duration."
)


def register(commands: Any) -> None:
    """The demo with its options (when the ``demo`` extra is installed), for a complete parser."""
    try:
        from eventscope.demo import runner
    except ImportError:  # no demo extra: parsed lazily, and `main` says what to install
        register_lazy(commands)
        return
    demo = _add_parser(commands, add_help=True)
    runner.add_arguments(demo)


def register_lazy(commands: Any) -> None:
    """The demo without its options: they are parsed in :func:`run`, so other commands never import them."""
    demo = _add_parser(commands, add_help=False)  # `eventscope demo --help` is the runner parser's
    demo.set_defaults(passthrough=True, rest=[])


def _add_parser(commands: Any, *, add_help: bool) -> argparse.ArgumentParser:
    demo = commands.add_parser(
        "demo",
        help="collector + dashboard + a small shop on RabbitMQ producing healthy chains and orphans",
        description=_DESCRIPTION,
        add_help=add_help,
    )
    # The demo reads its own variables (EVENTSCOPE_AMQP_URL); EVENTSCOPE_DB must never point it
    # at a real collector's file.
    demo.eventscope_env = False  # type: ignore[attr-defined]
    demo.set_defaults(handler=run, needs="demo", quiet=True)
    return demo


def run(args: argparse.Namespace) -> int:
    from eventscope.demo import runner

    if getattr(args, "passthrough", False):
        parser = argparse.ArgumentParser(prog="eventscope demo", description=_DESCRIPTION)
        runner.add_arguments(parser)
        args = parser.parse_args(args.rest)
    return runner.main(args)
