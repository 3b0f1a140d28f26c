"""Instructions per published and per consumed message, counted by valgrind: a load-proof CPU figure.

``python bench/instructions.py [--client pika|aio-pika] [--messages N] [--baseline DIR]``

Wall time and even CPU time move by ±50 % between rounds when other work shares the two cores
(bench/README.md); the number of instructions a process executes does not. Each configuration
runs three times under ``valgrind --tool=cachegrind --cache-sim=no`` (every thread counted:
the export thread's encoding and HTTP too), each after the same warm-up of 200 messages:

1. nothing more, 2. ``N`` publishes (then a broker round trip and ``force_flush()``), 3. the
same ``N`` publishes, then consuming and acking those ``N`` messages (then the flush).

Per message, publish = (2 - 1) / N and consume = (3 - 2) / N; the overhead is the difference
from the raw client's, and the ratio is eventscope's overhead over OpenTelemetry's
instrumentation's (``instrument_channel`` for pika, ``AioPikaInstrumentor`` for aio-pika), the
issue's ratio in instructions. The flows are those of ``throughput.py`` and ``aio_pika.py``
(the same bodies, prefetch and acks). Repeat runs agree within about 1 %. An instruction is
not a fixed time (a syscall or a cache miss costs more), so this complements the timed
benches, it does not replace them. Needs ``valgrind`` on the PATH; takes ~2 minutes per
configuration. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_WARMUP = 200
_CONFIGS = {"pika": ("raw", "eventscope", "otel-channel"), "aio-pika": ("raw", "eventscope", "otel")}
_OTEL = {"pika": "otel-channel", "aio-pika": "otel"}


def _pika_flow(config_name: str, count: int, consume: bool, endpoint: str) -> None:
    sys.path.insert(0, str(_HERE))
    import configs
    import throughput

    config = configs.get(config_name)
    provider = config.prepare(endpoint)
    connection = configs.connect()
    admin = connection.channel()
    queue = f"eventscope-bench-instr-{uuid.uuid4().hex[:8]}"
    admin.queue_declare(queue)
    try:
        producer = config.open_channel(connection)
        throughput.publish(producer, queue, _WARMUP)
        throughput._wait_for_count(admin, queue, _WARMUP)
        throughput._consume(config, connection, queue, _WARMUP)
        throughput._flush(provider)
        if count:
            throughput.publish(producer, queue, count)
            throughput._sync(admin, queue)
            throughput._flush(provider)
            throughput._wait_for_count(admin, queue, count, timeout=300)
            if consume:
                throughput._consume(config, connection, queue, count)
                throughput._flush(provider)
    finally:
        admin.queue_delete(queue)
        connection.close()


def _aio_flow(config_name: str, count: int, consume: bool, endpoint: str) -> None:
    spec = importlib.util.spec_from_file_location("bench_aio_pika", _HERE / "aio_pika.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # it takes bench/ off sys.path, so aio_pika is the library

    async def flow() -> None:
        import aio_pika

        provider = bench._prepare(config_name, endpoint)

        def flush() -> None:
            if provider is not None:
                provider.force_flush()

        queue = f"eventscope-bench-instr-{uuid.uuid4().hex[:8]}"
        connection = await aio_pika.connect(bench._URL)
        try:
            admin = await connection.channel()
            await admin.declare_queue(queue)
            producer = await bench._channel(config_name, connection)
            await bench._publish(producer, queue, _WARMUP)
            await bench._wait_ready(admin, queue, _WARMUP)
            await bench._consume(await bench._channel(config_name, connection), queue, _WARMUP)
            flush()
            if count:
                await bench._publish(producer, queue, count)
                await bench._wait_ready(admin, queue, 0)
                flush()
                await bench._wait_ready(admin, queue, count)
                if consume:
                    await bench._consume(await bench._channel(config_name, connection), queue, count)
                    flush()
            await admin.queue_delete(queue)
        finally:
            await connection.close()

    asyncio.run(flow())


def _instructions(args: argparse.Namespace, config: str, count: int, consume: bool, env: Any) -> int:
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={os.devnull}",
        sys.executable,
        str(Path(__file__).resolve()),
        f"--client={args.client}",
        f"--one={config}",
        f"--messages={count}",
        f"--endpoint={args.endpoint}",
    ] + (["--consume"] if consume else [])
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=_HERE)
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or match is None:
        sys.exit(f"{config} under valgrind failed:\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=tuple(_CONFIGS), default="pika")
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--baseline", type=Path, help="another eventscope tree (as run.py --baseline)")
    parser.add_argument("--endpoint", help="bench/sink.py's URL (default: start one)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--consume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # a child, under valgrind
        flow = _pika_flow if args.client == "pika" else _aio_flow
        flow(args.one, args.messages, args.consume, args.endpoint)
        return 0

    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not on the PATH")
    sink = None
    if args.endpoint is None:
        sink = subprocess.Popen([sys.executable, str(_HERE / "sink.py")], stdout=subprocess.PIPE, text=True)
        line = sink.stdout.readline() if sink.stdout else ""
        if not line.startswith("READY "):
            sink.kill()
            sys.exit(f"bench/sink.py did not start: {line!r}")
        args.endpoint = line.split()[1]
    runs: list[tuple[str, str, Any]] = [(name, name, None) for name in _CONFIGS[args.client]]
    if args.baseline is not None:
        if not (args.baseline / "eventscope" / "tracer" / "__init__.py").is_file():
            sys.exit(f"--baseline {args.baseline}: no eventscope/tracer/__init__.py in it")
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        runs.insert(2, ("eventscope, baseline tree", "eventscope", env))
    count = args.messages
    per: dict[str, tuple[float, float]] = {}
    try:
        print(f"instructions per message, {args.client}, {count} messages (valgrind cachegrind)", flush=True)
        for label, config, env in runs:
            base = _instructions(args, config, 0, False, env)
            published = _instructions(args, config, count, False, env)
            consumed = _instructions(args, config, count, True, env)
            per[label] = ((published - base) / count, (consumed - published) / count)
            print(
                f"  {label:<28} publish {per[label][0]:>9,.0f}   consume {per[label][1]:>9,.0f}", flush=True
            )
    finally:
        if sink is not None:
            sink.kill()
    raw = per["raw"]
    otel = per[_OTEL[args.client]]
    print("overhead over raw (instructions per message) and / OTel's overhead:")
    for label, (publish, consume) in per.items():
        if label == "raw":
            continue
        over = (publish - raw[0], consume - raw[1])
        ratio = tuple(o / (t - r) for o, t, r in zip(over, otel, raw, strict=True))
        print(f"  {label:<28} publish {over[0]:>9,.0f} ({ratio[0]:.2f})", end="")
        print(f"   consume {over[1]:>9,.0f} ({ratio[1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
