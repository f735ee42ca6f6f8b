"""Migrations 0014 on a TimescaleDB database in use (issue 15): the continuous aggregate
rollups_hour, with the refresh policy 0004 used to create, materialised and then left stale by
late data, becomes the plain layout's table holding the sum of every hour's minutes; a tenant
role bound before it still reads it; the refresh job is gone; the sink's writes recompute their
hours from then on. New databases never get the policy.

Needs TIMESCALE_DATABASE_URL (a failure under CI=true, a skip elsewhere); runs once, in the plain
leg, like test_layouts_agree.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from sinks.base import Batch
from sinks.postgres.writer import PostgresWriter
from tests.support.services import create_database, drop_database, timescale_admin_url, unique
from tokentide.migrate import migrate
from tokentide.records import Rollup, Tokens

pytestmark = pytest.mark.integration

HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
BY_MINUTES = """
    SELECT session_id, date_bin('1 hour', minute, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
           sum(input_tokens)::bigint, sum(cost_usd), sum(requests)::int
      FROM rollups_minute GROUP BY 1, 2 ORDER BY 1, 2
"""
HOURS = "SELECT session_id, hour, input_tokens, cost_usd, requests FROM rollups_hour ORDER BY 1, 2"


def rollup(session: str, minute: int, input_tokens: int) -> Rollup:
    at = HOUR + timedelta(minutes=minute)
    return Rollup(
        tenant="default",
        session_id=session,
        agent="claude_code",
        model="claude-opus-4-8",
        minute_ns=int(at.timestamp()) * 10**9,
        tokens=Tokens(input=input_tokens, output=1),
        cost_nanos=input_tokens * 1000,
        requests=1,
        increment=True,
    )


async def write(dsn: str, *rollups: Rollup) -> None:
    writer = PostgresWriter(dsn)
    try:
        result = await writer.write(Batch(rollups=list(rollups)))
    finally:
        await writer.close()
    assert not result.rejected


def refresh_jobs(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    found = conn.execute(
        "SELECT count(*) FROM timescaledb_information.jobs"
        " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
    ).fetchone()
    return int(str(found[0])) if found else 0


def rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query.encode()).fetchall()


@pytest.fixture
def at_0011() -> Iterator[tuple[str, str]]:
    """A TimescaleDB-layout database migrated up to 0011 (rollups_hour still the aggregate),
    and a role name (cluster-wide: dropped afterwards)."""
    admin = timescale_admin_url()
    dsn = create_database(admin, migrated=False)
    migrate(dsn, layout="timescale", until="0011_stream_positions")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert refresh_jobs(conn) == 0  # no longer created by 0004
        # What 0004 created before issue 15, as databases migrated then have it.
        conn.execute(
            "SELECT add_continuous_aggregate_policy('rollups_hour', start_offset => INTERVAL '30 days',"
            " end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '5 minutes')"
        )
    role = unique("tt_0014_")
    try:
        yield dsn, role
    finally:
        drop_database(admin, dsn)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def test_0014_turns_the_stale_aggregate_into_the_table_of_every_hours_sum(
    at_0011: tuple[str, str],
) -> None:
    dsn, role = at_0011
    await write(dsn, rollup("s-1", 1, 10), rollup("s-1", 61, 20), rollup("s-2", 5, 7))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('rollups_hour', NULL, NULL)")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw'").format(sql.Identifier(role)))
        conn.execute("SELECT tokentide_bind_tenant_role(%s, 'default')", (role,))
    # Late data into a materialised hour: the aggregate keeps the old sum (the bug of issue 15).
    await write(dsn, rollup("s-1", 30, 100))
    assert rows(dsn, HOURS) != rows(dsn, BY_MINUTES)

    assert migrate(dsn, layout="timescale") == ["0014_no_refresh_job", "0014_timescale_layout"]
    assert rows(dsn, HOURS) == rows(dsn, BY_MINUTES)
    assert [r[2] for r in rows(dsn, HOURS)] == [110, 20, 7]
    with psycopg.connect(dsn) as conn:
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = 'public.rollups_hour'::regclass"
        ).fetchone()
        jobs = refresh_jobs(conn)
    assert kind == ("r",)
    assert jobs == 0
    # The role bound before 0014 reads the new table through its tenant view.
    tenant_dsn = psycopg.conninfo.make_conninfo(dsn, user=role, password="pw")  # noqa: S106 (test role)
    assert len(rows(tenant_dsn, "SELECT * FROM rollups_hour")) == 3
    # From now on each write recomputes its hours in its own transaction.
    await write(dsn, rollup("s-2", 6, 1))
    assert rows(dsn, HOURS) == rows(dsn, BY_MINUTES)
