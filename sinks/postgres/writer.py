"""Writes batches into PostgreSQL: COPY into temporary tables, then upserts, exactly once.

Contract of :meth:`PostgresWriter.write`: one transaction (a) locks the rows of the batch's
Kafka partitions in ``sink_offsets`` (``FOR UPDATE``, in one order, so two sinks holding the
same partition during a rebalance take turns), (b) leaves out the batch's messages below the
stored positions (already applied; counted in ``already_applied``), (c) writes the rest, (d)
moves the positions to where the batch leaves its partitions, (e) runs ``before_commit`` (the
runner publishes the dead letters there), and commits: rows and positions together or not at
all. If nothing could be written it raises :class:`~sinks.base.StoreUnavailable` (the
database is down, slow or busy: retry the whole batch; what it committed, if the commit
itself was lost, is left out by (b) the next time). Rows PostgreSQL refuses (a value out of
range, a time outside every partition) are returned as :class:`~sinks.base.Rejected` next to
the rows written, never raised, and their messages' positions move all the same; after a
refusal the batch is written again row by row, in a transaction that does (a)-(e) again.

Every statement is also idempotent by natural key (events: event id; points: series + times;
series: series id; sessions: only a higher ``state_version`` overwrites; rollups with
``increment=False``: overwritten with the full value), so records without a Kafka origin
(tools, tests) may be written twice. Rollups with ``increment=True`` are added to the stored
minute (``col = rollups_minute.col + EXCLUDED.col``): for them, exactly once comes from the
positions alone. A batch's rollups of one minute are merged first
(:func:`~sinks.postgres.rows.merge_rollups`).

The same code serves both layouts (decision 14): what differs (daily partitions, hourly
rollups) lives in SQL functions that migration 0004 defines for each layout.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from sinks.base import Batch, BeforeCommit, Layouts, Partition, Rejected, StoreUnavailable, WriteResult
from sinks.postgres.rows import (
    EVENT_COLUMNS,
    EVENTS_LAYOUT,
    POINT_COLUMNS,
    POINTS_LAYOUT,
    ROLLUP_COLUMNS,
    ROLLUP_STAGING_COLUMNS,
    SERIES_COLUMNS,
    SESSION_COLUMNS,
    SIGNAL_COLUMNS,
    days,
    event_text,
    first_points,
    first_seen_at,
    latest_states,
    merge_rollups,
    point_text,
    rollup_key,
    rollup_row,
    series_key,
    series_text,
    session_row,
    signal_row,
)
from tokentide.records import CopyRow, Point, Rollup

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
    #: What is COPYed into staging: the table's columns, then ``extra``'s.
    columns: tuple[str, ...]
    #: The statements that move staging's rows into the table (each row touched by one).
    upserts: tuple[sql.Composed, ...]
    #: Staging-only columns, (name, type).
    extra: tuple[tuple[str, str], ...] = ()
    #: Rows only ever inserted, nearly always new (``ON CONFLICT DO NOTHING``): COPYed into the
    #: table itself, staging and the upsert only when a key is already there (:meth:`direct`).
    insert_only: bool = False

    @property
    def staging(self) -> sql.Identifier:
        return sql.Identifier(f"staging_{self.name}")

    @property
    def copy(self) -> sql.Composed:
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return sql.SQL("COPY {staging} ({cols}) FROM STDIN").format(staging=self.staging, cols=cols)

    @property
    def direct(self) -> sql.Composed:
        """COPY into the table itself: the batch's rows are new but for a redelivery the
        stored positions did not cover (a stream stage re-emitting what it emitted, a
        duplicate id across messages); a key already there fails it, and then staging's
        ``ON CONFLICT DO NOTHING`` writes the rest."""
        cols = sql.SQL(", ").join(map(sql.Identifier, self.columns))
        return sql.SQL("COPY {table} ({cols}) FROM STDIN").format(table=sql.Identifier(self.name), cols=cols)


def _upsert(
    table: str, columns: Sequence[str], conflict: sql.Composable, where: sql.Composable | None = None
) -> sql.Composed:
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    return sql.SQL("INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging}{where} {conflict}").format(
        table=sql.Identifier(table),
        cols=cols,
        staging=sql.Identifier(f"staging_{table}"),
        where=sql.SQL("") if where is None else sql.SQL(" WHERE ") + where,
        conflict=conflict,
    )


def _simple(
    name: str, columns: tuple[str, ...], conflict: sql.Composable, *, insert_only: bool = False
) -> _Table:
    return _Table(name, columns, (_upsert(name, columns, conflict),), insert_only=insert_only)


def _overwrite(columns: Sequence[str], key: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c not in key
    )


_NOTHING = sql.SQL("ON CONFLICT DO NOTHING")
#: The bulk of every batch, and new rows but for redeliveries: COPYed straight in.
EVENTS = _simple("events", EVENT_COLUMNS, _NOTHING, insert_only=True)
#: A series is first seen at its earliest point, whatever order its batches come in.
SERIES = _simple(
    "metric_series",
    SERIES_COLUMNS,
    sql.SQL(
        "ON CONFLICT (tenant_id, series_id) DO UPDATE SET first_seen = EXCLUDED.first_seen "
        "WHERE EXCLUDED.first_seen < metric_series.first_seen"
    ),
)
POINTS = _simple("metric_points", POINT_COLUMNS, _NOTHING, insert_only=True)
SIGNALS = _simple("signals", SIGNAL_COLUMNS, _NOTHING)
_ROLLUP_KEY = ("tenant_id", "session_id", "model", "minute")
_ROLLUP_CONFLICT = sql.SQL("ON CONFLICT (tenant_id, session_id, model, minute) DO UPDATE SET ")
#: What an increment adds to its minute; the other columns describe the minute's session.
_ROLLUP_SUMS = tuple(c for c in ROLLUP_COLUMNS if c not in (*_ROLLUP_KEY, "user_id", "agent"))
ROLLUPS = _Table(
    "rollups_minute",
    ROLLUP_STAGING_COLUMNS,
    (
        # Full values (increment=False, rollups written before increments existed): overwrite.
        _upsert(
            "rollups_minute",
            ROLLUP_COLUMNS,
            _ROLLUP_CONFLICT + _overwrite(ROLLUP_COLUMNS, _ROLLUP_KEY),
            where=sql.SQL("NOT increment"),
        ),
        # Increments: added to what the minute holds.
        _upsert(
            "rollups_minute",
            ROLLUP_COLUMNS,
            _ROLLUP_CONFLICT
            + sql.SQL(", ").join(
                [
                    sql.SQL("user_id = COALESCE(EXCLUDED.user_id, rollups_minute.user_id)"),
                    sql.SQL("agent = EXCLUDED.agent"),
                    *(
                        sql.SQL("{c} = rollups_minute.{c} + EXCLUDED.{c}").format(c=sql.Identifier(c))
                        for c in _ROLLUP_SUMS
                    ),
                ]
            ),
            where=sql.SQL("increment"),
        ),
    ),
    extra=(("increment", "boolean NOT NULL DEFAULT false"),),
)
SESSIONS = _simple(
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


async def _copy_rows(copy: psycopg.AsyncCopy, rows: _Rows) -> None:
    if rows.text:
        lines = rows.rows
        for start in range(0, len(lines), _CHUNK):
            await copy.write("".join(lines[start : start + _CHUNK]))
        return
    for row in rows.rows:
        await copy.write_row(row)


async def _upsert_staged(conn: psycopg.AsyncConnection[Any], table: _Table) -> int:
    """Move staging's rows into ``table``; returns the rows inserted or changed."""
    written = 0
    for statement in table.upserts:
        cur = await conn.execute(statement)
        written += max(cur.rowcount, 0)
    return written


