"""The ``eventscope`` command: dispatch, one-line errors, EVENTSCOPE_* and ./eventscope.toml defaults."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from eventscope.tracer.cli import main as cli
from eventscope.tracer.cli import options

# Every test runs in its own directory: no eventscope.toml of the checkout is picked up.
pytestmark = pytest.mark.usefixtures("workdir")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("EVENTSCOPE_") and name != "EVENTSCOPE_TEST_VHOST":
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """An eventscope database file, closed (a read command opens it read-only)."""
    from eventscope.tracer.store.duckdb_store import Store

    path = tmp_path / "events.duckdb"
    Store.open(path, grace_s=0).close()
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None) -> Any:
    status = cli.main(list(argv), environ=env or {})
    out, err = capsys.readouterr()
    return status, out, err


def _parse(*argv: str, env: dict[str, str] | None = None) -> argparse.Namespace:
    return cli._parse(cli.build_parser(), list(argv), env or {})


# -- dispatch ------------------------------------------------------------------------------------
def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"eventscope {version('eventscope')}"


def test_every_command_module_registers_a_handler() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) >= {"collect", "sql", "orphans", "chain", "alerts", "rules"}
    assert {"dashboard", "demo", "doctor"} <= set(commands.choices)
    for name in cli.COMMANDS:
        assert callable(importlib.import_module(f"eventscope.tracer.cli.{name}").register)
    for name, sub in commands.choices.items():
        if name == "rules":
            continue
        assert callable(sub.get_default("handler")), name


@pytest.mark.parametrize(
    "command", ["collect", "sql", "orphans", "chain", "alerts", "dashboard", "demo", "doctor"]
)
def test_help_of_every_command(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: eventscope {command}" in capsys.readouterr().out


def test_a_missing_extra_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "duckdb" else real(n, *a))
    status, out, err = _run(capsys, "collect", "--db", "x.duckdb")
    assert status == 2 and out == ""
    assert err == (
        "eventscope collect: needs the collector extra (duckdb is not installed): "
        "pip install 'eventscope[collector]'\n"
    )
    status, _, err = _run(capsys, "sql", "SELECT 1")
    assert status == 2 and "pip install 'eventscope[collector]'" in err
    assert not Path("x.duckdb").exists()


def test_doctor_reports_versions_and_extras(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "doctor")
    assert status == 0
    assert f"opentelemetry-sdk {version('opentelemetry-sdk')}" in out
    assert "extra collector: installed" in out


# -- bad input: one line, no traceback -----------------------------------------------------------
def test_not_a_duckdb_file(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    (workdir / "notes.txt").write_text("hello\n")
    status, _, err = _run(capsys, "sql", "--db", "notes.txt", "SELECT 1")
    assert status == 1
    assert err == (
        "eventscope sql: notes.txt is not a DuckDB file: --db takes the file "
        "`eventscope collect --db` wrote\n"
    )


def test_a_duckdb_file_that_is_not_eventscopes(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    import duckdb

    connection = duckdb.connect(str(workdir / "other.duckdb"))
    connection.execute("CREATE TABLE t (a INTEGER)")
    connection.close()
    for command in (["sql", "--db", "other.duckdb", "SELECT * FROM t"], ["orphans", "--db", "other.duckdb"]):
        status, _, err = _run(capsys, *command)
        assert status == 1 and err.count("\n") == 1
        assert "is a DuckDB file but not an eventscope database" in err


def test_a_missing_database_and_a_directory(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    status, _, err = _run(capsys, "chain", "--db", "nope.duckdb", "E1")
    assert (status, err) == (
        1,
        "eventscope chain: no eventscope database at nope.duckdb: check the path, or read a running "
        "collector with --api URL\n",
    )
    status, _, err = _run(capsys, "sql", "--db", str(workdir), "SELECT 1")
    assert status == 1 and "is a directory" in err


def test_an_unwritable_output_is_refused_before_the_query(
    capsys: pytest.CaptureFixture[str], database: Path, workdir: Path
) -> None:
    missing_dir = workdir / "no" / "such" / "out.csv"
    status, out, err = _run(capsys, "sql", "--db", str(database), "-o", str(missing_dir), "SELECT 1 AS a")
    assert status == 1 and out == "" and err.count("\n") == 1
    assert "does not exist" in err
    status, _, err = _run(
        capsys, "sql", "--db", str(database), "--format", "parquet", "-o", str(workdir), "SELECT 1 AS a"
    )
    assert status == 1 and "is a directory" in err
    status, _, err = _run(capsys, "sql", "--db", str(database), "--format", "parquet", "SELECT 1 AS a")
    assert status == 2 and "add --output FILE" in err


def test_a_good_query_still_works(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    status, out, err = _run(capsys, "sql", "--db", str(database), "--format", "json", "SELECT 1 AS a")
    assert (status, json.loads(out), err) == (0, [{"a": 1}], "")


def test_no_traceback_from_the_installed_command(database: Path, workdir: Path) -> None:
    """The same cases through a real process: stderr is the one line, nothing more."""
    (workdir / "notes.txt").write_text("hello\n")
    cases = [
        ["sql", "--db", "notes.txt", "SELECT 1"],
        ["sql", "--db", str(database), "-o", "/proc/eventscope/out.csv", "SELECT 1"],
        ["sql", "--db", str(database), "SELECT * FROM no_such_table"],
        ["collect", "--retention", "soon"],
    ]
    for argv in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "eventscope.tracer.cli.main", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=workdir,
        )
        assert proc.returncode in (1, 2), (argv, proc.stderr)
        assert "Traceback" not in proc.stderr, (argv, proc.stderr)
        assert proc.stderr.strip(), argv


# -- defaults: flags > environment > eventscope.toml ---------------------------------------------
def test_every_collect_flag_reads_its_variable() -> None:
    env = {
        "EVENTSCOPE_DB": "env.duckdb",
        "EVENTSCOPE_LISTEN": "0.0.0.0:9999",
        "EVENTSCOPE_GRACE": "3",
        "EVENTSCOPE_RETENTION": "7d",
        "EVENTSCOPE_MAX_BODY": "1MiB",
        "EVENTSCOPE_FIREHOSE": "true",
        "EVENTSCOPE_TRACE_ON": "false",
        "EVENTSCOPE_DLX": "dlx.a, dlx.b",
        "EVENTSCOPE_AMQP_URL": "amqp://u:p@h/v",
    }
    args = _parse("collect", env=env)
    assert (args.db, args.listen, args.grace, args.retention) == (
        "env.duckdb",
        ("0.0.0.0", 9999),
        3.0,
        604800.0,
    )
    assert (args.max_body, args.firehose, args.trace_on) == (2**20, True, False)
    assert args.dlx == ["dlx.a", "dlx.b"]
    assert args.amqp_url == "amqp://u:p@h/v"
    flagged = _parse("collect", "--db", "flag.duckdb", "--dlx", "mine", "--grace", "1", env=env)
    assert (flagged.db, flagged.dlx, flagged.grace) == ("flag.duckdb", ["mine"], 1.0)


def test_a_bad_variable_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(capsys, "collect", env={"EVENTSCOPE_GRACE": "soon"})
    assert status == 2
    assert err == "eventscope: $EVENTSCOPE_GRACE (for --grace): not a number of seconds: 'soon'\n"


def test_read_commands_source_flag_beats_the_other_variable() -> None:
    env = {"EVENTSCOPE_DB": "env.duckdb", "EVENTSCOPE_TOKEN": "t0"}
    assert (_parse("sql", "SELECT 1", env=env).db, _parse("sql", "SELECT 1", env=env).token) == (
        "env.duckdb",
        "t0",
    )
    args = _parse("sql", "--api", "http://c:4318", "SELECT 1", env=env)
    assert (args.db, args.api) == (None, "http://c:4318")
    assert _parse("orphans", env={"EVENTSCOPE_API": "http://a:1"}).api == "http://a:1"


def test_eventscope_toml_in_the_working_directory(workdir: Path) -> None:
    (workdir / "eventscope.toml").write_text(
        '[cli]\ndb = "file.duckdb"\ntoken = "t1"\n\n[cli.collect]\ngrace = 7\nmax-body = "2MiB"\n'
        'listen = "127.0.0.1:5000"\n\n[cli.sql]\nformat = "json"\n'
    )
    collect = _parse("collect")
    assert (collect.db, collect.grace, collect.max_body, collect.listen) == (
        "file.duckdb",
        7.0,
        2 * 2**20,
        ("127.0.0.1", 5000),
    )
    assert _parse("collect", env={"EVENTSCOPE_GRACE": "2"}).grace == 2.0  # environment beats the file
    assert _parse("collect", "--grace", "1", env={"EVENTSCOPE_GRACE": "2"}).grace == 1.0  # flags beat both
    sql = _parse("sql", "SELECT 1")
    assert (sql.db, sql.format, sql.token) == ("file.duckdb", "json", "t1")


def test_a_bad_eventscope_toml_is_one_line(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    (workdir / "eventscope.toml").write_text("[cli.collect]\ngrace = [1, 2]\n")
    status, _, err = _run(capsys, "collect")
    assert status == 2 and err.count("\n") == 1 and "grace" in err
    (workdir / "eventscope.toml").write_text("[cli.collect]\ngrase = 1\n")
    status, _, err = _run(capsys, "collect")
    assert status == 2
    assert err == "eventscope: eventscope.toml: [cli.collect] grase: collect has no such option\n"
    (workdir / "eventscope.toml").write_text("[cli\n")
    status, _, err = _run(capsys, "doctor")
    assert status == 1 and "eventscope.toml" in err and err.count("\n") == 1


def test_collect_validates_the_alerts_of_the_toml_it_finds(workdir: Path) -> None:
    from eventscope.tracer.cli import collect

    (workdir / "eventscope.toml").write_text('[cli]\ndb = "x.duckdb"\n\n[alerts]\ninterval = "soon"\n')
    with pytest.raises(options.CliError, match="nothing started"):
        collect._alerts_config(_parse("collect"))
    (workdir / "eventscope.toml").write_text('[alerts]\ninterval = "5s"\n')
    assert collect._alerts_config(_parse("collect")) is not None
    (workdir / "eventscope.toml").write_text('[cli]\ndb = "x.duckdb"\n')
    assert collect._alerts_config(_parse("collect")) is None


# -- the one duration grammar --------------------------------------------------------------------
def test_one_duration_grammar_for_the_command_line_and_the_rules() -> None:
    from eventscope.tracer import durations
    from eventscope.tracer.alerts import rules

    assert rules.parse_duration is durations.parse_duration
    assert [options.duration(v) for v in ("90", "90s", "500ms", "15m", "12h", "7d", "2w")] == [
        90.0,
        90.0,
        0.5,
        900.0,
        43200.0,
        604800.0,
        1209600.0,
    ]
    with pytest.raises(ValueError):
        durations.parse_duration("90")  # a configuration file wants a unit
    for bad in ("-1s", "soon", "1y", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            options.duration(bad)


def test_main_never_imports_the_demo_runner_for_other_commands() -> None:
    """The demo's options are parsed when it runs: --help and the other commands stay light."""
    probe = (
        "import sys; from eventscope.tracer.cli import main; main.build_parser(lazy=True); "
        "print('eventscope.demo.runner' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    full = probe.replace("lazy=True", "lazy=False")
    out = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr  # the complete parser (tests, tools) has them
