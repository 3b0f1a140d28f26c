"""Payload capture (``eventscope collect --firehose --capture-payloads``): what an event said.

Off by default: bodies are the part of a message most likely to hold personal data. When on,
the firehose tap keeps the body of each *published* message (broker truth, so uninstrumented
producers too) in the ``payloads`` table, one row per event:

* **Redaction first.** A JSON body has the values of every field whose name is in the
  redaction set (case-insensitive, at any depth, inside arrays too) replaced by
  ``"[redacted]"`` before anything is stored or cut. The defaults cover common secrets
  (:data:`DEFAULT_REDACT`); ``--redact FIELD`` adds more. Bodies that are not JSON cannot be
  redacted field by field: they are stored as text (UTF-8) as they are, or not at all when
  they are binary or compressed (``body`` NULL, ``size`` kept).
* **Then the size cap.** The stored text is at most ``max_bytes`` bytes of UTF-8, cut on a
  character boundary; ``truncated`` says so. A cut JSON body is no longer valid JSON, so
  ``is_json`` is true only for whole ones (those the JSON functions can read).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_REDACT", "REDACTED", "PayloadCapture", "capture"]

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
REDACTED = "[redacted]"
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")


@dataclass(frozen=True)
class PayloadCapture:
    """What to keep of each body: at most ``max_bytes``, with ``redact`` fields hidden."""

    max_bytes: int = DEFAULT_MAX_BYTES
    redact: frozenset[str] = field(default=DEFAULT_REDACT)

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        object.__setattr__(self, "redact", frozenset(name.lower() for name in self.redact))

    @classmethod
    def with_fields(cls, extra: Iterable[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> PayloadCapture:
        """The default redaction set plus ``extra`` field names."""
        return cls(
            max_bytes=max_bytes, redact=DEFAULT_REDACT | {name.strip() for name in extra if name.strip()}
        )


def _redact(value: Any, names: frozenset[str]) -> tuple[Any, int]:
    if isinstance(value, dict):
        out, count = {}, 0
        for key, item in value.items():
            if str(key).lower() in names:
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
    """The ``payloads`` columns for one body (all but ``event_id`` and ``captured_at``)."""
    raw = body or b""
    row: dict[str, Any] = {
        "content_type": content_type,
        "size": len(raw),
        "is_json": False,
        "truncated": False,
        "redacted": 0,
        "body": None,
    }
    if content_encoding and content_encoding.lower() not in ("identity", "utf-8", "utf8"):
        return row  # compressed or otherwise encoded: not text we can read or redact
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return row  # binary
    declared = (content_type or "").lower()
    looks_json = "json" in declared or text.lstrip()[:1] in ("{", "[")
    if looks_json:
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        else:
            document, row["redacted"] = _redact(document, policy.redact)
            text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
            row["is_json"] = True
    elif declared and not declared.startswith(_TEXT_TYPES):
        return row  # declared as something other than text
    row["body"], row["truncated"] = _cut(text, policy.max_bytes)
    if row["truncated"]:
        row["is_json"] = False
    return row
