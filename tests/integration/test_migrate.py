"""Migrations against the real PostgreSQL: idempotent, safe from several replicas at once, the
layout chosen by what the server offers (run on both layouts: a server without TimescaleDB,
then one with it)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.support.services import create_database, drop_database
from tokentide.migrate import LAYOUT_ENV, Layout, MigrationError, available, database_layout, migrate

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database(admin_url: str) -> Iterator[str]:
    dsn = create_database(admin_url, migrated=False)
    yield dsn
    drop_database(admin_url, dsn)


def test_migrate_applies_everything_once(empty_database: str) -> None:
    versions = [v for v, _ in available()]
    assert migrate(empty_database) == versions
    assert migrate(empty_database) == []
    with psycopg.connect(empty_database) as conn:
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert recorded == versions
    assert {"tenants", "sessions", "events", "metric_points"} <= tables


def test_concurrent_migrations_serialise(empty_database: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(migrate, [empty_database] * 4))
    applied = [v for r in results for v in r]
    assert sorted(applied) == [v for v, _ in available()]  # each applied exactly once


def offers_timescaledb(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return found.fetchone() is not None


def relations(dsn: str, kind: str) -> list[str]:
    """Names of the public relations of pg_class.relkind ``kind`` (p: partitioned tables)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = %s AND relnamespace = 'public'::regnamespace"
            " ORDER BY 1",
            (kind,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def hypertables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1"
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_the_layout_is_chosen_once_and_recorded(empty_database: str) -> None:
    if not offers_timescaledb(empty_database):
        # No TimescaleDB on this server: auto means plain; asking for timescale is refused.
        with pytest.raises(MigrationError, match="timescaledb extension is not available"):
            migrate(empty_database, layout="timescale")
        migrate(empty_database, layout="auto")
        with psycopg.connect(empty_database) as conn:
            assert database_layout(conn) == Layout.PLAIN
        assert relations(empty_database, "p") == ["events", "metric_points"]
        recorded, other = "plain", "timescale"
    else:
        # TimescaleDB here: auto means timescale, raw tables and minutes become hypertables.
        migrate(empty_database, layout="auto")
        with psycopg.connect(empty_database) as conn:
            assert database_layout(conn) == Layout.TIMESCALE
        assert hypertables(empty_database) == ["events", "metric_points", "rollups_minute"]
        assert relations(empty_database, "p") == []
        recorded, other = "timescale", "plain"
    # A recorded layout cannot be switched by a later run.
    with pytest.raises(MigrationError, match=f"laid out as '{recorded}'"):
        migrate(empty_database, layout=other)
    assert migrate(empty_database, layout=recorded) == []


def test_plain_can_be_forced_wherever_timescaledb_is(empty_database: str) -> None:
    """TOKENTIDE_DB_LAYOUT=plain: native partitions even on a server with TimescaleDB (on a
    server without it, the same as auto)."""
    migrate(empty_database, layout="plain")
    with psycopg.connect(empty_database) as conn:
        assert database_layout(conn) == Layout.PLAIN
        extension = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    assert extension is None
    assert relations(empty_database, "p") == ["events", "metric_points"]
    # rollups_hour is a table in both layouts (migration 0014).
    assert "rollups_hour" in relations(empty_database, "r")


def test_an_unknown_layout_request_is_refused(monkeypatch: pytest.MonkeyPatch, empty_database: str) -> None:
    monkeypatch.setenv(LAYOUT_ENV, "cassandra")
    with pytest.raises(MigrationError, match="expected auto, plain or timescale"):
        migrate(empty_database)
