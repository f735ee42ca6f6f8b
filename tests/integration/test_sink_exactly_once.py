"""The sink applies every Kafka message exactly once (real PostgreSQL; real Kafka where a
consumer is involved): rollup increments are added to their minute once, whatever is
redelivered, whoever else holds the partition, and records of aborted transactions never
arrive. Crashes of the real process and Kafka outages: test_sink_faults.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import psycopg
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client import CollectorRegistry

from sinks.base import Batch, SinkMetrics, SinkRunner, WriteResult, decode
from sinks.postgres.writer import PostgresWriter
from tests.support.services import sink_settings, unique, wait_caught_up
from tokentide.records import (
    Event,
    EventBatch,
    Rollup,
    RollupBatch,
    SessionSignal,
    SignalBatch,
    SignalKind,
    Tokens,
)
from tokentide.settings import SinkSettings
from tokentide.topics import Topics

pytestmark = pytest.mark.integration

NOW_NS = time.time_ns()
MINUTE_NS = NOW_NS - NOW_NS % 60_000_000_000 - 3600 * 10**9  # an hour ago, on a minute


def rollup(
    requests: int, *, increment: bool = True, minute_ns: int = MINUTE_NS, session: str = "s"
) -> Rollup:
    return Rollup(
        tenant="default",
        session_id=session,
        agent="claude_code",
        model="claude-opus-4-8",
        minute_ns=minute_ns,
        tokens=Tokens(input=10 * requests, output=requests),
        cost_nanos=1_000_000 * requests,
        requests=requests,
        increment=increment,
    )


def event(event_id: str, tokens: Tokens | None = None) -> Event:
    return Event(
        tenant="default",
        session_id="s",
        event_id=event_id,
        agent="claude_code",
        name="api_request",
        time_ns=NOW_NS,
        tokens=tokens,
    )


def record(topic: str, partition: int, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"default/s",
        value=value,
        checksum=None,
        serialized_key_size=9,
        serialized_value_size=len(value),
        headers=[],
    )


def rollup_messages(topics: Topics, partition: int, offsets: range) -> Batch:
    """What a consumer hands out: one increment of one request per message, all one minute."""
    records = [
        record(topics.rollups, partition, o, RollupBatch(rollups=[rollup(1)]).to_bytes()) for o in offsets
    ]
    return decode(topics, records, SinkMetrics(CollectorRegistry()))


USAGE = "SELECT requests, input_tokens, output_tokens, cost_usd FROM {} WHERE session_id = 's'"


def minute(dsn: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(USAGE.format("rollups_minute")).fetchone()


def hour(dsn: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(USAGE.format("rollups_hour")).fetchone()


def usage(requests: int) -> tuple[object, ...]:
    return (requests, 10 * requests, requests, Decimal(requests).scaleb(-3).quantize(Decimal("1e-9")))


def positions(dsn: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT topic, partition, next_offset FROM sink_offsets").fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


# --- the writer alone --------------------------------------------------------------------------


async def test_increments_add_to_the_stored_minute_and_full_values_overwrite_it(database: str) -> None:
    writer = PostgresWriter(database)
    try:
        await writer.write(Batch(rollups=[rollup(2), rollup(3)]))  # merged: 5
        assert minute(database) == usage(5)
        await writer.write(Batch(rollups=[rollup(4)]))
        assert minute(database) == usage(9)
        # A full value (rollups written before increments existed) overwrites the minute ...
        await writer.write(Batch(rollups=[rollup(40, increment=False)]))
        assert minute(database) == usage(40)
        # ... and increments after it, in the same batch or later, add to it.
        await writer.write(Batch(rollups=[rollup(1), rollup(50, increment=False), rollup(2)]))
        assert minute(database) == usage(52)
        await writer.write(Batch(rollups=[rollup(3)]))
        assert minute(database) == usage(55)
        # The hour is recomputed from its minutes, another minute of it included.
        await writer.write(Batch(rollups=[rollup(7, minute_ns=MINUTE_NS + 60_000_000_000)]))
        assert hour(database) == usage(62)
    finally:
        await writer.close()


async def test_a_redelivered_batch_is_applied_once(database: str) -> None:
    topics = Topics(unique("eo") + ".")
    writer = PostgresWriter(database)
    seen: list[Batch] = []

    async def before_commit(applied: Batch, _: WriteResult) -> None:
        seen.append(applied)

    try:
        first = await writer.write(rollup_messages(topics, 0, range(10)), before_commit)
        # The same messages again (a crash between the database's commit and Kafka's), then
        # again with five new ones after them (a consumer that re-read from an older offset).
        again = await writer.write(rollup_messages(topics, 0, range(10)), before_commit)
        more = await writer.write(rollup_messages(topics, 0, range(5, 15)), before_commit)
    finally:
        await writer.close()

    assert first.already_applied == {}
    assert again.already_applied == {topics.rollups: 10}
    assert more.already_applied == {topics.rollups: 5}
    assert (first.positions, again.positions, more.positions) == (
        {(topics.rollups, 0): 10},
        {(topics.rollups, 0): 10},
        {(topics.rollups, 0): 15},
    )
    assert [len(b.rollups) for b in seen] == [10, 0, 5]  # before_commit sees only what is new
    assert again.written.get("rollups_minute", 0) == 0
    assert minute(database) == usage(15)
    assert hour(database) == usage(15)
    assert positions(database) == {(topics.rollups, 0): 15}


async def test_refused_records_move_the_position_and_are_not_refused_again(database: str) -> None:
    """The row-by-row path keeps the guarantee: a refused (dead-lettered) record's message is
    applied, so a redelivery neither writes the increments again nor dead-letters it again."""
    topics = Topics(unique("eo") + ".")
    poison = event("poison", Tokens(input=2**63))  # past bigint: PostgreSQL refuses it
    records = [
        record(topics.events, 1, 0, EventBatch(events=[event("good-1"), poison]).to_bytes()),
        record(topics.rollups, 1, 0, RollupBatch(rollups=[rollup(2), rollup(3)]).to_bytes()),
        record(topics.events, 1, 1, EventBatch(events=[event("good-2")]).to_bytes()),
    ]
    letters: list[list[str]] = []

    async def before_commit(_: Batch, result: WriteResult) -> None:
        letters.append([r.sqlstate or "" for r in result.rejected])

    writer = PostgresWriter(database)
    try:
        metrics = SinkMetrics(CollectorRegistry())
        first = await writer.write(decode(topics, records, metrics), before_commit)
        again = await writer.write(decode(topics, records, metrics), before_commit)
    finally:
        await writer.close()

    assert [r.sqlstate for r in first.rejected] == ["22003"]
    assert again.rejected == []
    assert letters == [["22003"], []]
    assert first.positions == {(topics.events, 1): 2, (topics.rollups, 1): 1}
    assert again.already_applied == {topics.events: 2, topics.rollups: 1}
    with psycopg.connect(database) as conn:
        stored = sorted(r[0] for r in conn.execute("SELECT event_id FROM events"))
    assert stored == ["good-1", "good-2"]
    assert minute(database) == usage(5)
    assert hour(database) == usage(5)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.05)


async def waiting_on_locks(database: str, count: int = 1) -> bool:
    """Whether at least ``count`` sessions of ``database`` wait on a lock."""
    dbname = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    async with await psycopg.AsyncConnection.connect(database) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (dbname,),
        )
        row = await cur.fetchone()
    return bool(row and row[0] >= count)


@pytest.mark.parametrize("known", [False, True], ids=["first-write-of-the-partition", "partition-known"])
async def test_two_sinks_holding_one_partition_take_turns_and_apply_each_message_once(
    database: str, known: bool
) -> None:
    """A rebalance can leave two sinks with the same partition for a moment (the old owner
    finishing its batch, the new one starting from the group's committed offset). The first
    one's transaction holds the partition's row (inserted by it, or locked FOR UPDATE); the
    second waits for it, then reads the position it left and writes only what comes after."""
    topics = Topics(unique("eo") + ".")
    old_owner, new_owner = PostgresWriter(database), PostgresWriter(database)
    holding, release = asyncio.Event(), asyncio.Event()
    base = 5 if known else 0

    async def hold(_: Batch, __: WriteResult) -> None:
        holding.set()
        await release.wait()

    try:
        if known:
            await old_owner.write(rollup_messages(topics, 2, range(base)))
        first = asyncio.create_task(old_owner.write(rollup_messages(topics, 2, range(base, base + 10)), hold))
        await asyncio.wait_for(holding.wait(), 30)  # written, positions moved, not committed
        second = asyncio.create_task(new_owner.write(rollup_messages(topics, 2, range(base + 5, base + 15))))
        await until(lambda: waiting_on_locks(database), "the second sink waits on the partition's row lock")
        assert not second.done()
        release.set()
        old, new = await asyncio.wait_for(first, 30), await asyncio.wait_for(second, 30)
    finally:
        await old_owner.close()
        await new_owner.close()

    assert old.already_applied == {}
    assert new.already_applied == {topics.rollups: 5}  # the old owner's last five
    assert new.positions == {(topics.rollups, 2): base + 15}
    assert minute(database) == usage(base + 15)
    assert hour(database) == usage(base + 15)
    assert positions(database) == {(topics.rollups, 2): base + 15}


async def test_the_partition_lock_is_taken_before_any_row_is_written(database: str) -> None:
    """The old owner is held inside its row writes (after it locked the partition, before it
    moved the position): the new owner must wait on the partition's row, not read its old
    position and add the same increments again."""
    topics = Topics(unique("eo") + ".")
    old_owner, new_owner = PostgresWriter(database), PostgresWriter(database)
    try:
        await old_owner.write(rollup_messages(topics, 3, range(5)))  # the minute and the partition exist
        async with await psycopg.AsyncConnection.connect(database) as blocker, blocker.transaction():
            await blocker.execute("SELECT 1 FROM rollups_minute WHERE session_id = 's' FOR UPDATE")
            first = asyncio.create_task(old_owner.write(rollup_messages(topics, 3, range(5, 15))))
            await until(lambda: waiting_on_locks(database, 1), "the old owner waits on the test's lock")
            second = asyncio.create_task(new_owner.write(rollup_messages(topics, 3, range(10, 20))))
            await until(lambda: waiting_on_locks(database, 2), "the new owner waits too")
            assert not first.done()
            assert not second.done()
        old, new = await asyncio.wait_for(first, 30), await asyncio.wait_for(second, 30)
    finally:
        await old_owner.close()
        await new_owner.close()

    assert old.already_applied == {}
    assert new.already_applied == {topics.rollups: 5}
    assert minute(database) == usage(20)
    assert hour(database) == usage(20)
    assert positions(database) == {(topics.rollups, 3): 20}


# --- through Kafka -----------------------------------------------------------------------------


@pytest.fixture
async def sink(
    bootstrap: str, prefix: str, database: str
) -> AsyncIterator[tuple[SinkSettings, CollectorRegistry]]:
    settings = await sink_settings(
        bootstrap,
        prefix,
        database,
        partitions=2,
    )
    registry = CollectorRegistry()
    runner = SinkRunner(settings, PostgresWriter(database), SinkMetrics(registry))
    await runner.start()
    yield settings, registry
    await runner.stop()


def signal(signal_id: str) -> SessionSignal:
    return SessionSignal(
        tenant="default",
        session_id="s",
        signal_id=signal_id,
        kind=SignalKind.CONTEXT_WARNING,
        time_ns=NOW_NS,
        ratio=0.8,
        tokens=160_000,
        window=200_000,
    )


async def test_records_of_aborted_transactions_never_reach_the_database(
    sink: tuple[SinkSettings, CollectorRegistry], bootstrap: str, database: str
) -> None:
    settings, registry = sink
    topics = settings.topics
    key = b"default/s"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("tx-"), acks="all")
    await producer.start()
    try:

        async def transaction(name: str, requests: int, *, commit: bool) -> None:
            await producer.begin_transaction()
            await producer.send_and_wait(topics.events, EventBatch(events=[event(name)]).to_bytes(), key=key)
            await producer.send_and_wait(
                topics.rollups, RollupBatch(rollups=[rollup(requests)]).to_bytes(), key=key
            )
            await producer.send_and_wait(
                topics.session_signals, SignalBatch(signals=[signal(name)]).to_bytes(), key=key
            )
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()

        await transaction("aborted-1", 100, commit=False)
        await transaction("committed-1", 2, commit=True)
        await transaction("aborted-2", 100, commit=False)
        await transaction("committed-2", 3, commit=True)
        await transaction("aborted-3", 100, commit=False)  # the partitions end with an abort marker
    finally:
        await producer.stop()

    derived = [topics.events, topics.rollups, topics.session_signals]
    # The group's committed offsets reach the end: past the markers and the aborted records.
    await wait_caught_up(bootstrap, settings.sink_group_id, derived, timeout_s=60)

    with psycopg.connect(database) as conn:
        events = sorted(r[0] for r in conn.execute("SELECT event_id FROM events"))
        signals = sorted(r[0] for r in conn.execute("SELECT signal_id FROM signals"))
    assert events == ["committed-1", "committed-2"]
    assert signals == ["committed-1", "committed-2"]
    assert minute(database) == usage(5)
    assert hour(database) == usage(5)
    for topic in derived:
        stored = {p: o for (t, p), o in positions(database).items() if t == topic}
        assert sum(stored.values()) == 5 * 2  # 2 committed + 3 aborted records, 5 markers
    for topic in derived:
        lag = registry.get_sample_value("tokentide_sink_lag", {"topic": topic, "partition": "0"})
        other = registry.get_sample_value("tokentide_sink_lag", {"topic": topic, "partition": "1"})
        assert (lag or 0) + (other or 0) == 0


def test_the_positions_are_the_pipeline_roles_only(database: str) -> None:
    """Like the webhooks' secrets (0009): no grant to anyone else, and row-level security
    without a policy, so even a mistaken grant shows no row."""
    with psycopg.connect(database) as conn:
        security = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'sink_offsets'"
        ).fetchone()
        policies = conn.execute(
            "SELECT count(*) FROM pg_policies WHERE tablename = 'sink_offsets'"
        ).fetchone()
        public = conn.execute("SELECT has_table_privilege('public', 'sink_offsets', 'SELECT')").fetchone()
    assert security == (True, False)
    assert policies == (0,)
    assert public == (False,)


async def test_the_next_batch_is_fetched_while_the_current_one_waits_on_the_database(
    sink: tuple[SinkSettings, CollectorRegistry], bootstrap: str, database: str
) -> None:
    """The sink fetches and decodes batch n + 1 during batch n's write (issue 16): with the
    write held on the positions' row lock, the next messages are already fetched, nothing of
    them is written early, and once the lock goes every message is applied exactly once."""
    settings, registry = sink
    topics = settings.topics
    key = b"default/s"

    def ahead() -> float:
        return registry.get_sample_value("tokentide_sink_messages_ahead") or 0.0

    async def fetched_ahead() -> bool:
        return ahead() > 0

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:

        async def send(count: int) -> None:
            for _ in range(count):
                await producer.send_and_wait(
                    topics.rollups, RollupBatch(rollups=[rollup(1)]).to_bytes(), key=key
                )

        await send(3)
        await wait_caught_up(bootstrap, settings.sink_group_id, [topics.rollups], timeout_s=60)
        assert minute(database) == usage(3)
        async with await psycopg.AsyncConnection.connect(database) as blocker, blocker.transaction():
            await blocker.execute("SELECT 1 FROM sink_offsets FOR UPDATE")
            await send(4)
            await until(lambda: waiting_on_locks(database), "the sink's write waits on the test's lock")
            await send(5)
            await until(fetched_ahead, "the next messages are fetched during the write")
            assert 1 <= ahead() <= 5
            assert minute(database) == usage(3)  # neither batch written while the lock holds
        await wait_caught_up(bootstrap, settings.sink_group_id, [topics.rollups], timeout_s=60)
    finally:
        await producer.stop()

    assert minute(database) == usage(12)
    assert hour(database) == usage(12)
    assert sum(o for (t, _), o in positions(database).items() if t == topics.rollups) == 12
    assert ahead() == 0
