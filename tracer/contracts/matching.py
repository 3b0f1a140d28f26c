"""Which declarations an event belongs to (docs/contracts.md, "Matching").

An event belongs to a message by exchange + routing key where a document gives AMQP bindings,
by event type otherwise: another application's ``order.placed`` on another exchange is not
judged by this contract. The exchanges the bindings name are the contracts' scope: traffic
there that no message matches is ``undeclared_type``; traffic elsewhere is only judged by the
declarations without bindings (and, when no document gives bindings at all, everywhere).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from eventscope.tracer.contracts.asyncapi import Declaration, Document

__all__ = ["Catalog", "Match", "topic_matches"]

_PARAMETER = re.compile(r"\{[^}]*\}")


def _words(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    if pattern[0] == "#":
        return _words(pattern[1:], key) or (bool(key) and _words(pattern, key[1:]))
    if not key:
        return False
    return pattern[0] in ("*", key[0]) and _words(pattern[1:], key[1:])


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic semantics (``*`` one word, ``#`` zero or more); ``{param}`` is one word."""
    if pattern == routing_key:
        return True
    return _words(tuple(_PARAMETER.sub("*", pattern).split(".")), tuple(routing_key.split(".")))


@dataclass(frozen=True)
class Match:
    """What the documents say about one event."""

    declarations: tuple[Declaration, ...]
    in_scope: bool  # the contracts judge this event's exchange

    @property
    def senders(self) -> list[str]:
        return list(dict.fromkeys(d.service for d in self.declarations if d.role == "send"))

    @property
    def receivers(self) -> list[str]:
        return list(dict.fromkeys(d.service for d in self.declarations if d.role == "receive"))

    def schemas(self) -> list[tuple[str, str]]:
        """(service, schema JSON) of every distinct payload schema, senders' first."""
        ordered = sorted(self.declarations, key=lambda d: d.role != "send")
        seen: dict[str, str] = {}
        for declaration in ordered:
            if declaration.schema_json and declaration.schema_json not in seen:
                seen[declaration.schema_json] = declaration.service
        return [(service, schema) for schema, service in seen.items()]


class Catalog:
    """Every declaration of a set of documents, indexed for :meth:`match`."""

    def __init__(self, documents: Iterable[Document]) -> None:
        self.documents = tuple(documents)
        self.declarations = tuple(d for document in self.documents for d in document.declarations)
        self._bound: dict[str, list[Declaration]] = {}
        self._by_type: dict[str, list[Declaration]] = {}
        for declaration in self.declarations:
            if declaration.exchange is not None:
                self._bound.setdefault(declaration.exchange, []).append(declaration)
            else:
                self._by_type.setdefault(declaration.event_type, []).append(declaration)
        self._cache: dict[tuple[str | None, str | None, str | None], Match] = {}

    @property
    def services(self) -> list[str]:
        return [document.service for document in self.documents]

    def match(self, *, event_type: str | None, exchange: str | None, routing_key: str | None) -> Match:
        key = (event_type, exchange, routing_key)
        found = self._cache.get(key)
        if found is None:
            found = self._match(*key)
            if len(self._cache) < 100_000:
                self._cache[key] = found
        return found

    def _match(self, event_type: str | None, exchange: str | None, routing_key: str | None) -> Match:
        bound = self._bound.get(exchange or "", []) if exchange is not None else []
        declarations = [
            d
            for d in bound
            if (d.routing_key is None and d.event_type == event_type)
            or (
                d.routing_key is not None
                and routing_key is not None
                and topic_matches(d.routing_key, routing_key)
            )
        ]
        declarations += self._by_type.get(event_type or "", [])
        in_scope = bool(bound) or (not self._bound and bool(self.declarations))  # no documents: none
        return Match(tuple(declarations), in_scope or bool(declarations))
