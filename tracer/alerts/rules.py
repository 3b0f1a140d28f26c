"""Alert rules: load and validate the ``[alerts]`` part of ``eventscope.toml``.

The documented shape (docs/alerts.md) is a contract: keys are only ever added. What callers
can rely on:

* :func:`load` / :func:`parse` return a frozen :class:`AlertsConfig` or raise
  :class:`ConfigError` listing *every* problem found, each with the file, the line of the
  offending key or table and a hint. Nothing is half-loaded: the collector refuses to start.
* Unknown keys are errors (a typo must not silently disable an alert).
* Globs (``event_type``, ``exchange``, ``routing_key``, ``queue``, ``producer``) are
  :func:`fnmatch.fnmatchcase` patterns; an absent glob matches everything, ``None`` included.

``tomllib`` reports no line numbers for values, so the lines come from a small scan of the
file text (:class:`_Lines`): table headers, ``key =`` lines and the keys of inline tables.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventscope.tracer.alerts.issues import ConfigError, ConfigIssue
from eventscope.tracer.contract import ORPHAN_REASONS
from eventscope.tracer.contracts.config import (
    CONTRACT_REASONS,
    CONTRACT_RULES,
    ContractsConfig,
    parse_section,
)
from eventscope.tracer.durations import parse_duration

__all__ = [
    "GROUP_KEYS",
    "REASONS",
    "SEVERITIES",
    "SINK_TYPES",
    "AlertsConfig",
    "ConfigError",
    "ConfigIssue",
    "Rule",
    "SinkConfig",
    "Threshold",
    "implicit_expect_rule",
    "load",
    "parse",
    "parse_duration",
]

# alerts know more reasons than orphans: redelivery loops, and the contracts' findings
REASONS = (*ORPHAN_REASONS, "poison", *(r for r in CONTRACT_REASONS if r not in ORPHAN_REASONS))
SEVERITIES = ("info", "warning", "critical")
SINK_TYPES = ("webhook", "log", "amqp")
GLOB_KEYS = ("event_type", "exchange", "routing_key", "queue", "producer")
EXPECT_RULE = "expected consumers"
# what an incident can be grouped by (the rule is always part of the group)
GROUP_KEYS = ("reason", "event_type", "queue", "exchange", "routing_key", "producer")

_DEFAULT_WITHIN_S = 30.0
_DEFAULT_REPEAT_INTERVAL_S = 600.0
_DEFAULT_SEVERITY = "warning"
_DEFAULT_INTERVAL_S = 1.0
_DEFAULT_REDELIVERY_LIMIT = 5
_DEFAULT_DASHBOARD_URL = "http://127.0.0.1:8501"
_DEFAULT_TIMEOUT_S = 5.0
_DEFAULT_RETRIES = 3
_DEFAULT_QUEUE_SIZE = 1000
_DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
_DEFAULT_ROUTING_KEY = "eventscope.alert"
_DURATION_HINT = 'a number with a unit: "500ms", "5s", "1m", "2h", "1d"'

_TOP_KEYS = ("alerts", "cli", "contracts")  # [cli]: the command line's defaults (tracer/cli/options.py)
_ALERTS_KEYS = ("rules", "expect", "sinks", "interval", "redelivery_limit", "dashboard_url", "learn_after")
_RULE_KEYS = (
    "name",
    *GLOB_KEYS,
    "reasons",
    "within",
    "severity",
    "threshold",
    "group_by",
    "repeat_interval",
)
_THRESHOLD_KEYS = ("count", "window")
_SINK_KEYS = {
    "webhook": ("type", "name", "url", "format", "timeout", "retries", "headers", "queue_size", "rules"),
    "log": ("type", "name", "level", "rules"),
    "amqp": ("type", "name", "url", "exchange", "routing_key", "timeout", "retries", "queue_size", "rules"),
}


# -- the configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """Alert on a group: ``count`` matching events within ``window_s`` seconds."""

    count: int
    window_s: float


@dataclass(frozen=True)
class Rule:
    """One ``[[alerts.rules]]`` entry."""

    name: str
    within_s: float = _DEFAULT_WITHIN_S
    reasons: frozenset[str] = frozenset(REASONS)
    severity: str = _DEFAULT_SEVERITY
    event_type: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    queue: str | None = None
    producer: str | None = None
    threshold: Threshold | None = None
    # None: one alert and one notification per event (what configs without group_by keep);
    # a tuple of GROUP_KEYS: per-event alerts gathered into incidents, notified per incident
    group_by: tuple[str, ...] | None = None
    repeat_interval_s: float = _DEFAULT_REPEAT_INTERVAL_S

    def matches_event(
        self, *, event_type: str | None, exchange: str | None, routing_key: str | None, producer: str | None
    ) -> bool:
        """Do the event-level globs match (everything but ``queue``)?"""
        return (
            _glob(self.event_type, event_type)
            and _glob(self.exchange, exchange)
            and _glob(self.routing_key, routing_key)
            and _glob(self.producer, producer)
        )

    def matches_queue(self, queue: str | None) -> bool:
        return _glob(self.queue, queue)


def implicit_expect_rule(grace_s: float | None) -> Rule:
    """The rule ``[alerts.expect]`` gets when no rule selects ``missing_consumer``.

    It waits the collector's grace (``--grace``): a user who tells the collector how long an
    event may take expects the declared consumers to get that long, not a hidden 30 s. A rule
    that selects ``missing_consumer`` replaces it, with its own ``within``.
    """
    within_s = _DEFAULT_WITHIN_S if grace_s is None else grace_s
    return Rule(name=EXPECT_RULE, within_s=within_s, reasons=frozenset({"missing_consumer"}))


@dataclass(frozen=True)
class SinkConfig:
    """One ``[[alerts.sinks]]`` entry; fields a type does not use keep their defaults."""

    type: str
    name: str
    url: str | None = None
    format: str = "json"
    timeout_s: float = _DEFAULT_TIMEOUT_S
    retries: int = _DEFAULT_RETRIES
    headers: tuple[tuple[str, str], ...] = ()
    queue_size: int = _DEFAULT_QUEUE_SIZE
    level: str = "warning"
    exchange: str | None = None
    routing_key: str = _DEFAULT_ROUTING_KEY
    rules: frozenset[str] | None = None  # None: every rule


@dataclass(frozen=True)
class AlertsConfig:
    """Everything ``[alerts]`` says, validated."""

    rules: tuple[Rule, ...] = ()
    expect: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sinks: tuple[SinkConfig, ...] = ()
    interval_s: float = _DEFAULT_INTERVAL_S
    redelivery_limit: int = _DEFAULT_REDELIVERY_LIMIT
    dashboard_url: str = _DEFAULT_DASHBOARD_URL
    learn_after: int | None = None
    source: str = "<config>"
    contracts: ContractsConfig | None = None  # [contracts]: AsyncAPI documents (docs/contracts.md)

    def summary(self) -> str:
        """One line per rule, expectation and sink (``eventscope rules check``)."""
        lines = [f"{len(self.rules)} rule(s), {len(self.expect)} expectation(s), {len(self.sinks)} sink(s)"]
        for rule in self.rules:
            globs = ", ".join(f"{k}={getattr(rule, k)}" for k in GLOB_KEYS if getattr(rule, k) is not None)
            group = (
                f", threshold {rule.threshold.count} in {rule.threshold.window_s:g}s"
                if rule.threshold
                else ""
            )
            if rule.group_by is not None:
                group += (
                    f", incidents by {', '.join(('rule', *rule.group_by))}"
                    f" (repeat {rule.repeat_interval_s:g}s)"
                )
            reasons = (
                "every reason" if rule.reasons == frozenset(REASONS) else ", ".join(sorted(rule.reasons))
            )
            lines.append(
                f"  rule {rule.name!r}: {rule.severity}, within {rule.within_s:g}s, {reasons}"
                f"{'; ' + globs if globs else ''}{group}"
            )
        for event_type, services in self.expect.items():
            lines.append(f"  expect {event_type!r} consumed by {', '.join(services)}")
        if self.expect and not any("missing_consumer" in rule.reasons for rule in self.rules):
            lines.append(
                f"  implicit rule {EXPECT_RULE!r}: {_DEFAULT_SEVERITY}, within the collector's --grace, "
                "missing_consumer (no rule selects it)"
            )
        for sink in self.sinks:
            target = (
                sink.url if sink.type == "webhook" else sink.exchange if sink.type == "amqp" else sink.level
            )
            lines.append(f"  sink {sink.name!r}: {sink.type} {target}")
        if self.learn_after:
            lines.append(f"  learned baseline after {self.learn_after} consecutive occurrences")
        for document in self.contracts.documents if self.contracts else ():
            lines.append(
                f"  contract {document.service!r} ({document.file}, AsyncAPI {document.version}): "
                f"{len(document.declarations)} declaration(s)"
            )
        return "\n".join(lines)


def _glob(pattern: str | None, value: str | None) -> bool:
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(value or "", pattern)


# -- loading ----------------------------------------------------------------------------------
def load(path: str | Path) -> AlertsConfig:
    """Read and validate ``path``; raises :class:`ConfigError` (also for unreadable files)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(name, None, f"cannot read the file: {exc}")]) from None
    return parse(text, filename=name, base=Path(path).parent)