def _columns(partitions: Sequence[Partition]) -> tuple[list[str], list[int]]:
    return [t for t, _ in partitions], [p for _, p in partitions]


# The partitions of a batch come as two arrays: topics, partition numbers. Every sink locks
# them in one order (Python's sort of the pairs is the "C" collation's), so two sinks that
# hold some of the same partitions during a rebalance wait for each other, never deadlock.
_NEW_POSITIONS = (
    "INSERT INTO sink_offsets (topic, partition, next_offset) "
    "SELECT topic, partition, 0 FROM unnest(%s::text[], %s::integer[]) AS batch (topic, partition) "
    'ORDER BY topic COLLATE "C", partition '
    "ON CONFLICT (topic, partition) DO NOTHING"
)
_LOCK_POSITIONS = (
    "SELECT topic, partition, next_offset FROM sink_offsets "
    "WHERE (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::integer[])) "
    'ORDER BY topic COLLATE "C", partition FOR UPDATE'
)
_READ_POSITIONS = (
    "SELECT topic, partition, next_offset FROM sink_offsets "
    "WHERE (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::integer[]))"
)
_MOVE_POSITIONS = (
    "UPDATE sink_offsets AS o SET next_offset = batch.next_offset, updated_at = now() "
    "FROM unnest(%s::text[], %s::integer[], %s::bigint[]) AS batch (topic, partition, next_offset) "
    "WHERE o.topic = batch.topic AND o.partition = batch.partition AND o.next_offset < batch.next_offset"
)


