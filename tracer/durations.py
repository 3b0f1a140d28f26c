"""The one duration grammar: ``"500ms"``, ``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"``.

Shared by the command line (``--retention 7d``) and ``eventscope.toml`` (``within = "30s"``),
so a duration that works in one place works in the other. Plain standard library: the
collector, the CLI and the alert rules import it without pulling the SDK or DuckDB.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DURATION_EXAMPLES", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", re.IGNORECASE)
DURATION_EXAMPLES = '"500ms", "30s", "15m", "12h", "7d", "2w"'


def parse_duration(value: Any, *, unit_required: bool = True) -> float:
    """``value`` in seconds: a number (seconds) or a string, a number with a unit.

    A string without a unit (``"90"``) is seconds only with ``unit_required=False`` (the
    command line, where ``--retention 90`` reads naturally); in a configuration file a
    quoted bare number is more likely a mistake, so it is refused there. Raises
    ``ValueError`` for anything else, negative values and booleans included; the message
    names the value, and callers add the hint (``DURATION_EXAMPLES``) in their own words.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        unit = (match.group(2) or "").lower()
        if not unit and unit_required:
            raise ValueError(f"not a duration: {value!r}")
        seconds = float(match.group(1)) * _UNITS[unit or "s"]
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"negative duration: {value!r}")
    return seconds
