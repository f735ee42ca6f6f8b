"""Prepared rows (decision 44) against real PostgreSQL and Kafka: the COPY text lines the stream
stage builds store exactly what the typed values store, through the sink as through the writer.

The oracle is psycopg's own adaptation of typed Python values computed here (datetimes by
integer arithmetic, ``Decimal``, ``Jsonb``), independent of ``sinks.postgres.rows``' text
formatting. Rows are compared column by column as PostgreSQL's text of each value (exact for
floats, NaN and -0 included, for numeric scales and for jsonb).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.types.json import Jsonb

from sinks.base import Batch, SinkMetrics, SinkRunner
from sinks.postgres.rows import EVENTS_LAYOUT, POINTS_LAYOUT, event_rows, event_text, point_rows, with_rows
from sinks.postgres.writer import PostgresWriter
from tests.support.services import end_offsets, read_all, sink_settings, wait_caught_up
from tokentide.records import (
    CopyRow,
    CopyRows,
    Event,
    EventBatch,
    Point,
    PointBatch,
    Tokens,
    replace,
    to_schema_1,
)
from tokentide.settings import SinkSettings

pytestmark = pytest.mark.integration

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NAN, INF = float("nan"), float("inf")
SECOND = 10**9
#: 2023-11-14 22:13:20 UTC, with nanoseconds below the microsecond that must be floored away.
T0 = 1_700_000_000 * SECOND

#: Strings COPY text must escape, or must not mistake for its markers (``\N``, ``\.``).
TRICKY = [
    "back\\slash \\N \\. \\\\ end\\",
    "tab\there\t",
    "new\nline\r\ncrlf\rcr\n",
    "nul\x00inside\x00",
    "quotes ' \" ` and ;,|",
    "unicode ünïcødé 日本語 עברית",
    "emoji 😀👩‍💻🏳️‍🌈",  # the joiners (U+200D) are the point
    "C:\\Users\\dev\\new\\table.txt",
    '{"json": "looking", "n": [1, 2, null], "esc": "\\u0000"}',
    "\\N",
    "",
    "controls \x01\x0b\x0c\x1b\x7f\u2028\x85\xa0 end",
    "\\.",
    "\ufeffbom, para\u2029sep, the last code point \U0010ffff, a private one \ue000",
    "long " + "\\\t\n\r\x00\"'😀" * 5000,
]
#: Attributes: nested containers, every JSON scalar, NUL in keys and values, numbers at the
#: edges of int64/uint64 and of doubles, NaN and infinities (jsonb has none: null).
ATTRIBUTES: list[dict[str, Any]] = [
    {},
    {
        "plain": "value",
        "int": 42,
        "neg": -7,
        "max": 2**63 - 1,
        "min": -(2**63),
        "u64": 2**64 - 1,
        "float": 0.1,
        "tiny": 5e-324,
        "huge": 1e300,
        "negzero": -0.0,
        "true": True,
        "false": False,
        "none": None,
    },
    {
        "nested": {"list": [1, "two", None, 3.5, True, {"deep": [[], {}, [None]]}], "empty": {}},
        "json_looking": '{"a": 1}',
        "array_looking": "[1,2]",
        "null_looking": "null",
        "backslash_n": "\\N",
    },
    {
        'tricky\\key\t\n"': "v\\al\tue\n\r\"'",
        "nul\x00key": "nul\x00value",
        "list": ["a\x00b", "\\N", "😀", "\x01"],
        "unicode": "日本語 😀",
        "path": "C:\\new\\table",
    },
    {"nan": NAN, "inf": INF, "list": [NAN, -INF, 1.0], "ok": 2.5},
]
DURATIONS = [None, NAN, INF, -INF, 0.1, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1234.5678]
#: The largest numeric(20, 9) holds (more than MessagePack's int64: see :func:`wire`), int64's.
COSTS = [None, 0, -1, -123_456_789_012, 99_999_999_999_999_999_999, 2**63 - 1, 1_474_400]
TOKENS = [
    None,
    Tokens(),
    Tokens(input=2**63 - 1, output=1, cache_read=2, cache_creation=3, reasoning=4, cache_creation_1h=1),
    Tokens(input=476, output=42, cache_read=1024, cache_creation=300),
]
TIMES = [
    T0 + 123_456_789,  # nanoseconds floored to .123456
    0,
    -1,  # 1969-12-31 23:59:59.999999
    -999,
    -946_684_800 * SECOND - 1,  # just before 1940
    -9_000_000_000 * SECOND + 999,  # 1684
    951_782_400 * SECOND + 999_999_999,  # 2000-02-29, the last nanosecond of a second
    T0 + 999,
]
SEQUENCES = [None, 0, -5, 2**63 - 1, 42]
KINDS = ["usage", "prompt", "tool_result", "a newer\tkind\\x", "other"]
BOOLS = [None, True, False]


def cycle(values: list[Any], i: int) -> Any:
    return values[i % len(values)]


def tricky_events(tenant: str) -> list[Event]:
    """Events holding every tricky value at least once (NUL, escapes, edges, nulls)."""
    events = []
    for i in range(max(len(TRICKY), len(DURATIONS), len(TIMES), len(COSTS)) + 4):
        s = cycle(TRICKY, i)
        maybe = None if i % 4 == 3 else cycle(TRICKY, i + 5)
        events.append(
            Event(
                tenant=tenant,
                session_id=f"session-{i % 3}{cycle(TRICKY, i + 1)}",
                agent=f"claude-code{cycle(TRICKY, i + 2) if i % 2 else ''}",
                event_id=f"e{i}:{s}",
                name=s or "api_request",
                kind=cycle(KINDS, i),
                time_ns=cycle(TIMES, i),
                sequence=cycle(SEQUENCES, i),
                user_id=maybe,
                model=None if i % 5 == 0 else f"claude-opus-4-8{cycle(TRICKY, i + 3)}",
                query_source=cycle(TRICKY, i + 4) if i % 2 else None,
                request_id=None if i % 3 == 0 else f"req_{cycle(TRICKY, i + 6)}",
                duration_ms=cycle(DURATIONS, i),
                tokens=cycle(TOKENS, i),
                cost_nanos=cycle(COSTS, i),
                cost_source=cycle(["agent", "price_table", None, "mixed\\\t"], i),
                main_context=cycle(BOOLS, i),
                attributes=cycle(ATTRIBUTES, i),
            )
        )
    return events


def wire(events: list[Event]) -> list[Event]:
    """``events`` as MessagePack carries them: a cost past int64 at int64's largest."""
    return [replace(e, cost_nanos=min(e.cost_nanos, 2**63 - 1)) if e.cost_nanos else e for e in events]


