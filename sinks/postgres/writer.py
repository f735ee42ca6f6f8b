"""Writes batches into PostgreSQL: COPY into temporary tables, then idempotent upserts.

Contract of :meth:`PostgresWriter.write`: either every row of the batch that PostgreSQL
accepts is committed in one transaction, or nothing is and it raises
:class:`~sinks.base.StoreUnavailable` (the database is down, slow or busy: retry the whole
batch). Rows PostgreSQL refuses (a value out of range, a time outside every partition) are
returned as :class:`~sinks.base.Rejected` next to the rows written, never raised. Every
statement is idempotent by natural key (events: event id; points: series + times; series:
series id; sessions: only a higher ``state_version`` overwrites; rollups: overwritten with the
full value), so writing a batch twice changes nothing.

The same code serves both layouts (decision 14): what differs (daily partitions, hourly
rollups) lives in SQL functions that migration 0004 defines for each layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from sinks.base import Batch, Rejected, StoreUnavailable, WriteResult
from sinks.postgres.rows import (
    EVENT_COLUMNS,
    POINT_COLUMNS,
    ROLLUP_COLUMNS,
    SERIES_COLUMNS,
    SESSION_COLUMNS,
    SIGNAL_COLUMNS,
    event_row,
    first_points,
    latest_rollups,
    latest_states,
    point_row,
    rollup_row,
    series_row,
    session_row,
    signal_row,
    timestamp,
)

log = logging.getLogger(__name__)

#: SQLSTATE classes of errors that say the database, not the data, is the problem: connection
#: (08), resources (53), operator intervention (57: shutdown, statement timeout), system (58),
#: transaction rollback (40: serialization failure, deadlock), lock not available (55P03).
_RETRIABLE_CLASSES = ("08", "40", "53", "57", "58")
_RETRIABLE_STATES = ("55P03",)


def retriable(exc: BaseException) -> bool:
    """Whether ``exc`` means "try the same batch again later" rather than "this data is bad"."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        return state[:2] in _RETRIABLE_CLASSES or state in _RETRIABLE_STATES
    return False


