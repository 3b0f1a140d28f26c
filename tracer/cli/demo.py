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
    demo = commands.add_parser(
        "demo",
        help="collector + dashboard + a small shop on RabbitMQ producing healthy chains and orphans",
        description=_DESCRIPTION,
        add_help=False,  # `eventscope demo --help` is the runner's own parser's
    )
    # The demo reads its own variables (EVENTSCOPE_AMQP_URL); EVENTSCOPE_DB must never point it
    # at a real collector's file.
    demo.eventscope_env = False  # type: ignore[attr-defined]
    demo.set_defaults(handler=run, needs="demo", quiet=True, passthrough=True, rest=[])


def run(args: argparse.Namespace) -> int:
    from eventscope.demo import runner

    parser = argparse.ArgumentParser(prog="eventscope demo", description=_DESCRIPTION)
    runner.add_arguments(parser)
    return runner.main(parser.parse_args(args.rest))