def tricky_points(tenant: str, suffix: str) -> list[Point]:
    """Points of four series (a sum, a gauge of special values, a histogram with its count in
    the attributes, one of tricky strings); each series' earliest point is not its first."""
    sum_attrs = {**ATTRIBUTES[2], "type": "input"}
    histogram = {**ATTRIBUTES[3], "histogram.count": 0, "le": "+Inf"}
    points = []

    def add(series: str, time_ns: int, start_ns: int, value: float, temporality: int, **kw: Any) -> None:
        points.append(
            Point(
                tenant=tenant,
                session_id=kw.pop("session_id", "session-0"),
                agent=kw.pop("agent", "claude-code"),
                name=kw.pop("name", "claude_code.token.usage"),
                series_id=f"{series}-{suffix}",
                time_ns=time_ns,
                start_time_ns=start_ns,
                value=value,
                temporality=temporality,
                **kw,
            )
        )

    add("sum", T0 + 2 * SECOND + 7, T0 - 5, 10.0, 2, monotonic=True, unit="tokens", attributes=sum_attrs)
    add("sum", T0 + 1 * SECOND + 999, T0 - 5, 3.0, 2, monotonic=True, unit="tokens", attributes=sum_attrs)
    add("sum", T0 + 3 * SECOND, T0 - 5, 1e308, 2, monotonic=True, unit="tokens", attributes=sum_attrs)
    for k, value in enumerate([NAN, INF, -INF, -0.0, 5e-324, 0.1]):
        add("gauge", -(k + 1) * SECOND - 1, -(k + 1) * SECOND - 1, value, 0, name="gauge", unit="")
    for k, count in enumerate([7, 0, 2**63 - 1]):
        add(
            "histogram",
            T0 + (3 - k) * SECOND,
            T0 + (2 - k) * SECOND,
            12.5 * k,
            1,
            name="claude_code.api.latency",
            unit="ms",
            attributes={**histogram, "histogram.count": count},
        )
    add(
        "strings",
        -1,
        -(10**15) - 1,
        -1.5,
        1,
        session_id="session\t\\N\n" + TRICKY[6],
        agent="ag\\ent\x00",
        name=TRICKY[0],
        unit=TRICKY[1] + TRICKY[3],
        attributes=ATTRIBUTES[4],
    )
    add(
        "strings",
        T0,
        -(10**15) - 1,
        2.0,
        1,
        session_id="session\t\\N\n" + TRICKY[6],
        agent="ag\\ent\x00",
        name=TRICKY[0],
        unit=TRICKY[1] + TRICKY[3],
        attributes=ATTRIBUTES[4],
    )
    return points


