"""``GET /api/v1/stream``: session updates and signals of one tenant as Server-Sent Events.

The database is the source, polled every ``poll_s``: what the stream says is what the API and
the tables say. Every signal and every session update has a **position** set by the database
when it is written (migration 0011): ``(stream_xid, stream_pos)``, the writing transaction's id
and a sequence number ordering the rows of that transaction. The stream pages by position, in
position order, and reads only positions whose transaction id is below the **horizon**
``pg_snapshot_xmin(pg_current_snapshot())``: every transaction below it has ended, so no row can
ever appear at a position the stream has passed, however late the pipeline writes it and in
whatever order concurrent writers commit (migration 0011 argues it). A session updated
again moves to the newer position: the stream sends its latest state, and never loses one.

Each event's ``id`` is its position, ``<xid>-<pos>``; a client reconnecting with
``Last-Event-ID`` gets exactly what was written after it. A missing id, an id of the former
``<micros>.<micros>`` format, or one this database cannot have issued (a transaction id it has
not reached) means "from now on": every row committed after the stream started (:func:`start`,
before the response begins), none committed before. A comment line every ``heartbeat_s``
keeps proxies from closing an idle stream.

Events: ``session`` (data: the session as ``GET /api/v1/sessions/{id}`` without signals) and
``signal`` (data: the signal with its ``session_id``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool

from dashboard.context_routes import attach
from dashboard.queries import SESSION_COLUMNS, SessionOut, session_out, signal_out

#: Rows read per table and poll; a full page is followed by the next poll at once.
PAGE = 500

#: The current snapshot: every transaction below ``horizon`` has ended; of those from it up to
#: ``next_xid``, the ``running`` ones had not.
SNAPSHOT: LiteralString = """
    SELECT pg_snapshot_xmin(s)::text AS horizon, pg_snapshot_xmax(s)::text AS next_xid,
           ARRAY(SELECT pg_snapshot_xip(s)::text) AS running
      FROM pg_current_snapshot() AS s
"""
# Positions are compared as a row, (stream_xid, stream_pos) > (cursor), which the
# (tenant_id, stream_xid, stream_pos) indexes serve; ORDER BY names the table's columns, not
# the text aliases (text would sort 10 before 9).
SESSIONS_AFTER: LiteralString = (
    "SELECT t.stream_xid::text AS position_xid, t.stream_pos AS position_pos,"
    + SESSION_COLUMNS
    + """FROM sessions AS t
       WHERE t.tenant_id = %(tenant)s
         AND (t.stream_xid, t.stream_pos) > (%(xid)s::xid8, %(pos)s)
         AND t.stream_xid < %(horizon)s::xid8
       ORDER BY t.stream_xid, t.stream_pos LIMIT %(limit)s
