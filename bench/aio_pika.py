"""aio-pika publish and consume throughput: raw, eventscope, opentelemetry-instrumentation-aio-pika.

``python bench/aio_pika.py [--messages N] [--rounds R]`` starts ``bench/sink.py`` (the OTLP/HTTP
endpoint every traced configuration exports to through ``eventscope.tracer.setup``), runs each
configuration in a fresh process per round (rotating the order), and prints medians, the
overheads and the issue's ratios (issue 13: eventscope's overhead <= 1/2 of OTel aio-pika's,
publish throughput >= 0.5x raw). Printed, never asserted.

What is timed, per configuration and round (``--one CONFIG`` runs one and prints JSON):

* **publish**: ``N`` sequential ``await exchange.publish(Message(body), routing_key)`` on the
  default exchange of a channel without publisher confirms (as bench/throughput.py does for
  pika: confirms would make a broker round trip per message the measure), a ``Message`` built
  per publish as an application does, then one broker round trip and the span processor's
  ``force_flush()`` (in a sustained load every span has to be exported).
* **consume**: the ``N`` messages just published by the same configuration, consumed by a
  ``queue.consume`` callback (prefetch 500) that acks each one, plus the flush.
* ``cpu_us``: the process's CPU time (every thread) per message over the same interval.

Traced: ``eventscope`` = ``instrument_channel(channel)``; ``otel`` =
``AioPikaInstrumentor().instrument()`` (it patches the classes: one span per publish and per
delivery). Everything stays on 127.0.0.1, and each process deletes the queue it declared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# This file's name would shadow the library: ``import aio_pika`` must not find bench/ first.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
_URL = "amqp://guest:guest@127.0.0.1:5672/"
_BODY = (b'{"order_id": 4242, "sku": "WIDGET-7", "quantity": 3, "note": "' + b"x" * 100)[:99] + b"}"
_PREFETCH = 500
CONFIGS = ("raw", "eventscope", "otel")
# diagnostics: the same, with an exporter that sends nothing (the application thread's share)
DIAGNOSTICS = ("eventscope-noexport", "otel-noexport")
# --baseline DIR: eventscope imported from another tree (e.g. main's), in the same rounds
BASELINE = "eventscope-base"


def _exported(endpoint: str | None) -> int:
    if endpoint is None:
        return 0
    import urllib.request

    with urllib.request.urlopen(endpoint + "/stats", timeout=10) as response:
        return int(json.load(response)["spans"])


def _prepare(config: str, endpoint: str) -> Any:
    if config == "raw":
        return None
    from eventscope.tracer import setup

    options: dict[str, Any] = {}
    if config.endswith("-noexport"):
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class NullExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        options["exporter"] = NullExporter()
        config = config.removesuffix("-noexport")
    provider = setup(service="bench", endpoint=endpoint, **options)
    if config == "otel":
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

        AioPikaInstrumentor().instrument()
    return provider


async def _channel(config: str, connection: Any) -> Any:
    channel = await connection.channel(publisher_confirms=False)
    if config.startswith("eventscope"):
        from eventscope.adapters.aio_pika import instrument_channel

        return instrument_channel(channel)
    return channel


class _Timer:
    def __init__(self, endpoint: str | None, messages: int) -> None:
        self.endpoint, self.messages = endpoint, messages
        self.spans = _exported(endpoint)
        self.cpu = time.process_time()
        self.start = time.perf_counter()

    def result(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.start
        return {
            "msg_per_s": self.messages / wall,
            "cpu_us": (time.process_time() - self.cpu) / self.messages * 1e6,
            "spans": (_exported(self.endpoint) - self.spans) / self.messages,
        }


async def _publish(channel: Any, queue: str, count: int) -> None:
    from aio_pika import Message

    publish = channel.default_exchange.publish
    for _ in range(count):
        await publish(Message(_BODY), routing_key=queue)


async def _consume(channel: Any, queue_name: str, count: int) -> None:
    await channel.set_qos(prefetch_count=_PREFETCH)
    queue = await channel.get_queue(queue_name)
    done = asyncio.Event()
    seen = 0

    async def on_message(message: Any) -> None:
        nonlocal seen
        await message.ack()
        seen += 1
        if seen == count:
            done.set()

    tag = await queue.consume(on_message)
    await done.wait()
    await queue.cancel(tag)


async def _wait_ready(admin: Any, queue: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        declared = await admin.declare_queue(queue, passive=True)
        if declared.declaration_result.message_count >= count:
            return
        await asyncio.sleep(0.01)


async def _one(config: str, endpoint: str, messages: int, warmup: int) -> dict[str, Any]:
    import aio_pika

    provider = _prepare(config, endpoint)
    traced_endpoint = endpoint if provider is not None and not config.endswith("-noexport") else None

    def flush() -> None:
        if provider is not None:
            provider.force_flush()

    queue = f"eventscope-bench-aio-{config}-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(_URL)
    try:
        admin = await connection.channel()
        await admin.declare_queue(queue)
        producer = await _channel(config, connection)
        await _publish(producer, queue, warmup)
        await _wait_ready(admin, queue, warmup)
        await _consume(await _channel(config, connection), queue, warmup)
        flush()

        timer = _Timer(traced_endpoint, messages)
        await _publish(producer, queue, messages)
        await _wait_ready(admin, queue, 0)  # one round trip: the publishes have left
        flush()
        publish = timer.result()
        await _wait_ready(admin, queue, messages)

        timer = _Timer(traced_endpoint, messages)
        await _consume(await _channel(config, connection), queue, messages)
        flush()
        consume = timer.result()
        await admin.queue_delete(queue)
    finally:
        await connection.close()
    return {"config": config, "publish": publish, "consume": consume}


def _run_rounds(args: argparse.Namespace, endpoint: str) -> list[dict[str, Any]]:
    results = []
    configs = CONFIGS + ((BASELINE,) if args.baseline else ()) + (DIAGNOSTICS if args.diagnostics else ())
    baseline_env = None
    if args.baseline:
        if not (args.baseline / "eventscope" / "tracer" / "__init__.py").is_file():
            sys.exit(f"--baseline {args.baseline}: no eventscope/tracer/__init__.py in it")
        baseline_env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
    for round_index in range(args.rounds):
        shift = round_index % len(configs)
        for config in configs[shift:] + configs[:shift]:
            command = [sys.executable, __file__, "--one", config, "--endpoint", endpoint]
            command += ["--messages", str(args.messages), "--warmup", str(args.warmup)]
            env = baseline_env if config == BASELINE else None
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)
            if done.returncode != 0:
                sys.exit(f"{config} failed:\n{done.stderr}")
            results.append({"round": round_index, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(f"  round {round_index + 1} {config} done", flush=True)
    return results


def _report(results: list[dict[str, Any]]) -> None:
    def median(config: str, phase: str, key: str) -> float:
        return statistics.median(r[phase][key] for r in results if r["config"] == config)

    configs = [c for c in CONFIGS + (BASELINE,) + DIAGNOSTICS if any(r["config"] == c for r in results)]
    rounds = sorted({r["round"] for r in results})
    for phase in ("publish", "consume"):
        raw = median("raw", phase, "msg_per_s")
        print(f"\n{phase.upper()} (median of {len(rounds)} rounds)")
        print(f"{'config':20} {'msg/s':>9} {'x raw':>6} {'ovh µs':>7} {'CPU µs':>7} {'spans':>6}")
        overhead = {}
        for config in configs:
            rate = median(config, phase, "msg_per_s")
            overhead[config] = 1e6 / rate - 1e6 / raw
            print(
                f"{config:20} {rate:9.0f} {rate / raw:6.2f} {overhead[config]:7.1f} "
                f"{median(config, phase, 'cpu_us'):7.1f} {median(config, phase, 'spans'):6.2f}"
            )
        cpu = {config: median(config, phase, "cpu_us") - median("raw", phase, "cpu_us") for config in configs}
        for mine in ("eventscope", BASELINE):
            if mine not in overhead:
                continue
            ratio = overhead[mine] / overhead["otel"] if overhead["otel"] > 0 else float("inf")
            cpu_ratio = cpu[mine] / cpu["otel"] if cpu["otel"] > 0 else float("inf")
            print(f"{mine} overhead / OTel aio-pika's: {ratio:.2f} (CPU {cpu_ratio:.2f}) (required <= 0.5)")
        if "otel-noexport" in overhead and overhead["otel-noexport"] > 0:
            diag = overhead["eventscope-noexport"] / overhead["otel-noexport"]
            print(f"  diag, no export (application thread + processor): {diag:.2f}")
        for mine in ("eventscope", BASELINE):
            if mine not in overhead:
                continue
            per_round = []
            for index in rounds:
                chunk = {r["config"]: r for r in results if r["round"] == index}
                raw_r = 1e6 / chunk["raw"][phase]["msg_per_s"]
                es = 1e6 / chunk[mine][phase]["msg_per_s"] - raw_r
                ot = 1e6 / chunk["otel"][phase]["msg_per_s"] - raw_r
                raw_cpu = chunk["raw"][phase]["cpu_us"]
                es_cpu, ot_cpu = (
                    chunk[mine][phase]["cpu_us"] - raw_cpu,
                    chunk["otel"][phase]["cpu_us"] - raw_cpu,
                )
                wall_text = f"{es / ot:.2f}" if ot > 0 else "n/a"
                per_round.append(wall_text + (f"; {es_cpu / ot_cpu:.2f}" if ot_cpu > 0 else "; n/a"))
            print(f"  {mine} per round (wall; CPU): {', '.join(per_round)}")
        best = {}
        for config in configs:
            rate = max(r[phase]["msg_per_s"] for r in results if r["config"] == config)
            cpu_best = min(r[phase]["cpu_us"] for r in results if r["config"] == config)
            best[config] = (1e6 / rate, cpu_best, rate)
        for mine in ("eventscope", BASELINE):
            if mine in best:
                wall = (best[mine][0] - best["raw"][0]) / (best["otel"][0] - best["raw"][0])
                cpu_ratio = (best[mine][1] - best["raw"][1]) / (best["otel"][1] - best["raw"][1])
                print(
                    f"  best round of each: {mine} overhead / OTel's {wall:.2f} (CPU {cpu_ratio:.2f}),"
                    f" throughput {best[mine][2] / best['raw'][2]:.2f} x raw"
                )
        if phase == "publish":
            for mine in ("eventscope", BASELINE):
                if mine in overhead:
                    x_raw = median(mine, phase, "msg_per_s") / raw
                    print(f"{mine} publish throughput / raw: {x_raw:.2f} (required >= 0.5)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--diagnostics", action="store_true", help="add the no-export diagnostic rows")
    parser.add_argument(
        "--one", choices=CONFIGS + (BASELINE,) + DIAGNOSTICS, help="run one configuration, print JSON"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a directory holding another eventscope tree (eventscope/tracer, eventscope/adapters): "
        f"adds the row {BASELINE}, measured in the same rounds",
    )
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_one(args.one, args.endpoint, args.messages, args.warmup))))
        return 0
    sink = subprocess.Popen(
        [sys.executable, str(_HERE / "sink.py")], stdout=subprocess.PIPE, text=True, cwd=_HERE
    )
    line = sink.stdout.readline() if sink.stdout else ""
    try:
        endpoint = line.split()[1]
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        print(f"aio-pika throughput, {args.messages} messages x {args.rounds} rounds (sink {endpoint})")
        print(f"load average at start: {load}", flush=True)
        _report(_run_rounds(args, endpoint))
        print(f"\nload average at the end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
