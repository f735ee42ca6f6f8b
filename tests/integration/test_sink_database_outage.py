"""Fault test: PostgreSQL stops for 30 s under a steady load, then comes back.

A PostgreSQL cluster of the test's own (tests/support/private_postgres.py; the shared one is
never touched) takes the sink's writes while a producer sends a steady stream of event
batches, session states and rollups. The cluster is stopped (fast shutdown: the sink's
connection is cut, mid-transaction or not), kept down for 30 s, and started again. Afterwards
the database must hold every record Kafka acknowledged, exactly once, with the last session
state, the last full value of each legacy (overwrite) rollup and the sum of every increment
rollup, each added once although transactions were cut (a commit's outcome unknown to the
sink included); the sink must have paused and retried, and resumed by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from sinks.base import SinkMetrics, SinkRunner
from sinks.postgres.rows import with_rows
from sinks.postgres.writer import PostgresWriter
from tests.support.private_postgres import PrivatePostgres
from tests.support.services import committed_offsets, free_port, sink_settings, wait_caught_up
from tokentide.migrate import migrate
from tokentide.records import Event, EventBatch, Rollup, RollupBatch, SessionState, Tokens
from tokentide.settings import SinkSettings

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0
BEFORE_S = 8.0
AFTER_S = 8.0
SESSIONS = 8
INTERVAL_S = 0.05
EVENTS_PER_MESSAGE = 5


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(free_port())
    try:
        pg.start()
        yield pg
    finally:
        pg.cleanup()


class Load:
    """A steady stream of messages; remembers what Kafka acknowledged."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.events: set[str] = set()
        self.versions: dict[str, int] = {}
        self.rollups: dict[tuple[str, int], int] = {}
        self.increments: dict[tuple[str, int], int] = {}
        self.messages = 0

    async def run(self, bootstrap: str, until: float) -> None:
        topics = self.settings.topics
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        n = 0
        try:
            while time.monotonic() < until:
                n += 1
                session = f"s-{n % SESSIONS}"
                key = f"default/{session}".encode()
                now_ns = time.time_ns()
                minute_ns = now_ns - now_ns % 60_000_000_000
                events = [
                    Event(
                        tenant="default",
                        session_id=session,
                        event_id=f"e-{n}-{i}",
                        agent="claude_code",
                        name="api_request",
                        time_ns=now_ns + i,
                        model="claude-opus-4-8",
                        tokens=Tokens(input=n, output=i),
                    )
                    for i in range(EVENTS_PER_MESSAGE)
                ]
                version = self.versions.get(session, 0) + 1
                state = SessionState(
                    tenant="default",
                    session_id=session,
                    agent="claude_code",
                    started_at_ns=now_ns,
                    last_seen_at_ns=now_ns,
                    api_requests=version,
                    version=version,
                )
                rollup = Rollup(
                    tenant="default",
                    session_id=session,
                    agent="claude_code",
                    model="claude-opus-4-8",
                    minute_ns=minute_ns,
                    tokens=Tokens(input=n),
                    requests=n,
                )
                # What the exactly-once stream stage emits: what this message added.
                increment = Rollup(
                    tenant="default",
                    session_id=session,
                    agent="claude_code",
                    model="increments",
                    minute_ns=minute_ns,
                    tokens=Tokens(input=n),
                    requests=1,
                    increment=True,
                )
                await producer.send_and_wait(topics.events, EventBatch(events=events).to_bytes(), key=key)
                self.events.update(e.event_id for e in events)
                await producer.send_and_wait(topics.session_state, state.to_bytes(), key=key)
                self.versions[session] = version
                await producer.send_and_wait(
                    topics.rollups, RollupBatch(rollups=[rollup, increment]).to_bytes(), key=key
                )
                self.rollups[(session, minute_ns)] = n
                self.increments[(session, minute_ns)] = self.increments.get((session, minute_ns), 0) + 1
                self.messages += 3
                await asyncio.sleep(INTERVAL_S)
        finally:
            await producer.stop()


