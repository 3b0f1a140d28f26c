"""docker-compose.yml, the Dockerfile and the OTel Collector config, checked against the code.

Docker cannot run on these machines, so the compose file is parsed and every service's
command is parsed by the real `eventscope` argument parser; ports, volumes, healthchecks,
mounted files and the alert config are checked against what the code listens on and reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from eventscope.tracer.alerts.rules import load
from eventscope.tracer.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
_DEFAULTED = re.compile(r"\$\{([A-Z_]+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _ours(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if service.get("build") == "."}


def _command(service: dict) -> list[str]:
    return [_DEFAULTED.sub(lambda m: m.group(2), str(part)) for part in service["command"]]


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_every_service_is_healthchecked_and_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


def test_our_commands_parse_with_the_real_cli(compose):
    parser = build_parser()
    ours = _ours(compose)
    assert set(ours) == {"collector", "dashboard", "demo"}
    parsed = {name: parser.parse_args(_command(service)) for name, service in ours.items()}
    assert parsed["collector"].command == "collect"
    assert parsed["collector"].firehose and parsed["collector"].amqp_url.startswith(
        "amqp://guest:guest@rabbitmq:"
    )
    assert parsed["dashboard"].command == "dashboard"
    assert parsed["demo"].command == "demo"


def test_ports_urls_and_healthchecks_agree(compose):
    ours = _ours(compose)
    collector = _command(ours["collector"])
    host, port = _option(collector, "--listen").rsplit(":", 1)
    assert host == "0.0.0.0"  # inside the container; published on 127.0.0.1 only
    assert f"127.0.0.1:{port}:{port}" in ours["collector"]["ports"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(ours["collector"]["healthcheck"]["test"])
    assert urlparse(_option(_command(ours["dashboard"]), "--api")).netloc == f"collector:{port}"
    assert urlparse(_option(_command(ours["demo"]), "--collector")).netloc == f"collector:{port}"
    dashboard = _command(ours["dashboard"])
    dashboard_port = _option(dashboard, "--port")
    assert f"127.0.0.1:{dashboard_port}:{dashboard_port}" in ours["dashboard"]["ports"]
    assert f"127.0.0.1:{dashboard_port}/_stcore/health" in " ".join(ours["dashboard"]["healthcheck"]["test"])
    grpc_host, grpc_port = _option(collector, "--grpc").rsplit(":", 1)
    assert grpc_host == "0.0.0.0" and f"127.0.0.1:{grpc_port}:{grpc_port}" in ours["collector"]["ports"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {grpc_port} {port} {dashboard_port}" in dockerfile
    rabbit = compose["services"]["rabbitmq"]
    assert "127.0.0.1:5672:5672" in rabbit["ports"]
    assert "trace_on" in " ".join(rabbit["command"])  # the firehose is on at boot


def test_volumes_and_mounted_files_exist(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    collector = _command(_ours(compose)["collector"])
    assert _option(collector, "--db").startswith("/data/")
    assert any(v.endswith(":/data") for v in _ours(compose)["collector"]["volumes"])


def test_the_image_holds_what_the_commands_read(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE):
        assert (ROOT / source).exists(), source
    config = _option(_command(_ours(compose)["collector"]), "--config")
    assert config.startswith("/app/") and "COPY demo ./demo" in dockerfile
    load(ROOT / config.removeprefix("/app/"))  # raises on any error


def test_otel_collector_fans_out_to_eventscope_and_jaeger(compose):
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in config[kind], f"{kind} {name} is not defined"
    collector_port = _option(_command(_ours(compose)["collector"]), "--listen").rsplit(":", 1)[1]
    assert config["exporters"]["otlphttp/eventscope"]["endpoint"] == f"http://collector:{collector_port}"
    assert config["exporters"]["otlp/jaeger"]["endpoint"].startswith("jaeger:")
    for name in ("otel-collector", "jaeger"):
        assert compose["services"][name]["profiles"] == ["otel"]
