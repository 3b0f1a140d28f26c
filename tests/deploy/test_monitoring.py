"""The Prometheus scrape configs and alert rules and the Grafana dashboard, held against what a
real collector serves on /metrics.

The collector runs in this process with every part that adds metrics: the OTLP/gRPC receiver,
the firehose and dead-letter taps (on the test vhost), the management poller and the alert
engine, with one orphan and one firing alert so that labelled samples exist. Every metric name
and label the rules and panels use must be among them: a renamed metric fails here, not in a
silent dashboard.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from eventscope.tracer.alerts import rules as alert_rules
from eventscope.tracer.server.app import CollectorConfig
from tests.conftest import AMQP_URL, Amqp
from tests.deploy.manifests import DEPLOY, compose, host_port, load_yaml
from tests.processes import free_port
from tests.spans import RunningCollector, new_span_id, new_trace, publish, request

JOB = "eventscope"
RULES = DEPLOY / "prometheus" / "eventscope-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "eventscope.json"
# one rule that fires at once per event and one that groups them into incidents, and one
# sink, so that labelled alert and incident samples exist
ALERTS = """
[alerts]
interval = "100ms"

[[alerts.rules]]
name = "all"
within = "0s"

[[alerts.rules]]
name = "grouped"
within = "0s"
group_by = ["reason"]

[[alerts.sinks]]
type = "log"
"""
_LABELLED = ("eventscope_alerts_firing", "eventscope_alert_incidents_open", "eventscope_orphans")
_METRIC = re.compile(r"\b(eventscope_[a-z_]+)\b")
_SELECTOR_LABELS = re.compile(r"\b(eventscope_[a-z_]+)\{([^}]*)\}")
_GROUPING = re.compile(r"\bby \(([^)]*)\)")
_DURATION = re.compile(r"^\d+[smhdwy]$")
_ADDED_BY_PROMETHEUS = {"job", "instance", "namespace", "pod"}
_SAMPLE = re.compile(r"^(eventscope_[a-z_]+)(?:\{(.*)\})? \S+$")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, amqp_module: Any, tracing: None) -> dict[str, set[str]]:
    """Metric family → the label names seen on its samples, from a real collector's /metrics."""
    dead_letters = amqp_module.exchange(kind="fanout")
    config = CollectorConfig(
        db_path=str(tmp_path_factory.mktemp("metrics") / "m.duckdb"),
        grace_s=0,
        grpc_listen=f"127.0.0.1:{free_port()}",
        amqp_url=AMQP_URL,
        firehose=True,
        trace_on=False,
        dlx=(dead_letters,),
        management_url="http://guest:guest@127.0.0.1:15672",
        alerts=alert_rules.parse(ALERTS),
    )
    running = RunningCollector(config).start()
    try:
        httpx.post(
            f"{running.url}/v1/traces",
            content=request(publish(trace_id=new_trace(), event_id=new_span_id())).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        ).raise_for_status()
        with grpc.insecure_channel(config.grpc_listen) as channel:  # an OTLP/gRPC response too
            TraceServiceStub(channel).Export(
                request(publish(trace_id=new_trace(), event_id=new_span_id())), timeout=5
            )
        deadline = time.monotonic() + 10
        while True:  # an orphan, then its alert, so that labelled samples exist
            text = httpx.get(f"{running.url}/metrics", timeout=5).text
            if all(f"{name}{{" in text for name in _LABELLED):
                break
            assert time.monotonic() < deadline, f"not all of {_LABELLED} in /metrics"
            time.sleep(0.1)
    finally:
        running.stop()
    families: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.setdefault(line.split()[2], set())
        elif match := _SAMPLE.match(line):
            labels = match.group(2) or ""
            families.setdefault(match.group(1), set()).update(re.findall(r'(\w+)="', labels))
    return families


@pytest.fixture(scope="module")
def amqp_module(broker: Any) -> Iterator[Amqp]:
    helper = Amqp(broker)
    yield helper
    helper.close()


def _rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [str(v.get("definition", "")) for v in dashboard["templating"]["list"]]
    return [e for e in exprs if e]