def _merged_rollups(batch: Batch) -> list[Rollup]:
    """The batch's rollups merged by minute; a merged one is dead-lettered (if refused) with
    the origin of the last message that contributed to it."""
    merged = merge_rollups(batch.rollups)
    last = {rollup_key(r): r for r in batch.rollups}
    for rollup in merged:
        if batch.origin_of(rollup) is None and (source := batch.origin_of(last[rollup_key(rollup)])):
            batch.track(source, [rollup])
    return merged


@dataclass(slots=True)
class _Rows:
    """The rows of one table, each with the record it came from (for dead letters): COPY text
    lines (``text``: events, points, series) or tuples for ``write_row``."""

    table: _Table
    rows: list[Any]
    records: list[object]
    text: bool = False


#: Lines per COPY write: the database parses a chunk while the next one is joined.
_CHUNK = 2000


def _series(batch: Batch) -> list[CopyRow | Point]:
    """Each series of the batch's points once, with its earliest point: a prepared point's
    series line as a row of its own (tracked to the point's message), else the point."""
    first: dict[str, CopyRow | Point] = {}

    def offer(key: str, candidate: CopyRow | Point) -> None:
        seen = first.get(key)
        if seen is None or candidate.time_ns < seen.time_ns:
            first[key] = candidate

    records: list[Point] = []
    #: A series row made here -> it and the point it came from (whose message is the row's).
    made: dict[int, tuple[CopyRow, CopyRow]] = {}
    for point in batch.points:
        if not isinstance(point, CopyRow):
            records.append(point)
        elif point.series is not None:
            row = CopyRow(point.time_ns, point.series)
            made[id(row)] = (row, point)
            offer(series_key(point.series), row)
    for point in first_points(records):
        try:
            key = series_key(series_text(point))
        except (ValueError, OverflowError, TypeError):
            key = f"refused/{id(point)}"  # refused when its row is built
        offer(key, point)
    chosen = list(first.values())
    # Only the rows kept are tracked: ids of the others could be reused by later objects.
    for kept in chosen:
        if (pair := made.get(id(kept))) is not None and (origin := batch.origin_of(pair[1])) is not None:
            batch.track(origin, [kept])
    return chosen


