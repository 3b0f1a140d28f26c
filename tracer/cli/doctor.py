"""``eventscope doctor``: what is installed and which OpenTelemetry settings are in effect.

The first thing to run when an instrumented service exports nothing, or a command says an
extra is missing: it needs no extra itself and never fails (exit 0).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from eventscope.tracer.cli import options
from eventscope.tracer.version import __version__

__all__ = ["register"]

_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)[^@\s]*@")
_PACKAGES = (
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-instrumentation",
    "opentelemetry-instrumentation-pika",
    "pika",
)


def register(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="versions, installed extras and the OTEL_* settings in effect",
        description="Report eventscope's version, its OpenTelemetry packages, which extras are "
        "installed (and how to add the others) and the OTEL_*/EVENTSCOPE_* variables set.",
    )
    doctor.set_defaults(handler=run, quiet=True)


def run(args: argparse.Namespace) -> int:
    print(f"eventscope {__version__} on Python {platform.python_version()}")
    for name in _PACKAGES:
        try:
            print(f"  {name} {version(name)}")
        except PackageNotFoundError:
            print(f"  {name} (not installed)")
    for extra in options.EXTRAS:
        missing = options.missing_modules(extra)
        state = (
            "installed" if not missing else f"missing {', '.join(missing)}: pip install 'eventscope[{extra}]'"
        )
        print(f"extra {extra}: {state}")
    for name in sorted(os.environ):
        if name.startswith(("OTEL_", "EVENTSCOPE_")):
            shown = os.environ[name]
            if any(secret in name for secret in ("TOKEN", "HEADERS", "PASSWORD", "KEY")):
                shown = "(set)"
            shown = _CREDENTIALS.sub(r"\1***@", shown)  # amqp://user:password@host → amqp://user:***@host
            print(f"{name}={shown}")
    return 0
