"""The event stream's positions in the real PostgreSQL (migration 0011, dashboard/live.py).

A reader that pages by a sequence number taken at insert time skips a row whose transaction
took its number first but commits last. These tests open the concurrent transactions
themselves, commit them out of order, poll the stream's reader (``live.read_page``, the one
poll of ``GET /api/v1/stream``) in between, and require every row exactly once. The horizon
of a poll is cluster-wide (any open transaction of any test on the same server holds it
back), so every wait for rows is bounded by a deadline, never by a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from dashboard import live
from dashboard.live import Position, Start
from tests.support.services import create_database, drop_database
from tokentide.migrate import available, migrate

pytestmark = pytest.mark.integration

TENANT = "acme"
WAIT_S = 60.0

Reader = psycopg.AsyncConnection[dict[str, Any]]


@pytest.fixture
async def reader(database: str) -> AsyncIterator[Reader]:
    """The stream's own kind of connection: autocommit, rows as dicts."""
    conn = await psycopg.AsyncConnection.connect(database, autocommit=True, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


def insert_signal(conn: psycopg.Connection[Any], signal_id: str, session_id: str = "s-1") -> None:
    conn.execute(
        "INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens, context_window)"
        " VALUES (%s, %s, %s, 'context_warning', now() - INTERVAL '1 hour', 0.8, 160000, 200000)",
        (TENANT, session_id, signal_id),
    )


def upsert_session(conn: psycopg.Connection[Any], session_id: str, version: int) -> None:
    """What the sink does: a newer version overwrites, an older or equal one changes nothing."""
    conn.execute(
        "INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at, context_window,"
        " state_version, api_requests) VALUES (%s, %s, 'claude_code', now(), now(), 200000, %s, %s)"
        " ON CONFLICT (tenant_id, session_id) DO UPDATE SET state_version = EXCLUDED.state_version,"
        " api_requests = EXCLUDED.api_requests, updated_at = now()"
        " WHERE sessions.state_version < EXCLUDED.state_version",
        (TENANT, session_id, version, version),
    )


def xid_of(conn: psycopg.Connection[Any]) -> int:
    """The id of ``conn``'s open transaction (taken now if it has none yet)."""
    row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return int(row[0])


def key(event: str, row: dict[str, Any]) -> tuple[str, str, int]:
    """A signal by its id; a session by its id and the state it carries."""
    if event == "signal":
        return ("signal", row["signal_id"], 0)
    return ("session", row["session_id"], row["api_requests"])


async def from_now(reader: Reader) -> Start:
    """Where a client connecting now starts."""
    return await live.start(reader, None)


async def poll_until(
    reader: Reader, begin: Start, want: int, timeout_s: float = WAIT_S
) -> tuple[list[tuple[str, str, int]], list[Position], Position]:
    """Poll as the stream does until ``want`` rows came (or time is up); then once more, so
    that anything extra would show. Returns the rows, their positions and the last cursor."""
    got: list[tuple[str, str, int]] = []
    positions: list[Position] = []
    deadline = time.monotonic() + timeout_s
    after = begin.after
    extra_poll = False
    while True:
        page = await live.read_page(reader, TENANT, after)
        sent = [(e, p, r) for e, p, r in page.rows if not begin.committed_before(p)]
        got += [key(e, r) for e, _, r in sent]
        positions += [p for _, p, _ in sent]
        after = page.after
        if extra_poll or time.monotonic() > deadline:
            return got, positions, after
        if len(got) >= want and not page.full:
            extra_poll = True
        await asyncio.sleep(0.05)


def test_rows_are_positioned_by_their_transaction_whatever_the_writer_says(database: str) -> None:
    with psycopg.connect(database) as conn:
        upsert_session(conn, "s-1", 1)
        conn.execute(
            "INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens, context_window,"
            " stream_xid, stream_pos) VALUES (%s, 's-1', 'forged', 'context_warning', now(), 0.8, 1, 2,"
            " '1', 1)",
            (TENANT,),
        )
        xid = str(xid_of(conn))
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 'session', stream_xid::text, stream_pos FROM sessions UNION ALL"
            " SELECT 'signal', stream_xid::text, stream_pos FROM signals ORDER BY 3"
        ).fetchall()
        assert [(r[0], r[1]) for r in rows] == [("session", xid), ("signal", xid)]
        assert rows[0][2] < rows[1][2]  # one sequence orders the rows of a transaction as written
        position = "SELECT stream_xid::text, stream_pos FROM sessions"
        before = conn.execute(position).fetchone()
        upsert_session(conn, "s-1", 1)  # a replayed state: no change, so no new position
        assert conn.execute(position).fetchone() == before
        upsert_session(conn, "s-1", 2)  # a newer state moves the session forward
        after = conn.execute(position).fetchone()
        assert before is not None
        assert after is not None
        assert (int(after[0]), after[1]) > (int(before[0]), before[1])


