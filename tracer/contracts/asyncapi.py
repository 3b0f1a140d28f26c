"""AsyncAPI in: read 3.0 and 2.6 documents into the declarations the checks need.

PyPI has no well-kept AsyncAPI parser, so the document is validated with ``jsonschema``
against the official AsyncAPI JSON Schemas (vendored from the npm package ``@asyncapi/specs``,
Apache-2.0, in ``schemas/``), then the parts eventscope needs are read here. What callers can
rely on:

* :func:`load` returns a frozen :class:`Document` or raises :class:`ContractError` listing
  *every* problem found as ``file:line: what is wrong`` (the line of the offending key, like
  ``eventscope.toml``'s errors). Nothing is half-read.
* One document per application: ``x-eventscope-service`` (top level or in ``info``), else
  ``info.title``, is the service.
* 3.0: ``send`` operations declare the service a producer of their messages, ``receive`` a
  consumer. 2.6: ``subscribe`` is what the application sends, ``publish`` what it receives
  (the 2.x spec's own wording).
* AMQP bindings give the exchange (``bindings.amqp.exchange.name``), the routing key (the
  operation's ``bindings.amqp.cc[0]``, else the channel's address / 2.6 channel name) and the
  queue (``bindings.amqp.queue.name``). Without an exchange binding a message is matched by
  event type only.
* The event type is the message's ``x-eventscope-type``, else its ``name``, else its key.
* A message ``payload`` is a JSON Schema (``schemaFormat`` absent or a JSON Schema /
  AsyncAPI schema format); local ``$ref`` s are inlined so the schema stands alone.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventscope.tracer.alerts.issues import ConfigError, ConfigIssue

__all__ = ["ContractError", "ContractIssue", "Declaration", "Document", "load", "parse"]

logger = logging.getLogger(__name__)

_SCHEMAS = Path(__file__).with_name("schemas")
_SCHEMA_FILES = {"3.0.0": "asyncapi-3.0.0.json", "2.6.0": "asyncapi-2.6.0.json"}
_MAX_ERRORS = 20
_MAX_REF_DEPTH = 32
_JSON_SCHEMA_FORMATS = ("application/schema+json", "application/vnd.aai.asyncapi")


# -- errors: reported like eventscope.toml's (file:line, every issue at once) ----------------------
ContractIssue = ConfigIssue


class ContractError(ConfigError):
    """The documents are invalid; ``issues`` lists every problem, in file and line order."""


# -- the model ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Declaration:
    """One operation on one message: ``service`` sends (``role="send"``) or receives it."""

    service: str
    role: str  # send | receive
    event_type: str
    message: str  # the message's key in the document
    operation: str
    channel: str
    exchange: str | None = None
    routing_key: str | None = None
    queue: str | None = None
    schema_json: str | None = None  # the payload schema, $refs inlined, as canonical JSON
    file: str = ""
    line: int | None = None

    @property
    def schema(self) -> dict[str, Any] | None:
        return json.loads(self.schema_json) if self.schema_json else None


@dataclass(frozen=True)
class Document:
    file: str
    version: str
    service: str
    title: str
    declarations: tuple[Declaration, ...]


# -- YAML with lines ------------------------------------------------------------------------------
class _Lines(dict):  # path tuple → line (1-based)
    def of(self, path: tuple[Any, ...]) -> int | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self:
                return self[path[:end]]
        return None


def _read_yaml(text: str, file: str) -> tuple[Any, _Lines]:
    """YAML (JSON is YAML too) → Python values and the line of every key and item."""
    import yaml  # the collector extra's: eventscope.toml without [contracts] needs none of it

    lines = _Lines()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ContractError([ContractIssue(file, line, f"not valid YAML/JSON: {problem}")]) from None
    if node is None:
        raise ContractError([ContractIssue(file, 1, "the document is empty")])
    constructor = yaml.SafeLoader(text)

    def build(node: Any, path: tuple[Any, ...]) -> Any:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(constructor.construct_object(key_node, deep=True))
                lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, index)) for index, item in enumerate(node.value)]
        value = constructor.construct_object(node, deep=True)
        return value.isoformat() if hasattr(value, "isoformat") else value

    try:
        return build(node, ()), lines
    except yaml.YAMLError as exc:
        raise ContractError([ContractIssue(file, None, f"not valid YAML/JSON: {exc}")]) from None


@functools.lru_cache(maxsize=4)
def _validator(version: str) -> Any:
    import jsonschema

    schema = json.loads((_SCHEMAS / _SCHEMA_FILES[version]).read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def _dotted(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(document)"


def _deepest(error: Any) -> Any:
    """The most telling error under a ``oneOf``/``anyOf``: not the "is it a ``$ref``?" branch,
    the deepest in the document, then jsonschema's own relevance.
    """
    from jsonschema.exceptions import relevance

    while error.context:
        candidates = [
            e for e in error.context if not (e.validator == "required" and e.validator_value == ["$ref"])
        ] or list(error.context)
        error = max(candidates, key=lambda e: (len(e.absolute_path), relevance(e)))
    return error


# -- loading ----------------------------------------------------------------------------------
def load(path: str | Path, *, name: str | None = None) -> Document:
    """Read and check one AsyncAPI document; raises :class:`ContractError`."""
    file = name or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError([ContractIssue(file, None, f"cannot read the file: {exc}")]) from None
    return parse(text, file=file)


def parse(text: str, *, file: str = "asyncapi.yaml") -> Document:
    """Check AsyncAPI text (YAML or JSON); raises :class:`ContractError` with every problem."""
    document, lines = _read_yaml(text, file)
    issues: list[ContractIssue] = []

    def error(path: tuple[Any, ...], message: str, hint: str | None = None) -> None:
        issues.append(ContractIssue(file, lines.of(path), f"{_dotted(path)}: {message}", hint))

    if not isinstance(document, dict):
        error((), "an AsyncAPI document is a mapping with `asyncapi`, `info`, `channels`")
        raise ContractError(issues)
    version = str(document.get("asyncapi", ""))
    if version not in _SCHEMA_FILES:
        error(
            ("asyncapi",),
            f"AsyncAPI version {version or '(missing)'!r} is not supported",
            "asyncapi: 3.0.0 or 2.6.0",
        )
        raise ContractError(issues)
    seen: set[tuple[tuple[Any, ...], str]] = set()
    for found in _validator(version).iter_errors(document):
        deepest = _deepest(found)
        path = tuple(deepest.absolute_path)
        key = (path, deepest.message)
        if key in seen:
            continue
        seen.add(key)
        error(path, f"{_short(deepest.message)} (AsyncAPI {version} schema)")
        if len(seen) >= _MAX_ERRORS:
            break
    if issues:
        raise ContractError(issues)
    reader = _Reader(document, file, error, lines)
    info = document.get("info", {})
    service = document.get("x-eventscope-service") or info.get("x-eventscope-service") or info.get("title")
    if not isinstance(service, str) or not service.strip():
        error(("info", "title"), "the service needs a name", "info.title or x-eventscope-service")
        raise ContractError(issues)
    declarations = list(reader.v3(service) if version.startswith("3.") else reader.v2(service))
    if issues:
        raise ContractError(issues)
    return Document(
        file=file,
        version=version,
        service=service.strip(),
        title=str(info.get("title", "")),
        declarations=tuple(declarations),
    )


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


class _Reader:
    """Walks a schema-valid document into :class:`Declaration` s, reporting through ``error``."""

    def __init__(self, document: dict[str, Any], file: str, error: Any, lines: _Lines) -> None:
        self.document = document
        self.file = file
        self.error = error
        self.lines = lines

    def resolve(self, value: Any, path: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        """Follow local ``$ref`` s; returns the target and where it is written."""
        for _ in range(_MAX_REF_DEPTH):
            if not (isinstance(value, dict) and "$ref" in value):
                return value, path
            ref = value["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                self.error((*path, "$ref"), f"only local references are supported, not {ref!r}", "#/...")
                return None, path
            target: Any = self.document
            new_path: tuple[Any, ...] = ()
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target, new_path = target[int(part)], (*new_path, int(part))
                elif isinstance(target, dict) and part in target:
                    target, new_path = target[part], (*new_path, part)
                else:
                    self.error((*path, "$ref"), f"{ref!r} points at nothing")
                    return None, path
            value, path = target, new_path
        self.error(path, "$ref chain too long (a cycle?)")
        return None, path

    def inline(self, schema: Any, path: tuple[Any, ...], depth: int = 0) -> Any:
        """The schema with every local ``$ref`` replaced by its target (no cycles)."""
        if depth > _MAX_REF_DEPTH:
            self.error(path, "recursive $ref in a payload schema is not supported")
            return {}
        if isinstance(schema, dict):
            if "$ref" in schema:
                target, where = self.resolve(schema, path)
                return {} if target is None else self.inline(target, where, depth + 1)
            return {k: self.inline(v, (*path, k), depth) for k, v in schema.items()}
        if isinstance(schema, list):
            return [self.inline(v, (*path, i), depth) for i, v in enumerate(schema)]
        return copy.deepcopy(schema)

    def payload(self, message: dict[str, Any], path: tuple[Any, ...]) -> str | None:
        if "payload" not in message:
            return None
        payload, where = message["payload"], (*path, "payload")
        if isinstance(payload, dict) and "schemaFormat" in payload and "schema" in payload:
            fmt = str(payload["schemaFormat"])
            if not fmt.startswith(_JSON_SCHEMA_FORMATS):
                self.error((*where, "schemaFormat"), f"payload schema format {fmt!r} is not JSON Schema")
                return None
            payload, where = payload["schema"], (*where, "schema")
        fmt = message.get("schemaFormat")
        if fmt is not None and not str(fmt).startswith(_JSON_SCHEMA_FORMATS):
            self.error((*path, "schemaFormat"), f"payload schema format {fmt!r} is not JSON Schema")
            return None
        schema = self.inline(payload, where)
        if not isinstance(schema, dict | bool):
            self.error(where, "a payload schema must be a mapping")
            return None
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator).check_schema(
                schema
            )
        except jsonschema.SchemaError as exc:
            self.error((*where, *exc.absolute_path), f"not a valid JSON Schema: {_short(exc.message)}")
            return None
        return json.dumps(schema, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def amqp(bindings: Any) -> dict[str, Any]:
        return bindings.get("amqp", {}) if isinstance(bindings, dict) else {}

    def declaration(
        self,
        *,
        service: str,
        role: str,
        operation: str,
        op_path: tuple[Any, ...],
        channel: str,
        channel_value: dict[str, Any],
        address: str | None,
        op_amqp: dict[str, Any],
        message: Any,
        message_key: str,
        message_path: tuple[Any, ...],
    ) -> Declaration | None:
        message, message_path = self.resolve(message, message_path)
        if not isinstance(message, dict):
            return None
        binding = self.amqp(channel_value.get("bindings"))
        exchange = (
            binding.get("exchange", {}).get("name") if binding.get("is", "routingKey") != "queue" else None
        )
        queue = binding.get("queue", {}).get("name") if binding.get("is") == "queue" else None
        cc = op_amqp.get("cc")
        routing_key = cc[0] if isinstance(cc, list) and cc else address
        event_type = message.get("x-eventscope-type") or message.get("name") or message_key
        return Declaration(
            service=service,
            role=role,
            event_type=str(event_type),
            message=message_key,
            operation=operation,
            channel=channel,
            exchange=exchange or None,
            routing_key=routing_key if exchange else None,
            queue=queue or None,
            schema_json=self.payload(message, message_path),
            file=self.file,
            line=self.lines_of(op_path),
        )

    def lines_of(self, path: tuple[Any, ...]) -> int | None:
        return self.lines.of(path)

    # -- 3.0 ------------------------------------------------------------------------------------
    def v3(self, service: str) -> Iterator[Declaration]:
        for op_name, operation in (self.document.get("operations") or {}).items():
            op_path = ("operations", op_name)
            operation, op_path = self.resolve(operation, op_path)
            if not isinstance(operation, dict):
                continue
            channel_ref = operation.get("channel", {})
            channel_value, channel_path = self.resolve(channel_ref, (*op_path, "channel"))
            if not isinstance(channel_value, dict):
                continue
            channel_name = channel_path[-1] if channel_path and channel_path[0] == "channels" else op_name
            messages = operation.get("messages")
            if messages is None:  # every message of the channel
                listed = [
                    (key, value, ("channels", channel_name, "messages", key))
                    for key, value in (channel_value.get("messages") or {}).items()
                ]
            else:
                listed = []
                for index, ref in enumerate(messages):
                    target, where = self.resolve(ref, (*op_path, "messages", index))
                    if target is not None:
                        listed.append((str(where[-1]), target, where))
            if not listed:
                self.error(op_path, "the operation names no message", "messages: [$ref: ...]")
            address = channel_value.get("address")
            for key, message, where in listed:
                found = self.declaration(
                    service=service,
                    role=operation["action"],
                    operation=op_name,
                    op_path=op_path,
                    channel=str(channel_name),
                    channel_value=channel_value,
                    address=address if isinstance(address, str) else None,
                    op_amqp=self.amqp(operation.get("bindings")),
                    message=message,
                    message_key=key,
                    message_path=where,
                )
                if found is not None:
                    yield found

    # -- 2.6 ------------------------------------------------------------------------------------
    def v2(self, service: str) -> Iterator[Declaration]:
        for channel_name, channel_value in (self.document.get("channels") or {}).items():
            channel_value, channel_path = self.resolve(channel_value, ("channels", channel_name))
            if not isinstance(channel_value, dict):
                continue
            for verb, role in (("subscribe", "send"), ("publish", "receive")):
                operation = channel_value.get(verb)
                if not isinstance(operation, dict):
                    continue
                op_path = (*channel_path, verb)
                message, where = self.resolve(operation.get("message"), (*op_path, "message"))
                if message is None:
                    self.error(op_path, "the operation names no message", "message: {$ref: ...}")
                    continue
                if isinstance(message, dict) and "oneOf" in message:
                    listed = []
                    for index, item in enumerate(message["oneOf"]):
                        target, item_path = self.resolve(item, (*where, "oneOf", index))
                        listed.append((str(item_path[-1]), target, item_path))
                else:
                    listed = [(str(where[-1]) if where[-1] != "message" else channel_name, message, where)]
                for key, item, item_path in listed:
                    found = self.declaration(
                        service=service,
                        role=role,
                        operation=str(operation.get("operationId") or f"{verb} {channel_name}"),
                        op_path=op_path,
                        channel=str(channel_name),
                        channel_value=channel_value,
                        address=str(channel_name),
                        op_amqp=self.amqp(operation.get("bindings")),
                        message=item,
                        message_key=key,
                        message_path=item_path,
                    )
                    if found is not None:
                        yield found
