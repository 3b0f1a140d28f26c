"""AsyncAPI out: one AsyncAPI 3.0 document per observed service (``eventscope contracts export``).

A team with no contract gets one from its running system and can check it from then on. What
callers can rely on:

* One document per service seen producing (``send``) or consuming (``receive``) events, named
  ``<service>.yaml``; ``info.title`` and ``x-eventscope-service`` are the service.
* One channel per (exchange, routing key): its address is the routing key and its AMQP binding
  names the exchange (``is: routingKey``); events on the default exchange get an
  ``is: queue`` binding instead, so they are matched by event type when read back.
* The message's ``name`` is the event type; its ``payload`` is a JSON Schema inferred with
  ``genson`` from the captured bodies (redacted as capture stores them), ``{}`` (anything)
  when none was captured.
* Every document is read back with :func:`asyncapi.parse` (the official schema) before it is
  returned, so an export that would not load raises instead of writing a bad file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml

from eventscope.tracer.contracts import asyncapi

__all__ = ["export_documents", "infer_schema"]

_BINDING_VERSION = "0.3.0"
_KEY = re.compile(r"[^A-Za-z0-9_.\-]")


def infer_schema(bodies: Iterable[str]) -> dict[str, Any]:
    """A JSON Schema every one of ``bodies`` (JSON text) passes; ``{}`` when there are none."""
    from genson import SchemaBuilder

    builder = SchemaBuilder()
    seen = False
    for body in bodies:
        try:
            builder.add_object(json.loads(body))
        except ValueError:
            continue
        seen = True
    if not seen:
        return {}
    schema = builder.to_schema()
    schema.pop("$schema", None)
    return schema


def _key(text: str, taken: set[str]) -> str:
    base = _KEY.sub("_", text) or "default"
    key, n = base, 2
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    taken.add(key)
    return key


def export_documents(
    observations: Iterable[dict[str, Any]], samples: Iterable[dict[str, Any]]
) -> dict[str, str]:
    """``{service: YAML text}`` from the ``contract_observations`` and ``payload_samples``
    questions' rows.
    """
    bodies: dict[tuple[Any, ...], list[str]] = {}
    for sample in samples:
        key = (sample["event_type"], sample["exchange"], sample["routing_key"])
        bodies.setdefault(key, []).append(sample["body"])
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in observations:
        by_service.setdefault(row["service"], []).append(row)
    out: dict[str, str] = {}
    for service in sorted(by_service):
        document = _document(service, by_service[service], bodies)
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        asyncapi.parse(text, file=f"{service}.yaml")  # raises ContractError: never write a bad file
        out[service] = text
    return out


def _document(
    service: str, rows: list[dict[str, Any]], bodies: dict[tuple[Any, ...], list[str]]
) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    channel_of: dict[tuple[Any, ...], str] = {}
    channel_keys: set[str] = set()
    operation_keys: set[str] = set()
    for row in sorted(rows, key=lambda r: (r["event_type"], r["exchange"] or "", r["routing_key"] or "")):
        key = (row["event_type"], row["exchange"], row["routing_key"])
        if key not in channel_of:
            name = _key(
                row["event_type"] if row["exchange"] else f"{row['event_type']}.default", channel_keys
            )
            channel_of[key] = name
            message = {
                "name": row["event_type"],
                "contentType": "application/json",
                "payload": infer_schema(bodies.get(key, ())),
            }
            channels[name] = {
                "address": row["routing_key"] or row["event_type"],
                "messages": {"message": message},
                "bindings": {"amqp": _binding(row)},
            }
        name = channel_of[key]
        action = row["role"]
        op_key = f"{action}.{name}"
        if op_key in operation_keys:
            continue
        operation_keys.add(op_key)
        operations[_key(op_key, set())] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/message"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": service,
            "version": "0.1.0",
            "description": "Inferred by eventscope from observed traffic (eventscope contracts export).",
        },
        "x-eventscope-service": service,
        "channels": channels,
        "operations": operations,
    }


def _binding(row: dict[str, Any]) -> dict[str, Any]:
    if row["exchange"]:
        return {"is": "routingKey", "exchange": {"name": row["exchange"]}, "bindingVersion": _BINDING_VERSION}
    return {
        "is": "queue",
        "queue": {"name": row["routing_key"] or row["event_type"]},
        "bindingVersion": _BINDING_VERSION,
    }
