"""Benchmarks of issue 2: what tracing costs a pika publisher and consumer, against OTel pika.

``.venv/bin/python bench/run.py [--messages N] [--rounds R]``

One run does everything and prints the figures (see bench/README.md for what each means):

1. starts ``bench/sink.py``, the OTLP/HTTP endpoint every traced configuration exports to,
   in a process of its own;
2. for each round, runs ``bench/throughput.py`` once per configuration (raw pika,
   eventscope, OTel pika per channel, OTel pika global), each in a fresh process — the
   global tracer provider and OTel's global patching are per process — rotating the order
   from round to round;
3. runs ``bench/micro.py`` (micro-costs) and ``bench/publish_profile.py`` (cProfile);
4. prints the tables, the PASS/MISS lines against the issue's targets, and stops the sink.

Every queue is declared by the benchmark process that uses it, deleted by it, and deleted
again here in case that process died. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import configs
import report

_HERE = Path(__file__).resolve().parent
_WORKER_TIMEOUT_S = 600


def _versions() -> str:
    names = (
        "pika",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-pika",
    )
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (missing)")
    return ", ".join(found)


def _code_state() -> str:
    """The commit measured, and the files that differ from it outside bench/."""
    root = _HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in status if not line[3:].startswith("bench/")]
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean)")


def _header(args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"eventscope benchmarks — {now}",
            f"  machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform(terse=True)}",
            f"  python {platform.python_version()}; {_versions()}",
            f"  code: {_code_state()}",
            f"  {args.messages} messages per measurement, {args.rounds} rounds, warm-up {args.warmup}",
            f"  load average at start: {_load()}",
        ]
    )


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _check_broker() -> None:
    try:
        socket.create_connection((configs.AMQP_HOST, configs.AMQP_PORT), timeout=3).close()
    except OSError as exc:
        sys.exit(f"RabbitMQ is not answering on {configs.AMQP_HOST}:{configs.AMQP_PORT}: {exc}")


def _start_sink() -> tuple[subprocess.Popen[str], str]:
    sink = subprocess.Popen(
        [sys.executable, str(_HERE / "sink.py")], stdout=subprocess.PIPE, text=True, cwd=_HERE
    )
    line = sink.stdout.readline() if sink.stdout else ""
    if not line.startswith("READY "):
        sink.kill()
        sys.exit(f"bench/sink.py did not start: {line!r}")
    return sink, line.split()[1]


def _delete_queue(queue: str) -> None:
    try:
        connection = configs.connect()
        try:
            connection.channel().queue_delete(queue)
        finally:
            connection.close()
    except Exception as exc:  # the queue is usually gone already; say so only if it may remain
        print(f"    (cleanup of {queue} failed: {exc})", flush=True)


def baseline_env(baseline: Path | None) -> dict[str, str] | None:
    """The environment of a process that imports eventscope from ``baseline`` (``None``: this tree).

    ``baseline`` holds an ``eventscope/`` directory with ``tracer/`` and ``adapters/`` in it,
    e.g. ``git archive main tracer adapters | tar -x -C DIR/eventscope``; ``PYTHONPATH``
    puts it before the editable install of this tree.
    """
    if baseline is None:
        return None
    if not (baseline / "eventscope" / "tracer" / "__init__.py").is_file():
        sys.exit(f"--baseline {baseline}: no eventscope/tracer/__init__.py in it")
    return {**os.environ, "PYTHONPATH": str(baseline.resolve())}


def _run_json(command: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run a benchmark process; its last stdout line is JSON. Returns (result, stderr)."""
    try:
        done = subprocess.run(
            [sys.executable, *command],
            capture_output=True,
            text=True,
            timeout=_WORKER_TIMEOUT_S,
            cwd=_HERE,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        return None, f"timed out after {exc.timeout} s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None, done.stderr.strip() or f"exit status {done.returncode}"
    return json.loads(lines[-1]), done.stderr.strip()


def _warn(stderr: str) -> None:
    for line in stderr.splitlines()[:5]:
        print(f"    ! {line}", flush=True)


def _throughput_rounds(args: argparse.Namespace, endpoint: str) -> list[dict[str, Any]]:
    names = [
        config.name
        for config in configs.CONFIGS
        if (args.baseline is not None or not config.baseline) and (not args.only or config.name in args.only)
    ]
    runs = []
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        for position, name in enumerate(order, 1):
            queue = f"eventscope-bench-{name}-{uuid.uuid4().hex[:8]}"
            command = [
                "throughput.py",
                f"--config={name}",
                f"--queue={queue}",
                f"--messages={args.messages}",
                f"--warmup={args.warmup}",
                f"--endpoint={endpoint}",
            ]
            started = time.monotonic()
            env = baseline_env(args.baseline) if configs.get(name).baseline else None
            result, stderr = _run_json(command, env)
            _delete_queue(queue)
            prefix = f"  [round {round_index + 1}/{args.rounds}, {position}/{len(order)}] {name:<21}"
            if result is None:
                print(f"{prefix} FAILED", flush=True)
                _warn(stderr)
                continue
            result["round"] = round_index
            runs.append(result)
            parts = []
            for phase in ("publish", "consume"):
                if phase in result:
                    figures = result[phase]
                    spans = figures["spans"] / figures["messages"]
                    parts.append(f"{phase} {figures['msg_per_s']:>6.0f} msg/s ({spans:.2f} spans/msg)")
            print(f"{prefix} {'   '.join(parts)}   [{time.monotonic() - started:.1f} s]", flush=True)
            _warn(stderr)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every configuration (median)")
    parser.add_argument("--warmup", type=int, default=2_000, help="untimed messages before each measurement")
    parser.add_argument("--profile-messages", type=int, default=10_000)
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-costs")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of the publish path")
    parser.add_argument("--json", type=Path, help="also write every raw figure to this file")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a directory holding another eventscope tree (eventscope/tracer, eventscope/adapters): "
        "adds the row 'eventscope, baseline tree', measured in the same rounds",
    )
    parser.add_argument(
        "--only", type=lambda text: text.split(","), help="comma-separated configurations (default: all)"
    )
    args = parser.parse_args()

    _check_broker()
    print(_header(args), "\n", flush=True)
    started = time.monotonic()
    sink, endpoint = _start_sink()
    output: dict[str, Any] = {
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    }
    try:
        print(f"throughput (sink {endpoint}):", flush=True)
        output["runs"] = runs = _throughput_rounds(args, endpoint)
        if not args.no_micro:
            print("micro-costs ...", flush=True)
            output["micro"], stderr = _run_json(["micro.py", f"--endpoint={endpoint}"])
            _warn(stderr)
        if not args.no_profile:
            print("profile of the eventscope publish path ...", flush=True)
            output["profile"], stderr = _run_json(
                ["publish_profile.py", f"--endpoint={endpoint}", f"--messages={args.profile_messages}"]
            )
            _warn(stderr)
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    summary = report.summarize(runs)
    print()
    print(report.format_throughput(summary, args.messages))
    print(report.format_per_round(runs))
    print()
    if output.get("micro"):
        print(report.format_micro(output["micro"]), "\n")
    if output.get("profile"):
        print(report.format_profile(output["profile"]), "\n")
    print("TARGETS (issue 2; OTel pika = instrument_channel, one span per message)")
    for label, value, verdict in report.verdicts(summary):
        shown = "—" if value is None else f"{value:.2f}"
        print(f"  {verdict:<4}  {label:<52} measured {shown}")
    print(f"\ndone in {time.monotonic() - started:.0f} s; load average now {_load()}")
    if args.json:
        output["summary"] = summary
        args.json.write_text(json.dumps(output, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
