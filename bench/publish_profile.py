"""Where a traced publish spends its CPU: cProfile of the application thread and the export thread.

``python bench/publish_profile.py --endpoint URL [--config eventscope] [--messages N]``

The publishes run in chunks of ``_CHUNK`` (below the processor's export threshold, so its
thread stays asleep), each followed by ``force_flush()``, which exports on the calling
thread. Two profilers take turns on that one thread: ``publish`` covers the
``basic_publish`` calls, ``export`` the flushes, i.e. what the export thread does in a
normal run. Neither waits for the GIL, so their sum is the CPU a traced publish costs the
process. cProfile's own overhead inflates call-heavy code (2-3x in total here), so read
the shares and the ranking, and take absolute costs from ``bench/micro.py``. Prints JSON:
a breakdown of named functions (cumulative µs per message) and the top functions by own
time, for each side.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import pstats
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import configs
import throughput

_TOP = 18
_CHUNK = 400  # below the processor's export threshold (512): its thread stays asleep


def _code_key(function: Any) -> tuple[str, int, str] | None:
    function = getattr(function, "fget", function)  # properties
    function = getattr(function, "__func__", function)  # methods
    code = getattr(function, "__code__", None)
    return None if code is None else (code.co_filename, code.co_firstlineno, code.co_name)


def _lookup(path: str) -> Any:
    """``"module:Qualified.name"`` → the object, or ``None`` if this version lacks it."""
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part) if not isinstance(target, type) else target.__dict__[part]
    except (ImportError, AttributeError, KeyError):
        return None
    return target


# (label, "module:qualname" candidates, or "~name" for a built-in matched by name)
_MAIN_ROWS = (
    ("traced basic_publish (everything)", ("eventscope.adapters.pika:_ChannelProxy._publish",)),
    (
        "  start_publish: metadata + span start + inject",
        ("eventscope.adapters._spans:AmqpTracing.start_publish",),
    ),
    (
        "    tracer.start_span",
        ("opentelemetry.sdk.trace:Tracer.start_span", "eventscope.tracer.sdk.lean:LeanTracer.start_span"),
    ),
    ("    propagation.inject (traceparent)", ("eventscope.tracer.sdk.propagation:inject",)),
    ("    new_event_id (UUIDv7)", ("eventscope.tracer.sdk.propagation:new_event_id",)),
    ("    _copy_properties", ("eventscope.adapters.pika:_copy_properties",)),
    ("    current_handling", ("eventscope.tracer.sdk.propagation:current_handling",)),
    (
        "  span.end (→ BatchSpanProcessor.on_end)",
        ("opentelemetry.sdk.trace:Span.end", "eventscope.tracer.sdk.lean:LeanSpan.end"),
    ),
    ("    BatchSpanProcessor.on_end", ("opentelemetry.sdk.trace.export:BatchSpanProcessor.on_end",)),
    (
        "  pika BlockingChannel.basic_publish",
        ("pika.adapters.blocking_connection:BlockingChannel.basic_publish",),
    ),
    ("    BasicProperties.encode", ("pika.spec:BasicProperties.encode",)),
    ("    socket send (syscall)", ("~<method 'send' of '_socket.socket' objects>",)),
)
_EXPORT_ROWS = (
    ("force_flush → export (everything)", ("opentelemetry.sdk._shared_internal:BatchProcessor._export",)),
    (
        "  OTLPSpanExporter.export",
        ("opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter.export",),
    ),
    (
        "    encode_spans (SDK spans → protobuf objects)",
        ("opentelemetry.exporter.otlp.proto.common._internal.trace_encoder:encode_spans",),
    ),
    ("      _encode_attributes", ("opentelemetry.exporter.otlp.proto.common._internal:_encode_attributes",)),
    ("      Resource.__hash__ (json.dumps per span)", ("opentelemetry.sdk.resources:Resource.__hash__",)),
    (
        "    SerializePartialToString",
        ("~<method 'SerializePartialToString' of 'google._upb._message.Message' objects>",),
    ),
)


def _breakdown(stats: pstats.Stats, rows: Iterable[tuple[str, tuple[str, ...]]], messages: int) -> list[dict]:
    table = stats.stats  # type: ignore[attr-defined]
    out = []
    for label, candidates in rows:
        cumulative = 0.0
        found = False
        for candidate in candidates:
            if candidate.startswith("~"):
                keys = [key for key in table if key[0] == "~" and key[2] == candidate[1:]]
            else:
                key = _code_key(_lookup(candidate))
                keys = [key] if key in table else []
            for key in keys:
                cumulative += table[key][3]
                found = True
        if found:
            out.append({"label": label, "us_per_msg": cumulative / messages * 1e6})
    return out


def _top(stats: pstats.Stats, messages: int) -> list[dict]:
    table = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:_TOP]
    out = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in ranked:
        where = name if filename == "~" else f"{name} ({_short(filename)}:{line})"
        out.append(
            {
                "function": where,
                "calls_per_msg": calls / messages,
                "own_us_per_msg": own / messages * 1e6,
                "cum_us_per_msg": cumulative / messages * 1e6,
            }
        )
    return out


_REPO = str(Path(__file__).resolve().parents[1]) + "/"


def _short(filename: str) -> str:
    for marker in ("site-packages/", _REPO):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _total(stats: pstats.Stats) -> float:
    return float(stats.total_tt)  # type: ignore[attr-defined]


def run(config_name: str, endpoint: str, messages: int, warmup: int) -> dict[str, Any]:
    config = configs.get(config_name)
    provider = config.prepare(endpoint)
    queue = f"eventscope-bench-profile-{uuid.uuid4().hex[:10]}"
    main_profiler = cProfile.Profile()
    export_profiler = cProfile.Profile()
    connection = configs.connect()
    try:
        admin = connection.channel()
        admin.queue_declare(queue)
        channel = config.open_channel(connection)
        throughput.publish(channel, queue, warmup)
        provider.force_flush()
        admin.queue_purge(queue)
        done = 0
        while done < messages:
            chunk = min(_CHUNK, messages - done)
            main_profiler.enable()
            throughput.publish(channel, queue, chunk)
            main_profiler.disable()
            export_profiler.enable()
            provider.force_flush()
            export_profiler.disable()
            done += chunk
        admin.queue_delete(queue)
    finally:
        connection.close()
    main = pstats.Stats(main_profiler)
    export = pstats.Stats(export_profiler)
    return {
        "config": config_name,
        "messages": messages,
        "publish": {
            "us_per_msg": _total(main) / messages * 1e6,
            "breakdown": _breakdown(main, _MAIN_ROWS, messages),
            "top": _top(main, messages),
        },
        "export": {
            "us_per_msg": _total(export) / messages * 1e6,
            "breakdown": _breakdown(export, _EXPORT_ROWS, messages),
            "top": _top(export, messages),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="base URL of bench/sink.py")
    parser.add_argument(
        "--config", default="eventscope", choices=[c.name for c in configs.CONFIGS if c.traced]
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    args = parser.parse_args()
    print(json.dumps(run(args.config, args.endpoint, args.messages, args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