async def test_every_acknowledged_record_lands_once_across_a_30s_database_outage(
    bootstrap: str, prefix: str, private_pg: PrivatePostgres
) -> None:
    dsn = private_pg.create_database("tokentide_fault")
    migrate(dsn)
    settings = await sink_settings(
        bootstrap,
        prefix,
        dsn,
        partitions=2,
        batch_max_messages=200,
        retry_max_backoff_s=2.0,
    )
    registry = CollectorRegistry()
    runner = SinkRunner(settings, PostgresWriter(dsn, statement_timeout_s=10), SinkMetrics(registry))
    load = Load(settings)
    await runner.start()
    try:
        start = time.monotonic()
        producing = asyncio.create_task(load.run(bootstrap, start + BEFORE_S + OUTAGE_S + AFTER_S))
        await asyncio.sleep(BEFORE_S)
        await asyncio.to_thread(private_pg.stop)
        paused_seen = False
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until:
            paused_seen = paused_seen or registry.get_sample_value("tokentide_sink_paused") == 1
            await asyncio.sleep(0.5)
        await asyncio.to_thread(private_pg.start)
        await producing
        topics = [settings.topics.events, settings.topics.session_state, settings.topics.rollups]
        await wait_caught_up(bootstrap, settings.sink_group_id, topics, timeout_s=180)
    finally:
        await runner.stop()

    assert load.messages > 0
    with psycopg.connect(dsn) as conn:
        events = [r[0] for r in conn.execute("SELECT event_id FROM events")]
        versions = dict(conn.execute("SELECT session_id, state_version FROM sessions").fetchall())
        rows = conn.execute("SELECT session_id, model, minute, requests FROM rollups_minute").fetchall()
        rollups = {(s, int(m.timestamp()) * 10**9): r for s, model, m, r in rows if model != "increments"}
        increments = {(s, int(m.timestamp()) * 10**9): r for s, model, m, r in rows if model == "increments"}
    assert len(events) == len(set(events))  # exactly once
    assert set(events) == load.events  # every acknowledged event, nothing else
    assert versions == load.versions  # the last state of every session
    assert rollups == load.rollups  # the last full value of every minute
    assert increments == load.increments  # every increment added exactly once
    # The outage was felt, and the sink got over it by itself.
    assert paused_seen
    assert (registry.get_sample_value("tokentide_sink_retries_total") or 0) > 0
    assert registry.get_sample_value("tokentide_sink_paused") == 0


async def test_partitions_assigned_while_the_database_is_down_wait_for_its_positions(
    bootstrap: str, prefix: str, private_pg: PrivatePostgres
) -> None:
    """The database (restored from a backup: its positions behind the group's committed
    offsets) is down when the sink starts and is assigned its partitions: nothing is consumed
    from the committed offsets meanwhile; once the database answers, the sink seeks to its
    positions and applies every message since, exactly once."""
    dsn = private_pg.create_database("tokentide_restore")
    migrate(dsn)
    settings = await sink_settings(
        bootstrap,
        prefix,
        dsn,
        partitions=1,
        retry_max_backoff_s=1.0,
    )
    topic = settings.topics.events

    def batch(n: int) -> bytes:
        event = Event(
            tenant="default", session_id="s", event_id=f"e-{n}", agent="claude_code", name="api_request",
            time_ns=time.time_ns(), sequence=n,
        )  # fmt: skip
        return with_rows(EventBatch(events=[event])).to_bytes()

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, batch(n), key=b"default/s")
        runner = SinkRunner(settings, PostgresWriter(dsn), SinkMetrics(CollectorRegistry()))
        await runner.start()
        try:
            await wait_caught_up(bootstrap, settings.sink_group_id, [topic])
        finally:
            await runner.stop()
        with psycopg.connect(dsn) as conn:  # the backup: as it was after five messages
            conn.execute("DELETE FROM events WHERE seq >= 5")
            conn.execute("UPDATE sink_offsets SET next_offset = 5 WHERE topic = %s", (topic,))
        await asyncio.to_thread(private_pg.stop)
        for n in range(10, 15):
            await producer.send_and_wait(topic, batch(n), key=b"default/s")
    finally:
        await producer.stop()

    registry = CollectorRegistry()
    runner = SinkRunner(settings, PostgresWriter(dsn), SinkMetrics(registry))
    await runner.start()
    try:
        await asyncio.sleep(6)  # assigned (the group's offset is 10), the database still down
        assert (await committed_offsets(bootstrap, settings.sink_group_id))[topic, 0] == 10
        assert registry.get_sample_value("tokentide_sink_batches_total") == 0
        assert registry.get_sample_value("tokentide_sink_paused") == 1  # what the alert reads
        await asyncio.to_thread(private_pg.start)
        deadline = time.monotonic() + 60
        while (await committed_offsets(bootstrap, settings.sink_group_id)).get((topic, 0)) != 15:
            assert time.monotonic() < deadline, "the sink did not catch up once the database was back"
            await asyncio.sleep(0.5)
    finally:
        await runner.stop()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT seq, count(*) FROM events GROUP BY seq ORDER BY seq").fetchall()
        position = conn.execute("SELECT next_offset FROM sink_offsets WHERE topic = %s", (topic,)).fetchone()
    assert rows == [(n, 1) for n in range(15)]
    assert position == (15,)
    assert registry.get_sample_value("tokentide_sink_paused") == 0
