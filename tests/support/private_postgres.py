"""A PostgreSQL cluster of a test's own, in a temporary directory, that the test may stop and
start (fault tests). The shared PostgreSQL of the local stack is never stopped.

Uses the same server binaries as scripts/stack.py (Debian's /usr/lib/postgresql/<major>/bin,
else pg_ctl on PATH); as root, runs them as the ``postgres`` OS user (initdb refuses root). In
the suite's TimescaleDB leg (``TOKENTIDE_DB_LAYOUT=timescale``) they are the binaries with
TimescaleDB that ``stack.py run --timescale`` names in ``TIMESCALEDB_PG_BIN``, started with the
stack's TimescaleDB settings, so a database migrated there gets the TimescaleDB layout too.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

PG_OS_USER = "postgres"
_STACK_PATH = Path(__file__).resolve().parents[2] / "scripts" / "stack.py"


def _timescale_settings() -> tuple[str, ...]:
    """scripts/stack.py's server settings of a cluster with TimescaleDB (one definition)."""
    spec = importlib.util.spec_from_file_location("tokentide_stack", _STACK_PATH)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {_STACK_PATH}")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses in the script look themselves up here
        spec.loader.exec_module(module)
    return tuple(module.TIMESCALEDB_SETTINGS)


def timescale_leg() -> bool:
    return os.environ.get("TOKENTIDE_DB_LAYOUT", "").strip().lower() == "timescale"


def _bin_dir() -> Path:
    if timescale_leg():
        found = os.environ.get("TIMESCALEDB_PG_BIN", "").strip()
        if not found or not (Path(found) / "pg_ctl").exists():
            pytest.fail(
                "TOKENTIDE_DB_LAYOUT=timescale: a private cluster needs PostgreSQL binaries with "
                "TimescaleDB in TIMESCALEDB_PG_BIN (`stack.py run --timescale` sets it when it "
                "starts the TimescaleDB server itself)"
            )
        return Path(found)
    installed = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if installed:
        return installed[-1]
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        pytest.fail("pg_ctl/initdb not found: run `bash scripts/install-system-deps.sh` (or `make test`)")
    return Path(pg_ctl).parent


class PrivatePostgres:
    """``start()``, ``stop()`` (fast shutdown: sessions are cut), ``cleanup()``; ``dsn(db)``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="tokentide-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            owner = pwd.getpwnam(PG_OS_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.root.chmod(0o755)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-locale", "--auth=trust"
        )

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self._as_root:
            argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}\n{log}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        if timescale_leg():
            options += "".join(f" -c {setting}" for setting in _timescale_settings())
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def cleanup(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
