"""``GET /api/v1/stream``: session updates and signals of one tenant as Server-Sent Events.

The database is the source, polled every ``poll_s``: the sink commits sessions (``updated_at``
set by the database at each upsert) and signals, so what the stream says is what the API and
the tables say. Each event's ``id`` is a cursor, ``<sessions updated_at>.<signals ts>`` in
microseconds since the epoch; a client reconnecting with ``Last-Event-ID`` gets what changed
after it. Because a transaction may commit after a later one started, each poll looks back
``lookback_s`` before the cursor (never before where the client stood when it connected) and
drops what this connection already sent. A comment line
every ``heartbeat_s`` keeps proxies from closing an idle stream.

Events: ``session`` (data: the session as ``GET /api/v1/sessions/{id}`` without signals) and
``signal`` (data: the signal with its ``session_id``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool

from dashboard.queries import SESSION_COLUMNS, session_out, signal_out

_SESSIONS: LiteralString = (
    "SELECT updated_at," + SESSION_COLUMNS + "FROM sessions WHERE tenant_id = %s AND updated_at > %s "
    "ORDER BY updated_at, session_id LIMIT 500"
)
_SIGNALS: LiteralString = """
    SELECT session_id, signal_id, kind, ts, ratio, tokens, context_window, requests_left,
           minutes_left, message
      FROM signals WHERE tenant_id = %s AND ts > %s ORDER BY ts, signal_id LIMIT 500
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    sessions: datetime
    signals: datetime

    def event_id(self) -> str:
        return f"{_micros(self.sessions)}.{_micros(self.signals)}"

    @classmethod
    def parse(cls, last_event_id: str | None, now: datetime) -> Cursor:
        """The cursor of ``Last-Event-ID``; a missing or foreign one means "from now on"."""
        if last_event_id:
            sessions, _, signals = last_event_id.partition(".")
            if sessions.isdigit() and signals.isdigit():
                return cls(_from_micros(int(sessions)), _from_micros(int(signals)))
        return cls(now, now)


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def frame(event: str, data: dict[str, Any], event_id: str) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Sent:
    """What one connection sent recently (bounded), so that look-back re-reads are not re-sent."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._keys: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def first_time(self, key: tuple[str, ...]) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


async def events(
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    tenant: str,
    last_event_id: str | None,
    *,
    disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = 0.5,
    heartbeat_s: float = 15.0,
    lookback_s: float = 5.0,
) -> AsyncIterator[str]:
    """SSE frames for ``tenant`` until the client goes away."""
    cursor = Cursor.parse(last_event_id, datetime.now(UTC))
    floor = cursor  # never look back before where the client stands
    lookback = timedelta(seconds=lookback_s)
    sent = _Sent()
    yield f"retry: {int(poll_s * 2000)}\n\n"
    last_write = time.monotonic()
    while not await disconnected():
        frames: list[str] = []
        async with pool.connection() as conn:
            since = (
                max(floor.sessions, cursor.sessions - lookback),
                max(floor.signals, cursor.signals - lookback),
            )
            sessions = await (await conn.execute(_SESSIONS, (tenant, since[0]))).fetchall()
            signals = await (await conn.execute(_SIGNALS, (tenant, since[1]))).fetchall()
        now = datetime.now(UTC)
        for row in sessions:
            cursor = Cursor(max(cursor.sessions, row["updated_at"]), cursor.signals)
            if sent.first_time(("session", row["session_id"], row["updated_at"].isoformat())):
                body = session_out(row, now).model_dump(mode="json", exclude={"signals"})
                frames.append(frame("session", body, cursor.event_id()))
        for row in signals:
            cursor = Cursor(cursor.sessions, max(cursor.signals, row["ts"]))
            if sent.first_time(("signal", row["session_id"], row["signal_id"])):
                body = {"session_id": row["session_id"], **signal_out(row).model_dump(mode="json")}
                frames.append(frame("signal", body, cursor.event_id()))
        if frames:
            yield "".join(frames)
            last_write = time.monotonic()
        elif time.monotonic() - last_write >= heartbeat_s:
            yield ": heartbeat\n\n"
            last_write = time.monotonic()
        await asyncio.sleep(poll_s)