"""
)
SIGNALS_AFTER: LiteralString = """
    SELECT t.stream_xid::text AS position_xid, t.stream_pos AS position_pos,
           session_id, signal_id, kind, ts, ratio, tokens, context_window, requests_left,
           minutes_left, message
      FROM signals AS t
     WHERE t.tenant_id = %(tenant)s
       AND (t.stream_xid, t.stream_pos) > (%(xid)s::xid8, %(pos)s)
       AND t.stream_xid < %(horizon)s::xid8
     ORDER BY t.stream_xid, t.stream_pos LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a row stands in the stream: its transaction id, then its sequence number."""

    xid: int
    pos: int

    def event_id(self) -> str:
        return f"{self.xid}-{self.pos}"

    @classmethod
    def parse(cls, last_event_id: str | None) -> Position | None:
        """The position of ``Last-Event-ID``; ``None`` (from now on) for a missing, former
        (``<micros>.<micros>``) or foreign one."""
        xid, sep, pos = (last_event_id or "").partition("-")
        if sep and xid.isdigit() and pos.isdigit() and xid.isascii() and pos.isascii():
            return cls(int(xid), int(pos))
        return None

    @classmethod
    def of(cls, row: dict[str, Any]) -> Position:
        return cls(int(row["position_xid"]), int(row["position_pos"]))


@dataclass(frozen=True, slots=True)
class Start:
    """Where a stream starts: after ``after``, skipping the rows of the transactions that had
    committed before it started (``next_xid`` and ``running`` of the snapshot it started at;
    none for a stream resumed after an event)."""

    after: Position
    next_xid: int = 0
    running: frozenset[int] = frozenset()

    def committed_before(self, at: Position) -> bool:
        return at.xid < self.next_xid and at.xid not in self.running


@dataclass(frozen=True, slots=True)
class Page:
    """What one poll read: ``(event, position, row)`` in position order, and where the next
    poll starts. ``full`` when a table had more rows than a page."""

    rows: list[tuple[str, Position, dict[str, Any]]]
    after: Position
    full: bool


def merge(
    sessions: list[dict[str, Any]],
    signals: list[dict[str, Any]],
    after: Position,
    horizon: int,
    limit: int = PAGE,
) -> Page:
    """Both tables' rows after ``after`` (each read in position order, at most ``limit``, below
    ``horizon``) as one sequence in position order (pure).

    When a table filled its page, rows beyond the last position it returned may exist
    unread: the page then ends there, and the other table's later rows wait for the next
    poll. Otherwise everything below the horizon has been read, and the next poll starts at
    the horizon itself.
    """
    tagged = [("session", Position.of(r), r) for r in sessions] + [
        ("signal", Position.of(r), r) for r in signals
    ]
    tagged.sort(key=lambda item: item[1])
    ends = [Position.of(rows[-1]) for rows in (sessions, signals) if len(rows) >= limit]
    if ends:
        end = min(ends)
        return Page([t for t in tagged if t[1] <= end], max(after, end), full=True)
    return Page(tagged, max(after, Position(horizon, 0)), full=False)


def frame(event: str, data: dict[str, Any], event_id: str) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _body(
    event: str, row: dict[str, Any], now: datetime, session: SessionOut | None = None
) -> dict[str, Any]:
    if event == "session":
        return (session or session_out(row, now)).model_dump(mode="json", exclude={"signals"})
    return {"session_id": row["session_id"], **signal_out(row).model_dump(mode="json")}


async def start(conn: psycopg.AsyncConnection[dict[str, Any]], last_event_id: str | None) -> Start:
    """Where a stream starts: after ``Last-Event-ID``; else (or for a position this database
    has not reached, an id from another one) from now on: every row committed after this
    call is sent, none committed before."""
    (snapshot,) = await (await conn.execute(SNAPSHOT)).fetchall()
    next_xid = int(snapshot["next_xid"])
    after = Position.parse(last_event_id)
    if after is not None and after.xid < next_xid:
        return Start(after)
    running = frozenset(int(x) for x in snapshot["running"])
    return Start(Position(int(snapshot["horizon"]), 0), next_xid, running)


async def read_page(
    conn: psycopg.AsyncConnection[dict[str, Any]], tenant: str, after: Position, limit: int = PAGE
) -> Page:
    """One poll: ``tenant``'s rows after ``after`` below the current horizon."""
    (snapshot,) = await (await conn.execute(SNAPSHOT)).fetchall()
    horizon, next_xid = int(snapshot["horizon"]), int(snapshot["next_xid"])
    if after.xid >= next_xid:  # never after start(): nothing to wait for there
        return Page([], Position(horizon, 0), full=False)
    params = {
        "tenant": tenant,
        "xid": str(after.xid),
        "pos": after.pos,
        "horizon": str(horizon),
        "limit": limit,
    }
    sessions = await (await conn.execute(SESSIONS_AFTER, params)).fetchall()
    signals = await (await conn.execute(SIGNALS_AFTER, params)).fetchall()
    return merge(sessions, signals, after, horizon, limit)


async def events(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    tenant: str,
    begin: Start,
    *,
    disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = 0.5,
    heartbeat_s: float = 15.0,
) -> AsyncIterator[str]:
    """SSE frames for ``tenant`` from ``begin`` (see :func:`start`) until the client goes away."""
    after = begin.after
    yield f"retry: {int(poll_s * 2000)}\n\n"
    last_write = time.monotonic()
    while not await disconnected():
        now = datetime.now(UTC)
        async with pool.connection() as conn:
            page = await read_page(conn, tenant, after)
            rows = [(event, at, row) for event, at, row in page.rows if not begin.committed_before(at)]
            # A session frame carries the session's project and plan, as the API shows them.
            sessions = {id(row): session_out(row, now) for event, _, row in rows if event == "session"}
            await attach(conn, tenant, list(sessions.values()))
        after = page.after
        frames = [
            frame(event, _body(event, row, now, sessions.get(id(row))), at.event_id())
            for event, at, row in rows
        ]
        if frames:
            yield "".join(frames)
            last_write = time.monotonic()
        elif time.monotonic() - last_write >= heartbeat_s:
            yield ": heartbeat\n\n"
            last_write = time.monotonic()
        if not page.full:
            await asyncio.sleep(poll_s)
