"""The storage layouts on the real server, through the sink's writer (no Kafka here): daily
partitions (plain) or chunks (TimescaleDB) made for the days written, and partitions ahead
(plain), retention that drops old raw days and keeps rollups, the series catalog, hourly
rollups equal to the sum of their minutes, poison rows refused one by one, and migration 0004
over rows written by the earlier schema. Runs on both layouts (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from sinks.base import Batch
from sinks.postgres.writer import PostgresWriter
from tests.support.services import create_database, drop_database, layout_of
from tokentide.migrate import Layout, available, migrate
from tokentide.records import Event, Point, Rollup, SessionState, Tokens

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def ns(at: datetime) -> int:
    return int(at.timestamp()) * 10**9 + at.microsecond * 1000


def event(event_id: str, at: datetime, tenant: str = "default", input_tokens: int = 10) -> Event:
    return Event(
        tenant=tenant,
        session_id="s-1",
        event_id=event_id,
        agent="claude_code",
        name="api_request",
        time_ns=ns(at),
        model="claude-opus-4-8",
        tokens=Tokens(input=input_tokens, output=1),
        cost_nanos=1_000,
    )


def point(series: str, at: datetime, value: float = 1.0) -> Point:
    return Point(
        tenant="default",
        session_id="s-1",
        agent="claude_code",
        name="claude_code.token.usage",
        series_id=series,
        time_ns=ns(at),
        start_time_ns=ns(at) - 10**9,
        value=value,
        temporality=1,
        unit="tokens",
        attributes={"type": "input", "histogram.count": 2},
    )


def rollup(minute: datetime, input_tokens: int, model: str = "claude-opus-4-8") -> Rollup:
    return Rollup(
        tenant="default",
        session_id="s-1",
        agent="claude_code",
        model=model,
        minute_ns=ns(minute.replace(second=0, microsecond=0)),
        tokens=Tokens(input=input_tokens, output=1),
        cost_nanos=input_tokens * 1000,
        requests=1,
    )


def rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]  # fixed test queries


def days(dsn: str, parent: str) -> set[date]:
    """The UTC days ``parent`` has storage for: its daily partitions (plain), the days its
    chunks start on (TimescaleDB: one-day chunks, aligned to UTC midnight)."""
    with psycopg.connect(dsn) as conn:
        if layout_of(dsn) is Layout.TIMESCALE:
            found = conn.execute(
                "SELECT (range_start AT TIME ZONE 'UTC')::date FROM timescaledb_information.chunks"
                " WHERE hypertable_name = %s",
                (parent,),
            ).fetchall()
            return {r[0] for r in found}
        names = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            (parent,),
        ).fetchall()
    return {datetime.strptime(str(r[0]).rsplit("_p", 1)[1], "%Y%m%d").date() for r in names}


def day(at: datetime) -> date:
    return at.astimezone(UTC).date()


async def test_partitions_are_made_on_demand_for_the_days_written(database: str) -> None:
    writer = PostgresWriter(database)
    old = NOW - timedelta(days=40)
    try:
        result = await writer.write(
            Batch(events=[event("e-old", old), event("e-now", NOW)], points=[point("a", old)])
        )
    finally:
        await writer.close()
    assert result.rejected == []
    assert day(old) in days(database, "events")
    assert day(old) in days(database, "metric_points")
    assert rows(database, "SELECT event_id FROM events ORDER BY ts") == [("e-old",), ("e-now",)]


async def test_retention_drops_old_raw_partitions_and_keeps_rollups(database: str) -> None:
    old = NOW - timedelta(days=10)
    writer = PostgresWriter(database)
    try:
        await writer.write(
            Batch(
                events=[event("e-old", old), event("e-now", NOW)],
                points=[point("a", old), point("a", NOW)],
                rollups=[rollup(old, 5), rollup(NOW, 7)],
            )
        )
    finally:
        await writer.close()
    assert day(old) in days(database, "events")

    short = PostgresWriter(database, retention=timedelta(days=2), days_ahead=3)
    try:
        done = await short.maintain()
        # Written within the retention: kept. Older: not written at all, counted as expired.
        later = await short.write(Batch(events=[event("e-late-old", old), event("e-new", NOW)]))
    finally:
        await short.close()

    # Dropped at once in both layouts (TimescaleDB: drop_chunks, its retention policy set too).
    assert len([action for action, _ in done if action == "dropped"]) >= 2
    assert day(old) not in days(database, "events")
    assert day(old) not in days(database, "metric_points")
    if layout_of(database) is Layout.PLAIN:
        assert day(NOW + timedelta(days=3)) in days(database, "events")  # made ahead
    else:
        assert ("retention", "events") in done  # the policy for TimescaleDB's own job
    assert rows(database, "SELECT event_id FROM events ORDER BY event_id") == [("e-new",), ("e-now",)]
    assert rows(database, "SELECT count(*) FROM metric_points") == [(1,)]
    assert later.expired == {"events": 1, "metric_points": 0}
    # Rollups, per minute and per hour, are never dropped by the raw retention.
    assert rows(database, "SELECT sum(input_tokens) FROM rollups_minute") == [(12,)]
    assert rows(database, "SELECT sum(input_tokens) FROM rollups_hour") == [(12,)]


async def test_hourly_rollups_are_the_sum_of_their_minutes_whatever_the_rewrites(database: str) -> None:
    hour = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    minutes = [hour + timedelta(minutes=m) for m in (0, 1, 59)] + [hour + timedelta(minutes=60)]
    writer = PostgresWriter(database)
    try:
        await writer.write(Batch(rollups=[rollup(m, 10) for m in minutes]))
        # A minute overwritten with its larger full value, twice (a replay), another model.
        await writer.write(Batch(rollups=[rollup(minutes[1], 25), rollup(minutes[0], 3, model="haiku")]))
        await writer.write(Batch(rollups=[rollup(minutes[1], 25)]))
    finally:
        await writer.close()
    assert rows(
        database,
        "SELECT model, hour, input_tokens, cost_usd, requests FROM rollups_hour ORDER BY hour, model",
    ) == [
        ("claude-opus-4-8", hour, 45, Decimal("0.000045000"), 3),
        ("haiku", hour, 3, Decimal("0.000003000"), 1),
        ("claude-opus-4-8", hour + timedelta(hours=1), 10, Decimal("0.000010000"), 1),
    ]
    # The same numbers as a date_bin over the minutes (what a dashboard would compute).
    assert rows(
        database,
        "SELECT model, date_bin('1 hour', minute, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS h,"
        " sum(input_tokens)::bigint, sum(cost_usd), sum(requests)::int FROM rollups_minute"
        " GROUP BY 1, 2 ORDER BY 2, 1",
    ) == rows(
        database,
        "SELECT model, hour, input_tokens, cost_usd, requests FROM rollups_hour ORDER BY hour, model",
    )


async def test_points_go_to_narrow_rows_and_one_catalog_row_per_series(database: str) -> None:
    writer = PostgresWriter(database)
    try:
        batch = Batch(
            points=[point("a", NOW - timedelta(seconds=s), s) for s in range(3)] + [point("b", NOW)]
        )
        await writer.write(batch)
        await writer.write(batch)  # redelivered
    finally:
        await writer.close()
    assert rows(database, "SELECT series_id, name, unit, attributes FROM metric_series ORDER BY 1") == [
        ("a", "claude_code.token.usage", "tokens", {"type": "input"}),
        ("b", "claude_code.token.usage", "tokens", {"type": "input"}),
    ]
    assert rows(
        database, "SELECT series_id, count(*), sum(histogram_count) FROM metric_points GROUP BY 1 ORDER BY 1"
    ) == [
        ("a", 3, Decimal(6)),
        ("b", 1, Decimal(2)),
    ]


async def test_poison_rows_are_refused_alone_and_the_rest_is_written(database: str) -> None:
    too_big = event("e-huge", NOW, input_tokens=2**63)  # past bigint
    future = event("e-future", NOW + timedelta(days=30))  # plain: no partition that far ahead
    state = SessionState(
        tenant="default",
        session_id="s-1",
        agent="claude_code",
        started_at_ns=ns(NOW),
        last_seen_at_ns=ns(NOW),
        cost_nanos=10**30,  # past numeric(20, 9)
        version=1,
    )
    good = [event(f"e-{i}", NOW) for i in range(5)]
    writer = PostgresWriter(database, days_ahead=2)
    try:
        result = await writer.write(
            Batch(events=[*good[:2], too_big, future, *good[2:]], states=[state], rollups=[rollup(NOW, 4)])
        )
    finally:
        await writer.close()
    refused = {(r.table, getattr(r.record, "event_id", None), r.sqlstate) for r in result.rejected}
    wanted = {
        ("events", "e-huge", "22003"),  # numeric_value_out_of_range
        ("sessions", None, "22003"),
    }
    # A hypertable makes a chunk for any time; only the plain layout has no partition that far
    # ahead. (Ingest and the stream stage refuse times over a day ahead: neither layout gets one.)
    plain = layout_of(database) is Layout.PLAIN
    if plain:
        wanted.add(("events", "e-future", "23514"))  # no partition of relation "events" found for row
    assert refused == wanted
    assert result.written["events"] == (5 if plain else 6)
    assert rows(database, "SELECT count(*) FROM events") == [(5 if plain else 6,)]
    assert rows(database, "SELECT count(*) FROM sessions") == [(0,)]
    assert rows(database, "SELECT sum(input_tokens) FROM rollups_hour") == [(4,)]


@pytest.fixture
def database_at_0003(admin_url: str) -> Iterator[str]:
    dsn = create_database(admin_url, migrated=False)
    migrate(dsn, until="0003_session_signals_rollups")
    yield dsn
    drop_database(admin_url, dsn)


def test_migration_0004_keeps_the_rows_of_the_earlier_schema(database_at_0003: str) -> None:
    dsn = database_at_0003
    t1 = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    t2 = datetime(2026, 3, 4, 0, 0, 1, tzinfo=UTC)
    with psycopg.connect(dsn) as conn:
        for i, at in enumerate((t1, t2)):
            conn.execute(
                "INSERT INTO events (tenant_id, session_id, event_id, ts, agent, name, input_tokens)"
                " VALUES ('default', 's-1', %s, %s, 'claude_code', 'api_request', 7)",
                (f"e-{i}", at),
            )
            conn.execute(
                "INSERT INTO metric_points (tenant_id, session_id, series_id, ts, start_ts, agent, name,"
                " value, temporality, unit, attributes) VALUES ('default', 's-1', 'a', %s, %s,"
                " 'claude_code', 'm', %s, 1, 'tokens', %s)",
                (at, at - timedelta(seconds=1), float(i), '{"type": "input", "histogram.count": 4}'),
            )
            conn.execute(
                "INSERT INTO rollups_minute (tenant_id, session_id, model, minute, agent, input_tokens,"
                " output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd,"
                " requests, errors)"
                " VALUES ('default', 's-1', 'm', %s, 'claude_code', 7, 0, 0, 0, 0, 0.5, 1, 0)",
                (at.replace(second=0),),
            )
    applied = migrate(dsn)
    assert applied[:2] == ["0004_storage_layout", "0005_tenant_isolation"]
    assert applied == [v for v, _ in available() if v > "0003_session_signals_rollups"]
    assert rows(dsn, "SELECT event_id, ts, input_tokens FROM events ORDER BY ts") == [
        ("e-0", t1, 7),
        ("e-1", t2, 7),
    ]
    assert {day(t1), day(t2)} <= days(dsn, "events")
    assert rows(dsn, "SELECT series_id, session_id, attributes FROM metric_series") == [
        ("a", "s-1", {"type": "input"})
    ]
    assert rows(dsn, "SELECT ts, value, histogram_count FROM metric_points ORDER BY ts") == [
        (t1, 0.0, 4),
        (t2, 1.0, 4),
    ]
    assert rows(dsn, "SELECT hour, input_tokens, cost_usd FROM rollups_hour ORDER BY hour") == [
        (t1.replace(minute=0), 7, Decimal("0.500000000")),
        (t2.replace(second=0), 7, Decimal("0.500000000")),
    ]