# --- the oracle: typed values computed here, adapted by psycopg ------------------------------


def at(ns: int) -> datetime:
    """The exact timestamp of ``ns``: floored to the microsecond, by integer arithmetic."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def plain(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "")


def json_value(value: Any) -> Any:
    """What jsonb can hold of ``value``: NUL removed everywhere, NaN and infinities as null."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {json_value(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def insert_typed(conn: psycopg.Connection[Any], events: list[Event], points: list[Point]) -> None:
    """The rows of ``events`` and ``points`` (and of their series) by parameterised INSERTs."""
    for e in events:
        t = e.tokens
        usage = (None,) * 5 if t is None else (t.input, t.output, t.cache_read, t.cache_creation, t.reasoning)
        conn.execute(
            "INSERT INTO events (tenant_id, session_id, event_id, ts, agent, name, seq, user_id, model,"
            " query_source, request_id, duration_ms, input_tokens, output_tokens, cache_read_tokens,"
            " cache_creation_tokens, reasoning_tokens, cost_usd, cost_source, attributes, kind,"
            " main_context) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s)",
            (
                plain(e.tenant),
                plain(e.session_id),
                plain(e.event_id),
                at(e.time_ns),
                plain(e.agent),
                plain(e.name),
                e.sequence,
                plain(e.user_id),
                plain(e.model),
                plain(e.query_source),
                plain(e.request_id),
                e.duration_ms,
                *usage,
                None if e.cost_nanos is None else Decimal(e.cost_nanos).scaleb(-9),
                plain(e.cost_source),
                Jsonb(json_value(e.attributes)),
                plain(str(e.kind)),
                e.main_context,
            ),
        )
    earliest: dict[str, Point] = {}
    for p in points:
        count = p.attributes.get("histogram.count")
        conn.execute(
            "INSERT INTO metric_points (tenant_id, series_id, ts, start_ts, value, temporality,"
            " histogram_count) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                plain(p.tenant),
                plain(p.series_id),
                at(p.time_ns),
                at(p.start_time_ns),
                p.value,
                p.temporality,
                count,
            ),
        )
        if p.series_id not in earliest or p.time_ns < earliest[p.series_id].time_ns:
            earliest[p.series_id] = p
    for p in earliest.values():
        conn.execute(
            "INSERT INTO metric_series (tenant_id, series_id, session_id, agent, name, unit,"
            " attributes, first_seen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                plain(p.tenant),
                plain(p.series_id),
                plain(p.session_id),
                plain(p.agent),
                plain(p.name),
                plain(p.unit),
                Jsonb(json_value({k: v for k, v in p.attributes.items() if k != "histogram.count"})),
                at(p.time_ns),
            ),
        )


TABLES = ("events", "metric_points", "metric_series")


def rows_of(dsn: str, table: str, tenant: str) -> list[tuple[str | None, ...]]:
    """Every column of ``tenant``'s rows but the tenant, as PostgreSQL's text of each value
    (UTC), in one order."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        columns = [
            str(r[0])
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            if r[0] != "tenant_id"
        ]
        assert columns, table
        select = sql.SQL("SELECT {cols} FROM {table} WHERE tenant_id = %s ORDER BY {order}").format(
            cols=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
            table=sql.Identifier(table),
            order=sql.SQL(", ").join(sql.Literal(i + 1) for i in range(len(columns))),
        )
        return [tuple(row) for row in conn.execute(select, (tenant,))]


def snapshot(dsn: str, tenant: str) -> dict[str, list[tuple[str | None, ...]]]:
    return {table: rows_of(dsn, table, tenant) for table in TABLES}


def retenanted(events: list[Event], points: list[Point], tenant: str) -> tuple[list[Event], list[Point]]:
    return [replace(e, tenant=tenant) for e in events], [replace(p, tenant=tenant) for p in points]


def prepared(events: list[Event], points: list[Point]) -> Batch:
    """What the sink holds of messages with prepared rows: only the rows."""
    event_lines: list[Event | CopyRow] = list(event_rows(events).rows)
    point_lines: list[Point | CopyRow] = list(point_rows(points).rows)
    return Batch(events=event_lines, points=point_lines)


# --- 1. prepared rows store exactly what the typed values store ------------------------------


async def test_prepared_rows_store_exactly_what_the_typed_values_store(database: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    events, points = tricky_events(""), tricky_points("", suffix)
    prepared_events, prepared_points = retenanted(events, points, "tenant-a")
    record_events, record_points = retenanted(events, points, "tenant-c")
    typed_events, typed_points = retenanted(events, points, "tenant-b")

    writer = PostgresWriter(database)
    try:
        a = await writer.write(prepared(prepared_events, prepared_points))
        c = await writer.write(Batch(events=list(record_events), points=list(record_points)))
    finally:
        await writer.close()
    for result in (a, c):
        assert result.rejected == []
        assert result.written == {
            "events": len(events),
            "metric_series": 4,
            "metric_points": len(points),
        }
    with psycopg.connect(database) as conn:
        insert_typed(conn, typed_events, typed_points)

    typed = snapshot(database, "tenant-b")
    assert [len(typed[t]) for t in TABLES] == [len(events), len(points), 4]
    assert snapshot(database, "tenant-a") == typed
    assert snapshot(database, "tenant-c") == typed
    # The oracle itself: a few values as PostgreSQL prints them.
    by_id = {row[1]: row for row in typed["events"]}
    assert by_id["e2:" + TRICKY[2]][2] == "1969-12-31 23:59:59.999999+00"  # event_id, ts
    assert by_id["e0:" + TRICKY[0]][2] == "2023-11-14 22:13:20.123456+00"
    assert by_id["e3:nulinside"][0] == "session-0" + TRICKY[4]
    assert {row[10] for row in typed["events"]} >= {"NaN", "Infinity", "-Infinity", "-0", None}


# --- 2. through the SinkRunner on real Kafka --------------------------------------------------


@dataclass
class Sink:
    settings: SinkSettings
    registry: CollectorRegistry
    runner: SinkRunner


async def start_sink(settings: SinkSettings, database: str) -> Sink:
    registry = CollectorRegistry()
    runner = SinkRunner(settings, PostgresWriter(database), SinkMetrics(registry))
    await runner.start()
    return Sink(settings, registry, runner)


async def one_partition(bootstrap: str, prefix: str, database: str) -> SinkSettings:
    """Topics of one partition: the order of the messages is the test's."""
    return await sink_settings(bootstrap, prefix, database, partitions=1)


