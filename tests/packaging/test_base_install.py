"""What a service installs: the wheel alone, its base dependencies, in a fresh virtualenv.

Builds the wheel from this checkout, installs it (no extra) into a new virtualenv, and runs
the ``eventscope`` command there: ``--help`` works, every command that needs an extra says
which one in one line with exit status 2, what needs no extra runs, and the collector's
modules are really absent (so the test cannot pass by borrowing them).
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("eventscope-*.whl")
    return built


@pytest.fixture(scope="module")
def base(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv with the wheel and its base dependencies only; yields its bin directory."""
    home = tmp_path_factory.mktemp("base-venv")
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    yield home / "bin"


def _eventscope(bin_dir: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "eventscope"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_the_wheel_carries_types_license_sql_and_entry_points(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "eventscope/tracer/py.typed" in names and "eventscope/adapters/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert any(n.startswith("eventscope/tracer/store/sql/schema_v") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt")))
    assert b"eventscope_pika = eventscope.adapters.instrumentor:EventscopePikaInstrumentor" in entry_points


def test_base_install_has_no_collector_modules(base: Path) -> None:
    probe = subprocess.run(
        [
            str(base / "python"),
            "-c",
            "import importlib.util as u, eventscope.tracer, eventscope.adapters.pika; "
            "print([m for m in ('duckdb', 'pyarrow', 'streamlit', 'httpx') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_help_and_version_work_on_the_base_install(base: Path) -> None:
    help_ = _eventscope(base, "--help")
    assert help_.returncode == 0, help_.stderr
    for command in ("collect", "sql", "orphans", "chain", "alerts", "rules", "dashboard", "demo", "doctor"):
        assert command in help_.stdout
    assert _eventscope(base, "--version").stdout.startswith("eventscope ")
    assert _eventscope(base, "collect", "--help").returncode == 0


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["collect"], "collector"),
        (["collect", "--db", "x.duckdb", "--grace", "3"], "collector"),
        (["sql", "SELECT 1"], "collector"),
        (["orphans"], "collector"),
        (["chain", "E1"], "collector"),
        (["alerts", "--firing"], "collector"),
        (["dashboard"], "dashboard"),
        (["demo", "--duration", "5"], "demo"),
    ],
)
def test_a_command_that_needs_an_extra_says_which(
    base: Path, tmp_path: Path, argv: list[str], extra: str
) -> None:
    proc = _eventscope(base, *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"eventscope {argv[0]}: needs the {extra} extra")
    assert lines[0].endswith(f"pip install 'eventscope[{extra}]'")
    assert not (tmp_path / "x.duckdb").exists()


def test_what_needs_no_extra_runs(base: Path, tmp_path: Path) -> None:
    rules = tmp_path / "eventscope.toml"
    rules.write_text('[alerts]\ninterval = "5s"\n')
    checked = _eventscope(base, "rules", "check", str(rules))
    assert checked.returncode == 0, checked.stderr
    doctor = _eventscope(base, "doctor")
    assert doctor.returncode == 0 and "pip install 'eventscope[collector]'" in doctor.stdout
