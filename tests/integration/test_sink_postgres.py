"""The sink against real Kafka and PostgreSQL: exact rows, and replays that change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from psycopg.rows import dict_row

from dashboard.queries import SELECT_SESSION, session_out
from sinks.base import Batch, SinkMetrics, SinkRunner
from sinks.postgres.writer import PostgresWriter
from streams.normalise import default_registry
from streams.processor import Output, Processor
from streams.state import StoredSession
from tests.support.captures import cases, exports
from tests.support.services import read_all, sink_settings, wait_caught_up
from tokentide.records import EventBatch, Tokens, replace
from tokentide.settings import SinkSettings

pytestmark = pytest.mark.integration


def outputs_of_captures() -> list[Output]:
    """What the streams stage makes of every Claude Code capture (pure code, no Kafka)."""
    processor = Processor(default_registry(), dedup_window=1024)
    store: dict[bytes, StoredSession] = {}
    out: list[Output] = []
    for case_dir in cases("claude-code"):
        for export in exports(case_dir):
            if export.signal == "traces" or export.content_type != "application/x-protobuf":
                continue
            out += processor.process(
                headers={"tt-signal": export.signal, "tt-tenant": "default"},
                value=export.body,
                get_state=store.get,
                put_state=store.__setitem__,
            ).outputs
    return out


def latest_outputs(outputs: list[Output]) -> list[Output]:
    """The last output of each session (the one with its final state)."""
    return list({o.state.session_id: o for o in outputs}.values())


async def produce(bootstrap: str, settings: SinkSettings, outputs: list[Output]) -> None:
    topics = settings.topics
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for out in outputs:
            if out.events:
                await producer.send_and_wait(topics.events, out.events.to_bytes(), key=out.key)
            if out.points:
                await producer.send_and_wait(topics.points, out.points.to_bytes(), key=out.key)
            if out.rollups:
                await producer.send_and_wait(topics.rollups, out.rollups.to_bytes(), key=out.key)
            if out.signals:
                await producer.send_and_wait(topics.session_signals, out.signals.to_bytes(), key=out.key)
            await producer.send_and_wait(topics.session_state, out.state.to_bytes(), key=out.key)
    finally:
        await producer.stop()


def snapshot(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            "events": conn.execute("SELECT * FROM events ORDER BY event_id").fetchall(),
            "metric_points": conn.execute(
                "SELECT * FROM metric_points ORDER BY series_id, ts, start_ts"
            ).fetchall(),
            "rollups": conn.execute(
                "SELECT session_id, model, minute, input_tokens, output_tokens, cache_read_tokens,"
                " cache_creation_tokens, cost_usd, requests, errors FROM rollups_minute"
                " ORDER BY session_id, model, minute"
            ).fetchall(),
            "sessions": conn.execute(
                "SELECT session_id, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
                " cost_usd, api_requests, api_errors, state_version FROM sessions ORDER BY session_id"
            ).fetchall(),
        }


async def wait_rows(dsn: str, table: str, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed table names
        if row and row[0] >= count:
            return
        assert time.monotonic() < deadline, f"{table}: {row} rows, want {count}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def sink(bootstrap: str, prefix: str, database: str) -> AsyncIterator[SinkSettings]:
    settings = await sink_settings(bootstrap, prefix, database)
    runner = SinkRunner(settings, PostgresWriter(database), SinkMetrics(CollectorRegistry()))
    await runner.start()
    yield settings
    await runner.stop()
    await runner.stop()  # safe twice


async def test_replayed_batches_change_nothing(sink: SinkSettings, bootstrap: str, database: str) -> None:
    outputs = outputs_of_captures()
    events = {e.event_id for o in outputs if o.events for e in o.events.events}
    points = {(p.series_id, p.time_ns, p.start_time_ns) for o in outputs if o.points for p in o.points.points}
    sessions = {o.state.session_id for o in outputs}
    assert events
    assert points
    assert len(sessions) == 4  # the four protobuf cases

    await produce(bootstrap, sink, outputs)
    await wait_rows(database, "events", len(events))
    await wait_rows(database, "metric_points", len(points))
    await wait_rows(database, "sessions", len(sessions))
    minutes = {(r.session_id, r.model, r.minute_ns) for o in outputs if o.rollups for r in o.rollups.rollups}
    await wait_rows(database, "rollups_minute", len(minutes))
    first = snapshot(database)
    assert len(first["events"]) == len(events)
    assert len(first["metric_points"]) == len(points)
    # Rollups hold the full per-minute usage: their sums equal the sessions' totals.
    rollup_input = sum(row[3] for row in first["rollups"])
    assert rollup_input == sum(o.state.tokens.input for o in latest_outputs(outputs))
    assert rollup_input > 0

    # The same records again in new messages (a client re-send the stream stage did not catch,
    # or a replay of the raw topics): idempotent by natural key. Rollup increments are not
    # re-sent: the stream stage emits each exactly once, and the sink applies each message
    # once by its position (tests/integration/test_sink_exactly_once.py).
    await produce(bootstrap, sink, [dataclasses.replace(o, rollups=None) for o in outputs])
    marker = replace(outputs[0].state, session_id="marker", version=1)
    await produce(bootstrap, sink, [Output(key=b"default/marker", events=None, points=None, state=marker)])
    await wait_rows(database, "sessions", len(sessions) + 1)
    second = snapshot(database)
    second["sessions"] = [r for r in second["sessions"] if r[0] != "marker"]
    assert second == first


async def test_older_state_never_overwrites_newer(sink: SinkSettings, bootstrap: str, database: str) -> None:
    state = outputs_of_captures()[-1].state
    newer = replace(state, session_id="s-order", version=5, api_requests=5)
    older = replace(state, session_id="s-order", version=4, api_requests=4)
    marker = replace(state, session_id="marker")
    key = b"default/s-order"
    # Same key, same partition: the marker is written after the older state was consumed.
    await produce(
        bootstrap,
        sink,
        [Output(key, None, None, newer), Output(key, None, None, older), Output(key, None, None, marker)],
    )
    await wait_rows(database, "sessions", 2)
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT api_requests, state_version FROM sessions WHERE session_id = 's-order'"
        ).fetchone()
    assert row == (5, 5)


async def test_where_the_cost_comes_from_reaches_the_table_and_the_api(
    sink: SinkSettings, bootstrap: str, database: str
) -> None:
    state = outputs_of_captures()[-1].state
    tokens = Tokens(input=476, output=42, cache_read=1024, cache_creation=300, cache_creation_1h=100)
    by_session = {
        "s-unknown": {"cost_nanos": 0, "cost_source": "unknown", "unpriced_requests": 2},
        "s-mixed": {"cost_nanos": 1_474_400, "cost_source": "mixed", "unpriced_requests": 1},
        "s-agent": {"cost_nanos": 11_175_000, "cost_source": "agent", "unpriced_requests": 0},
        "s-none": {"cost_nanos": 0, "cost_source": None, "unpriced_requests": 0, "api_requests": 0},
    }
    outputs = [
        Output(
            f"default/{sid}".encode(),
            None,
            None,
            replace(state, **{"session_id": sid, "tokens": tokens, **fields}),
        )
        for sid, fields in by_session.items()
    ]
    await produce(bootstrap, sink, outputs)
    await wait_rows(database, "sessions", len(by_session))
    with psycopg.connect(database, row_factory=dict_row) as conn:
        rows = conn.execute(SELECT_SESSION + "WHERE tenant_id = 'default' ORDER BY session_id").fetchall()
    now = datetime.now(UTC)
    api = {row["session_id"]: session_out(row, now) for row in rows}
    assert {sid: (o.cost_usd, o.cost_source, o.unpriced_requests) for sid, o in api.items()} == {
        "s-unknown": (None, "unknown", 2),  # null, not 0
        "s-mixed": (0.0014744, "mixed", 1),
        "s-agent": (0.011175, "agent", 0),
        "s-none": (0.0, None, 0),
    }
    assert {o.tokens.cache_creation_1h for o in api.values()} == {100}
    assert {o.tokens.cache_creation for o in api.values()} == {300}


async def test_poison_rows_go_to_the_dead_letter_topic_without_blocking_the_partition(
    bootstrap: str, prefix: str, database: str
) -> None:
    settings = await sink_settings(
        bootstrap,
        prefix,
        database,
        partitions=1,  # one partition: the good message after the poison one must still land
    )
    events = [e for o in outputs_of_captures() if o.events for e in o.events.events][:6]
    poison = replace(events[0], event_id="poison", tokens=Tokens(input=2**63))
    key = f"default/{events[0].session_id}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        topic = settings.topics.events
        await producer.send_and_wait(topic, EventBatch(events=events[:3]).to_bytes(), key=key)
        await producer.send_and_wait(topic, EventBatch(events=[poison, *events[3:5]]).to_bytes(), key=key)
        await producer.send_and_wait(topic, b'{"events": "not a list"}', key=key)
        await producer.send_and_wait(topic, EventBatch(events=events[5:]).to_bytes(), key=key)
    finally:
        await producer.stop()

    registry = CollectorRegistry()
    runner = SinkRunner(settings, PostgresWriter(database), SinkMetrics(registry))
    await runner.start()
    try:
        await wait_caught_up(bootstrap, settings.sink_group_id, [settings.topics.events])
    finally:
        await runner.stop()

    with psycopg.connect(database) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM events")}
    assert stored == {e.event_id for e in events}  # everything but the poison row
    letters = [json.loads(r.value) for r in await read_all(bootstrap, settings.dead_letter_topic)]  # type: ignore[attr-defined]
    by_table = {(letter["table"], letter["sqlstate"]): letter for letter in letters}
    assert set(by_table) == {("events", "22003"), (settings.topics.events, None)}
    refused = by_table["events", "22003"]
    assert refused["record"]["event_id"] == "poison"
    assert refused["source"] == {"topic": settings.topics.events, "partition": 0, "offset": 1}
    assert "out of range" in refused["reason"]
    assert by_table[settings.topics.events, None]["source"]["offset"] == 2
    assert (
        registry.get_sample_value("tokentide_sink_dead_letters_total", {"table": "events", "reason": "22003"})
        == 1
    )
    assert registry.get_sample_value("tokentide_sink_rows_written_total", {"table": "events"}) == len(events)
    assert (
        registry.get_sample_value("tokentide_sink_lag", {"topic": settings.topics.events, "partition": "0"})
        == 0
    )


async def test_new_events_and_points_are_copied_straight_in_and_a_stored_key_goes_through_staging(
    database: str,
) -> None:
    """The bulk of a batch is COPYed into its table; a batch holding a row already stored (a
    redelivery the positions did not cover) falls back to staging and ON CONFLICT DO NOTHING,
    in a savepoint: the rest of the transaction stands, the new rows land, none twice."""
    outputs = outputs_of_captures()
    events = [e for o in outputs if o.events for e in o.events.events][:8]
    points = [p for o in outputs if o.points for p in o.points.points][:6]
    assert len(events) == 8
    assert len(points) == 6
    writer = PostgresWriter(database)
    try:
        first = await writer.write(Batch(events=events[:5], points=points[:3]))
        assert (first.written["events"], first.written["metric_points"]) == (5, 3)
        assert writer.direct_fallbacks == 0
        # events 3-4 and point 2 are stored already
        second = await writer.write(Batch(events=events[3:], points=points[2:]))
        assert (second.written["events"], second.written["metric_points"]) == (3, 3)
        assert writer.direct_fallbacks == 2
        third = await writer.write(Batch(events=events[:1]))  # nothing new at all
        assert third.written["events"] == 0
    finally:
        await writer.close()
    with psycopg.connect(database) as conn:
        stored = [r[0] for r in conn.execute("SELECT event_id FROM events")]
        point_count = conn.execute("SELECT count(*) FROM metric_points").fetchone()
    assert sorted(stored) == sorted(e.event_id for e in events)
    assert point_count == (6,)