async def caught_up(
    settings: SinkSettings, database: str, topics: list[str], ends: dict[tuple[str, int], int] | None = None
) -> Sink:
    """A sink run until its group committed the end of ``topics`` (and its lag gauges read 0 at
    ``ends``), then stopped; its metrics stay readable."""
    sink = await start_sink(settings, database)
    try:
        if topics:
            await wait_caught_up(settings.kafka_bootstrap, settings.sink_group_id, topics)
        if ends:
            await wait_lag_zero(sink, ends)
    finally:
        await sink.runner.stop()
    return sink


@pytest.fixture
async def settings(bootstrap: str, prefix: str, database: str) -> SinkSettings:
    return await sink_settings(bootstrap, prefix, database, partitions=2)


def other_layout(batch: EventBatch | PointBatch) -> EventBatch | PointBatch:
    """``batch`` carrying rows of another table layout, whose lines say something else than its
    records: a sink that forwarded them would store the wrong values."""
    if isinstance(batch, EventBatch):
        lines = event_rows([replace(e, name="FORWARDED", duration_ms=-1.0) for e in batch.events])
        return replace(batch, copy=CopyRows(layout=EVENTS_LAYOUT ^ 1, rows=lines.rows))
    lines = point_rows([replace(p, value=-12345.0, unit="FORWARDED") for p in batch.points])
    return replace(batch, copy=CopyRows(layout=POINTS_LAYOUT + 1, rows=lines.rows))


KINDS_OF_MESSAGE = ("prepared", "schema 2, no rows", "schema 1", "another layout")


def finite(batch: EventBatch | PointBatch) -> bool:
    """Whether schema 1 (JSON, no NaN nor infinities) can carry ``batch``'s numbers."""
    if isinstance(batch, EventBatch):
        return all(e.duration_ms is None or math.isfinite(e.duration_ms) for e in batch.events)
    return all(math.isfinite(p.value) for p in batch.points)


def prepare(batch: EventBatch | PointBatch) -> EventBatch | PointBatch:
    """What the stream stage sends (``with_rows`` takes one batch type at a time)."""
    if isinstance(batch, EventBatch):
        return with_rows(batch)
    return with_rows(batch)


