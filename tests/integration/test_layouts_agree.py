"""Both storage layouts give the same numbers (issue 15; docs/decisions.md, decisions 14 and 37).

One stream stage (:class:`tests.support.usage_data.StreamStage`: the real normalisers, session
state, signals and rollup increments) turns the same traffic into the same records, and the
sink's writer (:class:`sinks.postgres.writer.PostgresWriter`, batch by batch as the sink
writes) puts them into two databases: one laid out plain (DATABASE_URL's server) and one laid
out as TimescaleDB (TIMESCALE_DATABASE_URL's). The traffic:

- every captured export of Claude Code, Codex CLI and Gemini CLI in tests/fixtures (JSON ones
  decoded as ingest decodes them), days old;
- the synthetic organisation of tests/support/usage_data.py (two tenants, teams, signals, a
  compaction, a metrics-only session), and two sessions 10 and 40 days old;
- late data: exports of a session held back and delivered after hours it touched were written
  (and, under the former continuous aggregate, materialised), re-sent exports, a minute
  overwritten by a full-value rollup; later, exports into chunks TimescaleDB has compressed.

After each step every query a user or an operator can run returns the same on both: every
route of the dashboard API over every session, filter, grouping, bucket and window (sessions,
one session, timelines, usage), the usage exporter's ``/metrics/usage``, every PostgreSQL
query and variable of every Grafana dashboard (as the pipeline's role and as a tenant's role)
and the rows the live event stream sends. TimescaleDB's own compression and retention jobs
run here (``CALL run_job``), and the numbers stay the same over the compressed chunks and
after the drop. Floats compare to 1e-9 relative: a sum of double precision values may be
added up in another order across chunks than across partitions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.rows import dict_row

from dashboard import live
from dashboard.app import create_app
from dashboard.filters import SOURCE_GROUPS, Bucket, GroupBy
from dashboard.usage_exporter import USAGE_METRICS_PATH
from ingest.decode import decode, decompress, media_type
from sinks.base import Batch
from sinks.postgres.writer import PostgresWriter
from streams.processor import Output
from tests.support import scenarios
from tests.support.captures import cases, exports
from tests.support.grafana import DASHBOARDS, INTERVALS, Grafana, load, postgres_targets
from tests.support.services import (
    admin_database_url,
    create_database,
    drop_database,
    layout_of,
    timescale_admin_url,
    unique,
)
from tests.support.usage_data import SECOND_NS, StreamStage, batch_of, plan, with_team
from tokentide.migrate import Layout
from tokentide.records import Rollup, Tokens
from tokentide.settings import DashboardSettings
from tokentide.topics import Signal

pytestmark = pytest.mark.integration

DAY_NS = 86_400 * SECOND_NS
ADMIN_TOKEN = "layouts-agree-admin-token"  # an admin token reads any tenant (?tenant=)
TENANTS = ("default", "acme")
#: What is not the data's numbers, and so not compared: the exporter's own query time; Grafana's
#: pipeline-health panel of the storage itself (sizes on disk, partitions or chunks: different
#: by design) and the columns of the freshness panel that are ``now()`` minus a write time.
EXPORTER_OWN = ("tokentide_usage_query_seconds",)
GRAFANA_STORAGE = "Storage by relation"
GRAFANA_CLOCK_COLUMNS = "since "
#: Messages per sink batch (the sink writes a few hundred at a time; small ones here exercise
#: more transactions over rows already written).
BATCH_MESSAGES = 16


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class Send:
    """One raw message as ingest would publish it."""

    tenant: str
    signal: str
    body: bytes
    received_ns: int


def captured(received_ns: int) -> list[Send]:
    """Every captured logs and metrics export, as protobuf (ingest decodes JSON the same way)."""
    out = []
    for agent, tenant in (("claude-code", "default"), ("codex", "acme"), ("gemini-cli", "acme")):
        for case_dir in cases(agent):
            for export in exports(case_dir):
                if export.signal == "traces":
                    continue  # spans feed no relation of the layouts
                body = decompress(export.body, export.content_encoding, 64 * 1024 * 1024)
                message = decode(Signal(export.signal), body, media_type(export.content_type))
                out.append(Send(tenant, export.signal, message.SerializeToString(), received_ns))
    return out


@dataclass
class Traffic:
    """What is sent now, and what is held back to be delivered late."""

    now: list[Send]
    late: list[Send]
    #: Held back until TimescaleDB has compressed their chunks.
    into_compressed: list[Send]
    #: A session of the data set with hours written before its late data.
    late_session: str


def synthetic(now_ns: int) -> Traffic:
    sessions = plan(now_ns)
    old = [
        dataclasses.replace(
            sessions[2],
            name="data-10-days",
            generated=scenarios.generate(
                scenarios.Scenario(seed=21, requests=40, side_share=0.1, start_ns=now_ns - 10 * DAY_NS)
            ),
        ),
        dataclasses.replace(
            sessions[4],
            name="acme-40-days",
            generated=scenarios.generate(
                scenarios.Scenario(seed=22, requests=30, side_share=0.1, start_ns=now_ns - 40 * DAY_NS)
            ),
        ),
    ]
    traffic = Traffic([], [], [], late_session=sessions[0].session_id)
    for s in [*sessions, *old]:
        logs = 0
        for export in s.generated.exports:
            if s.metrics_only and export.signal != "metrics":
                continue
            body = with_team(export.signal, export.body, s.team)
            send = Send(s.tenant, export.signal, body, export.time_ns)
            # Every third logs export (usage events: tokens, cost, requests) is held back.
            logs += export.signal == "logs"
            held = export.signal == "logs" and logs % 3 == 2
            if s.name == "platform-long" and held:
                # Delivered after the rest of the session: into hours already written.
                traffic.late.append(dataclasses.replace(send, received_ns=now_ns))
            elif s.name == "data-10-days" and held:
                traffic.into_compressed.append(dataclasses.replace(send, received_ns=now_ns))
            else:
                traffic.now.append(send)
    return traffic


class Pipeline:
    """One stream stage in front of both databases: each batch of outputs goes to both."""

    def __init__(self, dsns: Iterable[str]) -> None:
        self.stage = StreamStage()
        self.writers = [PostgresWriter(dsn) for dsn in dsns]

    async def deliver(self, sends: Iterable[Send]) -> None:
        outputs: list[Output] = []
        for send in sends:
            outputs += self.stage.send(send.tenant, send.signal, send.body, send.received_ns)
        for start in range(0, len(outputs), BATCH_MESSAGES):
            await self.write_each(batch_of, outputs[start : start + BATCH_MESSAGES])

    async def write_each(self, build: Callable[[list[Output]], Batch], outputs: list[Output]) -> None:
        """``build(outputs)``: a fresh :class:`Batch` per database (the writer may trim one)."""
        for writer in self.writers:
            result = await writer.write(build(outputs))
            assert not result.rejected, f"refused: {result.rejected[:3]}"

    async def close(self) -> None:
        for writer in self.writers:
            await writer.close()


# --------------------------------------------------------------------------- what users read


def close_enough(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 relative (see the module's docstring), recursively."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_enough(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close_enough(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def differences(plain: dict[str, Any], timescale: dict[str, Any]) -> list[str]:
    out = (
        [f"only in one layout: {sorted(set(plain) ^ set(timescale))}"]
        if plain.keys() != timescale.keys()
        else []
    )
    for key in sorted(plain.keys() & timescale.keys()):
        a, b = plain[key], timescale[key]
        if close_enough(a, b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):  # only what differs inside
            a, b = (
                {k: d.get(k) for k in sorted(a.keys() | b.keys()) if not close_enough(a.get(k), b.get(k))}
                for d in (a, b)
            )
        out.append(f"{key}:\n  plain:     {a!r:.1500}\n  timescale: {b!r:.1500}")
    return out


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


@dataclass
class Database:
    """One of the two databases and the dashboard app over it."""

    layout: Layout
    dsn: str
    #: A login role bound to tenant acme (Grafana connected as a tenant).
    tenant_dsn: str
    client: httpx.AsyncClient

    async def get(self, path: str, tenant: str, **params: Any) -> Any:
        response = await self.client.get(
            path, params={"tenant": tenant, **params}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 200, (path, params, response.text)
        return response.json() if "json" in response.headers["content-type"] else response.text

    async def api(self, now: datetime) -> dict[str, Any]:
        """Every route of the dashboard API that reads the layouts, over everything stored."""
        out: dict[str, Any] = {}
        for tenant in TENANTS:
            listed = await self.get("/api/v1/sessions", tenant, limit=1000)
            out[f"{tenant} sessions"] = listed
            ids = [s["session_id"] for s in listed["sessions"]]
            agents = sorted({s["agent"] for s in listed["sessions"]})
            users = sorted({s["user_id"] for s in listed["sessions"] if s["user_id"]})[:3]
            models = sorted({m for s in listed["sessions"] for m in s["models"]})
            filters: list[dict[str, Any]] = [
                {"active": True},
                {"active": False},
                *({"status": s} for s in ("active", "idle", "ended")),
                *({"agent": a} for a in agents),
                *({"user": u} for u in users),
                *({"model": m} for m in models),
                *({"team": t} for t in ("platform", "data", "none")),
                {"limit": 3, "offset": 2},
            ]
            for f in filters:
                out[f"{tenant} sessions {f}"] = await self.get("/api/v1/sessions", tenant, **f)
            for sid in ids:
                out[f"{tenant} session {sid}"] = await self.get(f"/api/v1/sessions/{sid}", tenant)
                for limit in (5000, 7):
                    out[f"{tenant} timeline {sid} {limit}"] = await self.get(
                        f"/api/v1/sessions/{sid}/timeline", tenant, limit=limit
                    )
            windows: list[dict[str, str]] = [
                {},  # the last 30 days
                {"from": iso(now - timedelta(hours=2)), "to": iso(now)},
                {"from": iso(now - timedelta(days=45)), "to": iso(now + timedelta(hours=1))},
                # Neither edge on an hour: minutes at both edges, whole hours inside.
                {"from": iso(now - timedelta(hours=3, minutes=17)), "to": iso(now - timedelta(minutes=41))},
                {"from": iso(now - timedelta(days=11)), "to": iso(now - timedelta(days=9))},
            ]
            for group_by in GroupBy:
                for bucket in (None, *Bucket):
                    for window in windows:
                        params = {"group_by": group_by.value, **window}
                        if bucket is not None:
                            params["bucket"] = bucket.value
                        body = await self.get("/api/v1/usage", tenant, **params)
                        if not window:  # its bounds are "now": compare the groups only
                            body = body["groups"]
                        out[f"{tenant} usage {params}"] = body
            # Issue 17: the comparison over the same windows (the default one: its groups only)
            # and the recommendations of the last 90 days (their bounds are "now": the list only).
            for compare_by in ("team", "project"):
                for window in windows:
                    body = await self.get("/api/v1/compare", tenant, group_by=compare_by, **window)
                    out[f"{tenant} compare {compare_by} {window}"] = body if window else body["groups"]
            recommendations = await self.get("/api/v1/recommendations", tenant, window_days=90)
            out[f"{tenant} recommendations"] = recommendations["recommendations"]
        return out

    async def exporter(self) -> dict[str, Any]:
        text = await self.get(USAGE_METRICS_PATH, "default")
        samples: dict[str, Any] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.startswith(EXPORTER_OWN):
                    samples[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
        return {"/metrics/usage": samples}

    def grafana(self, now: datetime, *, as_tenant: bool) -> dict[str, Any]:
        """Every variable and PostgreSQL query of every dashboard, two windows, two intervals."""
        out: dict[str, Any] = {}
        windows = ((now - timedelta(days=45), now + timedelta(minutes=1)), (now - timedelta(hours=3), now))
        with psycopg.connect(self.tenant_dsn if as_tenant else self.dsn, autocommit=True) as conn:
            for path in DASHBOARDS:
                board = load(path)
                for time_from, time_to in windows:
                    for interval_ms in sorted(INTERVALS):
                        grafana = Grafana(time_from, time_to, interval_ms)
                        where = f"{'tenant ' if as_tenant else ''}{path.stem} {iso(time_from)} {interval_ms}"
                        for variable in board["templating"]["list"]:
                            rows = conn.execute(grafana.render(variable["query"]).encode()).fetchall()
                            out[f"{where} ${variable['name']}"] = rows
                            values = [str(r[0]) for r in rows]
                            multi = bool(variable.get("multi") or variable.get("includeAll"))
                            grafana.variables[variable["name"]] = (values if multi else values[:1], multi)
                        for what, target in postgres_targets(board):
                            if what.startswith(GRAFANA_STORAGE):
                                continue
                            cur = conn.execute(grafana.render(target["rawSql"]).encode())
                            keep = [
                                i
                                for i, c in enumerate(cur.description or [])
                                if not c.name.startswith(GRAFANA_CLOCK_COLUMNS)
                            ]
                            out[f"{where} {what}"] = [tuple(row[i] for i in keep) for row in cur.fetchall()]
        return out

    async def stream(self) -> dict[str, Any]:
        """The rows the live event stream sends, from the start, in its order (positions are
        each database's own transaction ids: left out)."""
        out: dict[str, Any] = {}
        async with await psycopg.AsyncConnection.connect(
            self.dsn, row_factory=dict_row, autocommit=True
        ) as conn:
            for tenant in TENANTS:
                page = await live.read_page(conn, tenant, live.Position(0, 0), limit=100_000)
                assert not page.full
                out[f"{tenant} stream"] = [
                    (event, {k: v for k, v in row.items() if not k.startswith("position_")})
                    for event, _, row in page.rows
                ]
        return out

    async def everything(self, now: datetime) -> dict[str, Any]:
        return {
            **await self.api(now),
            **await self.exporter(),
            **self.grafana(now, as_tenant=False),
            **self.grafana(now, as_tenant=True),
            **await self.stream(),
        }


# --------------------------------------------------------------------------- TimescaleDB's jobs


def run_jobs(dsn: str, proc_name: str) -> list[int]:
    """Run the events and metric_points jobs of ``proc_name`` now, as TimescaleDB's scheduler
    would (``CALL run_job``, outside any transaction); returns their ids."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        jobs = [
            int(r[0])
            for r in conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s"
                " AND hypertable_name IN ('events', 'metric_points') ORDER BY job_id",
                (proc_name,),
            )
        ]
        for job in jobs:
            conn.execute("CALL run_job(%s)", (job,))
    return jobs


def chunks(dsn: str, *, compressed: bool | None = None) -> dict[str, list[str]]:
    """Hypertable -> the UTC days of its chunks (only the compressed or uncompressed ones)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT hypertable_name, to_char(range_start AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            " FROM timescaledb_information.chunks"
            " WHERE hypertable_name IN ('events', 'metric_points')"
            "   AND (%(compressed)s::boolean IS NULL OR is_compressed = %(compressed)s)"
            " ORDER BY 1, 2",
            {"compressed": compressed},
        ).fetchall()
    out: dict[str, list[str]] = {"events": [], "metric_points": []}
    for table, day in rows:
        out[str(table)].append(str(day))
    return out


def materialise_hours(dsn: str) -> None:
    """What a continuous aggregate's refresh policy would have done by now, were rollups_hour one
    (the TimescaleDB layout before migration 0014): materialise every hour, so that late data
    lands in materialised hours, the case where real-time aggregation kept the old sums. Since
    0014 rollups_hour is a table, written in the sink's transaction: nothing to do."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        aggregate = conn.execute(
            "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = 'rollups_hour'"
        ).fetchone()
        if aggregate is not None:
            conn.execute("CALL refresh_continuous_aggregate('rollups_hour', NULL, NULL)")


# --------------------------------------------------------------------------- the test


@pytest.fixture
async def databases() -> AsyncIterator[dict[Layout, Database]]:
    """A fresh database of each layout, a role bound to acme in each, a dashboard app over each."""
    servers = {Layout.PLAIN: admin_database_url(), Layout.TIMESCALE: timescale_admin_url()}
    role, password = unique("tt_agree_"), unique("pw")
    made: dict[Layout, str] = {}
    async with AsyncExitStack() as stack:
        try:
            for layout, admin in servers.items():
                dsn = made[layout] = create_database(admin, layout=layout.value)
                assert layout_of(dsn) is layout
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for tenant in TENANTS:
                        conn.execute(
                            "INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,)
                        )
                    conn.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(role), sql.Literal(password)
                        )
                    )
                    conn.execute("SELECT tokentide_bind_tenant_role(%s, 'acme')", (role,))
            out = {}
            for layout, dsn in made.items():
                settings = DashboardSettings(
                    database_url=dsn, open_mode=False, dashboard_admin_token=ADMIN_TOKEN, usage_cache_s=0
                )
                app = create_app(settings)
                await stack.enter_async_context(app.router.lifespan_context(app))
                client = await stack.enter_async_context(
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")
                )
                tenant_dsn = psycopg.conninfo.make_conninfo(dsn, user=role, password=password)
                out[layout] = Database(layout, dsn, tenant_dsn, client)
            yield out
        finally:
            await stack.aclose()
            for layout, dsn in made.items():
                drop_database(servers[layout], dsn)
                with psycopg.connect(servers[layout], autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def agree(dbs: dict[Layout, Database], step: str, now: datetime) -> dict[str, Any]:
    """Read everything from both, windows relative to ``now`` (the same in every step, so that
    steps compare too); fail on any difference; return the plain side's answers."""
    plain = await dbs[Layout.PLAIN].everything(now)
    timescale = await dbs[Layout.TIMESCALE].everything(now)
    problems = differences(plain, timescale)
    assert not problems, f"{step}: {len(problems)} of {len(plain)} answers differ:\n" + "\n".join(
        problems[:20]
    )
    # Not vacuous: the answers hold the data (every tenant's sessions, usage, signals).
    for tenant in TENANTS:
        assert plain[f"{tenant} sessions"]["total"] >= 3, (step, tenant)
    assert any(plain[k] for k in plain if "usage" in k and "day" in k), step
    assert any(plain[k] for k in plain if k.endswith(" stream")), step
    return plain


def usage_of(answers: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answers.items() if " usage " in k or k == "/metrics/usage"}


def from_events(key: str) -> bool:
    """Whether the usage answer ``key`` is grouped by what only the usage events know
    (``SOURCE_GROUPS``: read from ``events``, kept as long as the raw retention says)."""
    return any(f"'group_by': '{group.value}'" in key for group in SOURCE_GROUPS)


def usage_by(answers: dict[str, Any], *, events: bool) -> dict[str, Any]:
    """The usage answers read from the events (``events``) or from the rollups."""
    return {k: v for k, v in usage_of(answers).items() if from_events(k) is events}


async def test_every_query_gives_the_same_numbers_on_both_layouts(databases: dict[Layout, Database]) -> None:
    plain_dsn, timescale_dsn = databases[Layout.PLAIN].dsn, databases[Layout.TIMESCALE].dsn
    now_ns = time.time_ns()
    now = datetime.fromtimestamp(now_ns / 1e9, UTC)
    traffic = synthetic(now_ns)
    pipeline = Pipeline([plain_dsn, timescale_dsn])
    try:
        # 1. Captures and the organisation, with some of one session's exports held back.
        await pipeline.deliver([*captured(now_ns), *traffic.now])
        first = await agree(databases, "captured and synthetic traffic", now)
        materialise_hours(timescale_dsn)

        # 2. Late: the held-back exports land in hours both databases hold already; re-sent
        # exports change nothing; a full-value rollup (the older kind) overwrites a minute.
        await pipeline.deliver(traffic.late)
        await pipeline.deliver(traffic.now[::7])
        hour = now - timedelta(hours=2)
        overwrite = Rollup(
            tenant="default",
            session_id=traffic.late_session,
            agent="claude_code",
            model="claude-opus-4-8",
            minute_ns=int(hour.replace(minute=7, second=0, microsecond=0).timestamp()) * SECOND_NS,
            tokens=Tokens(input=1234, output=56, cache_read=7890),
            cost_nanos=4_321_000,
            requests=3,
            increment=False,
        )
        await pipeline.write_each(lambda _: Batch(rollups=[overwrite]), [])
        second = await agree(databases, "late data into written hours", now)
        assert usage_of(second) != usage_of(first), "the late data changed no usage answer"

        # 3. TimescaleDB's compression job (compress_after 7 days): the days-old chunks.
        assert run_jobs(timescale_dsn, "policy_compression")
        compressed = chunks(timescale_dsn, compressed=True)
        assert compressed["events"], compressed
        assert compressed["metric_points"], compressed
        assert await agree(databases, "over compressed chunks", now) == second
        # Late data into compressed chunks (upserts there), and a capture re-sent.
        await pipeline.deliver([*traffic.into_compressed, *captured(now_ns)[:3]])
        third = await agree(databases, "late data into compressed chunks", now)
        assert usage_of(third) != usage_of(second), "the late data changed no usage answer"

        # 4. Retention of 20 days. Plain: the sink's maintenance drops the partitions. TimescaleDB:
        # the same function sets the retention policy (as_of in the past: nothing dropped by it
        # here) and TimescaleDB's own job drops the chunks; the maintenance then finds none.
        old_day = (now - timedelta(days=40)).date().isoformat()
        assert old_day in chunks(timescale_dsn)["events"]
        retention = timedelta(days=20)
        plain_writer = PostgresWriter(plain_dsn, retention=retention)
        timescale_writer = PostgresWriter(timescale_dsn, retention=retention)
        try:
            assert any(action == "dropped" for action, _ in await plain_writer.maintain())
            with psycopg.connect(timescale_dsn, autocommit=True) as conn:
                conn.execute(
                    "SELECT * FROM tokentide_maintain(%s, 7, TIMESTAMPTZ '2000-01-03 00:00:00+00')",
                    (retention,),
                )
            assert old_day in chunks(timescale_dsn)["events"]
            assert len(run_jobs(timescale_dsn, "policy_retention")) == 2
            assert old_day not in chunks(timescale_dsn)["events"]
            assert old_day not in chunks(timescale_dsn)["metric_points"]
            assert not any(action == "dropped" for action, _ in await timescale_writer.maintain())
        finally:
            await plain_writer.close()
            await timescale_writer.close()
        fourth = await agree(databases, "after retention", now)
        # Rollups, sessions and signals outlive the raw rows: the usage answers from the rollups
        # stay; those by source read the events, and lose the dropped days in both layouts alike.
        assert usage_by(fourth, events=False) == usage_by(third, events=False)
        assert usage_by(fourth, events=True) != usage_by(third, events=True), "retention dropped no event"
    finally:
        await pipeline.close()


def test_floats_compare_to_a_billionth_and_everything_else_exactly() -> None:
    assert close_enough({"a": [1.0, (2, "x")]}, {"a": [1.0 + 1e-12, (2, "x")]})
    assert not close_enough({"a": [1.0]}, {"a": [1.001]})
    assert not close_enough([1, 2], [1, 2, 3])
    assert not close_enough({"a": 1}, {"b": 1})
    assert differences({"k": 1, "only": 0}, {"k": 2}) == [
        "only in one layout: ['only']",
        "k:\n  plain:     1\n  timescale: 2",
    ]
