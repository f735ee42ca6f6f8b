"""Versioned schema migrations (``tokentide/migrations/NNNN_name.sql``), applied in order.

Safe to run from several replicas at once: a session-level advisory lock serialises them,
and each migration commits together with its row in ``schema_migrations``.
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

#: Arbitrary, fixed advisory lock id for schema changes ("tt" + "mig").
MIGRATION_LOCK_ID = 0x7474_6D69_67


def available() -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped, in order."""
    folder = resources.files("tokentide") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def migrate(dsn: str) -> list[str]:
    """Apply every migration not applied yet; returns the versions applied now."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in available():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("applied migration %s", version)
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied
