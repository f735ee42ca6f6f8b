"""The stream stage's consumer loop (streams.worker) against an in-memory broker, with no sleeps.

The fake broker keeps what matters for exactly-once: per topic partition a log of records,
each written by a transaction that is open, committed or aborted; readers see committed
records only (``read_committed``); a producer started with a transactional id fences the
earlier producer of that id and aborts its open transaction; group offsets sent in a
transaction become visible when it commits. Every step is driven by ``await worker.step()``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, ProducerFenced
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import CollectorRegistry

from bench.streams import logs_with_context
from streams import state as state_module
from streams.metrics import StreamsMetrics
from streams.normalise import default_registry
from streams.processor import Processor
from streams.store import POSITIONS_KEY, MemoryStore, decode_positions
from streams.worker import PausePoints, StreamsWorker
from tests.support.captures import FIXTURES, export_for
from tokentide.records import EventBatch, RollupBatch, SessionState, SignalBatch
from tokentide.settings import StreamsSettings
from tokentide.topics import Signal

CASE = FIXTURES / "claude-code" / "stub-tool-traces-protobuf"
LOGS_PB = (CASE / "0002_v1_logs.pb").read_bytes()
PARTITIONS = 2
SETTINGS = StreamsSettings(
    kafka_bootstrap="fake:9092",
    topic_prefix="t.",
    partitions=PARTITIONS,
    streams_app_id="t.streams",
    store="memory",
)
TOPICS = SETTINGS.topics
RAW_LOGS, RAW_METRICS = TOPICS.raw(Signal.LOGS), TOPICS.raw(Signal.METRICS)
CHANGELOG = SETTINGS.changelog_topic


# --- the fake broker ----------------------------------------------------------------------------


@dataclass
class Entry:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    txn: Txn | None = None

    @property
    def visible(self) -> bool:
        return self.txn is None or self.txn.state == "committed"


@dataclass
class Txn:
    state: str = "open"
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class Broker:
    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[Entry]] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.producers: dict[str, FakeProducer] = {}
        self.down = False  # every transactional call fails while down

    def log(self, tp: TopicPartition) -> list[Entry]:
        return self.logs.setdefault(tp, [])

    def append(self, tp: TopicPartition, entry: Entry) -> int:
        log = self.log(tp)
        log.append(entry)
        return len(log) - 1

    def produce_raw(self, signal: Signal, session: str, value: bytes) -> TopicPartition:
        """A raw message as ingest writes it (plain, no transaction), in the session's partition."""
        tp = TopicPartition(TOPICS.raw(signal), partition_of(session))
        headers = [
            ("tt-tenant", b"default"),
            ("tt-signal", signal.value.encode()),
            ("tt-received-at-ns", str(time.time_ns()).encode()),
            ("tt-session", session.encode()),
        ]
        self.append(tp, Entry(f"default/{session}".encode(), value, headers))
        return tp

    def visible(self, topic: str) -> list[tuple[int, Entry]]:
        """Committed records of every partition of ``topic``: (partition, entry)."""
        return [
            (tp.partition, e)
            for tp, log in sorted(self.logs.items())
            if tp.topic == topic
            for e in log
            if e.visible
        ]

    def uncommitted(self) -> list[Entry]:
        return [e for log in self.logs.values() for e in log if not e.visible]


def partition_of(session: str) -> int:
    return sum(session.encode()) % PARTITIONS


class FakeProducer:
    def __init__(self, broker: Broker, transactional_id: str) -> None:
        self.broker = broker
        self.id = transactional_id
        self.txn: Txn | None = None
        self.fenced = False
        self.fail_commit = False

    def _check(self) -> None:
        if self.fenced:
            raise ProducerFenced
        if self.broker.down:
            raise KafkaConnectionError("broker down")

    async def start(self) -> None:
        if self.broker.down:
            raise KafkaConnectionError("broker down")
        earlier = self.broker.producers.get(self.id)
        if earlier is not None and earlier is not self:
            earlier.fenced = True
            if earlier.txn is not None and earlier.txn.state == "open":
                earlier.txn.state = "aborted"
        self.broker.producers[self.id] = self

    async def stop(self) -> None:
        return None

    async def begin(self) -> None:
        self._check()
        self.txn = Txn()

    async def send(self, topic: str, value: bytes, *, key: bytes | None, partition: int | None = None) -> Any:
        self._check()
        if partition is None:
            partition = partition_of(key.decode().split("/", 1)[1]) if key and b"/" in key else 0
        offset = self.broker.append(TopicPartition(topic, partition), Entry(key, value, [], self.txn))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(type("Meta", (), {"offset": offset})())
        return done

    async def send_offsets(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self._check()
        assert group_id == SETTINGS.streams_app_id
        assert self.txn is not None
        self.txn.offsets.update(offsets)

    async def commit(self) -> None:
        self._check()
        if self.fail_commit:
            self.fail_commit = False
            raise KafkaConnectionError("commit lost")
        assert self.txn is not None
        self.txn.state = "committed"
        self.broker.committed.update(self.txn.offsets)
        self.txn = None

    async def abort(self) -> None:
        if self.txn is not None:
            self.txn.state = "aborted"
            self.txn = None


class FakeChangelog:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def bounds(self, partition: int) -> tuple[int, int]:
        log = self.broker.log(TopicPartition(CHANGELOG, partition))
        open_at = [i for i, e in enumerate(log) if e.txn is not None and e.txn.state == "open"]
        return 0, open_at[0] if open_at else len(log)  # read_committed ends at the first open txn

    async def read(self, partition: int, start: int) -> AsyncIterator[tuple[int, bytes, bytes | None]]:
        _, end = await self.bounds(partition)
        log = self.broker.log(TopicPartition(CHANGELOG, partition))
        for offset in range(start, end):
            entry = log[offset]
            if entry.visible and entry.key is not None:
                yield offset, entry.key, entry.value

    async def close(self) -> None:
        return None


class FakeConsumer:
    """A group member: fetches committed raw records from its positions, honours pause/seek."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        #: Test knob: deliver from here instead (a consumer gone wrong, e.g. faust#596).
        self.rewind: dict[TopicPartition, int] = {}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        out: dict[TopicPartition, list[Any]] = {}
        budget = max_records or 10**9
        for tp in sorted(self.assigned - self.paused):
            start = self.rewind.pop(tp, self.positions.get(tp, 0))
            log = self.broker.log(tp)
            records = [
                Record(tp.topic, tp.partition, offset, e.key, e.value, e.headers)
                for offset, e in enumerate(log)
                if offset >= start and e.visible
            ][:budget]
            budget -= len(records)
            if records:
                out[tp] = records
                self.positions[tp] = records[-1].offset + 1
        return out

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.broker.log(partition))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Member:
    worker: StreamsWorker
    consumer: FakeConsumer
    producers: dict[int, FakeProducer]
    stores: dict[int, MemoryStore]
    metrics: StreamsMetrics


def member(
    broker: Broker, clock: Clock, stores: dict[int, MemoryStore] | None = None, **settings: Any
) -> Member:
    consumer = FakeConsumer(broker)
    producers: dict[int, FakeProducer] = {}
    stores = stores if stores is not None else {}
    metrics = StreamsMetrics(CollectorRegistry())

    def producer_for(partition: int) -> FakeProducer:
        producers[partition] = FakeProducer(broker, f"{SETTINGS.streams_app_id}-{partition}")
        return producers[partition]

    def store_for(partition: int) -> MemoryStore:
        return stores.setdefault(partition, MemoryStore())

    worker = StreamsWorker(
        settings=SETTINGS.model_copy(update=settings),
        processor=Processor(default_registry(), SETTINGS.dedup_window),
        consumer=consumer,
        producer_for=producer_for,
        changelog=FakeChangelog(broker),
        store_for=store_for,
        metrics=metrics,
        clock=clock,
    )
    return Member(worker, consumer, producers, stores, metrics)


async def assign(m: Member, partitions: list[int]) -> None:
    tps = {TopicPartition(topic, p) for topic in (RAW_LOGS, RAW_METRICS) for p in partitions}
    m.consumer.assigned = tps
    await m.worker.on_partitions_assigned(tps)


async def revoke(m: Member) -> None:
    tps, m.consumer.assigned = m.consumer.assigned, set()
    await m.worker.on_partitions_revoked(tps)


def sessions(count: int, partition: int) -> list[str]:
    out, n = [], 0
    while len(out) < count:
        sid = f"s{n}"
        if partition_of(sid) == partition:
            out.append(sid)
        n += 1
    return out


def latest_states(broker: Broker) -> dict[str, SessionState]:
    latest: dict[str, SessionState] = {}
    for _, entry in broker.visible(TOPICS.session_state):
        state = SessionState.from_bytes(entry.value)
        if state.session_id not in latest or state.version > latest[state.session_id].version:
            latest[state.session_id] = state
    return latest


def event_count(broker: Broker) -> int:
    return sum(len(EventBatch.from_bytes(e.value).events) for _, e in broker.visible(TOPICS.events))


def rollup_requests(broker: Broker) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, entry in broker.visible(TOPICS.rollups):
        for rollup in RollupBatch.from_bytes(entry.value).rollups:
            out[rollup.session_id] = out.get(rollup.session_id, 0) + rollup.requests
    return out


REQUESTS_PER_EXPORT = 3  # api_request events in the capture
EVENTS_PER_EXPORT = 9


def feed(broker: Broker, sids: list[str], exports: range) -> None:
    for n in exports:
        for sid in sids:
            broker.produce_raw(Signal.LOGS, sid, export_for_bytes(sid, n))


def export_for_bytes(sid: str, n: int) -> bytes:
    return export_for(ExportLogsServiceRequest.FromString(LOGS_PB), sid, n)


# --- the tests ----------------------------------------------------------------------------------


async def test_assignment_restores_seeks_applies_and_commits_atomically() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(2, 0) + sessions(2, 1)
    feed(broker, sids, range(3))
    m = member(broker, clock)
    await assign(m, [0, 1])
    assert m.consumer.paused == m.consumer.assigned  # nothing is read before the restore

    await m.worker.step()

    assert sorted(m.worker.tasks) == [0, 1]
    assert m.worker.not_ready() == []
    states = latest_states(broker)
    assert {sid: s.api_requests for sid, s in states.items()} == dict.fromkeys(sids, 3 * REQUESTS_PER_EXPORT)
    assert event_count(broker) == len(sids) * 3 * EVENTS_PER_EXPORT
    assert rollup_requests(broker) == dict.fromkeys(sids, 3 * REQUESTS_PER_EXPORT)
    # State, positions and group offsets committed together.
    for p in (0, 1):
        changelog = [e for q, e in broker.visible(CHANGELOG) if q == p]
        positions = decode_positions(next(e.value for e in reversed(changelog) if e.key == POSITIONS_KEY))
        assert positions == {RAW_LOGS: 6, RAW_METRICS: 0}
        assert broker.committed[TopicPartition(RAW_LOGS, p)] == 6
    assert broker.uncommitted() == []


async def test_a_new_owner_restores_from_the_changelog_and_continues_at_its_positions() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(2, 0)
    feed(broker, sids, range(2))
    a = member(broker, clock)
    await assign(a, [0])
    await a.worker.step()
    await revoke(a)
    feed(broker, sids, range(2, 4))

    b = member(broker, clock)  # another worker: empty local store, the changelog only
    await assign(b, [0])
    await b.worker.step()

    states = latest_states(broker)
    assert {sid: states[sid].api_requests for sid in sids} == dict.fromkeys(sids, 4 * REQUESTS_PER_EXPORT)
    assert {sid: states[sid].version for sid in sids} == dict.fromkeys(sids, 4)  # one per message
    assert event_count(broker) == len(sids) * 4 * EVENTS_PER_EXPORT  # nothing emitted twice


async def test_a_local_store_behind_the_changelog_reads_the_difference() -> None:
    """Killed after the commit, before the local write: the store lags; restore catches up."""
    broker, clock = Broker(), Clock()
    sids = sessions(1, 0)
    feed(broker, sids, range(2))
    stores: dict[int, MemoryStore] = {}
    a = member(broker, clock, stores)
    await assign(a, [0])
    await a.worker.step()
    lagging = MemoryStore()
    lagging.write({}, 0)  # as if nothing had been written locally
    b = member(broker, clock, {0: lagging})
    feed(broker, sids, range(2, 3))
    await assign(b, [0])
    await b.worker.step()
    assert latest_states(broker)[sids[0]].api_requests == 3 * REQUESTS_PER_EXPORT


async def test_a_local_store_ahead_of_the_changelog_is_rebuilt() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(1, 0)
    feed(broker, sids, range(1))
    ahead = MemoryStore()
    ahead.write({b"default/ghost": b"{}"}, 10_000)  # a store of another deployment
    m = member(broker, clock, {0: ahead})
    await assign(m, [0])
    await m.worker.step()
    assert ahead.get(b"default/ghost") is None
    assert latest_states(broker)[sids[0]].api_requests == REQUESTS_PER_EXPORT


async def test_messages_below_the_position_are_never_applied_again() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(1, 0)
    feed(broker, sids, range(3))
    m = member(broker, clock)
    await assign(m, [0])
    await m.worker.step()
    feed(broker, sids, range(3, 4))
    m.consumer.rewind[TopicPartition(RAW_LOGS, 0)] = 0  # the consumer delivers from 0 again
    await m.worker.step()
    state = latest_states(broker)[sids[0]]
    assert (state.api_requests, state.version) == (4 * REQUESTS_PER_EXPORT, 4)
    assert event_count(broker) == 4 * EVENTS_PER_EXPORT


async def test_a_failed_commit_is_aborted_and_its_messages_applied_once_after_a_restore() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(2, 0)
    m = member(broker, clock)
    await assign(m, [0])
    await m.worker.step()  # restored, nothing to read yet
    feed(broker, sids, range(2))
    m.producers[0].fail_commit = True

    await m.worker.step()  # the transaction fails: aborted, the task goes back to restoring
    assert m.worker.not_ready() == [0]
    assert latest_states(broker) == {}
    assert m.consumer.paused >= {TopicPartition(RAW_LOGS, 0)}
    assert m.metrics.transactions.labels("aborted")._value.get() == 1

    clock.now += 60  # past the retry back-off
    await m.worker.step()  # restored (a new producer), then the same messages again
    states = latest_states(broker)
    assert {sid: (s.api_requests, s.version) for sid, s in states.items()} == dict.fromkeys(
        sids, (2 * REQUESTS_PER_EXPORT, 2)
    )
    assert event_count(broker) == len(sids) * 2 * EVENTS_PER_EXPORT


async def test_a_fenced_worker_stops_and_the_new_owner_counts_everything_once() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(1, 0)
    feed(broker, sids, range(1))
    a = member(broker, clock)
    await assign(a, [0])
    await a.worker.step()
    # a stalls; the group gives partition 0 to b (a never saw the revocation yet)
    b = member(broker, clock)
    await assign(b, [0])
    feed(broker, sids, range(1, 2))
    await b.worker.step()  # b's producer fences a's
    feed(broker, sids, range(2, 3))
    await a.worker.step()  # a wakes up and tries to commit: fenced, nothing visible from it
    assert a.worker.tasks[0].fenced
    assert a.worker.not_ready() == [0]
    await b.worker.step()
    state = latest_states(broker)[sids[0]]
    assert (state.api_requests, state.version) == (3 * REQUESTS_PER_EXPORT, 3)
    assert event_count(broker) == 3 * EVENTS_PER_EXPORT
    assert a.metrics.transactions.labels("fenced")._value.get() == 1


async def test_a_broker_outage_retries_until_it_comes_back() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(1, 1)
    feed(broker, sids, range(2))
    broker.down = True
    m = member(broker, clock)
    await assign(m, [1])
    await m.worker.step()  # the restore fails
    assert m.worker.not_ready() == [1]
    await m.worker.step()  # not yet due again: no retry storm
    broker.down = False
    clock.now += 60
    await m.worker.step()
    assert latest_states(broker)[sids[0]].api_requests == 2 * REQUESTS_PER_EXPORT


async def test_poison_values_are_dead_lettered_and_the_rest_counts() -> None:
    broker, clock = Broker(), Clock()
    (sid,) = sessions(1, 0)
    request = ExportLogsServiceRequest.FromString(export_for_bytes(sid, 0))
    records = request.resource_logs[0].scope_logs[0].log_records
    poisoned = next(r for r in records if any(kv.key == "cost_usd" for kv in r.attributes))
    for kv in poisoned.attributes:
        if kv.key == "cost_usd":
            kv.value.double_value = 1e300
    broker.produce_raw(Signal.LOGS, sid, request.SerializeToString())
    broker.produce_raw(Signal.LOGS, sid, b"\xff\xfe not protobuf")
    feed(broker, [sid], range(1, 2))
    m = member(broker, clock)
    await assign(m, [0])
    await m.worker.step()

    state = latest_states(broker)[sid]
    assert state.api_requests == 2 * REQUESTS_PER_EXPORT - 1  # all but the poisoned request
    letters = [json.loads(e.value) for _, e in broker.visible(SETTINGS.dead_letter_topic)]
    assert sorted(letter["reason"] for letter in letters) == ["cost_too_large", "undecodable"]
    cost = next(letter for letter in letters if letter["reason"] == "cost_too_large")
    assert cost["source"] == {"topic": RAW_LOGS, "partition": 0, "offset": 0}
    assert (cost["tenant"], cost["session_id"], cost["kind"], cost["error"]) == (
        "default",
        sid,
        "log_record",
        "OutOfRange",
    )
    assert broker.committed[TopicPartition(RAW_LOGS, 0)] == 3  # nothing blocks the partition
    counted = m.metrics.dead_letters.labels(RAW_LOGS, "0", "cost_too_large")._value.get()
    assert counted == 1


async def test_a_message_whose_apply_raises_is_dead_lettered_and_its_batch_redone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker, clock = Broker(), Clock()
    good, bad = sessions(2, 0)
    feed(broker, [good, bad], range(2))
    real_apply = state_module.apply

    def apply(stored: Any, records: Any, **kwargs: Any) -> Any:
        applied = real_apply(stored, records, **kwargs)  # changes the state, then breaks
        if records.session_id == bad and applied.stored.state.version == 2:
            raise RuntimeError("a bug in the accounting")
        return applied

    monkeypatch.setattr("streams.processor.apply", apply)
    m = member(broker, clock)
    await assign(m, [0])
    await m.worker.step()

    states = latest_states(broker)
    assert states[good].api_requests == 2 * REQUESTS_PER_EXPORT
    # bad's second message is dead-lettered; its half-applied state never reached Kafka
    assert (states[bad].api_requests, states[bad].version) == (REQUESTS_PER_EXPORT, 1)
    letters = [json.loads(e.value) for _, e in broker.visible(SETTINGS.dead_letter_topic)]
    assert [(letter["reason"], letter["kind"], letter["session_id"]) for letter in letters] == [
        ("apply_error", "message", bad)
    ]
    assert broker.committed[TopicPartition(RAW_LOGS, 0)] == 4


async def test_revocation_closes_tasks_and_drops_their_fetched_records() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(1, 0)
    m = member(broker, clock)
    await assign(m, [0, 1])
    await m.worker.step()
    await revoke(m)
    assert m.worker.tasks == {}
    feed(broker, sids, range(1))
    m.consumer.assigned = {TopicPartition(RAW_LOGS, 0)}  # a stale fetch after the revocation
    await m.worker.step()
    assert latest_states(broker) == {}


async def test_health_reports_stalled_partitions_with_lag() -> None:
    broker, clock = Broker(), Clock()
    sids = sessions(1, 0)
    m = member(broker, clock, stall_after_s=30)
    await assign(m, [0])
    await m.worker.step()
    assert m.worker.stalled() == []
    feed(broker, sids, range(1))
    m.consumer.pause(TopicPartition(RAW_LOGS, 0))  # something keeps the partition from moving
    await m.worker.step()
    clock.now += 31
    assert m.worker.stalled() == [f"{RAW_LOGS}[0]"]
    m.consumer.resume(TopicPartition(RAW_LOGS, 0))
    await m.worker.step()
    assert m.worker.stalled() == []
    lag = m.metrics.lag.labels(RAW_LOGS, "0")._value.get()
    assert lag == 0


async def test_signals_raised_in_an_aborted_transaction_go_out_once_after_the_redo() -> None:
    """A signal fires once per crossing: when the transaction that raised it is aborted, the
    redo raises it again (the state it changed was never committed), and only once."""
    broker, clock = Broker(), Clock()
    (sid,) = sessions(1, 1)
    t0 = time.time_ns() - 3600 * 10**9
    for n, tokens in enumerate([100_000, 150_000, 170_000, 175_000]):
        broker.produce_raw(Signal.LOGS, sid, logs_with_context(sid, n, tokens, t0 + n * 10**9))
    m = member(broker, clock)
    await assign(m, [1])
    await m.worker.step()
    assert broker.visible(TOPICS.session_signals)
    first = [
        s.signal_id
        for _, e in broker.visible(TOPICS.session_signals)
        for s in SignalBatch.from_bytes(e.value).signals
    ]

    again = Broker()
    for n, tokens in enumerate([100_000, 150_000, 170_000, 175_000]):
        again.produce_raw(Signal.LOGS, sid, logs_with_context(sid, n, tokens, t0 + n * 10**9))
    m2 = member(again, clock)
    await assign(m2, [1])
    m2.worker.settings = m2.worker.settings.model_copy(update={"batch_max_messages": 2})
    await m2.worker.step()  # restore; the first two messages
    m2.producers[1].fail_commit = True
    await m2.worker.step()  # the crossing's transaction is aborted
    clock.now += 60
    await m2.worker.step()  # restored, redone
    redone = [
        s.signal_id
        for _, e in again.visible(TOPICS.session_signals)
        for s in SignalBatch.from_bytes(e.value).signals
    ]
    assert redone == first
    assert len(set(redone)) == len(redone)
    assert any(not e.visible for log in again.logs.values() for e in log)  # the aborted copy exists, unread


async def test_pause_points_stop_at_the_nth_batch(tmp_path: Any) -> None:
    pauses = PausePoints("after_changelog:2", tmp_path)
    await pauses.reach("after_changelog")
    await pauses.reach("after_outputs")
    waiting = asyncio.ensure_future(pauses.reach("after_changelog"))
    await asyncio.wait_for(pauses.paused.wait(), 5)
    assert (tmp_path / "paused-at").read_text() == "after_changelog"
    assert not waiting.done()
    waiting.cancel()


async def test_an_unexpected_error_outside_the_record_guards_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anything a message raises (here a RecursionError, as a deeply nested value could cause)
    dead-letters that message; the partition goes on."""
    broker, clock = Broker(), Clock()
    good, bad = sessions(2, 0)
    feed(broker, [good, bad], range(2))
    registry_logs = default_registry().logs

    def logs(request: Any, tenant: str, received_ns: int, session: str | None = None) -> Any:
        if session == bad:
            raise RecursionError("maximum recursion depth exceeded")
        return registry_logs(request, tenant, received_ns, session)

    m = member(broker, clock)
    monkeypatch.setattr(m.worker.processor.registry, "logs", logs)
    await assign(m, [0])
    await m.worker.step()
    states = latest_states(broker)
    assert states[good].api_requests == 2 * REQUESTS_PER_EXPORT
    assert bad not in states
    letters = [json.loads(e.value) for _, e in broker.visible(SETTINGS.dead_letter_topic)]
    assert sorted(letter["reason"] for letter in letters) == ["process_error", "process_error"]
    assert broker.committed[TopicPartition(RAW_LOGS, 0)] == 4


async def test_wire_schema_1_writes_what_the_previous_version_reads_and_a_restore_reads_it() -> None:
    """TOKENTIDE_WIRE_SCHEMA=1 while an upgrade must stay reversible: every output and changelog
    value is the previous version's JSON; a worker on schema 2 takes over from it."""
    broker, clock = Broker(), Clock()
    sids = sessions(2, 0)
    feed(broker, sids, range(2))
    a = member(broker, clock, wire_schema=1)
    await assign(a, [0])
    await a.worker.step()
    await revoke(a)
    topics = (TOPICS.events, TOPICS.session_state, TOPICS.rollups)
    written = [e.value for topic in topics for _, e in broker.visible(topic)]
    states = [e.value for q, e in broker.visible(CHANGELOG) if e.key != POSITIONS_KEY]
    assert written
    assert states
    assert all(v.startswith(b"{") and b'"schema"' not in v for v in written + states)

    feed(broker, sids, range(2, 4))
    b = member(broker, clock)  # schema 2 from the states schema 1 stored
    await assign(b, [0])
    await b.worker.step()
    assert {sid: s.api_requests for sid, s in latest_states(broker).items()} == dict.fromkeys(
        sids, 4 * REQUESTS_PER_EXPORT
    )
    assert event_count(broker) == len(sids) * 4 * EVENTS_PER_EXPORT