async def test_two_transactions_committing_out_of_sequence_order_are_both_delivered(
    database: str, reader: Reader
) -> None:
    """The classic trap: the first transaction takes the lower sequence number but commits
    after the second; a poll in between must neither deliver it later nor lose it."""
    start = await from_now(reader)
    first = psycopg.connect(database)
    second = psycopg.connect(database)
    try:
        insert_signal(first, "first")  # lower sequence number, still open
        upsert_session(first, "s-first", 1)
        insert_signal(second, "second")
        upsert_session(second, "s-second", 1)
        second.commit()

        page = await live.read_page(reader, TENANT, start.after)
        first_xid = xid_of(first)
        first.commit()
        got, positions, _ = await poll_until(
            reader, replace(start, after=page.after), want=4 - len(page.rows)
        )
    finally:
        first.close()
        second.close()
    assert [key(e, r) for e, _, r in page.rows] + got == [
        ("signal", "first", 0),
        ("session", "s-first", 1),
        ("signal", "second", 0),
        ("session", "s-second", 1),
    ]
    assert positions == sorted(positions)
    # How: the poll in between held the committed rows back behind the open transaction.
    assert page.rows == []
    assert page.after <= Position(first_xid, 0)


async def test_a_later_transaction_may_take_the_lower_sequence_number(database: str, reader: Reader) -> None:
    """Transaction ids follow the first write, sequence numbers each row: the second
    transaction here has the higher id but the lower number, commits first, and the first one
    (lower id, higher number) commits last. Both arrive, in position order."""
    start = await from_now(reader)
    first = psycopg.connect(database)
    second = psycopg.connect(database)
    try:
        xid_of(first)  # its id is taken now
        insert_signal(second, "second")
        insert_signal(first, "first")
        second.commit()
        page = await live.read_page(reader, TENANT, start.after)
        first.commit()
        got, _, _ = await poll_until(reader, replace(start, after=page.after), want=2 - len(page.rows))
    finally:
        first.close()
        second.close()
    assert [key(e, r) for e, _, r in page.rows] + got == [("signal", "first", 0), ("signal", "second", 0)]


async def test_a_rolled_back_transaction_leaves_no_trace_and_holds_nothing_back(
    database: str, reader: Reader
) -> None:
    start = await from_now(reader)
    with psycopg.connect(database) as doomed, psycopg.connect(database) as kept:
        insert_signal(doomed, "doomed")
        insert_signal(kept, "kept")
        kept.commit()
        doomed.rollback()
    got, _, _ = await poll_until(reader, start, want=1)
    assert got == [("signal", "kept", 0)]


async def test_a_session_updated_while_a_reader_pages_arrives_with_its_latest_state(
    database: str, reader: Reader
) -> None:
    """Updates of one session may be coalesced, but the latest state always arrives, and a
    state that arrived is not sent again."""
    start = await from_now(reader)
    with psycopg.connect(database, autocommit=True) as conn:
        upsert_session(conn, "s-1", 1)
        got, _, after = await poll_until(reader, start, want=1)
        assert got == [("session", "s-1", 1)]
        for version in (2, 3, 4):
            upsert_session(conn, "s-1", version)
        upsert_session(conn, "s-1", 3)  # an older state redelivered: no change
        got, _, after = await poll_until(reader, Start(after), want=1)
        assert got[-1] == ("session", "s-1", 4)
        assert [v for _, _, v in got] == sorted(v for _, _, v in got)  # never back in time
        got, _, _ = await poll_until(reader, Start(after), want=0, timeout_s=0)
        assert got == []


async def test_a_backlog_larger_than_a_page_arrives_whole_and_in_order(database: str, reader: Reader) -> None:
    start = await from_now(reader)
    expected: list[tuple[str, str, int]] = []
    with psycopg.connect(database) as conn:
        for batch in range(3):
            for i in range(live.PAGE // 2 + 7):
                n = f"{batch}-{i:04d}"
                upsert_session(conn, f"s-{n}", 1)
                insert_signal(conn, f"g-{n}", f"s-{n}")
                expected += [("session", f"s-{n}", 1), ("signal", f"g-{n}", 0)]
            conn.commit()
    got, positions, _ = await poll_until(reader, start, want=len(expected))
    assert got == expected
    assert len(set(positions)) == len(positions)


async def test_tenants_are_apart(database: str, reader: Reader) -> None:
    start = await from_now(reader)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens, context_window)"
            " VALUES ('globex', 's-1', 'theirs', 'context_warning', now(), 0.8, 1, 2)"
        )
        insert_signal(conn, "ours")
    got, _, _ = await poll_until(reader, start, want=1)
    assert got == [("signal", "ours", 0)]


async def test_from_now_on_means_committed_after_the_start(database: str, reader: Reader) -> None:
    """A transaction open when the stream starts holds the horizon below a transaction that
    committed before the start: the stream skips the latter and sends the former."""
    with psycopg.connect(database) as open_at_start, psycopg.connect(database) as done_before:
        insert_signal(open_at_start, "committed-after-start")
        insert_signal(done_before, "committed-before-start")
        done_before.commit()
        start = await from_now(reader)
        assert start.after <= Position(xid_of(open_at_start), 0)
        open_at_start.commit()
    got, _, _ = await poll_until(reader, start, want=1)
    assert got == [("signal", "committed-after-start", 0)]


