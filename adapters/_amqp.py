"""AMQP 0-9-1 field encoding shared by the adapters' one-step property encoders (pika's
``BasicProperties.encode`` and pamqp's ``marshal`` write the same bytes, field by field).

Only the common shapes are written here; anything else raises :class:`Unusual` so that the
client library encodes it itself (and raises its own error for a value it refuses).
"""

from __future__ import annotations

import struct
from typing import Any


class Unusual(Exception):
    """A property value the one-step encoding leaves to the client library."""


SHORT_LENGTHS = tuple(bytes((i,)) for i in range(256))
pack_flags = struct.Struct(">H").pack
pack_timestamp = struct.Struct(">Q").pack
pack_long = struct.Struct(">I").pack
pack_long_string = struct.Struct(">cI").pack


def short_string(value: Any) -> bytes:
    """An AMQP short string (``str`` only, at most 255 bytes in UTF-8)."""
    if type(value) is not str:
        raise Unusual
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise Unusual
    return SHORT_LENGTHS[len(raw)] + raw
