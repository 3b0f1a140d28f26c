"""Payload capture (``eventscope collect --firehose --capture-payloads``): what an event said.

Off by default: bodies are the part of a message most likely to hold personal data. When on,
the firehose tap keeps the body of each *published* message (broker truth, so uninstrumented
producers too) in the ``payloads`` table, one row per event:

* **Redaction first.** A JSON body has the values of every field whose name is in the
  redaction set replaced by ``"[redacted]"`` before anything is stored or cut, at any depth and
  inside arrays too. Names are compared without case and without ``_``/``-``/``.``
  (``accessToken`` matches ``access_token``), and a name *ending* in one of
  :data:`SECRET_SUFFIXES` always matches (``db_password``, ``clientSecret``, ``x-api-key``).
  The defaults cover common secrets (:data:`DEFAULT_REDACT`); ``--redact FIELD`` adds more.
* **Fail closed.** What cannot be redacted field by field is not stored as text (``body``
  NULL, ``size`` kept): a body that looks like JSON but is not strict JSON (a trailing comma,
  ``NaN``, nesting too deep, a number Python refuses), text that mentions one of the redacted
  names anywhere (``password=…`` in a form body), binary or encoded (gzip) bodies, and bodies
  above :data:`PARSE_LIMIT_FACTOR` times the cap (not parsed at all: the tap thread stays fast).
  Other text is stored as it is.
* **Then the size cap.** The stored text is at most ``max_bytes`` bytes of UTF-8, cut on a
  character boundary; ``truncated`` says so. A cut JSON body is no longer valid JSON, so
  ``is_json`` is true only for whole ones (those the JSON functions can read).
* **The parsed value** of a whole JSON body rides along as ``parsed`` (redacted, never
  stored), so the contract checks validate it without parsing the body again.
* **Never raises.** :func:`capture` runs on the firehose tap's thread: anything unexpected is
  logged once, counted in :data:`failures`, and gives a row without a body.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_REDACT",
    "PARSE_LIMIT_FACTOR",
    "REDACTED",
    "SECRET_SUFFIXES",
    "PayloadCapture",
    "capture",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4096
DEFAULT_REDACT = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "authorization",
        "card_number",
        "cvv",
        "iban",
        "ssn",
    }
)
SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey")
REDACTED = "[redacted]"
PARSE_LIMIT_FACTOR = 64  # bodies larger than this many times the cap are not parsed
_NAME_NOISE = re.compile(r"[^a-z0-9]")
failures = 0  # bodies capture() could not handle (logged once)
_logged_failure = False
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class PayloadCapture:
    """What to keep of each body: at most ``max_bytes``, with ``redact`` fields hidden."""

    max_bytes: int = DEFAULT_MAX_BYTES
    redact: frozenset[str] = field(default=DEFAULT_REDACT)

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        object.__setattr__(self, "redact", frozenset(_normal(name) for name in self.redact))

    @classmethod
    def with_fields(cls, extra: Iterable[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> PayloadCapture:
        """The default redaction set plus ``extra`` field names."""
        return cls(
            max_bytes=max_bytes, redact=DEFAULT_REDACT | {name.strip() for name in extra if name.strip()}
        )


def _normal(name: str) -> str:
    return _NAME_NOISE.sub("", name.lower())


def _secret(key: Any, names: frozenset[str]) -> bool:
    name = _normal(str(key))
    return name in names or name.endswith(SECRET_SUFFIXES)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _redact(value: Any, names: frozenset[str]) -> tuple[Any, int]:
    if isinstance(value, dict):
        out, count = {}, 0
        for key, item in value.items():
            if _secret(key, names):
                out[key], count = REDACTED, count + 1
            else:
                out[key], found = _redact(item, names)
                count += found
        return out, count
    if isinstance(value, list):
        items, count = [], 0
        for item in value:
            redacted, found = _redact(item, names)
            items.append(redacted)
            count += found
        return items, count
    return value, 0


def _cut(text: str, max_bytes: int) -> tuple[str, bool]:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True


def capture(
    body: bytes | None, *, content_type: str | None, content_encoding: str | None, policy: PayloadCapture
) -> dict[str, Any]:
    """The ``payloads`` columns for one body (all but ``event_id`` and ``captured_at``).

    Never raises: a failure gives the row without a body (see the module's docstring).
    """
    global failures, _logged_failure
    raw = body or b""
    row: dict[str, Any] = {
        "content_type": content_type,
        "size": len(raw),
        "is_json": False,
        "truncated": False,
        "redacted": 0,
        "body": None,
    }
    try:
        _fill(row, raw, content_type, content_encoding, policy)
    except Exception:
        failures += 1
        if not _logged_failure:
            _logged_failure = True
            logger.exception("payload capture failed; the body is not stored (logged once)")
        row.update(is_json=False, truncated=False, redacted=0, body=None)
    return row


def _fill(
    row: dict[str, Any],
    raw: bytes,
    content_type: str | None,
    content_encoding: str | None,
    policy: PayloadCapture,
) -> None:
    if content_encoding and content_encoding.lower() not in ("identity", "utf-8", "utf8"):
        return  # compressed or otherwise encoded: not text we can read or redact
    if len(raw) > max(PARSE_LIMIT_FACTOR * policy.max_bytes, 256 * 1024):
        return  # too large to parse on the tap's thread
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # binary
    declared = (content_type or "").lower()
    if "json" in declared or text.lstrip()[:1] in ("{", "["):
        try:
            document = json.loads(text, parse_constant=_reject_constant)
            document, row["redacted"] = _redact(document, policy.redact)
        except (ValueError, RecursionError):
            return  # looks like JSON, is not strict JSON (or too deep): fail closed
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return  # lone surrogates (escaped in the body): not text DuckDB's JSON functions accept
        row["is_json"] = True
    elif declared and not declared.startswith(_TEXT_TYPES):
        return  # declared as something other than text
    else:
        lowered = _normal(text)
        if any(name in lowered for name in policy.redact) or any(s in lowered for s in SECRET_SUFFIXES):
            return  # text that mentions a secret's name cannot be redacted field by field
    row["body"], row["truncated"] = _cut(text, policy.max_bytes)
    if row["truncated"]:
        row["is_json"] = False
    elif row["is_json"]:
        row["parsed"] = document  # the redacted value, for in-process readers (contracts); not stored
