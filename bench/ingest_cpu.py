"""Collector CPU per committed span (issue 16), this tree side by side with another tree.

    .venv/bin/python bench/ingest_cpu.py                           # this tree only
    git archive main adapters tracer dashboard demo | tar -x -C BASE/eventscope
    touch BASE/eventscope/__init__.py
    .venv/bin/python bench/ingest_cpu.py --baseline BASE --rounds 3  # interleaved with main's code

Each round starts ``eventscope collect`` on a fresh temporary database, once per tree (the
order alternates between rounds), and posts the same pre-built OTLP/HTTP protobuf requests
(publish + process pairs with the adapter's attributes, encoded once by eventscope's lean
encoder before any round) from ``--senders`` keep-alive connections, one request in flight
each, as ``BatchSpanProcessor`` does. The senders cost ~1 µs per span, so the collector's CPU
is what is measured: user + system seconds of the collector process and every process below
it (``/proc``), from the first measured request to the last 200 (a 200 comes after the
commit), divided by the spans committed. Figures are medians over the rounds; the load
average is printed before and after. Printed, never asserted.

``--parts GROUPS`` measures instead, in one process per tree (interleaved the same way), where
the collector's CPU goes without HTTP: per span, decoding + normalising (``normalise_protobuf``),
lineage, and ``Store.append`` (process CPU time, DuckDB's threads included), over ``GROUPS``
groups of three 512-span requests committed together as the writer groups them; min and median
over the groups after five warm-up groups.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector import message_spans, wait_healthy

_WARMUP_REQUESTS = 30


def build_requests(count: int, spans_per_request: int) -> list[bytes]:
    """``count`` ExportTraceServiceRequest bodies of publish + process pairs, every id fresh."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from eventscope.tracer.sdk.otlp_encoder import encode_request

    resources = [Resource.create({"service.name": f"bench-{i}"}) for i in range(3)]
    scope = InstrumentationScope("eventscope.tracer", "0")
    pairs = spans_per_request // 2
    return [
        encode_request(message_spans(pairs, resources[n % len(resources)], scope, time.time_ns()))
        for n in range(count)
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live process below it, plus what its
    waited-for children used (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        fields = _stat(current)
        if fields is None:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        todo.extend(children.get(current, []))
    return total / os.sysconf("SC_CLK_TCK")


def _post_all(port: int, bodies: list[bytes], failures: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/x-protobuf"}
    for body in bodies:
        conn.request("POST", "/v1/traces", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(response.status)
    conn.close()


def _send(port: int, bodies: list[bytes], senders: int) -> list[int]:
    failures: list[int] = []
    threads = [
        threading.Thread(target=_post_all, args=(port, bodies[i::senders], failures)) for i in range(senders)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def hide_modules(names: list[str]) -> str:
    """A directory that, first on ``PYTHONPATH``, makes ``import NAME`` fail for ``names``
    (uvicorn then falls back to h11 and asyncio, as in a tree without httptools/uvloop)."""
    shim = tempfile.mkdtemp(prefix="ingest-cpu-hide-")
    for name in names:
        Path(shim, f"{name}.py").write_text(f"raise ImportError('{name} hidden by bench/ingest_cpu.py')\n")
    return shim


def one_round(
    tree: str | None, requests: list[bytes], spans_per_request: int, senders: int
) -> dict[str, float]:
    """Start a collector from ``tree`` (None: this environment's eventscope; several
    directories joined by os.pathsep go first on PYTHONPATH), post every request, stop it;
    CPU µs per span and spans/s of the measured requests."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from eventscope.tracer.cli.main import main; sys.exit(main())",
            "--log-level",
            "warning",
            "collect",
            "--db",
            str(Path(tmp) / "cpu.duckdb"),
            "--listen",
            f"127.0.0.1:{port}",
        ]
        collector = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(port)
            _send(port, requests[:_WARMUP_REQUESTS], senders)
            measured = requests[_WARMUP_REQUESTS:]
            c0, t0 = tree_cpu_s(collector.pid), time.monotonic()
            failures = _send(port, measured, senders)
            c1, t1 = tree_cpu_s(collector.pid), time.monotonic()
        finally:
            collector.terminate()
            try:
                collector.wait(60)
            except subprocess.TimeoutExpired:
                collector.kill()
    spans = (len(measured) - len(failures)) * spans_per_request
    return {
        "cpu_us_per_span": (c1 - c0) / max(spans, 1) * 1e6,
        "spans_per_s": spans / (t1 - t0),
        "cores": (c1 - c0) / (t1 - t0),
        "failures": len(failures),
    }


_PARTS = """
import os, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from ingest_cpu import build_requests
from eventscope.tracer.ingest.normaliser import normalise_protobuf
from eventscope.tracer.ingest.recorder import Recorder
from eventscope.tracer.store.batches import Resolution
from eventscope.tracer.store.duckdb_store import Store
groups, warmup = int(sys.argv[2]), 5
requests = build_requests(3 * (groups + warmup), 512)
with tempfile.TemporaryDirectory() as tmp:
    recorder = Recorder(Store.open(os.path.join(tmp, "parts.duckdb")))
    parts = {"decode": [], "lineage": [], "append": []}
    for g in range(groups + warmup):
        t0 = time.process_time()
        batches = [normalise_protobuf(body) for body in requests[3 * g : 3 * g + 3]]
        t1 = time.process_time()
        resolution = Resolution()
        for batch in batches:
            resolution.merge(recorder.lineage.apply(batch))
        t2 = time.process_time()
        recorder.store.append(batches, resolution)
        t3 = time.process_time()
        if g >= warmup:
            for name, spent in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[name].append(spent / 1536 * 1e6)
    recorder.store.close()
print(" ".join(f"{n}={min(v):.2f},{statistics.median(v):.2f}" for n, v in parts.items()))
"""


def parts_round(tree: str | None, groups: int) -> dict[str, tuple[float, float]]:
    """(min, median) µs CPU per span of each part, in a fresh process importing ``tree``."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [sys.executable, "-c", _PARTS, here, str(groups)], env=env, check=True, capture_output=True, text=True
    ).stdout.split()[-3:]
    figures = {}
    for item in out:
        name, values = item.split("=")
        low, mid = values.split(",")
        figures[name] = (float(low), float(mid))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", metavar="DIR", help="a directory holding another tree's eventscope/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400, help="requests per round (default 400)")
    parser.add_argument("--spans", type=int, default=512, help="spans per request (default 512)")
    parser.add_argument("--senders", type=int, default=3)
    parser.add_argument(
        "--baseline-hide",
        metavar="MODULES",
        default="",
        help="comma-separated modules the baseline cannot import (e.g. httptools,uvloop: main's deps)",
    )
    parser.add_argument(
        "--parts", type=int, metavar="GROUPS", help="measure decode / lineage / append in process instead"
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    requests = [] if args.parts else build_requests(args.requests + _WARMUP_REQUESTS, args.spans)
    trees: list[tuple[str, str | None]] = [("this tree", None)]
    if args.baseline:
        path = str(Path(args.baseline).resolve())
        if args.baseline_hide:
            path = hide_modules(args.baseline_hide.split(",")) + os.pathsep + path
        trees.append(("baseline", path))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        order = trees if r % 2 == 0 else trees[::-1]
        for name, tree in order:
            if args.parts:
                parts = parts_round(tree, args.parts)
                results[name].append(
                    {f"{k} {m}": v[i] for k, v in parts.items() for i, m in enumerate(("min", "med"))}
                )
                print(
                    f"round {r + 1} {name:>9}: "
                    + ", ".join(f"{k} {low:.1f} (median {mid:.1f})" for k, (low, mid) in parts.items())
                    + f" µs CPU/span, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                continue
            figures = one_round(tree, requests, args.spans, args.senders)
            results[name].append(figures)
            print(
                f"round {r + 1} {name:>9}: {figures['cpu_us_per_span']:6.1f} µs CPU/span, "
                f"{figures['spans_per_s']:8,.0f} spans/s, {figures['cores']:.2f} cores, "
                f"{figures['failures']:.0f} failed, load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")
    for name, rows in results.items():
        med: dict[str, Any] = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        if args.parts:
            print(f"median {name:>9}: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()) + " µs CPU/span")
            continue
        print(
            f"median {name:>9}: {med['cpu_us_per_span']:6.1f} µs CPU/span, "
            f"{med['spans_per_s']:8,.0f} spans/s, {med['cores']:.2f} cores"
        )


if __name__ == "__main__":
    main()
