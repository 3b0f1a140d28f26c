"""Helpers of the deployment tests: the repository's deployment files, parsed.

Docker, Kubernetes and Prometheus cannot run on these machines, so the tests read each file
and hold it against the code: commands against the real argument parser, metric names
against what a real collector serves, ports and paths against each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
_DEFAULTED = re.compile(r"\$\{([A-Z_]+):-([^}]*)\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")


def defaulted(text: str) -> str:
    """``${VAR:-default}`` as compose expands it when VAR is unset."""
    return _DEFAULTED.sub(lambda m: m.group(2), text)


def command(service: dict[str, Any]) -> list[str]:
    return [defaulted(str(part)) for part in service.get("command") or service.get("args") or []]


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def without(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag`` and its value."""
    at = argv.index(flag)
    return argv[:at] + argv[at + 2 :]


def built_here(service: dict[str, Any]) -> bool:
    """Is the service built from this repository's Dockerfile?"""
    build = service.get("build")
    return build == "." or (isinstance(build, dict) and build.get("context") == ".")


def host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def pipeline_components(config: dict[str, Any]) -> dict[str, set[str]]:
    """Every receiver, processor and exporter the Collector config's pipelines use."""
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline in config["service"]["pipelines"].values():
        for kind in used:
            used[kind].update(pipeline.get(kind, []))
    return used
