"""What every command shares: value types, the extras check, and where defaults come from.

Defaults are resolved in one place so that every command reads them the same way:
a flag on the command line, else its environment variable (``EVENTSCOPE_`` + the option's
name: ``--db`` → ``EVENTSCOPE_DB``, ``--max-body`` → ``EVENTSCOPE_MAX_BODY``), else
``eventscope.toml`` in the working directory (table ``[cli]`` for every command, ``[cli.NAME]``
for one command; keys are option names, ``max_body`` or ``max-body``), else the built-in
default. Values from the environment or the file go through the option's own type, so a bad
one is reported like a bad flag, naming where it came from.

This module imports the standard library only: ``eventscope --help`` must work on the base
install, which has neither DuckDB nor the dashboard.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eventscope.tracer.durations import DURATION_EXAMPLES, parse_duration

__all__ = [
    "CONFIG_FILE",
    "EXTRAS",
    "CliError",
    "address",
    "apply_defaults",
    "duration",
    "env_name",
    "fail",
    "listen",
    "load_file_settings",
    "missing_modules",
    "parse_bytes",
    "seconds",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = "eventscope.toml"
# The modules each extra brings (pyproject.toml's optional dependencies, by import name).
EXTRAS: Mapping[str, tuple[str, ...]] = {
    "collector": ("duckdb", "pyarrow", "starlette", "uvicorn", "httpx", "rich", "google.protobuf"),
    "dashboard": ("streamlit", "duckdb", "pyarrow", "httpx"),
    "demo": ("duckdb", "pyarrow", "starlette", "uvicorn", "httpx", "rich", "streamlit"),
}
_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
# The read commands' --db/--api exclude each other: a flag for one must not meet a default for the
# other, so theirs are applied after parsing, and only when neither flag was given.
_RESOLVED_LATER = frozenset({"db", "api"})


class CliError(Exception):
    """Bad input found after parsing: one line for the user, and the exit status (2 usage, 1 else)."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def fail(message: str, *, status: int = 1) -> CliError:
    """``raise fail("what is wrong: what to do")`` from a command; ``main`` prints it on one line."""
    return CliError(message, status=status)


# -- value types --------------------------------------------------------------------------------
def duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds (the one grammar, unit optional)."""
    try:
        return parse_duration(text, unit_required=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. {DURATION_EXAMPLES})") from None


def parse_bytes(text: str) -> int:
    """``1048576``, ``32MiB``, ``16MB`` → bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]i?b|b)?\s*", str(text).lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4194304, 32MiB, 16MB)")
    value = int(match.group(1)) * _BYTE_UNITS[match.group(2) or ""]
    if value < 1:
        raise argparse.ArgumentTypeError("size must be positive")
    return value


def listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:4318`` for IPv6) → ``(host, port)``."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("seconds must be >= 0")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# -- extras ---------------------------------------------------------------------------------------
def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (empty: the extra is installed)."""
    missing = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def extra_for(module: str | None) -> str | None:
    """The extra that brings ``module`` (a ``ModuleNotFoundError.name``), if one does."""
    if not module:
        return None
    top = module.split(".")[0]
    for extra, modules in EXTRAS.items():
        if any(name.split(".")[0] == top for name in modules):
            return extra
    return None


# -- defaults: environment, then eventscope.toml ----------------------------------------------------
def env_name(dest: str) -> str:
    return "EVENTSCOPE_" + dest.upper()


def load_file_settings(directory: str | Path | None = None) -> tuple[Path | None, dict[str, Any]]:
    """``eventscope.toml``'s ``[cli]`` table from ``directory`` (default: the working directory).

    A file that is missing or has no ``[cli]`` table gives ``{}``; a file that is not TOML
    raises :class:`CliError`, since the user meant something by it.
    """
    import tomllib

    path = Path(directory or os.getcwd()) / CONFIG_FILE
    if not path.is_file():
        return None, {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"{path.name} in the working directory cannot be read ({exc}): fix or move it") from None
    section = document.get("cli", {})
    if not isinstance(section, dict):
        raise fail(f"{path.name}: [cli] must be a table of option = value")
    return path, section


def apply_defaults(
    parser: argparse.ArgumentParser,
    command: str,
    *,
    environ: Mapping[str, str],
    settings: Mapping[str, Any],
    source: str,
) -> dict[str, Any]:
    """Set ``parser``'s defaults from ``environ`` and ``settings`` (flags still win, as argparse does).

    Returns what must be applied after parsing, only when no flag was given: repeatable
    options (argparse would add command-line values to a list default) and the read commands'
    ``--db``/``--api`` (a flag for one must not meet a default for the other).
    """
    shared = {k.replace("-", "_"): v for k, v in settings.items() if not isinstance(v, dict)}
    own = settings.get(command, {})
    if not isinstance(own, dict):
        raise fail(f"{source}: [cli.{command}] must be a table of option = value")
    own = {k.replace("-", "_"): v for k, v in own.items()}
    shared.update(own)
    repeated: dict[str, Any] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in (argparse.SUPPRESS, "help", "version"):
            continue
        dest = action.dest
        name = env_name(dest)
        if name in environ:
            where, raw = f"${name}", environ[name]
        elif dest in shared:
            where, raw = f"{source} [cli{'.' + command if dest in own else ''}] {dest}", shared[dest]
        else:
            continue
        value = _convert(action, raw, where)
        if (dest in _RESOLVED_LATER and action.default is None) or isinstance(action, argparse._AppendAction):
            repeated[dest] = value
        else:
            action.default = value
    return repeated


def _convert(action: argparse.Action, raw: Any, where: str) -> Any:
    option = action.option_strings[-1]
    try:
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            return _truth(raw)  # the variable names the value (EVENTSCOPE_TRACE_ON=false for --no-trace-on)
        if isinstance(action, argparse._AppendAction):
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
            return [_typed(action, str(item).strip()) for item in items]
        if isinstance(raw, dict | list):
            raise argparse.ArgumentTypeError(f"expected one value, not {raw!r}")
        return _typed(action, str(raw))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise fail(f"{where} (for {option}): {exc}", status=2) from None


def _typed(action: argparse.Action, text: str) -> Any:
    convert: Callable[[str], Any] | None = action.type  # type: ignore[assignment]
    value = convert(text) if convert is not None else text
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _truth(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {raw!r}")


def stderr(command: str, message: str) -> None:
    print(f"eventscope {command}: {message}", file=sys.stderr)