async def test_an_id_this_database_never_issued_means_from_now_on(database: str, reader: Reader) -> None:
    """A position past every transaction id the server has assigned (an id from another
    database, say) would wait forever; it starts from now instead."""
    with psycopg.connect(database, autocommit=True) as conn:
        insert_signal(conn, "before")
        start = await live.start(reader, f"{2**62}-1")
        assert start.after < Position(2**62, 0)
        insert_signal(conn, "after")
    got, _, _ = await poll_until(reader, start, want=1)
    assert got == [("signal", "after", 0)]


# --- the migration over existing rows -------------------------------------------------------

BEFORE_0011 = [v for v, _ in available() if v < "0011"][-1]


@pytest.fixture
def database_before_0011(admin_url: str) -> Iterator[str]:
    dsn = create_database(admin_url, migrated=False)
    migrate(dsn, until=BEFORE_0011)
    yield dsn
    drop_database(admin_url, dsn)


async def test_migration_0011_positions_existing_rows_before_every_reader(database_before_0011: str) -> None:
    dsn = database_before_0011
    with psycopg.connect(dsn) as conn:
        for i in range(3):
            insert_signal(conn, f"old-{i}")
            upsert_session(conn, f"s-old-{i}", 1)
    assert "0011_stream_positions" in migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT stream_xid::text, stream_pos FROM signals UNION ALL"
            " SELECT stream_xid::text, stream_pos FROM sessions"
        ).fetchall()
        assert len(rows) == 6
        assert {x for x, _ in rows} == {"0"}
        assert len({p for _, p in rows}) == 6
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, row_factory=dict_row
        ) as reader:
            # They precede every position a stream can have issued, even one of the very first
            # transaction (3: the first normal transaction id): no reader receives them as new.
            page = await live.read_page(reader, TENANT, Position(3, 0))
            assert page.rows == []
            start = await from_now(reader)
            upsert_session(conn, "s-old-1", 2)  # an old session changes: news
            insert_signal(conn, "new")
            got, positions, _ = await poll_until(reader, start, want=2)
        # New positions follow the old ones.
        assert min(p.pos for p in positions) > max(p for _, p in rows)
    assert got == [("session", "s-old-1", 2), ("signal", "new", 0)]


# --- query plans ----------------------------------------------------------------------------


SEED = """
INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at, context_window, state_version)
SELECT 'tenant-' || (s % 20), 'tenant-' || (s % 20) || '-s-' || s, 'claude_code', now(), now(), 200000, 1
  FROM generate_series(0, 1999) AS s;
INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens, context_window)
SELECT 'tenant-' || (s % 20), 'tenant-' || (s % 20) || '-s-' || s, 'g-' || k, 'context_warning',
       now() - k * INTERVAL '1 minute', 0.8, 160000, 200000
  FROM generate_series(0, 1999) AS s, generate_series(0, 29) AS k;
"""


def scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan that reads a table or an index."""
    if "Relation Name" in plan or "Index Name" in plan:
        yield plan
    for child in plan.get("Plans", ()):
        yield from scans(child)


def test_the_stream_reads_its_position_indexes(database: str) -> None:
    """60,000 signals and 2,000 sessions of 20 tenants, written by many transactions, as
    autovacuum would have analysed them: each poll reads one range of its position index (an
    index scan, or a bitmap of that range when the planner expects few rows), never the
    whole table nor all of a tenant's rows."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(SEED)
        for batch in range(50):  # later transactions: session updates and new signals
            with conn.transaction():
                conn.execute(
                    "UPDATE sessions SET state_version = state_version + 1 WHERE session_id LIKE %s",
                    (f"%-s-{batch}_",),
                )
                conn.execute(
                    "INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens,"
                    " context_window) SELECT tenant_id, session_id, 'late-' || %s, 'context_warning', now(),"
                    " 0.9, 1, 2 FROM sessions WHERE session_id LIKE %s",
                    (batch, f"%-s-{batch}_"),
                )
        conn.execute("ANALYZE sessions")
        conn.execute("ANALYZE signals")
        horizon = conn.execute(live.SNAPSHOT).fetchone()
        middle = conn.execute(
            "SELECT stream_xid::text, stream_pos FROM signals ORDER BY stream_xid DESC, stream_pos DESC"
            " OFFSET 300 LIMIT 1"
        ).fetchone()
        assert horizon is not None
        assert middle is not None
        for query, index in (
            (live.SESSIONS_AFTER, "sessions_by_stream_position"),
            (live.SIGNALS_AFTER, "signals_by_stream_position"),
        ):
            params = {"tenant": "tenant-7", "xid": middle[0], "pos": middle[1], "horizon": horizon[0]}
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", {**params, "limit": live.PAGE}).fetchone()  # type: ignore[arg-type]
            assert row is not None
            found = list(scans(row[0][0]["Plan"]))
            assert [n["Node Type"] for n in found if "Index Name" not in n] in ([], ["Bitmap Heap Scan"]), (
                found
            )
            [used] = [n for n in found if "Index Name" in n]
            assert used["Index Name"] == index, found
            assert "ROW(stream_xid, stream_pos) >" in used["Index Cond"], found
