"""The collector's own health as Prometheus text: one shape for every component, one escaper.

Each component that has something to report (the OTLP pipeline, the gRPC receiver, the broker
receivers, the alert engine and its sinks) returns a list of :data:`Family` from its
``metric_families()``; :func:`render` writes the text exposition format (version 0.0.4) once,
for ``GET /metrics``. Label sets are built with :func:`labels`, which escapes values as the
format requires, so no component formats a label by hand.

Why not ``prometheus_client``: its exposition renders every integer sample as a float
(``1.0``) and re-derives counter names, which would change the series users already scrape and
alert on (deploy/ ships rules against these names); the format itself is six lines of code.
This module imports nothing of the collector, so any layer may use it.
"""

from __future__ import annotations

__all__ = ["Family", "labels", "render"]

# (name without the ``eventscope_`` prefix, "counter" | "gauge", help text, [(labels, value)])
Family = tuple[str, str, str, list[tuple[str, float]]]


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**values: object) -> str:
    """``{a="1",b="x"}`` with every value escaped; ``""`` for no labels."""
    if not values:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in values.items()) + "}"


def render(families: list[Family], *, prefix: str = "eventscope_") -> str:
    """The text exposition of ``families``; integers print as integers (``{value:g}``)."""
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {prefix}{name} {help_text}")
        lines.append(f"# TYPE {prefix}{name} {kind}")
        lines.extend(f"{prefix}{name}{label_set} {value:g}" for label_set, value in samples)
    return "\n".join(lines) + "\n"