def messages(
    events: list[Event], points: list[Point], settings: SinkSettings
) -> Iterator[tuple[str, str, bytes, bytes]]:
    """(kind, topic, key, value): the records in messages of four kinds in turn (prepared rows,
    an older producer's schema 2 without rows, schema 1 JSON where its numbers allow, rows of
    another layout). Each series' points stay in time order across its messages, as the stream
    stage sends them."""
    topics = settings.topics
    by_session: dict[tuple[str, str], tuple[list[Event], list[Point]]] = {}
    for e in events:
        by_session.setdefault((e.tenant, e.session_id), ([], []))[0].append(e)
    for p in sorted(points, key=lambda p: p.time_ns):
        by_session.setdefault((p.tenant, p.session_id), ([], []))[1].append(p)
    n = 0
    for (tenant, session), (session_events, session_points) in by_session.items():
        key = f"{tenant}/{session}".encode()
        chunks: list[EventBatch | PointBatch] = [
            EventBatch(events=session_events[i : i + 3]) for i in range(0, len(session_events), 3)
        ]
        chunks += [PointBatch(points=session_points[i : i + 2]) for i in range(0, len(session_points), 2)]
        for batch in chunks:
            topic = topics.events if isinstance(batch, EventBatch) else topics.points
            kind = KINDS_OF_MESSAGE[n % 4]
            n += 1
            if kind == "prepared":
                ready = prepare(batch)
                assert ready.copy is not None  # the test must send prepared rows
                yield kind, topic, key, ready.to_bytes()
            elif kind == "schema 1" and finite(batch):
                yield kind, topic, key, to_schema_1(batch)
            elif kind == "another layout":
                yield kind, topic, key, other_layout(batch).to_bytes()
            else:
                yield "schema 2, no rows", topic, key, batch.to_bytes()


async def produce(bootstrap: str, sent: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def stored_positions(dsn: str, topics: list[str]) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM sink_offsets WHERE topic = ANY(%s)", (topics,)
        )
        return {(str(t), int(p)): int(o) for t, p, o in rows}


