#!/usr/bin/env python3
"""Run the test suite on both storage layouts: `make test` runs this under `stack.py run --timescale`.

    python3 scripts/pytest_legs.py .venv/bin/pytest [PYTEST ARGS...]

1. **plain leg**: pytest with the given arguments on the plain PostgreSQL of DATABASE_URL,
   every database it migrates laid out plain (TOKENTIDE_DB_LAYOUT=plain). The tests that need
   both servers at once (tests/integration/test_layouts_agree.py) run here, with
   TIMESCALE_DATABASE_URL.
2. **timescale leg**: pytest again with ``-m db_layout`` added, i.e. only the tests that touch
   the database layout (storage, sink, dashboard, Grafana, usage exporter, end to end through
   the database), on the TimescaleDB server of TIMESCALE_DATABASE_URL (it becomes their
   DATABASE_URL), every database laid out as TimescaleDB (TOKENTIDE_DB_LAYOUT=timescale, which
   refuses to migrate without the extension). "No test selected" (exit 5, e.g. for
   ``PYTEST_ARGS=tests/unit``) counts as passed.

Without TIMESCALE_DATABASE_URL the timescale leg cannot run: under CI=true that fails the run,
elsewhere it is reported as not run. Both legs always run; the exit code is the first failing
leg's (0 when both pass). Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

TRUTHY = frozenset({"1", "true", "yes", "on", "t", "y"})
#: The marker of the tests the timescale leg repeats (declared in pyproject.toml).
MARKER = "db_layout"
NO_TESTS_COLLECTED = 5


def _say(message: str) -> None:
    print(f"pytest_legs: {message}", flush=True)


def legs(pytest: Sequence[str], env: Mapping[str, str]) -> list[tuple[str, list[str], dict[str, str] | None]]:
    """(name, argv, environment or None when the leg cannot run) of each leg."""
    plain = {**env, "TOKENTIDE_DB_LAYOUT": "plain"}
    timescale_url = env.get("TIMESCALE_DATABASE_URL", "").strip()
    timescale = None
    if timescale_url:
        timescale = {**env, "DATABASE_URL": timescale_url, "TOKENTIDE_DB_LAYOUT": "timescale"}
    command, args = list(pytest[:1]), list(pytest[1:])
    return [
        ("plain", [*command, *args], plain),
        ("timescale", [*command, "-m", MARKER, *args], timescale),
    ]


def main(argv: Sequence[str]) -> int:
    if not argv:
        _say("usage: pytest_legs.py PYTEST [ARGS...]")
        return 2
    ci = os.environ.get("CI", "").strip().lower() in TRUTHY
    results: list[tuple[str, str, int]] = []
    for name, command, env in legs(argv, os.environ):
        if env is None:
            why = "no TimescaleDB (TIMESCALE_DATABASE_URL is not set)"
            results.append((name, f"not run: {why}", 1 if ci else 0))
            continue
        _say(f"{name} leg: {' '.join(command)}")
        started = time.monotonic()
        code = subprocess.call(command, env=env)
        took = f"{time.monotonic() - started:.0f} s"
        if name == "timescale" and code == NO_TESTS_COLLECTED:
            results.append((name, f"no test selected ({took})", 0))
        else:
            results.append((name, f"{'passed' if code == 0 else f'FAILED (exit {code})'} ({took})", code))
    for name, outcome, code in results:
        _say(f"{name} leg: {outcome}{'  <- CI=true requires it' if code and 'not run' in outcome else ''}")
    return next((code for _, _, code in results if code), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