def _series_kept(batch: Batch, kept: list[Point | CopyRow], cutoff_ns: int) -> list[Point | CopyRow]:
    """``kept`` (the batch's points not past the retention), where an expired prepared point
    carried its series' line, with that line on the series' earliest kept point instead (first
    seen then, as the records of the same points would say)."""
    lines = {
        series_key(p.series): p.series
        for p in batch.points
        if isinstance(p, CopyRow) and p.series is not None and p.time_ns < cutoff_ns
    }
    if not lines:
        return kept
    carriers: dict[str, int] = {}
    for i, p in enumerate(kept):
        if not isinstance(p, CopyRow) or (key := series_key(p.text)) not in lines:
            continue
        if key not in carriers or p.time_ns < kept[carriers[key]].time_ns:
            carriers[key] = i
    out = list(kept)
    for key, i in carriers.items():
        point = out[i]
        if not isinstance(point, CopyRow) or point.series is not None:
            continue  # it carries its series' line already (the first of its own message)
        moved = CopyRow(point.time_ns, point.text, first_seen_at(lines[key], point.time_ns))
        if (origin := batch.origin_of(point)) is not None:
            batch.track(origin, [moved])
        out[i] = moved
    return out


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
        #: Prepared rows of these layouts are forwarded as they are (``sinks.postgres.rows``).
        self.layouts = Layouts(events=EVENTS_LAYOUT, points=POINTS_LAYOUT)
        #: Direct COPYs that met a key already stored and went through staging instead.
        self.direct_fallbacks = 0

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
                for column, kind in table.extra:
                    await conn.execute(
                        sql.SQL("ALTER TABLE {staging} ADD COLUMN IF NOT EXISTS {column} {kind}").format(
                            staging=table.staging, column=sql.Identifier(column), kind=sql.SQL(kind)
                        )
                    )
            self._conn = conn
        return self._conn

    async def ping(self) -> None:
        """Check the database answers, on a connection of its own (never the writer's)."""
        async with await psycopg.AsyncConnection.connect(self._dsn, connect_timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def positions(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The positions ``sink_offsets`` holds for ``partitions`` (committed ones: a write in
        progress is not waited for), on a connection of its own."""
        topics, numbers = _columns(sorted(set(partitions)))
        if not topics:
            return {}
        try:
            async with await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=5
            ) as conn:
                cur = await conn.execute(_READ_POSITIONS, (topics, numbers))
                return {(str(t), int(p)): int(o) for t, p, o in await cur.fetchall()}
        except psycopg.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

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

    async def write(self, batch: Batch, before_commit: BeforeCommit | None = None) -> WriteResult:
        """Write ``batch`` (see the module's contract)."""
        try:
            conn = await self._connection()
            await self._ensure_partitions(conn, batch)
            try:
                return await self._apply(conn, batch, before_commit, self._write_fast)
            except (psycopg.Error, ValueError, OverflowError) as exc:
                if not poison(exc):
                    raise
                log.warning("batch refused (%s): writing it row by row", exc)
                return await self._apply(conn, batch, before_commit, self._write_row_by_row)
        except psycopg.Error as exc:
            await self._drop_if_broken(exc)
            raise StoreUnavailable(str(exc)) from exc

    # ------------------------------------------------------------------ internals

    async def _apply(
        self,
        conn: psycopg.AsyncConnection[Any],
        batch: Batch,
        before_commit: BeforeCommit | None,
        write_rows: Callable[[psycopg.AsyncConnection[Any], list[_Rows], WriteResult], Awaitable[None]],
    ) -> WriteResult:
        """One transaction: lock and read the positions, write what they do not cover yet with
        ``write_rows``, move them, ``before_commit``, commit."""
        result = WriteResult()
        async with conn.transaction():
            stored = await self._lock_positions(conn, batch.positions)
            todo, result.already_applied = batch.unapplied(stored)
            self._drop_expired(todo, result)
            tables = self._rows(todo, result)
            await write_rows(conn, tables, result)
            result.positions = await self._store_positions(conn, batch.positions, stored)
            if before_commit is not None:
                await before_commit(todo, result)
        for t in tables:
            result.offered[t.table.name] = result.offered.get(t.table.name, 0) + len(t.rows)
        return result

    @staticmethod
    async def _lock_positions(
        conn: psycopg.AsyncConnection[Any], positions: Mapping[Partition, int]
    ) -> dict[Partition, int]:
        """Lock the rows of ``positions``' partitions (made at 0 where missing) for the rest of
        the transaction, always in the same order; returns what they hold. A second writer of
        the same partitions waits here until this transaction ends, then reads its positions."""
        topics, numbers = _columns(sorted(positions))
        if not topics:
            return {}
        await conn.execute(_NEW_POSITIONS, (topics, numbers))
        cur = await conn.execute(_LOCK_POSITIONS, (topics, numbers))
        return {(str(t), int(p)): int(o) for t, p, o in await cur.fetchall()}

    @staticmethod
    async def _store_positions(
        conn: psycopg.AsyncConnection[Any],
        positions: Mapping[Partition, int],
        stored: Mapping[Partition, int],
    ) -> dict[Partition, int]:
        """Move the locked positions forward to ``positions`` (never back); returns them."""
        ahead = sorted(p for p, offset in positions.items() if offset > stored.get(p, 0))
        if ahead:
            topics, numbers = _columns(ahead)
            await conn.execute(_MOVE_POSITIONS, (topics, numbers, [positions[p] for p in ahead]))
        return {p: max(offset, stored.get(p, 0)) for p, offset in positions.items()}

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
        batch.events, batch.points = events, _series_kept(batch, points, cutoff_ns)

    def _rows(self, batch: Batch, result: WriteResult) -> list[_Rows]:
        """Every table's rows; a record its row cannot even be built for is rejected here.
        Prepared rows are taken as they are."""
        builders: list[tuple[_Table, Sequence[object], Callable[[Any], Any], bool]] = [
            (EVENTS, batch.events, event_text, True),
            (SERIES, _series(batch), series_text, True),
            (POINTS, batch.points, point_text, True),
            (SESSIONS, latest_states(batch.states), session_row, False),
            (SIGNALS, batch.signals, signal_row, False),
            (ROLLUPS, _merged_rollups(batch), rollup_row, False),
        ]
        out: list[_Rows] = []
        for table, records, build, text in builders:
            rows: list[Any] = []
            kept: list[object] = []
            for record in records:
                if isinstance(record, CopyRow):
                    rows.append(record.text)
                    kept.append(record)
                    continue
                try:
                    rows.append(build(record))
                except (ValueError, OverflowError, TypeError) as exc:
                    result.rejected.append(Rejected(table.name, record, f"{type(exc).__name__}: {exc}", None))
                    continue
                kept.append(record)
            out.append(_Rows(table, rows, kept, text))
        return out

    async def _ensure_partitions(self, conn: psycopg.AsyncConnection[Any], batch: Batch) -> None:
        """Daily partitions for the batch's rows (plain layout; a no-op in TimescaleDB's), in
        transactions of their own: creating one locks its parent table briefly."""
        horizon = datetime.now(UTC).date() + timedelta(days=self._days_ahead)
        for parent, times in _PARTITIONED:
            wanted = set()
            for day in days(times(batch)):  # a time no day holds: refused when its row is built
                # Rows past the retention are not written (``_drop_expired``): no partition.
                if (parent, day) not in self._partitions and day <= horizon and not self._expired_day(day):
                    wanted.add(day)
            for day in sorted(wanted):
                await conn.execute("SELECT tokentide_create_partitions(%s, %s, %s)", (parent, day, day))
                self._partitions.add((parent, day))

    async def _write_fast(
        self, conn: psycopg.AsyncConnection[Any], tables: list[_Rows], result: WriteResult
    ) -> None:
        """The whole batch (inside :meth:`_apply`'s transaction): one COPY per table into
        staging, its upserts from there."""
        for t in tables:
            if not t.rows:
                continue
            if t.table.insert_only:
                try:
                    # In a savepoint: a key already there undoes only this COPY.
                    async with conn.transaction(), conn.cursor().copy(t.table.direct) as copy:
                        await _copy_rows(copy, t)
                except psycopg.errors.UniqueViolation:
                    self.direct_fallbacks += 1
                else:
                    result.written[t.table.name] = len(t.rows)
                    continue
            async with conn.cursor().copy(t.table.copy) as copy:
                await _copy_rows(copy, t)
            result.written[t.table.name] = await _upsert_staged(conn, t.table)
        await self._rollup_hours(conn, tables, result)

    async def _write_row_by_row(
        self, conn: psycopg.AsyncConnection[Any], tables: list[_Rows], result: WriteResult
    ) -> None:
        """Each row in a savepoint (inside :meth:`_apply`'s transaction): the rows PostgreSQL
        refuses are rejected with its reason, the others written. Only after the fast path
        failed."""
        for t in tables:
            kept_rows: list[tuple[Any, ...]] = []
            for row, record in zip(t.rows, t.records, strict=True):
                try:
                    async with conn.transaction():
                        async with conn.cursor().copy(t.table.copy) as copy:
                            await (copy.write(row) if t.text else copy.write_row(row))
                        written = await _upsert_staged(conn, t.table)
                        await conn.execute(sql.SQL("DELETE FROM {}").format(t.table.staging))
                except (psycopg.Error, ValueError, OverflowError) as exc:
                    if not poison(exc):
                        raise
                    sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
                    result.rejected.append(Rejected(t.table.name, record, str(exc).strip(), sqlstate))
                    continue
                result.written[t.table.name] = result.written.get(t.table.name, 0) + written
                kept_rows.append(row)
            if t.table is ROLLUPS and kept_rows:
                # The hourly recomputation reads the minutes written from staging.
                async with conn.cursor().copy(t.table.copy) as copy:
                    await _copy_rows(copy, replace(t, rows=kept_rows))
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
