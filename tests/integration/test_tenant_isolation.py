"""Row-level security on the real PostgreSQL: a tenant role reads its own tenant's rows only.

Two tenants' rows go into every tenant table (through the pipeline's own role, which owns the
tables); then a login role bound to each tenant reads every table and must see exactly its own
rows, and must not be able to write or read key hashes. Runs on both layouts (tests/conftest.py):
in the TimescaleDB one, tenant roles read the hypertables through views (decision 14).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from tests.support.services import layout_of, unique
from tokentide.migrate import Layout

pytestmark = pytest.mark.integration

#: Every relation a tenant role may read, with the rows each tenant gets below.
TENANT_TABLES = (
    "tenants",
    "sessions",
    "events",
    "metric_series",
    "metric_points",
    "signals",
    "rollups_minute",
    "rollups_hour",
    "tenant_roles",
)
NOW = datetime.now(UTC).replace(microsecond=0)


def seed(conn: psycopg.Connection[tuple[object, ...]], tenant: str) -> None:
    """One row of the tenant in every table, as the sink would write them."""
    conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    conn.execute(
        "INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at, context_window,"
        " state_version) VALUES (%s, 's-1', 'claude_code', %s, %s, 200000, 1)",
        (tenant, NOW, NOW),
    )
    conn.execute(
        "INSERT INTO events (tenant_id, session_id, event_id, ts, agent, name, input_tokens)"
        " VALUES (%s, 's-1', 'e-1', %s, 'claude_code', 'api_request', 100)",
        (tenant, NOW),
    )
    conn.execute(
        "INSERT INTO metric_series (tenant_id, series_id, session_id, agent, name, first_seen)"
        " VALUES (%s, 'series-1', 's-1', 'claude_code', 'claude_code.token.usage', %s)",
        (tenant, NOW),
    )
    conn.execute(
        "INSERT INTO metric_points (tenant_id, series_id, ts, start_ts, value, temporality)"
        " VALUES (%s, 'series-1', %s, %s, 1, 1)",
        (tenant, NOW, NOW),
    )
    conn.execute(
        "INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens, context_window)"
        " VALUES (%s, 's-1', 'g-1', 'context_warning', %s, 0.8, 160000, 200000)",
        (tenant, NOW),
    )
    for table, column in (("rollups_minute", "minute"), ("rollups_hour", "hour")):
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (tenant_id, session_id, model, {}, agent, input_tokens, output_tokens,"
                " cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd, requests, errors)"
                " VALUES (%s, 's-1', 'm', %s, 'claude_code', 1, 1, 1, 1, 0, 0.1, 1, 0)"
            ).format(sql.Identifier(table), sql.Identifier(column)),
            (tenant, NOW.replace(second=0)),
        )


def create_role(role: str, password: str) -> sql.Composed:
    return sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))


@pytest.fixture
def tenant_roles(database: str) -> Iterator[dict[str, str]]:
    """Tenants acme and globex with one row everywhere, and a login role bound to each:
    tenant -> DSN of its role. Roles are cluster-wide: unique names, dropped afterwards."""
    password = unique("pw")
    roles = {tenant: unique(f"tt_{tenant}_") for tenant in ("acme", "globex")}
    with psycopg.connect(database, autocommit=True) as conn:
        for tenant, role in roles.items():
            seed(conn, tenant)
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            conn.execute("SELECT tokentide_bind_tenant_role(%s, %s)", (role, tenant))
    try:
        yield {
            tenant: psycopg.conninfo.make_conninfo(database, user=role, password=password)
            for tenant, role in roles.items()
        }
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            for role in roles.values():
                conn.execute("SELECT tokentide_unbind_tenant_role(%s)", (role,))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def tenants_seen(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT tenant_id FROM {} ORDER BY tenant_id").format(sql.Identifier(table))
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_the_pipeline_role_sees_every_tenant(database: str, tenant_roles: dict[str, str]) -> None:
    for table in TENANT_TABLES:
        expected = ["acme", "default", "globex"] if table == "tenants" else ["acme", "globex"]
        assert tenants_seen(database, table) == expected, table


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_a_tenant_role_reads_only_its_own_rows(tenant: str, tenant_roles: dict[str, str]) -> None:
    for table in TENANT_TABLES:
        assert tenants_seen(tenant_roles[tenant], table) == [tenant], table


def test_a_tenant_role_cannot_reach_another_tenant_even_by_asking(
    database: str, tenant_roles: dict[str, str]
) -> None:
    with psycopg.connect(tenant_roles["acme"]) as conn:
        # An explicit filter on the other tenant finds nothing; it is not an error either.
        for table in TENANT_TABLES:
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = 'globex'").format(sql.Identifier(table))
            ).fetchone()
            assert count == (0,), table
        # Partitions (plain) and chunks (TimescaleDB) are not granted: reading one directly is
        # refused, not a way around. public.events: the role's `events` is the view (TimescaleDB).
        partition = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'public.events'::regclass LIMIT 1"
        ).fetchone()
        assert partition is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(str(partition[0]))))
        # The table itself: row-level security (plain); no grant on the hypertable (TimescaleDB).
        if layout_of(database) is Layout.TIMESCALE:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SELECT * FROM public.events")
        else:
            assert conn.execute("SELECT tenant_id FROM public.events").fetchall() == [("acme",)]


def test_a_tenant_role_can_neither_write_nor_read_key_hashes(tenant_roles: dict[str, str]) -> None:
    with psycopg.connect(tenant_roles["acme"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM api_keys")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE sessions SET input_tokens = 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO tenant_roles (role_name, tenant_id) VALUES (current_user, 'globex')"
                " ON CONFLICT (role_name) DO UPDATE SET tenant_id = 'globex'"
            )


def test_an_unbound_role_with_a_grant_sees_nothing(database: str) -> None:
    """A role granted SELECT by mistake, but bound to no tenant, reads no rows (default deny):
    on the tables in the plain layout; in the TimescaleDB one on the regular tables and the
    tenant views, since TimescaleDB refuses policies on compressed hypertables (there, only
    the absence of a grant keeps a role out of public.events, as the last assertion pins)."""
    timescale = layout_of(database) is Layout.TIMESCALE
    granted = ["sessions", "tokentide_tenant.events" if timescale else "events"]
    role, password = unique("tt_nobody_"), unique("pw")
    grant = sql.SQL(", ").join(sql.SQL(t) for t in granted)
    with psycopg.connect(database, autocommit=True) as conn:
        seed(conn, "acme")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
        if timescale:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA tokentide_tenant TO {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(grant, sql.Identifier(role)))
    try:
        dsn = psycopg.conninfo.make_conninfo(database, user=role, password=password)
        with psycopg.connect(dsn) as conn:
            for table in granted:
                seen = conn.execute(sql.SQL("SELECT tenant_id FROM {}").format(sql.SQL(table))).fetchall()
                assert seen == [], table
        if timescale:
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute(sql.SQL("GRANT SELECT ON public.events TO {}").format(sql.Identifier(role)))
            with psycopg.connect(dsn) as conn:
                exposed = conn.execute("SELECT tenant_id FROM public.events").fetchall()
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute(sql.SQL("REVOKE SELECT ON public.events FROM {}").format(sql.Identifier(role)))
            assert exposed == [("acme",)]  # decision 14's known limit: no policy on a hypertable
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE SELECT ON {} FROM {}").format(grant, sql.Identifier(role)))
            if timescale:
                conn.execute(
                    sql.SQL("REVOKE USAGE ON SCHEMA tokentide_tenant FROM {}").format(sql.Identifier(role))
                )
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