def poison(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL (or the row encoding) refusing a value of the data."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
        return True
    # Encoding a row for COPY: a lone surrogate in a string, an int past any column type.
    return isinstance(exc, ValueError | OverflowError) and not isinstance(exc, psycopg.Error)


@dataclass(frozen=True, slots=True)
class _Table:
    """One target table: how its rows are COPYed to staging and upserted from there."""

    name: str
    columns: tuple[str, ...]
    conflict: sql.Composable

    @property
    def staging(self) -> sql.Identifier:
        return sql.Identifier(f"staging_{self.name}")

    @property
    def copy(self) -> sql.Composed:
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return sql.SQL("COPY {staging} ({cols}) FROM STDIN").format(staging=self.staging, cols=cols)

    @property
    def insert(self) -> sql.Composed:
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return sql.SQL("INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} {conflict}").format(
            table=sql.Identifier(self.name), cols=cols, staging=self.staging, conflict=self.conflict
        )


def _overwrite(columns: Sequence[str], key: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c not in key
    )


_NOTHING = sql.SQL("ON CONFLICT DO NOTHING")
EVENTS = _Table("events", EVENT_COLUMNS, _NOTHING)
SERIES = _Table("metric_series", SERIES_COLUMNS, _NOTHING)
POINTS = _Table("metric_points", POINT_COLUMNS, _NOTHING)
SIGNALS = _Table("signals", SIGNAL_COLUMNS, _NOTHING)
_ROLLUP_KEY = ("tenant_id", "session_id", "model", "minute")
ROLLUPS = _Table(
    "rollups_minute",
    ROLLUP_COLUMNS,
    sql.SQL("ON CONFLICT (tenant_id, session_id, model, minute) DO UPDATE SET {u}").format(
        u=_overwrite(ROLLUP_COLUMNS, _ROLLUP_KEY)
    ),
)
SESSIONS = _Table(
    "sessions",
    SESSION_COLUMNS,
    sql.SQL(
        "ON CONFLICT (tenant_id, session_id) DO UPDATE SET {u}, updated_at = now() "
        "WHERE sessions.state_version < EXCLUDED.state_version"
    ).format(u=_overwrite(SESSION_COLUMNS, ("tenant_id", "session_id"))),
)
#: In write order: the series catalog before the points that refer to it.
TABLES = (EVENTS, SERIES, POINTS, SESSIONS, SIGNALS, ROLLUPS)
#: Tables partitioned by day in the plain layout, and the time of each of their records.
_PARTITIONED: tuple[tuple[str, Callable[[Batch], Iterable[int]]], ...] = (
    ("events", lambda b: (e.time_ns for e in b.events)),
    ("metric_points", lambda b: (p.time_ns for p in b.points)),
)


@dataclass(slots=True)
class _Rows:
    """The rows of one table, each with the record it came from (for dead letters)."""

    table: _Table
    rows: list[tuple[Any, ...]]
    records: list[object]


class PostgresWriter:
    """The PostgreSQL sink. ``retention`` drops raw rows (and partitions) older than it;
    ``days_ahead`` bounds how far in the future a row's day may be for a partition to be made
    for it (later rows are refused and dead-lettered)."""

    def __init__(
        self,
        dsn: str,
        *,
        retention: timedelta | None = None,
        days_ahead: int = 7,
        statement_timeout_s: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self._retention = retention
        self._days_ahead = days_ahead
        self._statement_timeout_ms = int(statement_timeout_s * 1000)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._partitions: set[tuple[str, date]] = set()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=5,
                options=f"-c statement_timeout={self._statement_timeout_ms}",
            )
            for table in TABLES:
                await conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS {staging} "
                        "(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                    ).format(staging=table.staging, table=sql.Identifier(table.name))
                )
            self._conn = conn
        return self._conn

    async def ping(self) -> None:
        """Check the database answers, on a connection of its own (never the writer's)."""
        async with await psycopg.AsyncConnection.connect(self._dsn, connect_timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def maintain(self) -> list[tuple[str, str]]:
        """Partitions ahead, retention: ``tokentide_maintain`` of the database's layout."""
        try:
            # A connection of its own: the writer's may be inside a batch's transaction.
            async with await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=5
            ) as conn:
                cur = await conn.execute(
                    "SELECT action, relation FROM tokentide_maintain(%s, %s)",
                    (self._retention, self._days_ahead),
                )
                done = [(str(a), str(r)) for a, r in await cur.fetchall()]
        except psycopg.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._partitions = {(t, d) for t, d in self._partitions if not self._expired_day(d)}
        for action, relation in done:
            log.info("maintenance: %s %s", action, relation)
        return done

    async def write(self, batch: Batch) -> WriteResult:
        """Write ``batch`` (see the module's contract)."""
        result = WriteResult()
        self._drop_expired(batch, result)
        tables = self._rows(batch, result)
        try:
            conn = await self._connection()
            await self._ensure_partitions(conn, batch)
            try:
                await self._write_fast(conn, tables, result)
            except (psycopg.Error, ValueError, OverflowError) as exc:
                if not poison(exc):
                    raise
                log.warning("batch refused (%s): writing it row by row", exc)
                result.written.clear()
                await self._write_row_by_row(conn, tables, result)
        except psycopg.Error as exc:
            await self._drop_if_broken(exc)
            raise StoreUnavailable(str(exc)) from exc
        for t in tables:
            result.offered[t.table.name] = result.offered.get(t.table.name, 0) + len(t.rows)
        return result

    # ------------------------------------------------------------------ internals

    def _expired_day(self, day: date) -> bool:
        """Whether every row of ``day`` is past the retention (its partition would be dropped)."""
        if self._retention is None:
            return False
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        return end <= datetime.now(UTC) - self._retention

    def _drop_expired(self, batch: Batch, result: WriteResult) -> None:
        """Raw rows older than the retention are not written (the next maintenance would drop
        them); they are counted. Sessions and rollups still hold what they counted."""
        if self._retention is None:
            return
        cutoff_ns = int((datetime.now(UTC) - self._retention).timestamp() * 1e9)
        # Whole days only, as the partitions: a day is expired when its end is before the cutoff.
        cutoff_ns -= cutoff_ns % (86_400 * 10**9)
        events = [e for e in batch.events if e.time_ns >= cutoff_ns]
        points = [p for p in batch.points if p.time_ns >= cutoff_ns]
        result.expired["events"] = len(batch.events) - len(events)
        result.expired["metric_points"] = len(batch.points) - len(points)
        batch.events, batch.points = events, points

    def _rows(self, batch: Batch, result: WriteResult) -> list[_Rows]:
        """Every table's rows; a record its row cannot even be built for is rejected here."""
        points = batch.points
        builders: list[tuple[_Table, Sequence[object], Callable[[Any], tuple[Any, ...]]]] = [
            (EVENTS, batch.events, event_row),
            (SERIES, first_points(points), series_row),
            (POINTS, points, point_row),
            (SESSIONS, latest_states(batch.states), session_row),
            (SIGNALS, batch.signals, signal_row),
            (ROLLUPS, latest_rollups(batch.rollups), rollup_row),
        ]
        out: list[_Rows] = []
        for table, records, build in builders:
            rows: list[tuple[Any, ...]] = []
            kept: list[object] = []
            for record in records:
                try:
                    rows.append(build(record))
                except (ValueError, OverflowError, TypeError) as exc:
                    result.rejected.append(Rejected(table.name, record, f"{type(exc).__name__}: {exc}", None))
                    continue
                kept.append(record)
            out.append(_Rows(table, rows, kept))
        return out

    async def _ensure_partitions(self, conn: psycopg.AsyncConnection[Any], batch: Batch) -> None:
        """Daily partitions for the batch's rows (plain layout; a no-op in TimescaleDB's), in
        transactions of their own: creating one locks its parent table briefly."""
        horizon = datetime.now(UTC).date() + timedelta(days=self._days_ahead)
        for parent, times in _PARTITIONED:
            wanted = set()
            for ns in times(batch):
                try:
                    day = timestamp(ns).date()
                except (OverflowError, ValueError):
                    continue  # rejected when its row is built
                if (parent, day) not in self._partitions and day <= horizon:
                    wanted.add(day)
            for day in sorted(wanted):
                await conn.execute("SELECT tokentide_create_partitions(%s, %s, %s)", (parent, day, day))
                self._partitions.add((parent, day))

    async def _write_fast(
        self, conn: psycopg.AsyncConnection[Any], tables: list[_Rows], result: WriteResult
    ) -> None:
        """The whole batch: one COPY per table into staging, one upsert from there."""
        async with conn.transaction():
            for t in tables:
                if not t.rows:
                    continue
                async with conn.cursor().copy(t.table.copy) as copy:
                    for row in t.rows:
                        await copy.write_row(row)
                cur = await conn.execute(t.table.insert)
                result.written[t.table.name] = max(cur.rowcount, 0)
            await self._rollup_hours(conn, tables, result)

    async def _write_row_by_row(
        self, conn: psycopg.AsyncConnection[Any], tables: list[_Rows], result: WriteResult
    ) -> None:
        """Each row in a savepoint of one transaction: the rows PostgreSQL refuses are
        rejected with its reason, the others written. Only after the fast path failed."""
        async with conn.transaction():
            for t in tables:
                kept_rows: list[tuple[Any, ...]] = []
                for row, record in zip(t.rows, t.records, strict=True):
                    try:
                        async with conn.transaction():
                            async with conn.cursor().copy(t.table.copy) as copy:
                                await copy.write_row(row)
                            cur = await conn.execute(t.table.insert)
                            await conn.execute(sql.SQL("DELETE FROM {}").format(t.table.staging))
                    except (psycopg.Error, ValueError, OverflowError) as exc:
                        if not poison(exc):
                            raise
                        sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
                        result.rejected.append(Rejected(t.table.name, record, str(exc).strip(), sqlstate))
                        continue
                    result.written[t.table.name] = result.written.get(t.table.name, 0) + max(cur.rowcount, 0)
                    kept_rows.append(row)
                if t.table is ROLLUPS and kept_rows:
                    # The hourly recomputation reads the minutes written from staging.
                    async with conn.cursor().copy(t.table.copy) as copy:
                        for row in kept_rows:
                            await copy.write_row(row)
            await self._rollup_hours(conn, tables, result)

    async def _rollup_hours(
        self, conn: psycopg.AsyncConnection[Any], tables: list[_Rows], result: WriteResult
    ) -> None:
        if any(t.table is ROLLUPS and t.rows for t in tables):
            cur = await conn.execute("SELECT tokentide_rollup_hours()")
            row = await cur.fetchone()
            result.written["rollups_hour"] = int(row[0]) if row else 0

    async def _drop_if_broken(self, exc: psycopg.Error) -> None:
        conn = self._conn
        if conn is None or conn.closed or retriable(exc):
            await self.close()

    async def close(self) -> None:
        """Close the connection; safe to call twice."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()


__all__ = ["PostgresWriter", "poison", "retriable"]
