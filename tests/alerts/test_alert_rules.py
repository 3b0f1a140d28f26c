"""eventscope.toml validation: every error with file, line and hint; the documented example
loads; `eventscope rules check` and `eventscope collect --config` refuse broken files.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from eventscope.tracer.alerts import rules
from tests.processes import CLI

DOCUMENTED = textwrap.dedent(
    """
    [[alerts.rules]]
    name = "refunds must be handled"
    event_type = "refund.*"                 # glob; optional. Also: exchange, routing_key, queue, producer
    reasons = ["unconsumed", "unroutable"]  # optional; default: every orphan reason
    within = "5s"                           # how long an event may wait before it counts
    severity = "critical"                   # optional: info | warning | critical
    # threshold = { count = 10, window = "1m" }   # optional: alert on a group instead of each event

    [alerts.expect]                          # declared consumers: event type -> services that must process it
    "order.placed" = ["payments", "inventory"]

    [[alerts.sinks]]
    type = "webhook"                        # webhook | log | amqp ; Prometheus is always on /metrics
    url = "http://127.0.0.1:9000/hook"
    # format = "slack"                      # optional Slack-compatible body
    """
)


def errors(text: str) -> list[str]:
    with pytest.raises(rules.ConfigError) as caught:
        rules.parse(textwrap.dedent(text), filename="eventscope.toml")
    return [str(issue) for issue in caught.value.issues]


def test_the_documented_example_is_the_contract() -> None:
    config = rules.parse(DOCUMENTED)
    (rule,) = config.rules
    assert rule == rules.Rule(
        name="refunds must be handled",
        event_type="refund.*",
        reasons=frozenset({"unconsumed", "unroutable"}),
        within_s=5.0,
        severity="critical",
    )
    assert dict(config.expect) == {"order.placed": ("payments", "inventory")}
    (sink,) = config.sinks
    assert (sink.type, sink.url, sink.format) == ("webhook", "http://127.0.0.1:9000/hook", "json")
    assert rule.matches_event(event_type="refund.issued", exchange=None, routing_key=None, producer=None)
    assert not rule.matches_event(event_type="order.placed", exchange=None, routing_key=None, producer=None)


def test_unknown_key_with_line_and_suggestion() -> None:
    assert errors(
        """
        [[alerts.rules]]
        name = "a"
        withn = "5s"
        """
    ) == ["eventscope.toml:4: alerts.rules[0].withn: unknown key (hint: did you mean 'within'?)"]


def test_bad_duration() -> None:
    assert errors(
        """
        [[alerts.rules]]
        name = "a"

        [[alerts.rules]]
        name = "b"
        within = "5 seconds"
        """
    ) == [
        "eventscope.toml:7: alerts.rules[1].within: not a duration: '5 seconds' "
        '(hint: a number with a unit: "500ms", "5s", "1m", "2h", "1d")'
    ]


def test_bad_severity() -> None:
    assert errors('[[alerts.rules]]\nname = "a"\nseverity = "urgent"\n') == [
        "eventscope.toml:3: alerts.rules[0].severity: 'urgent' is not a severity "
        "(hint: one of info, warning, critical)"
    ]


def test_bad_glob_type() -> None:
    assert errors('[[alerts.rules]]\nname = "a"\nevent_type = ["refund.*"]\n') == [
        "eventscope.toml:3: alerts.rules[0].event_type: must be a non-empty string, not a list "
        '(hint: a glob string, e.g. "refund.*")'
    ]


def test_keys_inside_inline_tables_and_every_error_at_once() -> None:
    found = errors(
        """
        [alerts]
        interval = "0s"

        [[alerts.rules]]
        name = "a"
        reasons = ["unconsumd"]
        threshold = { count = 0, window = "1m" }

        [[alerts.sinks]]
        type = "pager"

        [[alerts.sinks]]
        type = "webhook"
        url = "ftp://example"
        """
    )
    assert found == [
        "eventscope.toml:3: alerts.interval: must be longer than zero "
        '(hint: a number with a unit: "500ms", "5s", "1m", "2h", "1d")',
        "eventscope.toml:7: alerts.rules[0].reasons: unknown reason(s) 'unconsumd' "
        "(hint: did you mean 'unconsumed'?)",
        "eventscope.toml:8: alerts.rules[0].threshold.count: must be an integer >= 1, not 0 (hint: e.g. 5)",
        "eventscope.toml:11: alerts.sinks[0].type: 'pager' is not a sink type "
        "(hint: one of webhook, log, amqp)",
        "eventscope.toml:15: alerts.sinks[1].url: 'ftp://example' is not a http or https URL "
        "(hint: e.g. http://127.0.0.1:9000/...)",
    ]


def test_toml_syntax_error_has_its_line() -> None:
    (message,) = errors('[[alerts.rules]]\nname = "a"\nwithin = 5s\n')
    assert message.startswith("eventscope.toml:3: not valid TOML")


def test_dotted_keys_and_unknown_sections() -> None:
    assert errors('[collector]\nport = 1\n[alerts]\nexpect."order.placed" = "payments"\n') == [
        "eventscope.toml:1: collector: unknown key (hint: known keys: alerts, cli, contracts)",
        'eventscope.toml:4: alerts.expect."order.placed": must be a non-empty list of service names, '
        "not 'payments' (hint: [\"payments\"])",
    ]


def test_durations() -> None:
    assert [rules.parse_duration(v) for v in ("500ms", "5s", "1.5m", "2h", "1d", 3)] == [
        0.5,
        5.0,
        90.0,
        7200.0,
        86400.0,
        3.0,
    ]
    for bad in ("5", "-1s", "5 sec", True, None):
        with pytest.raises(ValueError):
            rules.parse_duration(bad)


def test_rules_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(DOCUMENTED)
    ok = subprocess.run([*CLI, "rules", "check", str(good)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{good}: OK, 1 rule(s), 1 expectation(s), 1 sink(s)")
    assert "rule 'refunds must be handled': critical, within 5s" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[alerts.rules]]\nname = "a"\nseverity = "loud"\n')
    failed = subprocess.run([*CLI, "rules", "check", str(bad)], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1
    assert f"{bad}:3: alerts.rules[0].severity: 'loud' is not a severity" in failed.stderr


def test_collect_refuses_a_broken_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "eventscope.toml"
    bad.write_text('[[alerts.rules]]\nname = "a"\nwithin = "soon"\n')
    db = tmp_path / "never.duckdb"
    result = subprocess.run(
        [*CLI, "collect", "--db", str(db), "--listen", "127.0.0.1:0", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "nothing started" in result.stderr and f"{bad}:3: alerts.rules[0].within" in result.stderr
    assert not db.exists()
