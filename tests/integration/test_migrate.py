"""Migrations against the real PostgreSQL: idempotent, safe from several replicas at once."""

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


def test_the_layout_is_chosen_once_and_recorded(empty_database: str) -> None:
    # No TimescaleDB on this server: auto means plain; asking for timescale is refused.
    with pytest.raises(MigrationError, match="timescaledb extension is not available"):
        migrate(empty_database, layout="timescale")
    migrate(empty_database, layout="auto")
    with psycopg.connect(empty_database) as conn:
        assert database_layout(conn) == Layout.PLAIN
        partitioned = conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'p' AND relnamespace = 'public'::regnamespace"
        ).fetchall()
    assert sorted(r[0] for r in partitioned) == ["events", "metric_points"]
    # A recorded layout cannot be switched by a later run.
    with pytest.raises(MigrationError, match="laid out as 'plain'"):
        migrate(empty_database, layout="timescale")
    assert migrate(empty_database, layout="plain") == []


def test_an_unknown_layout_request_is_refused(monkeypatch: pytest.MonkeyPatch, empty_database: str) -> None:
    monkeypatch.setenv(LAYOUT_ENV, "cassandra")
    with pytest.raises(MigrationError, match="expected auto, plain or timescale"):
        migrate(empty_database)