def parse(text: str, *, filename: str = "eventscope.toml", base: Path | None = None) -> AlertsConfig:
    """Validate TOML text; raises :class:`ConfigError` with every problem found. ``base``: the
    directory relative paths in ``[contracts]`` start from (the file's own).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            [
                ConfigIssue(
                    filename,
                    int(match.group(1)) if match else None,
                    f"not valid TOML: {exc}",
                    "strings need quotes; tables are [name], lists of tables [[name]]",
                )
            ]
        ) from None
    return _Validator(filename, _Lines(text), base).config(document)


class _Lines:
    """Where each key path is written: ``("alerts", "rules", 0, "within")`` → line number."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
    _KEY = re.compile(
        r"""^\s*((?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=(.*)$"""
    )
    _INLINE_KEY = re.compile(r"""[{,]\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")
    _PART = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*(?:\.|$)""")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        arrays: dict[tuple[Any, ...], int] = {}
        table: tuple[Any, ...] = ()
        in_multiline = False
        for number, raw in enumerate(text.splitlines(), start=1):
            if raw.count('"""') % 2 or raw.count("'''") % 2:
                in_multiline = not in_multiline
                if not in_multiline:
                    continue
            if in_multiline:
                continue
            header = self._HEADER.match(raw)
            if header and not self._KEY.match(raw):
                path = self._parts(header.group(2))
                if header.group(1) == "[[":
                    index = arrays.get(path, 0)
                    arrays[path] = index + 1
                    self.lines.setdefault(path, number)
                    path = (*path, index)
                table = path
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(raw)
            if key:
                path = (*table, *self._parts(key.group(1)))
                self.lines.setdefault(path, number)
                for inner in self._INLINE_KEY.finditer(key.group(2)):
                    self.lines.setdefault((*path, self._unquote(inner.group(1))), number)

    @classmethod
    def _parts(cls, dotted: str) -> tuple[str, ...]:
        return tuple(cls._unquote(m.group(1)) for m in cls._PART.finditer(dotted) if m.group(1))

    @staticmethod
    def _unquote(part: str) -> str:
        if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
            return part[1:-1]
        return part

    def of(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path``, else of its closest written ancestor."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"')
    return out


class _Validator:
    def __init__(self, filename: str, lines: _Lines, base: Path | None = None) -> None:
        self.filename = filename
        self.lines = lines
        self.base = base
        self.issues: list[ConfigIssue] = []

    def error(self, path: tuple[Any, ...], message: str, hint: str | None = None) -> None:
        self.issues.append(
            ConfigIssue(self.filename, self.lines.of(path), f"{_dotted(path)}: {message}", hint)
        )

    def unknown_keys(self, path: tuple[Any, ...], table: Mapping[str, Any], known: Iterable[str]) -> None:
        known = tuple(known)
        for key in table:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                self.error((*path, key), "unknown key", hint)

    def table(self, path: tuple[Any, ...], value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, f"must be a table, not {_kind(value)}")
            return None
        return value

    def string(self, path: tuple[Any, ...], value: Any, hint: str | None = None) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(path, f"must be a non-empty string, not {_kind(value)}", hint)
            return None
        return value

    def duration(self, path: tuple[Any, ...], value: Any, *, positive: bool = False) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc), _DURATION_HINT)
            return None
        if positive and seconds <= 0:
            self.error(path, "must be longer than zero", _DURATION_HINT)
            return None
        return seconds

    def integer(self, path: tuple[Any, ...], value: Any, *, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.error(path, f"must be an integer >= {minimum}, not {value!r}", f"e.g. {max(minimum, 5)}")
            return None
        return value

    def choice(self, path: tuple[Any, ...], value: Any, choices: tuple[str, ...], what: str) -> str | None:
        if value not in choices:
            self.error(path, f"{value!r} is not a {what}", f"one of {', '.join(choices)}")
            return None
        return value

    # -- sections ------------------------------------------------------------------------------
    def config(self, document: dict[str, Any]) -> AlertsConfig:
        self.unknown_keys((), document, _TOP_KEYS)
        alerts = self.table(("alerts",), document.get("alerts", {})) or {}
        self.unknown_keys(("alerts",), alerts, _ALERTS_KEYS)
        options: dict[str, Any] = {}
        if "interval" in alerts:
            options["interval_s"] = self.duration(("alerts", "interval"), alerts["interval"], positive=True)
        if "redelivery_limit" in alerts:
            options["redelivery_limit"] = self.integer(
                ("alerts", "redelivery_limit"), alerts["redelivery_limit"], minimum=1
            )
        if "dashboard_url" in alerts:
            options["dashboard_url"] = self.url(
                ("alerts", "dashboard_url"), alerts["dashboard_url"], ("http", "https")
            )
        if "learn_after" in alerts:
            options["learn_after"] = self.integer(("alerts", "learn_after"), alerts["learn_after"], minimum=2)
        rules = self.rules(alerts.get("rules", []))
        expect = self.expect(alerts.get("expect", {}))
        sinks = self.sinks(
            alerts.get("sinks", []), {rule.name for rule in rules} | {EXPECT_RULE, *CONTRACT_RULES}
        )
        if "contracts" in document:
            options["contracts"] = parse_section(
                document["contracts"],
                base=self.base,
                error=self.error,
                issue=lambda found: self.issues.append(
                    ConfigIssue(found.file, found.line, found.message, found.hint)
                ),
            )
        if self.issues:
            raise ConfigError(self.issues)
        return AlertsConfig(
            rules=tuple(rules),
            expect=expect,
            sinks=tuple(sinks),
            source=self.filename,
            **{k: v for k, v in options.items() if v is not None},
        )

    def url(self, path: tuple[Any, ...], value: Any, schemes: tuple[str, ...]) -> str | None:
        hint = f"e.g. {schemes[0]}://127.0.0.1:{9000 if schemes[0].startswith('http') else 5672}/..."
        text = self.string(path, value, hint)
        if text is None:
            return None
        if not any(text.startswith(f"{scheme}://") for scheme in schemes):
            self.error(path, f"{text!r} is not a {' or '.join(schemes)} URL", hint)
            return None
        return text

    def rules(self, value: Any) -> list[Rule]:
        path: tuple[Any, ...] = ("alerts", "rules")
        if not isinstance(value, list):
            self.error(path, f"must be a list of tables ([[alerts.rules]]), not {_kind(value)}")
            return []
        rules: list[Rule] = []
        seen: set[str] = set()
        for index, entry in enumerate(value):
            here = (*path, index)
            table = self.table(here, entry)
            if table is None:
                continue
            self.unknown_keys(here, table, _RULE_KEYS)
            if "name" not in table:
                self.error(here, "a rule needs a name", 'name = "refunds must be handled"')
                continue
            name = self.string((*here, "name"), table["name"])
            if name is None:
                continue
            if name in seen or name in (EXPECT_RULE, *CONTRACT_RULES):
                self.error((*here, "name"), f"rule name {name!r} is used twice", "rule names must be unique")
            seen.add(name)
            fields: dict[str, Any] = {"name": name}
            for key in GLOB_KEYS:
                if key in table:
                    fields[key] = self.string((*here, key), table[key], 'a glob string, e.g. "refund.*"')
            if "reasons" in table:
                fields["reasons"] = self.reasons((*here, "reasons"), table["reasons"])
            if "within" in table:
                fields["within_s"] = self.duration((*here, "within"), table["within"])
            if "severity" in table:
                fields["severity"] = self.choice(
                    (*here, "severity"), table["severity"], SEVERITIES, "severity"
                )
            if "threshold" in table:
                fields["threshold"] = self.threshold((*here, "threshold"), table["threshold"])
            if "group_by" in table:
                fields["group_by"] = self.group_by((*here, "group_by"), table["group_by"])
                if "threshold" in table:
                    self.error(
                        (*here, "group_by"),
                        "a threshold rule already alerts per group",
                        "use either threshold or group_by",
                    )
            if "repeat_interval" in table:
                fields["repeat_interval_s"] = self.duration(
                    (*here, "repeat_interval"), table["repeat_interval"], positive=True
                )
            rules.append(Rule(**{k: v for k, v in fields.items() if v is not None}))
        return rules

    def reasons(self, path: tuple[Any, ...], value: Any) -> frozenset[str] | None:
        if not isinstance(value, list) or not value:
            self.error(
                path, f"must be a non-empty list of reasons, not {value!r}", f"from {', '.join(REASONS)}"
            )
            return None
        bad = [reason for reason in value if reason not in REASONS]
        if bad:
            close = difflib.get_close_matches(str(bad[0]), REASONS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(REASONS)}"
            self.error(path, f"unknown reason(s) {', '.join(map(repr, bad))}", hint)
            return None
        return frozenset(value)

    def group_by(self, path: tuple[Any, ...], value: Any) -> tuple[str, ...] | None:
        hint = f'a list from {", ".join(GROUP_KEYS)}, e.g. ["reason", "event_type", "queue"]'
        if not isinstance(value, list) or not all(isinstance(key, str) for key in value):
            self.error(path, f"must be a list of field names, not {_kind(value)}", hint)
            return None
        bad = [key for key in value if key not in GROUP_KEYS]
        if bad:
            close = difflib.get_close_matches(bad[0], GROUP_KEYS, n=1)
            self.error(
                path,
                f"cannot group by {', '.join(map(repr, bad))}",
                f"did you mean {close[0]!r}?" if close else hint,
            )
            return None
        return tuple(dict.fromkeys(value))

    def threshold(self, path: tuple[Any, ...], value: Any) -> Threshold | None:
        table = self.table(path, value)
        if table is None:
            return None
        self.unknown_keys(path, table, _THRESHOLD_KEYS)
        if "count" not in table or "window" not in table:
            self.error(
                path, "a threshold needs count and window", 'threshold = { count = 10, window = "1m" }'
            )
            return None
        count = self.integer((*path, "count"), table["count"], minimum=1)
        window = self.duration((*path, "window"), table["window"], positive=True)
        if count is None or window is None:
            return None
        return Threshold(count=count, window_s=window)

    def expect(self, value: Any) -> dict[str, tuple[str, ...]]:
        path: tuple[Any, ...] = ("alerts", "expect")
        table = self.table(path, value)
        if table is None:
            return {}
        expect: dict[str, tuple[str, ...]] = {}
        for event_type, services in table.items():
            here = (*path, event_type)
            if (
                not isinstance(services, list)
                or not services
                or not all(isinstance(s, str) and s for s in services)
            ):
                self.error(
                    here, f"must be a non-empty list of service names, not {services!r}", '["payments"]'
                )
                continue
            expect[event_type] = tuple(dict.fromkeys(services))
        return expect

    def sinks(self, value: Any, rule_names: set[str]) -> list[SinkConfig]:
        path: tuple[Any, ...] = ("alerts", "sinks")
        if not isinstance(value, list):
            self.error(path, f"must be a list of tables ([[alerts.sinks]]), not {_kind(value)}")
            return []
        sinks: list[SinkConfig] = []
        names: set[str] = set()
        for index, entry in enumerate(value):
            here = (*path, index)
            table = self.table(here, entry)
            if table is None:
                continue
            kind = self.choice((*here, "type"), table.get("type"), SINK_TYPES, "sink type")
            if kind is None:
                continue
            self.unknown_keys(here, table, _SINK_KEYS[kind])
            fields: dict[str, Any] = {"type": kind}
            name = table.get("name", f"{kind}-{index}")
            fields["name"] = self.string((*here, "name"), name)
            if fields["name"] in names:
                self.error((*here, "name"), f"sink name {name!r} is used twice", "sink names must be unique")
            names.add(fields["name"])
            if kind == "webhook":
                if "url" not in table:
                    self.error(here, "a webhook sink needs a url", 'url = "http://127.0.0.1:9000/hook"')
                else:
                    fields["url"] = self.url((*here, "url"), table["url"], ("http", "https"))
                if "format" in table:
                    fields["format"] = self.choice(
                        (*here, "format"), table["format"], ("json", "slack"), "format"
                    )
                if "headers" in table:
                    headers = self.table((*here, "headers"), table["headers"])
                    if headers is not None:
                        if all(isinstance(v, str) for v in headers.values()):
                            fields["headers"] = tuple(sorted(headers.items()))
                        else:
                            self.error((*here, "headers"), "header values must be strings")
            if kind == "amqp":
                fields["url"] = self.url(
                    (*here, "url"), table.get("url", _DEFAULT_AMQP_URL), ("amqp", "amqps")
                )
                if "exchange" not in table:
                    self.error(here, "an amqp sink needs an exchange", 'exchange = "alerts"')
                else:
                    fields["exchange"] = self.string((*here, "exchange"), table["exchange"])
                if "routing_key" in table:
                    fields["routing_key"] = self.string((*here, "routing_key"), table["routing_key"])
            if kind == "log" and "level" in table:
                fields["level"] = self.choice(
                    (*here, "level"), table["level"], ("info", "warning", "error"), "log level"
                )
            if "timeout" in table:
                fields["timeout_s"] = self.duration((*here, "timeout"), table["timeout"], positive=True)
            if "retries" in table:
                fields["retries"] = self.integer((*here, "retries"), table["retries"], minimum=0)
            if "queue_size" in table:
                fields["queue_size"] = self.integer((*here, "queue_size"), table["queue_size"], minimum=1)
            if "rules" in table:
                wanted = table["rules"]
                if not isinstance(wanted, list) or not all(isinstance(r, str) for r in wanted):
                    self.error((*here, "rules"), "must be a list of rule names")
                else:
                    unknown = [r for r in wanted if r not in rule_names]
                    if unknown:
                        self.error(
                            (*here, "rules"),
                            f"no rule named {', '.join(map(repr, unknown))}",
                            f"rules: {', '.join(sorted(rule_names))}",
                        )
                    fields["rules"] = frozenset(wanted)
            sinks.append(SinkConfig(**{k: v for k, v in fields.items() if v is not None}))
        return sinks


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
