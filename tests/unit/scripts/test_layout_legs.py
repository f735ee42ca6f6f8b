"""The two legs of `make test` (scripts/pytest_legs.py), the per-layout runs of the benchmarks
(scripts/each_layout.py), what the TimescaleDB leg repeats (tests/support/layouts.py) and
stack.py's TimescaleDB decisions, without any server: fake commands record what they were given."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.layouts import DB_LAYOUT, touches_layout

REPO = Path(__file__).resolve().parents[3]
TESTS = REPO / "tests"


def script(name: str) -> ModuleType:
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tokentide_script_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look themselves up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that appends its argv and layout variables to a log, and exits with the
    code named by FAKE_EXIT_<layout> (0 by default)."""
    log = tmp_path / "calls.jsonl"
    program = tmp_path / "fake-pytest"
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "layout = os.environ.get('TOKENTIDE_DB_LAYOUT', '')\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'layout': layout,"
        " 'db': os.environ.get('DATABASE_URL')}) + '\\n')\n"
        "sys.exit(int(os.environ.get('FAKE_EXIT_' + layout, '0')))\n"
    )
    program.chmod(0o755)
    return program, log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DATABASE_URL", "postgresql://plain")
    monkeypatch.setenv("TIMESCALE_DATABASE_URL", "postgresql://timescale")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TOKENTIDE_DB_LAYOUT", raising=False)
    return monkeypatch


def test_the_plain_leg_runs_everything_then_the_timescale_leg_the_db_layout_tests(
    fake: tuple[Path, Path], env: pytest.MonkeyPatch
) -> None:
    program, log = fake
    assert script("pytest_legs").main([str(program), "tests/integration", "-x"]) == 0
    assert calls(log) == [
        {"argv": ["tests/integration", "-x"], "layout": "plain", "db": "postgresql://plain"},
        {
            "argv": ["-m", "db_layout", "tests/integration", "-x"],
            "layout": "timescale",
            "db": "postgresql://timescale",
        },
    ]


@pytest.mark.parametrize(
    ("plain_exit", "timescale_exit", "code"),
    [("0", "5", 0), ("0", "1", 1), ("2", "0", 2), ("3", "1", 3)],
    ids=["no-db-test-selected-passes", "timescale-fails", "plain-fails", "first-failure-wins"],
)
def test_both_legs_always_run_and_the_first_failure_decides(
    fake: tuple[Path, Path], env: pytest.MonkeyPatch, plain_exit: str, timescale_exit: str, code: int
) -> None:
    program, log = fake
    env.setenv("FAKE_EXIT_plain", plain_exit)
    env.setenv("FAKE_EXIT_timescale", timescale_exit)
    assert script("pytest_legs").main([str(program)]) == code
    assert [c["layout"] for c in calls(log)] == ["plain", "timescale"]


@pytest.mark.parametrize(("ci", "code"), [("true", 1), ("", 0)])
def test_without_timescaledb_the_leg_is_not_run_which_ci_refuses(
    fake: tuple[Path, Path], env: pytest.MonkeyPatch, ci: str, code: int
) -> None:
    program, log = fake
    env.delenv("TIMESCALE_DATABASE_URL")
    env.setenv("CI", ci)
    assert script("pytest_legs").main([str(program)]) == code
    assert [c["layout"] for c in calls(log)] == ["plain"]
    assert script("each_layout").main([str(program)]) == code


def test_each_layout_runs_the_command_once_per_layout(
    fake: tuple[Path, Path], env: pytest.MonkeyPatch
) -> None:
    program, log = fake
    env.setenv("FAKE_EXIT_timescale", "4")
    assert script("each_layout").main([str(program), "--requests", "3"]) == 4
    assert calls(log) == [
        {"argv": ["--requests", "3"], "layout": "plain", "db": "postgresql://plain"},
        {"argv": ["--requests", "3"], "layout": "timescale", "db": "postgresql://timescale"},
    ]


def test_every_entry_of_db_layout_exists_and_marks_what_it_names() -> None:
    for entry in DB_LAYOUT:
        assert (TESTS / entry).is_dir() if entry.endswith("/") else (TESTS / entry).is_file(), entry
    assert touches_layout("e2e/test_web_ui.py")
    assert touches_layout("integration/test_sink_postgres.py")
    assert not touches_layout("integration/test_layouts_agree.py")  # holds both layouts itself
    assert not touches_layout("integration/test_ingest_kafka.py")
    assert not touches_layout("unit/sinks/test_batch.py")


def test_the_timescale_cluster_is_required_only_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = script("stack")
    monkeypatch.delenv("TIMESCALE_DATABASE_URL", raising=False)
    monkeypatch.setattr(stack, "find_timescaledb", lambda: None)
    monkeypatch.setenv("CI", "")
    assert stack._ensure_timescale_postgres([]) == (None, None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(stack.StackError, match="TIMESCALEDB_SOURCE"):
        stack._ensure_timescale_postgres([])


def test_the_clusters_have_their_own_ports_and_data(monkeypatch: pytest.MonkeyPatch) -> None:
    stack = script("stack")
    monkeypatch.delenv("TOKENTIDE_PG_PORT", raising=False)
    monkeypatch.setenv("TOKENTIDE_TIMESCALE_PG_PORT", "15433")
    assert stack.PLAIN_PG.url.endswith("@127.0.0.1:5432/tokentide")
    assert stack.TIMESCALE_PG.url.endswith("@127.0.0.1:15433/tokentide")
    assert stack.PLAIN_PG.data != stack.TIMESCALE_PG.data
    assert "shared_preload_libraries=timescaledb" in stack.TIMESCALEDB_SETTINGS


def test_a_failed_build_is_an_error_and_no_source_means_no_timescaledb(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack = script("stack")
    monkeypatch.setattr(stack, "_system_pg_bin_dirs", dict)
    installer = tmp_path / "install.sh"
    monkeypatch.setattr(stack, "TIMESCALEDB_INSTALLER", installer)
    monkeypatch.delenv("TIMESCALEDB_SOURCE", raising=False)
    installer.write_text("exit 2\n")  # nothing built, nothing to build from
    assert stack.find_timescaledb() is None
    monkeypatch.setenv("TIMESCALEDB_SOURCE", str(tmp_path / "timescaledb-9.9.9.tar.gz"))
    installer.write_text("exit 1\n")
    with pytest.raises(stack.StackError, match="failed"):
        stack.find_timescaledb()
    installer.write_text("echo building >&2; echo /opt/pg/bin\n")
    found = stack.find_timescaledb()
    assert found is not None
    assert found.bin_dir == Path("/opt/pg/bin")
    assert "timescaledb-9.9.9.tar.gz" in found.origin
