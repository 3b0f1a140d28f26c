"""The ``eventscope`` command: builds the parser from the command modules and dispatches.

Each command group lives in its own module of this package (``collect``, ``read``: sql,
orphans, chain, alerts; ``rules``, ``contracts``, ``redrive``, ``dashboard``, ``demo``,
``doctor``). Adding a command is one line: write ``tracer/cli/NAME.py`` with
``register(commands)``, which adds its parser(s) to ``commands`` (the ``add_subparsers``
object) and sets, with ``set_defaults``:

* ``handler``: ``(args) -> int``, the exit status;
* ``needs``: the extra it imports (``"collector"``, ``"dashboard"``, ``"demo"``), if any;
* ``quiet``: ``True`` when its output is for people (library logging then stays at warnings);
* ``passthrough``: ``True`` when it parses its own options (they arrive in ``args.rest``);

then add ``"NAME"`` to :data:`COMMANDS` below. Modules import only the standard library at
the top (heavy imports go inside the handler), so ``eventscope --help`` works on the base
install and a command whose extra is missing says which one to install.

Exit codes: 0 success, 1 the command failed, 2 bad usage or a missing extra. Bad input never
shows a traceback: one line says what is wrong and what to do (``--log-level debug`` shows
the traceback of an unexpected error).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from eventscope.tracer.cli import options
from eventscope.tracer.version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

logger = logging.getLogger(__name__)

COMMANDS = ("collect", "read", "rules", "contracts", "redrive", "dashboard", "demo", "doctor")


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The whole command line; every command module adds its own parsers.

    ``lazy`` (what ``main`` uses) lets a module whose options are costly to build register
    with ``register_lazy(commands)`` instead: its options are then parsed when it runs.
    """
    parser = argparse.ArgumentParser(
        prog="eventscope",
        description="Debugging and observability for event-driven systems on RabbitMQ.",
        epilog=(
            "Every option also reads EVENTSCOPE_<OPTION> (e.g. EVENTSCOPE_DB, EVENTSCOPE_LISTEN), "
            f"then [cli] / [cli.COMMAND] in ./{options.CONFIG_FILE}; flags win."
        ),
    )
    parser.add_argument("--version", action="version", version=f"eventscope {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"eventscope.tracer.cli.{name}")
        (getattr(module, "register_lazy", module.register) if lazy else module.register)(commands)
    return parser


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    parser = build_parser(lazy=True)
    try:
        args = _parse(parser, argv, environ)
    except options.CliError as exc:
        print(f"eventscope: {exc}", file=sys.stderr)
        return exc.status
    level = _level(args.log_level)
    if getattr(args, "quiet", False):  # their output is for people; library chatter is not
        level = max(logging.WARNING, level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = _command_name(args)
    needs = getattr(args, "needs", None)
    if needs and (missing := options.missing_modules(needs)):
        options.stderr(name, _install_hint(needs, missing[0]))
        return 2
    try:
        return int(args.handler(args))
    except options.CliError as exc:
        options.stderr(name, str(exc))
        return exc.status
    except ModuleNotFoundError as exc:
        extra = options.extra_for(exc.name)
        if extra is None:
            raise
        options.stderr(name, _install_hint(extra, exc.name or extra))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.log_level == "debug":
            logger.exception("eventscope %s failed", name)
        first = (str(exc).splitlines() or [""])[0]
        options.stderr(name, f"{type(exc).__name__}: {first} (--log-level debug shows where)")
        return 1


def _parse(
    parser: argparse.ArgumentParser, argv: list[str], environ: Mapping[str, str]
) -> argparse.Namespace:
    """Flags, then ``EVENTSCOPE_*``, then ``eventscope.toml``: defaults set per command, then parse."""
    source, settings = options.load_file_settings()
    where = str(source.name if source else options.CONFIG_FILE)
    top = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    later: dict[str, dict[str, Any]] = {}
    options.apply_defaults(parser, "", environ=environ, settings=top, source=where)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in commands.choices.items():
        if getattr(subparser, "eventscope_env", True):
            later[name] = options.apply_defaults(
                subparser, name, environ=environ, settings=settings, source=where
            )
    _check_settings(settings, parser, commands.choices, where)
    args, unknown = parser.parse_known_args(argv)
    needs = getattr(args, "needs", None)
    if getattr(args, "passthrough", False):  # the command parses its own options (demo)
        args.rest = unknown
    elif unknown and not (needs and options.missing_modules(needs)):  # else: main says what to install
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    fallbacks = later.get(args.command, {})
    no_source_flag = getattr(args, "db", None) is None and getattr(args, "api", None) is None
    if ("db" in fallbacks or "api" in fallbacks) and no_source_flag:
        args.db = fallbacks.get("db")
        args.api = None if args.db else fallbacks.get("api")
    for dest, value in fallbacks.items():
        if dest not in ("db", "api") and getattr(args, dest, None) in (None, []):
            setattr(args, dest, value)
    return args


def _check_settings(
    settings: Mapping[str, Any],
    parser: argparse.ArgumentParser,
    commands: Mapping[str, argparse.ArgumentParser],
    where: str,
) -> None:
    """A key in ``[cli]`` / ``[cli.COMMAND]`` that no option reads is a typo: say so, not ignore it."""

    def dests(p: argparse.ArgumentParser) -> set[str]:
        return {a.dest for a in p._actions if a.option_strings}

    everywhere = dests(parser).union(*(dests(p) for p in commands.values()))
    for key, value in settings.items():
        if isinstance(value, dict):
            if key not in commands:
                raise options.fail(f"{where}: [cli.{key}] names no command", status=2)
            for option in value:
                if option.replace("-", "_") not in dests(commands[key]):
                    raise options.fail(f"{where}: [cli.{key}] {option}: {key} has no such option", status=2)
        elif key.replace("-", "_") not in everywhere:
            raise options.fail(f"{where}: [cli] {key}: no command has this option", status=2)


def _install_hint(extra: str, module: str) -> str:
    return f"needs the {extra} extra ({module} is not installed): pip install 'eventscope[{extra}]'"


def _command_name(args: argparse.Namespace) -> str:
    sub = getattr(args, "rules_command", None) if args.command == "rules" else None
    return f"{args.command} {sub}" if sub else str(args.command)


def _level(name: str) -> int:
    return logging.getLevelName(name.upper())


if __name__ == "__main__":
    sys.exit(main())
