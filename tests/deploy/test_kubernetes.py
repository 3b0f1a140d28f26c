"""deploy/kubernetes/eventscope.yaml, checked by parsing (no cluster runs here).

The collector is DuckDB's single writer: the manifest must keep it to one pod holding one
ReadWriteOnce volume, with the database on that volume, probes on /healthz on the port it
listens on, and arguments the real CLI accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from eventscope.tracer.alerts.rules import load
from eventscope.tracer.cli.main import build_parser
from tests.deploy.manifests import DEPLOY, host_port, load_all_yaml, load_yaml, option

MANIFEST = DEPLOY / "kubernetes" / "eventscope.yaml"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    documents = load_all_yaml(MANIFEST)
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}
    assert len(by_key) == len(documents), "two objects share a kind and name"
    return by_key


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_every_object_matches_the_kubernetes_api_schema(objects, version):
    """Strict: an unknown or misspelt field (``readinesProbe``) fails, as the API server would."""
    for (kind, name), document in objects.items():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{kind}/{name} (Kubernetes {version}): {exc.message}") from None


def test_the_collector_is_one_pod_with_its_own_volume(objects):
    collector = objects["StatefulSet", "eventscope"]
    spec = collector["spec"]
    assert spec["replicas"] == 1 and spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"  # the old pod stops before the new one starts
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (container,) = _pod(collector)["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    db = option(container["args"], "--db")
    assert db.startswith(mounts[claim["metadata"]["name"]] + "/")
    assert (
        spec["selector"]["matchLabels"].items() <= collector["spec"]["template"]["metadata"]["labels"].items()
    )
    headless = objects["Service", spec["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"


def test_the_arguments_parse_with_the_real_cli_and_read_what_is_mounted(objects, tmp_path: Path):
    parser = build_parser()
    (container,) = _pod(objects["StatefulSet", "eventscope"])["containers"]
    args = parser.parse_args(container["args"])
    assert args.command == "collect" and args.firehose and not args.trace_on
    env = {item["name"] for item in container["env"]}
    for value in (args.amqp_url, args.management_url):  # from the Secret, expanded by Kubernetes
        assert value.startswith("$(") and value[2:-1] in env
    secret = objects["Secret", "eventscope-broker"]
    for item in container["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "eventscope-broker" and ref["key"] in secret["stringData"]
    # the rules file: mounted from the ConfigMap, and valid
    config = option(container["args"], "--config")
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _pod(objects["StatefulSet", "eventscope"])["volumes"]}
    (name,) = [n for n, path in mounts.items() if config.startswith(path + "/")]
    config_map = objects["ConfigMap", volumes[name]["configMap"]["name"]]
    text = config_map["data"][config.rsplit("/", 1)[1]]
    (tmp_path / "eventscope.toml").write_text(text)
    load(tmp_path / "eventscope.toml")  # raises on any error
    dashboard = _pod(objects["Deployment", "eventscope-dashboard"])["containers"][0]
    parsed = parser.parse_args(dashboard["args"])
    assert parsed.command == "dashboard" and parsed.api == "http://eventscope:4318"


def test_probes_and_services_reach_the_ports_the_processes_listen_on(objects):
    (container,) = _pod(objects["StatefulSet", "eventscope"])["containers"]
    ports = _ports(container)
    assert host_port(option(container["args"], "--listen")) == ("0.0.0.0", ports["http"])
    assert host_port(option(container["args"], "--grpc")) == ("0.0.0.0", ports["grpc"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    labels = objects["StatefulSet", "eventscope"]["spec"]["template"]["metadata"]["labels"]
    for name in ("eventscope", "eventscope-headless"):
        service = objects["Service", name]["spec"]
        assert service["selector"].items() <= labels.items()
        assert {port["targetPort"] for port in service["ports"]} <= set(ports)
    dashboard = objects["Deployment", "eventscope-dashboard"]
    (board,) = _pod(dashboard)["containers"]
    assert str(_ports(board)["http"]) == option(board["args"], "--port")
    assert board["readinessProbe"]["httpGet"] == {"path": "/_stcore/health", "port": "http"}
    assert objects["Service", "eventscope-dashboard"]["spec"]["selector"].items() <= (
        dashboard["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_pods_run_unprivileged_from_a_pinned_image(objects):
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    uid = int(dockerfile.split("USER ", 1)[1].split()[0])
    for key in (("StatefulSet", "eventscope"), ("Deployment", "eventscope-dashboard")):
        pod = _pod(objects[key])
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == uid
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert not container["image"].endswith(":latest") and ":" in container["image"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "memory" in container["resources"]["limits"]


def test_prometheus_finds_the_pod_the_manifest_makes(objects):
    (job,) = load_yaml(DEPLOY / "prometheus" / "kubernetes-scrape.yml")["scrape_configs"]
    labels = objects["StatefulSet", "eventscope"]["spec"]["template"]["metadata"]["labels"]
    (container,) = _pod(objects["StatefulSet", "eventscope"])["containers"]
    keeps = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    prefix = "__meta_kubernetes_pod_label_"
    for meta, regex in keeps.items():
        if meta.startswith(prefix):
            label = next(
                k for k in labels if k.replace(".", "_").replace("/", "_") == meta.removeprefix(prefix)
            )
            assert labels[label] == regex
        elif meta == "__meta_kubernetes_pod_container_port_name":
            assert regex in _ports(container)
