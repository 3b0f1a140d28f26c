"""The house's rules, checked on the source: imports run one way and never in a circle.

docs/architecture.md draws the layers; this test is what keeps the drawing true. It reads
every module with ``ast`` (nothing is imported), so a rule broken by a lazy import inside a
function is caught as well as one at the top of a file. Imports under ``if TYPE_CHECKING:``
are annotations, not dependencies, and are skipped.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "tracer": "eventscope.tracer",
    "adapters": "eventscope.adapters",
    "dashboard": "eventscope.dashboard",
}
FOLDERS["demo"] = "eventscope.demo"

# What each part of the collector and the SDK may import of eventscope (prefixes).
ALLOWED: dict[str, tuple[str, ...]] = {
    "eventscope.tracer.contract": (),
    "eventscope.tracer.metrics": (),
    "eventscope.tracer.durations": (),
    "eventscope.tracer.version": (),
    "eventscope.tracer.sdk": (
        "eventscope.tracer.contract",
        "eventscope.tracer.sdk",
        "eventscope.tracer.version",
    ),
    "eventscope.tracer.store": (
        "eventscope.tracer.contract",
        "eventscope.tracer.metrics",
        "eventscope.tracer.store",
    ),
    "eventscope.tracer.ingest": (
        "eventscope.tracer.contract",
        "eventscope.tracer.metrics",
        "eventscope.tracer.ingest",
        "eventscope.tracer.store",
    ),
    "eventscope.tracer.query": (
        "eventscope.tracer.contract",
        "eventscope.tracer.query",
        "eventscope.tracer.store",
    ),
    "eventscope.adapters": (
        "eventscope.tracer.contract",
        "eventscope.tracer.sdk",
        "eventscope.tracer.version",
        "eventscope.adapters",
    ),
}
# Collector layers never load the OpenTelemetry SDK (nor eventscope's SDK side); services
# never load DuckDB or pyarrow.
COLLECTOR = tuple(
    f"eventscope.tracer.{part}"
    for part in ("ingest", "broker", "store", "query", "alerts", "server", "contracts")
)
NO_SDK = ("opentelemetry.sdk", "opentelemetry.exporter", "eventscope.tracer.sdk")
SERVICE_SIDE = (
    "eventscope.tracer.sdk",
    "eventscope.tracer.contract",
    "eventscope.tracer.version",
    "eventscope.adapters",
)
NO_STORE = ("duckdb", "pyarrow", "starlette", "uvicorn")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base]) if base else ".".join(anchor)
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in MODULES else base)
    return targets


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(imports made when the module loads, imports made later inside functions)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    at_load: set[str] = set()
    later: set[str] = set()

    def walk(nodes: list[ast.stmt], inside_function: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                walk(node.orelse, inside_function)
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                (later if inside_function else at_load).update(
                    _resolve(module, node, path.name == "__init__.py")
                )
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    nested = inside_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    walk([c for c in children if isinstance(c, ast.stmt | ast.ExceptHandler)], nested)

    walk(tree.body, False)
    return at_load, later


GRAPH = {module: _imports(module) for module in MODULES}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    """Is ``module`` one of ``prefixes`` or inside one of them (``contract`` is not ``contracts``)?"""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _ours(target: str) -> str | None:
    """The module of ours that ``target`` names (itself or the package that holds it)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_the_walk_sees_the_imports_it_must() -> None:
    """Guards the test itself: a walk that found nothing would pass every rule."""
    at_load, _ = GRAPH["eventscope.tracer.server.app"]
    assert "eventscope.tracer.store.duckdb_store" in at_load
    _, later = GRAPH["eventscope.tracer.server.app"]
    assert "eventscope.tracer.ingest.grpc" in later  # grpcio is imported only when asked for
    assert len(MODULES) > 60


def test_no_import_cycles() -> None:
    edges = {
        module: {ours for target in at_load if (ours := _ours(target)) and ours != module}
        for module, (at_load, _) in GRAPH.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif state.get(target) is None:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if state.get(module) is None:
            visit(module)
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(layer: str) -> None:
    broken = []
    for module, (at_load, later) in GRAPH.items():
        if module != layer and not module.startswith(layer + "."):
            continue
        for target in sorted(at_load | later):
            ours = target.startswith("eventscope.") and target != "eventscope.tracer"
            if ours and not any(target == a or target.startswith(a + ".") for a in ALLOWED[layer]):
                broken.append(f"{module} imports {target}")
    assert broken == []


def test_collector_modules_never_import_the_sdk() -> None:
    broken = [
        f"{module} imports {target}"
        for module, (at_load, later) in GRAPH.items()
        if _within(module, COLLECTOR)
        for target in sorted(at_load | later)
        if _within(target, NO_SDK) or target == "eventscope.tracer"
    ]
    assert broken == []


def test_the_service_side_never_imports_the_store() -> None:
    broken = [
        f"{module} imports {target}"
        for module, (at_load, later) in GRAPH.items()
        if _within(module, SERVICE_SIDE)
        for target in sorted(at_load | later)
        if target.split(".")[0] in NO_STORE or _within(target, COLLECTOR)
    ]
    assert broken == []


def test_what_loads_at_run_time_agrees() -> None:
    """The same two rules, asked of the interpreter: what importing each side really loads."""
    probe = (
        "import sys\n"
        "import eventscope.tracer.server.app, eventscope.tracer.query.questions\n"
        "sdk = sorted(m for m in sys.modules\n"
        "             if m.startswith(('opentelemetry.sdk', 'eventscope.tracer.sdk')))\n"
        "assert not sdk, sdk\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    probe = (
        "import sys\n"
        "import eventscope.adapters.pika\n"
        "from eventscope.tracer import setup\n"
        "store = sorted(m for m in sys.modules if m.split('.')[0] in ('duckdb', 'pyarrow'))\n"
        "assert not store, store\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_tracer_keeps_a_handful_of_flat_modules_and_no_file_is_huge() -> None:
    flat = sorted(path.name for path in (ROOT / "tracer").glob("*.py"))
    # the contract, and the small leaf modules every layer may use (nothing of eventscope below them)
    assert flat == ["__init__.py", "contract.py", "durations.py", "metrics.py", "testing.py", "version.py"]
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in MODULES.values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 800
    }
    assert too_long == {}


def test_the_docs_name_every_sub_package() -> None:
    packages = sorted(p.name for p in (ROOT / "tracer").iterdir() if (p / "__init__.py").exists())
    assert packages, "no sub-packages found"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [
        f"{doc}: tracer/{name}/"
        for doc, text in (("README.md", layout), ("docs/architecture.md", architecture))
        for name in packages
        if f"{name}/" not in text
    ]
    assert missing == []