def _check_against(expr: str, served: dict[str, set[str]], where: str) -> None:
    names = set(_METRIC.findall(expr))
    for name in names:
        assert name in served, f"{where}: {name} is not served on /metrics"
    labels_here = set().union(*(served[name] for name in names)) if names else set()
    for name, selector in _SELECTOR_LABELS.findall(expr):
        for label in re.findall(r"(\w+)\s*[=!~]", selector):
            assert label in served[name] | _ADDED_BY_PROMETHEUS, f"{where}: {name} has no label {label}"
    for grouping in _GROUPING.findall(expr):
        for label in (part.strip() for part in grouping.split(",")):
            assert label in labels_here | _ADDED_BY_PROMETHEUS, f"{where}: no metric of it has label {label}"


def _balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


@pytest.mark.integration
def test_every_metric_and_label_the_rules_use_is_served(served):
    assert {
        "eventscope_spans_received_total",
        "eventscope_broker_tap_connected",
        "eventscope_orphans",
    } <= set(served)
    for rule in _rules():
        _check_against(rule["expr"], served, rule["alert"])


@pytest.mark.integration
def test_every_metric_and_label_the_dashboard_uses_is_served(served):
    used = set()
    for expr in _dashboard_exprs():
        _check_against(expr, served, f"grafana: {expr}")
        used.update(_METRIC.findall(expr))
    # the dashboard shows the collector's health as a whole: nothing served is left out
    assert set(served) - used == set(), f"served but on no panel: {set(served) - used}"


def test_the_alert_rules_are_well_formed():
    groups = load_yaml(RULES)["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    names = [rule["alert"] for rule in _rules()]
    assert len(set(names)) == len(names), "alert names repeat"
    for rule in _rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert _balanced(rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical", "{{ $labels.severity }}")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert _DURATION.match(rule["for"]), rule["for"]
        for window in re.findall(r"\[([^\]]+)\]", rule["expr"]):
            assert _DURATION.match(window), window
    job_rules = [rule for rule in _rules() if 'job="' in rule["expr"]]
    assert job_rules and all(f'job="{JOB}"' in rule["expr"] for rule in job_rules)


def test_prometheus_scrapes_the_collector_it_is_given():
    services = compose()["services"]
    prometheus = services["prometheus"]
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith(".")}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == "./deploy/prometheus/eventscope-rules.yml"
    (job,) = config["scrape_configs"]
    assert job["job_name"] == JOB and job["metrics_path"] == "/metrics"
    listen = next(part for part in services["collector"]["command"] if str(part).startswith("0.0.0.0:"))
    assert job["static_configs"][0]["targets"] == [f"collector:{host_port(listen)[1]}"]
    kubernetes = load_yaml(DEPLOY / "prometheus" / "kubernetes-scrape.yml")["scrape_configs"]
    assert [j["job_name"] for j in kubernetes] == [JOB]


def test_the_grafana_dashboard_is_importable_and_provisioned(tmp_path: Path):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["job"]["query"] == JOB
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert _balanced(target["expr"]) and 'job="$job"' in target["expr"], target["expr"]
    grafana = compose()["services"]["grafana"]
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "eventscope.yaml")
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/eventscope.json:{path}/eventscope.json:ro" in grafana["volumes"]
    source = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    (datasource,) = source["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in compose()["services"]["prometheus"]["ports"]


@pytest.mark.integration
def test_every_served_metric_is_documented(served):
    docs = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    documented = set(re.findall(r"^\| `(eventscope_[a-z_]+)` \|", docs, flags=re.MULTILINE))
    assert documented == set(served), (set(served) - documented, documented - set(served))


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return promtool


def test_promtool_accepts_the_rules_and_their_unit_tests_pass(tmp_path: Path):
    promtool = _promtool()
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(_rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "eventscope-rules.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # every alert has a case that makes it fire
    cases = load_yaml(RULES.parent / "eventscope-rules.test.yml")["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t.get("exp_alerts")}
    untested = {rule["alert"] for rule in _rules()} - fired
    assert not untested, f"no promtool case fires {sorted(untested)}"


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path):
    promtool = _promtool()
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/", ""))
    shutil.copy(RULES, tmp_path / RULES.name)
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