async def wait_lag_zero(sink: Sink, ends: dict[tuple[str, int], int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        lags = {
            tp: sink.registry.get_sample_value(
                "tokentide_sink_lag", {"topic": tp[0], "partition": str(tp[1])}
            )
            for tp in ends
        }
        if all(lag == 0 for lag in lags.values()):
            return
        assert time.monotonic() < deadline, f"lag not 0: {lags}"
        await asyncio.sleep(0.2)


def written(sink: Sink, table: str) -> float:
    return sink.registry.get_sample_value("tokentide_sink_rows_written_total", {"table": table}) or 0.0


async def test_prepared_older_and_other_layout_messages_land_as_the_records_once(
    settings: SinkSettings, bootstrap: str, database: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    events = wire(tricky_events("kafka"))
    events += [replace(e, event_id=f"more-{i}", session_id="s-more") for i, e in enumerate(events)]
    points = tricky_points("kafka", suffix)
    kinds: dict[str, set[str]] = {}
    sent: list[tuple[str, bytes, bytes]] = []
    for kind, topic, key, value in messages(events, points, settings):
        kinds.setdefault(topic, set()).add(kind)
        sent.append((topic, key, value))
    # Every kind of message on each topic.
    topics = [settings.topics.events, settings.topics.points]
    assert kinds == {topic: set(KINDS_OF_MESSAGE) for topic in topics}

    # What writing the records gives, for another tenant of the same database.
    expected_events, expected_points = retenanted(events, points, "direct")
    writer = PostgresWriter(database)
    try:
        await writer.write(Batch(events=list(expected_events), points=list(expected_points)))
    finally:
        await writer.close()
    expected = snapshot(database, "direct")
    assert [len(expected[t]) for t in TABLES] == [len(events), len(points), 4]

    await produce(bootstrap, sent)
    first = await start_sink(settings, database)
    try:
        await wait_caught_up(bootstrap, settings.sink_group_id, topics)
        ends = {
            (tp.topic, tp.partition): end for tp, end in (await end_offsets(bootstrap, topics)).items() if end
        }
        assert sum(ends.values()) == len(sent)
        assert stored_positions(database, topics) == ends
        await wait_lag_zero(first, ends)
        assert snapshot(database, "kafka") == expected
        assert written(first, "events") == len(events)
        assert written(first, "metric_points") == len(points)
        assert written(first, "metric_series") == 4
        assert await read_all(bootstrap, settings.dead_letter_topic) == []
    finally:
        await first.runner.stop()

    # A second sink group on the same topics starts at the database's positions: nothing again.
    again = replace_group(settings, "sink2")
    second = await start_sink(again, database)
    try:
        await wait_caught_up(bootstrap, again.sink_group_id, topics)
        assert written(second, "events") == written(second, "metric_points") == 0
        # The same messages sent again (a replay of the stream stage's output): read, offered,
        # and every row already there.
        await produce(bootstrap, sent)
        await wait_caught_up(bootstrap, again.sink_group_id, topics)
        ends = {
            (tp.topic, tp.partition): end for tp, end in (await end_offsets(bootstrap, topics)).items() if end
        }
        assert sum(ends.values()) == 2 * len(sent)
        assert stored_positions(database, topics) == ends
        await wait_lag_zero(second, ends)
        sample = second.registry.get_sample_value
        assert sample("tokentide_sink_rows_offered_total", {"table": "events"}) == len(events)
        assert (
            written(second, "events"),
            written(second, "metric_points"),
            written(second, "metric_series"),
        ) == (
            0,
            0,
            0,
        )
    finally:
        await second.runner.stop()
    assert snapshot(database, "kafka") == expected
    assert await read_all(bootstrap, settings.dead_letter_topic) == []


def replace_group(settings: SinkSettings, group: str) -> SinkSettings:
    return settings.model_copy(update={"sink_group_id": settings.topic_prefix + group})


# --- 3. a prepared row PostgreSQL refuses is dead-lettered as its line ------------------------


async def test_a_refused_prepared_row_is_dead_lettered_as_its_line(
    bootstrap: str, prefix: str, database: str
) -> None:
    settings = await one_partition(
        bootstrap, prefix, database
    )  # one partition: the messages after the poison row must still land
    events = [replace(e, session_id="s-poison") for e in wire(tricky_events("default"))][:6]
    poison = replace(events[0], event_id="poison", tokens=Tokens(input=2**63))
    batches = [
        with_rows(EventBatch(events=events[:2])),
        with_rows(EventBatch(events=[events[2], poison, events[3]])),
        with_rows(EventBatch(events=events[4:])),
    ]
    assert all(b.copy is not None for b in batches)  # 2**63 fits a line, not a bigint
    poison_line = event_text(poison)
    assert batches[1].copy is not None
    assert batches[1].copy.rows[1].text == poison_line
    topic = settings.topics.events
    await produce(bootstrap, [(topic, b"default/s-poison", b.to_bytes()) for b in batches])

    sink = await caught_up(settings, database, [topic], {(topic, 0): 3})

    with psycopg.connect(database) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    assert stored == {plain(e.event_id) for e in events}  # everything but the poison row
    letters = [json.loads(r.value) for r in await read_all(bootstrap, settings.dead_letter_topic)]  # type: ignore[attr-defined]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["table"] == "events"
    assert letter["sqlstate"] == "22003"
    assert letter["row"] == poison_line
    assert "record" not in letter
    assert letter["source"] == {"topic": topic, "partition": 0, "offset": 1}
    assert "out of range" in letter["reason"]
    sample = sink.registry.get_sample_value
    assert sample("tokentide_sink_dead_letters_total", {"table": "events", "reason": "22003"}) == 1
    assert sample("tokentide_sink_rows_written_total", {"table": "events"}) == len(events)
    assert stored_positions(database, [topic]) == {(topic, 0): 3}


# --- 4. prepared series: each once, first seen at its earliest point --------------------------


def histogram_point(series: str, time_s: int, count: int) -> Point:
    return Point(
        tenant="series",
        session_id="s-series",
        agent="claude-code",
        name="claude_code.api.latency",
        series_id=series,
        time_ns=T0 + time_s * SECOND + 999,
        start_time_ns=T0,
        value=float(time_s),
        temporality=1,
        unit="ms",
        attributes={"model": "claude-opus-4-8", "histogram.count": count, "le": "\\N\t"},
    )


@pytest.mark.parametrize("earliest_in", ["first message", "second message"])
@pytest.mark.parametrize("second", ["prepared", "records"])
@pytest.mark.parametrize("batches", ["one batch", "two batches"])
async def test_prepared_series_are_stored_once_first_seen_at_their_earliest_point(
    database: str, batches: str, second: str, earliest_in: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    old, new = f"old-{suffix}", f"new-{suffix}"
    # The earliest point of each series is never its message's first.
    early = 1 if earliest_in == "first message" else 5
    first_message = [histogram_point(old, 20, 3), histogram_point(old, early + 2, 4)]
    second_message = [
        histogram_point(old, 30, 5),
        histogram_point(old, 8 - early, 6),
        histogram_point(new, 40, 7),
        histogram_point(new, 12, 8),
    ]
    first_rows: list[Point | CopyRow] = list(point_rows(first_message).rows)
    second_rows: list[Point | CopyRow] = (
        list(point_rows(second_message).rows) if second == "prepared" else list(second_message)
    )
    assert sum(1 for r in first_rows if isinstance(r, CopyRow) and r.series is not None) == 1

    writer = PostgresWriter(database)
    try:
        if batches == "one batch":
            results = [await writer.write(Batch(points=first_rows + second_rows))]
        else:
            results = [
                await writer.write(Batch(points=first_rows)),
                await writer.write(Batch(points=second_rows)),
            ]
    finally:
        await writer.close()
    assert all(r.rejected == [] for r in results)
    # Two series inserted; a later batch with an earlier point moves first_seen back (a change).
    moved_back = batches == "two batches" and earliest_in == "second message"
    assert sum(r.written.get("metric_series", 0) for r in results) == 2 + moved_back

    with psycopg.connect(database) as conn:
        series = conn.execute(
            "SELECT series_id, first_seen, attributes FROM metric_series WHERE tenant_id = 'series'"
        ).fetchall()
        counts: dict[datetime, int | None] = dict(
            conn.execute(
                "SELECT ts, histogram_count FROM metric_points WHERE tenant_id = 'series'"
            ).fetchall()
        )
    every = first_message + second_message
    assert sorted(series) == sorted(
        [
            (
                old,
                at(min(p.time_ns for p in every if p.series_id == old)),
                {"model": "claude-opus-4-8", "le": "\\N\t"},
            ),
            (new, at(T0 + 12 * SECOND), {"model": "claude-opus-4-8", "le": "\\N\t"}),
        ]
    )
    assert counts == {at(p.time_ns): p.attributes["histogram.count"] for p in every}


# --- 5. a sink resumes at the database's positions before it writes anything -----------------


async def test_a_restored_database_gets_back_every_prepared_row_after_a_restart(
    bootstrap: str, prefix: str, database: str
) -> None:
    """The database restored from a backup older than the group's committed offsets (its rows
    and positions match, both behind Kafka's): the restarted sink seeks back to the database's
    positions (``resume_at_stored_positions``) and applies everything since, new messages
    included. A fetch handed out at the committed offsets before that seek would move the
    positions past the messages between the two, which would then never be written."""
    settings = await one_partition(bootstrap, prefix, database)
    topic = settings.topics.events
    events = [replace(e, session_id="s-restore") for e in wire(tricky_events("default"))]
    assert len(events) >= 15
    sent = [(topic, b"default/s-restore", with_rows(EventBatch(events=[e])).to_bytes()) for e in events]
    await produce(bootstrap, sent[:10])
    await caught_up(settings, database, [topic])
    assert stored_positions(database, [topic]) == {(topic, 0): 10}

    # The backup: as the database was after the first five messages.
    with psycopg.connect(database) as conn:
        conn.execute(
            "DELETE FROM events WHERE event_id = ANY(%s)", ([plain(e.event_id) for e in events[5:10]],)
        )
        conn.execute("UPDATE sink_offsets SET next_offset = 5 WHERE topic = %s", (topic,))
    await produce(bootstrap, sent[10:])

    await caught_up(settings, database, [topic], {(topic, 0): len(sent)})
    with psycopg.connect(database) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    assert stored_positions(database, [topic]) == {(topic, 0): len(sent)}
    assert sorted(stored) == sorted(plain(e.event_id) for e in events)


async def test_a_refused_prepared_point_is_dead_lettered_and_its_series_still_lands(
    bootstrap: str, prefix: str, database: str
) -> None:
    """A histogram count past bigint in a prepared point: that point's line is dead-lettered;
    the series line it carried (its series' first point in the message) and the other points
    are written."""
    settings = await one_partition(bootstrap, prefix, database)
    suffix = uuid.uuid4().hex[:8]
    a, b = f"a-{suffix}", f"b-{suffix}"
    poison = histogram_point(a, 1, 2**63)
    first = with_rows(PointBatch(points=[histogram_point(a, 5, 3), poison, histogram_point(b, 2, 4)]))
    second = with_rows(PointBatch(points=[histogram_point(a, 9, 6)]))
    assert first.copy is not None
    assert second.copy is not None
    assert first.copy.rows[1].series is not None  # the poison point carries its series' line
    topic = settings.topics.points
    await produce(bootstrap, [(topic, b"series/s-series", m.to_bytes()) for m in (first, second)])

    sink = await caught_up(settings, database, [topic], {(topic, 0): 2})

    with psycopg.connect(database) as conn:
        series = dict(conn.execute("SELECT series_id, first_seen FROM metric_series").fetchall())
        points = conn.execute("SELECT series_id, histogram_count FROM metric_points ORDER BY ts").fetchall()
    assert series == {a: at(poison.time_ns), b: at(T0 + 2 * SECOND + 999)}
    assert points == [(b, 4), (a, 3), (a, 6)]
    letters = [json.loads(r.value) for r in await read_all(bootstrap, settings.dead_letter_topic)]  # type: ignore[attr-defined]
    assert [(x["table"], x["sqlstate"], x["row"], x["source"]) for x in letters] == [
        ("metric_points", "22003", first.copy.rows[1].text, {"topic": topic, "partition": 0, "offset": 0})
    ]
    sample = sink.registry.get_sample_value
    assert sample("tokentide_sink_dead_letters_total", {"table": "metric_points", "reason": "22003"}) == 1


async def test_a_rebuild_without_positions_starts_at_the_groups_offsets(
    bootstrap: str, prefix: str, database: str
) -> None:
    """docs/operations.md's rebuild: the derived tables emptied and their ``sink_offsets`` rows
    deleted, the group's offsets set where the new output begins. A partition the database
    holds no position for starts at the group's offset, not at the topic's beginning (that
    would apply the old output again)."""
    settings = await one_partition(bootstrap, prefix, database)
    topic = settings.topics.events
    events = [replace(e, session_id="s-rebuild") for e in wire(tricky_events("default"))][:15]
    assert len(events) == 15
    sent = [(topic, b"default/s-rebuild", with_rows(EventBatch(events=[e])).to_bytes()) for e in events]
    await produce(bootstrap, sent[:10])
    await caught_up(settings, database, [topic])
    with psycopg.connect(database) as conn:  # the group's offset stays at 10: the new output's start
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM sink_offsets WHERE topic = %s", (topic,))
    await produce(bootstrap, sent[10:])

    await caught_up(settings, database, [topic], {(topic, 0): len(sent)})
    with psycopg.connect(database) as conn:
        stored = [r[0] for r in conn.execute("SELECT event_id FROM events")]
    assert sorted(stored) == sorted(plain(e.event_id) for e in events[10:])
    assert stored_positions(database, [topic]) == {(topic, 0): len(sent)}


async def test_an_expired_point_hands_its_series_line_to_the_earliest_point_kept(database: str) -> None:
    """Retention 30 days: the earliest point of a series (40 days old) carried its series' line
    and is not written; the catalog row still lands, first seen at the earliest point kept, as
    writing the same points as records gives."""
    now_s = int(time.time())
    old_s, recent_s, later_s = now_s - 40 * 86_400, now_s - 3_600, now_s - 60

    def points(series: str) -> list[Point]:
        return [
            replace(histogram_point(series, 0, 1), time_ns=t * 10**9, start_time_ns=(t - 1) * 10**9)
            for t in (later_s, old_s, recent_s)
        ]

    suffix = uuid.uuid4().hex[:8]
    prepared_series, record_series = f"p-{suffix}", f"r-{suffix}"
    copy = point_rows(points(prepared_series))
    assert [r.series is not None for r in copy.rows] == [False, True, False]  # the old one carries it
    writer = PostgresWriter(database, retention=timedelta(days=30))
    try:
        result = await writer.write(Batch(points=[*copy.rows, *points(record_series)]))
    finally:
        await writer.close()
    assert result.expired["metric_points"] == 2
    assert (result.written["metric_points"], result.written["metric_series"]) == (4, 2)
    with psycopg.connect(database) as conn:
        seen = dict(
            conn.execute(
                "SELECT series_id, first_seen FROM metric_series WHERE series_id = ANY(%s)",
                ([prepared_series, record_series],),
            ).fetchall()
        )
    recent = datetime.fromtimestamp(recent_s, UTC)
    assert seen == {prepared_series: recent, record_series: recent}


async def test_messages_kafka_deleted_before_they_were_applied_are_counted(
    bootstrap: str, prefix: str, database: str
) -> None:
    """A database restored to a position Kafka's retention has since deleted: what is left is
    applied, and what is gone is said (a warning, ``tokentide_sink_skipped_offsets``)."""
    settings = await one_partition(bootstrap, prefix, database)
    topic = settings.topics.events
    events = [replace(e, session_id="s-expired") for e in wire(tricky_events("default"))][:10]
    sent = [(topic, b"default/s-expired", with_rows(EventBatch(events=[e])).to_bytes()) for e in events]
    await produce(bootstrap, sent)
    sink = await caught_up(settings, database, [topic])
    with psycopg.connect(database) as conn:  # restored to after four messages
        conn.execute(
            "DELETE FROM events WHERE event_id = ANY(%s)", ([plain(e.event_id) for e in events[4:]],)
        )
        conn.execute("UPDATE sink_offsets SET next_offset = 4 WHERE topic = %s", (topic,))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # retention took the first seven
        await admin.delete_records(
            {TopicPartition(topic, 0): RecordsToDelete(before_offset=7)}, timeout_ms=10_000
        )
    finally:
        await admin.close()

    sink = await caught_up(settings, database, [], {(topic, 0): len(sent)})
    labels = {"topic": topic, "partition": "0"}
    assert sink.registry.get_sample_value("tokentide_sink_skipped_offsets_total", labels) == 3
    with psycopg.connect(database) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    assert stored == {plain(e.event_id) for e in events[:4] + events[7:]}
    assert stored_positions(database, [topic]) == {(topic, 0): len(sent)}
