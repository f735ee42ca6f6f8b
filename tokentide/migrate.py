"""Versioned schema migrations (``tokentide/migrations/NNNN_name[.layout].sql``), applied in order.

Safe to run from several replicas at once: a session-level advisory lock serialises them,
and each migration commits together with its row in ``schema_migrations``.

**Two physical layouts, one contract** (docs/decisions.md, decision 14). The layout is chosen
once, the first time migrations run on a database, and recorded in ``schema_layout``:
``timescale`` when the ``timescaledb`` extension is available (``pg_available_extensions``),
``plain`` otherwise. ``TOKENTIDE_DB_LAYOUT=plain`` forces plain PostgreSQL even where
TimescaleDB is installed; ``TOKENTIDE_DB_LAYOUT=timescale`` refuses to migrate without it.
A migration is either one file for both layouts (``0004_name.sql``) or one file per layout
(``0004_name.plain.sql`` and ``0004_name.timescale.sql``, both required); its version is
``0004_name`` either way.
"""

from __future__ import annotations

import enum
import logging
import os
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

#: Arbitrary, fixed advisory lock id for schema changes ("tt" + "mig").
MIGRATION_LOCK_ID = 0x7474_6D69_67
#: Environment variable that forces a layout (``auto``, the default, ``plain`` or ``timescale``).
LAYOUT_ENV = "TOKENTIDE_DB_LAYOUT"


class Layout(enum.StrEnum):
    PLAIN = "plain"
    TIMESCALE = "timescale"


class MigrationError(Exception):
    """Migrations cannot run as asked; the message says what to change."""


def _files() -> dict[str, dict[str | None, str]]:
    """version -> {layout or None (both): SQL}."""
    folder = resources.files("tokentide") / "migrations"
    found: dict[str, dict[str | None, str]] = {}
    for f in folder.iterdir():
        if not f.name.endswith(".sql"):
            continue
        stem = f.name.removesuffix(".sql")
        version, _, variant = stem.partition(".")
        if variant and variant not in set(Layout):
            raise MigrationError(f"{f.name}: unknown layout {variant!r} (expected plain or timescale)")
        found.setdefault(version, {})[variant or None] = f.read_text()
    for version, variants in found.items():
        if None in variants and len(variants) > 1:
            raise MigrationError(f"migration {version} has both a common file and layout variants")
        if None not in variants and set(variants) != set(Layout):
            raise MigrationError(f"migration {version} needs one file per layout: {sorted(set(Layout))}")
    return found


def available(layout: Layout = Layout.PLAIN) -> list[tuple[str, str]]:
    """(version, SQL) of every migration shipped for ``layout``, in order."""
    files = _files()
    return [(v, files[v].get(None) or files[v][layout.value]) for v in sorted(files)]


def requested_layout() -> str:
    """The layout asked for in the environment: ``auto``, ``plain`` or ``timescale``."""
    value = os.environ.get(LAYOUT_ENV, "").strip().lower() or "auto"
    if value not in {"auto", *Layout}:
        raise MigrationError(f"{LAYOUT_ENV}={value!r}: expected auto, plain or timescale")
    return value


def _choose_layout(conn: psycopg.Connection[tuple[object, ...]], requested: str) -> Layout:
    """The layout recorded for this database, else the one chosen now (and recorded)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_layout ("
        " layout text NOT NULL CHECK (layout IN ('plain', 'timescale')),"
        " chosen_at timestamptz NOT NULL DEFAULT now(),"
        " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton))"
    )
    row = conn.execute("SELECT layout FROM schema_layout").fetchone()
    if row is not None:
        recorded = Layout(str(row[0]))
        if requested not in ("auto", recorded.value):
            raise MigrationError(
                f"this database was laid out as {recorded.value!r}; {LAYOUT_ENV}={requested} cannot "
                "change that (a partitioned table cannot become a hypertable in place)"
            )
        return recorded
    timescale = (
        conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        is not None
    )
    if requested == Layout.TIMESCALE and not timescale:
        raise MigrationError(
            f"{LAYOUT_ENV}=timescale but the timescaledb extension is not available on this server"
        )
    layout = Layout.TIMESCALE if timescale and requested != Layout.PLAIN else Layout.PLAIN
    conn.execute("INSERT INTO schema_layout (layout) VALUES (%s)", (layout.value,))
    log.info("database layout: %s", layout.value)
    return layout


def database_layout(conn: psycopg.Connection[tuple[object, ...]]) -> Layout:
    """The layout recorded by :func:`migrate` (``plain`` for a database migrated before it)."""
    row = conn.execute("SELECT layout FROM schema_layout").fetchone()
    return Layout(str(row[0])) if row else Layout.PLAIN


def migrate(dsn: str, layout: str | None = None, until: str | None = None) -> list[str]:
    """Apply every migration not applied yet; returns the versions applied now.

    ``layout`` (``auto``, ``plain``, ``timescale``) defaults to ``TOKENTIDE_DB_LAYOUT``;
    ``until`` stops after that version (tests of a migration over existing rows).
    """
    requested = layout if layout is not None else requested_layout()
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            chosen = _choose_layout(conn, requested)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in available(chosen):
                if until is not None and version > until:
                    break
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("applied migration %s (%s layout)", version, chosen.value)
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied
