"""``eventscope demo``: a collector, the dashboard and a small shop on RabbitMQ, in one command.

The demo's options live with the demo (``eventscope.demo.runner.add_arguments``, shared with
``python -m eventscope.demo``). The runner imports the collector's parts, so without the
``demo`` extra the command still appears in ``--help`` and says what to install.
"""

from __future__ import annotations

import argparse
from typing import Any

from eventscope.tracer.cli import options

__all__ = ["register"]


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="collector + dashboard + a small shop on RabbitMQ producing healthy chains and orphans",
        description=(
            "Start a collector and a demo shop on RabbitMQ (one process per service), print a live "
            "summary, and stop everything on Ctrl-C or after --duration."
        ),
    )
    # The demo reads its own variables (EVENTSCOPE_AMQP_URL); EVENTSCOPE_DB must never point it
    # at a real collector's file.
    demo.eventscope_env = False  # type: ignore[attr-defined]
    demo.set_defaults(handler=run, needs="demo", quiet=True)
    if options.missing_modules("demo"):  # its options come with it; `main` says what to install
        return
    from eventscope.demo import runner

    runner.add_arguments(demo)


def run(args: argparse.Namespace) -> int:
    from eventscope.demo import runner

    return runner.main(args)
