"""The provisioned Grafana dashboards (k8s/tokentide/files/grafana/dashboards/*.json) against
the real schema.

Every PostgreSQL query of every panel and template variable is extracted, its Grafana macros
and variables substituted as Grafana does (``$__timeFilter``, ``$__timeFrom()``,
``$__timeTo()``, ``$__interval_ms``, ``$tenant``, ``${session:sqlstring}``...; multi-value
variables at "All", i.e. every value their own query returns, a single-value variable at its
first value), and run against a migrated database holding a small organisation's usage
written by the real stream-stage and sink code (tests/support/usage_data.py). Every query must
succeed and return rows with something in them (not only NULLs and zeros), both as the
pipeline's role and as a role bound to one tenant (row-level security, as a tenant's Grafana
connects). Prometheus panels are checked with promtool and against the metrics the services
expose.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.support.grafana import (
    DASHBOARDS,
    DATASOURCES,
    INTERVALS,
    POSTGRES_TYPES,
    Grafana,
    load,
    panels,
    postgres_targets,
    prometheus_targets,
)
from tests.support.prometheus import exposed_metric_names, promtool, tokentide_names
from tests.support.services import create_database, drop_database, unique
from tests.support.usage_data import seed


def informative(columns: list[str], rows: list[tuple[Any, ...]]) -> bool:
    """Whether some value outside the time column is neither NULL, zero nor empty."""
    for row in rows:
        for name, value in zip(columns, row, strict=True):
            if name == "time" or value is None:
                continue
            if isinstance(value, int | float | Decimal) and value == 0:
                continue
            if isinstance(value, str) and not value:
                continue
            return True
    return False


def run_dashboard(conn: psycopg.Connection[Any], board: dict[str, Any], grafana: Grafana) -> list[str]:
    """Every variable, then every panel query of ``board``; the problems found (none: [])."""
    problems: list[str] = []

    def run(what: str, query: str) -> tuple[list[str], list[tuple[Any, ...]]] | None:
        rendered = grafana.render(query)
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(rendered.encode())
                columns = [c.name for c in cur.description or []]
                rows = cur.fetchall()
        except psycopg.Error as exc:
            problems.append(f"{what}: {type(exc).__name__}: {exc}\n{rendered}")
            return None
        if not rows or not informative(columns, rows):
            problems.append(f"{what}: no rows with data ({len(rows)} rows)\n{rendered}")
            return None
        return columns, rows

    for variable in board["templating"]["list"]:
        assert variable["type"] == "query", variable["name"]
        assert variable["datasource"]["type"] in POSTGRES_TYPES, variable["name"]
        result = run(f"variable {variable['name']}", variable["query"])
        if result is None:
            return problems  # later queries depend on it
        values = [str(row[0]) for row in result[1]]
        multi = bool(variable.get("multi") or variable.get("includeAll"))
        grafana.variables[variable["name"]] = (values if multi else values[:1], multi)

    for what, target in postgres_targets(board):
        assert target.get("rawQuery"), what
        assert target.get("rawSql"), what
        result = run(what, target["rawSql"])
        if result is not None and target.get("format") == "time_series":
            columns, rows = result
            if "time" not in columns or any(row[columns.index("time")] is None for row in rows):
                problems.append(f"{what}: a time series needs a non-NULL `time` column: {columns}")
    return problems


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Seeded:
    dsn: str
    #: The DSN of a login role bound to tenant ``default`` (row-level security).
    tenant_dsn: str
    time_from: datetime
    time_to: datetime


@pytest.fixture(scope="module")
async def seeded(admin_url: str) -> AsyncIterator[Seeded]:
    dsn = create_database(admin_url)
    role, password = unique("tt_grafana_"), unique("pw")
    try:
        await seed(dsn, captures=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            conn.execute("SELECT tokentide_bind_tenant_role(%s, 'default')", (role,))
            first = conn.execute(
                "SELECT least((SELECT min(ts) FROM events), (SELECT min(minute) FROM rollups_minute))"
            )
            row = first.fetchone()
        assert row is not None
        assert row[0] is not None
        now = datetime.now(UTC)
        yield Seeded(
            dsn,
            psycopg.conninfo.make_conninfo(dsn, user=role, password=password),
            time_from=row[0] - timedelta(hours=1),
            time_to=now + timedelta(minutes=1),
        )
    finally:
        drop_database(admin_url, dsn)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --------------------------------------------------------------------------- tests


def test_the_four_dashboards_are_there() -> None:
    titles = {load(p)["title"] for p in DASHBOARDS}
    assert titles == {
        "tokentide / organisation overview",
        "tokentide / team",
        "tokentide / session drill-down",
        "tokentide / pipeline health",
    }


def test_dashboards_are_consistent() -> None:
    """Unique uids and panel ids, provisioned datasources only, links to dashboards that exist,
    date_bin (never time_bucket) and the tenant/team/user/model variables."""
    provisioned = {d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    boards = [load(p) for p in DASHBOARDS]
    uids = [b["uid"] for b in boards]
    assert len(set(uids)) == len(uids)
    for board in boards:
        ids = [p["id"] for p in panels(board)]
        assert len(set(ids)) == len(ids), board["uid"]
        for panel in panels(board):
            for target in [panel, *panel.get("targets", [])]:
                ds = target.get("datasource")
                if ds:
                    assert provisioned.get(ds["uid"]) == ds["type"], (board["uid"], panel["title"], ds)
        text = json.dumps(board)
        assert "time_bucket" not in text, board["uid"]
        for linked in re.findall(r"/d/([\w-]+)/", text):
            assert linked in uids, (board["uid"], linked)
        names = [v["name"] for v in board["templating"]["list"]]
        assert "tenant" in names, board["uid"]
        if board["uid"] != "tokentide-pipeline-health":
            assert names[:4] == ["tenant", "team", "user", "model"], board["uid"]
    assert sum(1 for b in boards for _ in postgres_targets(b)) >= 40


@pytest.mark.integration
@pytest.mark.parametrize("interval_ms", sorted(INTERVALS))
@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_postgres_query_runs_and_returns_rows(seeded: Seeded, path: Path, interval_ms: int) -> None:
    board = load(path)
    with psycopg.connect(seeded.dsn, autocommit=True) as conn:
        problems = run_dashboard(conn, board, Grafana(seeded.time_from, seeded.time_to, interval_ms))
    assert not problems, "\n\n".join(problems)


@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_postgres_query_works_for_a_tenant_role(seeded: Seeded, path: Path) -> None:
    """Grafana connected as a tenant's role (row-level security) sees that tenant only, and
    every panel still has data."""
    board = load(path)
    grafana = Grafana(seeded.time_from, seeded.time_to, 60_000)
    with psycopg.connect(seeded.tenant_dsn, autocommit=True) as conn:
        problems = run_dashboard(conn, board, grafana)
    assert not problems, "\n\n".join(problems)
    assert grafana.variables["tenant"] == (["default"], True)


def test_the_variables_render_as_grafana_does() -> None:
    grafana = Grafana(
        datetime(2026, 11, 24, 1, 2, 3, 456789, tzinfo=UTC),
        datetime(2026, 11, 24, 5, 0, tzinfo=UTC),
        60_000,
        {"tenant": (["acme", "o'brien"], True), "session": (["s-1"], False)},
    )
    rendered = grafana.render(
        "WHERE $__timeFilter(r.minute) AND t IN ($tenant) AND s = ${session:sqlstring} AND x = '$session'"
        " AND b = $__interval_ms AND i = '$__interval' AND f > $__timeFrom()"
    )
    assert rendered == (
        "WHERE r.minute BETWEEN '2026-11-24T01:02:03.456Z' AND '2026-11-24T05:00:00.000Z'"
        " AND t IN ('acme','o''brien') AND s = 's-1' AND x = 's-1'"
        " AND b = 60000 AND i = '1m' AND f > '2026-11-24T01:02:03.456Z'"
    )
    with pytest.raises(KeyError):
        grafana.render("WHERE team IN ($team)")


def test_prometheus_panels_are_valid_promql_on_existing_metrics(tmp_path: Path) -> None:
    """Each Prometheus panel's expression parses (promtool, as a recording rule) and names only
    tokentide metrics some service exposes."""
    exposed = exposed_metric_names()
    rules: list[dict[str, str]] = []
    for path in DASHBOARDS:
        board = load(path)
        for what, target in prometheus_targets(board):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m")
            assert "$" not in expr, (what, expr)
            missing = tokentide_names(expr) - exposed
            assert not missing, f"{path.stem}: {what}: no service exposes {missing}"
            rules.append({"record": f"grafana:{path.stem.replace('-', '_')}:{len(rules)}", "expr": expr})
    assert rules
    rule_file = tmp_path / "grafana-panels.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "grafana-panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
