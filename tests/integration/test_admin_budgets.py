"""``tokentide admin budget set|list|delete`` as a process, on a real migrated PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

TOKENTIDE = Path(sys.executable).with_name("tokentide")
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(database: str, tmp_path: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")} | {"DATABASE_URL": database}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TOKENTIDE), "admin", "budget", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def test_set_change_list_and_delete_budgets(cli: Cli, database: str) -> None:
    team = cli(
        "set",
        "--tenant",
        "default",
        "--scope",
        "team",
        "--value",
        "platform",
        "--period",
        "day",
        "--amount-usd",
        "200",
    )
    assert team.returncode == 0, team.stderr
    [budget_id] = team.stdout.split()
    assert re.fullmatch(r"bg_[0-9a-f]{12}", budget_id)
    assert "team platform of tenant 'default', 200.00 USD per day" in team.stderr
    # Setting the same budget again changes its amount, keeps its id.
    again = cli(
        "set",
        "--tenant",
        "default",
        "--scope",
        "team",
        "--value",
        "platform",
        "--period",
        "day",
        "--amount-usd",
        "250.5",
    )
    assert again.stdout.split() == [budget_id]
    whole = cli(
        "set", "--tenant", "default", "--scope", "tenant", "--period", "month", "--amount-usd", "5000"
    )
    assert whole.returncode == 0, whole.stderr

    listed = cli("list", "--tenant", "default")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
        (budget_id, "team", "platform", "day", "250.50"),
        (whole.stdout.strip(), "tenant", "-", "month", "5000.00"),
    ]

    deleted = cli("delete", "--tenant", "default", budget_id)
    assert deleted.returncode == 0, deleted.stderr
    with psycopg.connect(database) as conn:
        left = conn.execute("SELECT scope FROM budgets ORDER BY scope").fetchall()
    assert left == [("tenant",)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("set", "--tenant", "default", "--scope", "team", "--period", "day", "--amount-usd", "5"),
            "needs the team",
        ),
        (
            (
                "set",
                "--tenant",
                "default",
                "--scope",
                "tenant",
                "--value",
                "x",
                "--period",
                "day",
                "--amount-usd",
                "5",
            ),
            "takes no value",
        ),
        (
            ("set", "--tenant", "nobody", "--scope", "tenant", "--period", "day", "--amount-usd", "5"),
            "no tenant 'nobody'",
        ),
        (
            ("set", "--tenant", "default", "--scope", "tenant", "--period", "day", "--amount-usd", "-1"),
            "at least 0.0001",
        ),
        (
            ("set", "--tenant", "default", "--scope", "tenant", "--period", "day", "--amount-usd", "0.00001"),
            "at least 0.0001",
        ),
        (
            ("set", "--tenant", "default", "--scope", "org", "--period", "day", "--amount-usd", "1"),
            "invalid choice",
        ),
        (("delete", "--tenant", "default", "bg_000000000000"), "no budget 'bg_000000000000'"),
    ],
)
def test_refusals_say_why_and_write_nothing(
    cli: Cli, database: str, args: tuple[str, ...], message: str
) -> None:
    done = cli(*args)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM budgets").fetchone() == (0,)
