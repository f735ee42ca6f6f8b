"""Writes batches into PostgreSQL: COPY into temporary tables, then idempotent upserts.

Contract: :meth:`PostgresWriter.write` either commits the whole batch or nothing. Every
statement is idempotent by natural key (events: event id; points: series + times; sessions:
only a higher ``state_version`` overwrites), so writing a batch twice changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from sinks.base import Batch
from sinks.postgres.rows import (
    EVENT_COLUMNS,
    POINT_COLUMNS,
    ROLLUP_COLUMNS,
    SESSION_COLUMNS,
    SIGNAL_COLUMNS,
    event_row,
    latest_rollups,
    latest_states,
    point_row,
    rollup_row,
    session_row,
    signal_row,
)

log = logging.getLogger(__name__)

_SESSION_UPDATE = sql.SQL(", ").join(
    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
    for c in SESSION_COLUMNS
    if c not in ("tenant_id", "session_id")
)


def _copy_and_insert(
    table: str, columns: tuple[str, ...], conflict: sql.Composable
) -> tuple[sql.Composed, sql.Composed]:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    staging = sql.Identifier(f"staging_{table}")
    copy = sql.SQL("COPY {staging} ({cols}) FROM STDIN").format(staging=staging, cols=cols)
    insert = sql.SQL("INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} {conflict}").format(
        table=sql.Identifier(table), cols=cols, staging=staging, conflict=conflict
    )
    return copy, insert


_EVENTS = _copy_and_insert("events", EVENT_COLUMNS, sql.SQL("ON CONFLICT DO NOTHING"))
_POINTS = _copy_and_insert("metric_points", POINT_COLUMNS, sql.SQL("ON CONFLICT DO NOTHING"))
_SIGNALS = _copy_and_insert("signals", SIGNAL_COLUMNS, sql.SQL("ON CONFLICT DO NOTHING"))
_ROLLUP_UPDATE = sql.SQL(", ").join(
    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
    for c in ROLLUP_COLUMNS
    if c not in ("tenant_id", "session_id", "model", "minute")
)
_ROLLUPS = _copy_and_insert(
    "rollups_minute",
    ROLLUP_COLUMNS,
    sql.SQL("ON CONFLICT (tenant_id, session_id, model, minute) DO UPDATE SET {update}").format(
        update=_ROLLUP_UPDATE
    ),
)
_SESSIONS = _copy_and_insert(
    "sessions",
    SESSION_COLUMNS,
    sql.SQL(
        "ON CONFLICT (tenant_id, session_id) DO UPDATE SET {update}, updated_at = now() "
        "WHERE sessions.state_version < EXCLUDED.state_version"
    ).format(update=_SESSION_UPDATE),
)


class PostgresWriter:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            for table in ("events", "metric_points", "sessions", "signals", "rollups_minute"):
                await conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {staging} "
                        "(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    ).format(staging=sql.Identifier(f"staging_{table}"), table=sql.Identifier(table))
                )
            self._conn = conn
        return self._conn

    async def ping(self) -> None:
        """Check the database answers, on a connection of its own (never the writer's)."""
        async with await psycopg.AsyncConnection.connect(self._dsn, connect_timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def write(self, batch: Batch) -> dict[str, int]:
        """Write ``batch`` in one transaction; returns rows offered per table.

        Raises ``psycopg.OperationalError`` when the database is unreachable (retry), other
        ``psycopg.Error`` subclasses when it refused the data.
        """
        conn = await self._connection()
        jobs: list[tuple[tuple[sql.Composed, sql.Composed], list[tuple[Any, ...]]]] = [
            (_EVENTS, [event_row(e) for e in batch.events]),
            (_POINTS, [point_row(p) for p in batch.points]),
            (_SESSIONS, [session_row(s) for s in latest_states(batch.states)]),
            (_SIGNALS, [signal_row(g) for g in batch.signals]),
            (_ROLLUPS, [rollup_row(r) for r in latest_rollups(batch.rollups)]),
        ]
        try:
            async with conn.transaction():
                for (copy_sql, insert_sql), rows in jobs:
                    if not rows:
                        continue
                    async with conn.cursor().copy(copy_sql) as copy:
                        for row in rows:
                            await copy.write_row(row)
                    await conn.execute(insert_sql)
        except psycopg.OperationalError:
            await self.close()
            raise
        tables = ("events", "metric_points", "sessions", "signals", "rollups_minute")
        return {table: len(rows) for table, (_, rows) in zip(tables, jobs, strict=True)}

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()
