"""Fault tests of the stream stage: ``tokentide streams`` processes killed, restarted, rebalanced.

Raw messages are produced straight to the raw topics, exactly as ingest writes them (the
captured Claude Code protobuf exports, renumbered per session and request), to several
sessions in every partition. Whatever happens to the workers:

- the last ``session.state`` of every session (highest ``version``) carries exactly what was
  sent: every request counted once, none lost, none twice, although Kafka redelivers whatever
  a dead or revoked worker had not committed;
- its ``version`` equals the number of raw messages of the session (one per message
  applied), so no message was applied twice even where event-id deduplication would have
  hidden it in the totals; no version was ever published with two different contents;
- the consumer group commits the end of every raw partition: a restarted or rebalanced
  worker must not stop committing (the lag would grow forever and every later restart would
  reprocess everything since).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.support.captures import FIXTURES, export_for
from tests.support.services import end_offsets, read_all, unique
from tests.support.streams_worker import StreamsWorker
from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.records import NANOS_PER_USD, SessionState, Tokens
from tokentide.settings import KafkaSettings
from tokentide.topics import Signal, Topics

pytestmark = pytest.mark.integration

CASE = FIXTURES / "claude-code" / "stub-text-protobuf"
LOGS = ExportLogsServiceRequest.FromString((CASE / "0001_v1_logs.pb").read_bytes())
METRICS = ExportMetricsServiceRequest.FromString((CASE / "0002_v1_metrics.pb").read_bytes())
PARTITIONS = 4
SESSIONS_PER_PARTITION = 2
SESSIONS = PARTITIONS * SESSIONS_PER_PARTITION
MESSAGES_PER_REQUEST = 2  # one logs export and one metrics export


def _attrs(kvs: object) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PerRequest:
    """What one logs + one metrics export add to a session, read from the capture itself."""

    events: int
    api_requests: int
    tokens: Tokens
    cost_nanos: int
    active_time_s: float


def per_request() -> PerRequest:
    records = [r for rl in LOGS.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    tokens, cost, requests = Tokens(), Decimal(0), 0
    for record in records:
        attrs = _attrs(record.attributes)
        if attrs.get("event.name") != "api_request":
            continue
        requests += 1
        tokens.add(
            Tokens(
                input=int(str(attrs["input_tokens"])),
                output=int(str(attrs["output_tokens"])),
                cache_read=int(str(attrs["cache_read_tokens"])),
                cache_creation=int(str(attrs["cache_creation_tokens"])),
            )
        )
        cost += Decimal(str(attrs["cost_usd"]))
    active = sum(
        p.as_double
        for rm in METRICS.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "claude_code.active_time.total"
        for p in m.sum.data_points
    )
    assert requests, "the capture changed: it must hold an api_request"
    assert active, "the capture changed: it must hold active time"
    return PerRequest(len(records), requests, tokens, int(cost * NANOS_PER_USD), active)


PER_REQUEST = per_request()


def metrics_for(session_id: str, request_no: int, base_ns: int) -> bytes:
    """The metrics capture as the ``request_no``-th export of ``session_id`` (delta points of an
    interval of their own, so that none is a repeat of another)."""
    request = ExportMetricsServiceRequest()
    request.CopyFrom(METRICS)
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.sum.data_points:
                    point.start_time_unix_nano = base_ns + request_no * 1_000_000_000
                    point.time_unix_nano = base_ns + request_no * 1_000_000_000 + 500_000_000
                    for kv in point.attributes:
                        if kv.key == "session.id":
                            kv.value.string_value = session_id
    return request.SerializeToString()


def headers(signal: Signal, session_id: str) -> list[tuple[str, bytes]]:
    """The headers ingest puts on every raw message."""
    return [
        ("tt-tenant", b"default"),
        ("tt-signal", signal.value.encode()),
        ("tt-received-at-ns", str(time.time_ns()).encode()),
        ("tt-session", session_id.encode()),
    ]


def sessions_over_partitions(tag: str) -> list[str]:
    """Session ids, ``SESSIONS_PER_PARTITION`` in each partition (murmur2, as every producer)."""
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    by_partition: dict[int, list[str]] = defaultdict(list)
    while any(len(by_partition[p]) < SESSIONS_PER_PARTITION for p in partitions):
        sid = f"{tag}-{uuid.uuid4()}"
        partition = partitioner(f"default/{sid}".encode(), partitions, partitions)
        if len(by_partition[partition]) < SESSIONS_PER_PARTITION:
            by_partition[partition].append(sid)
    return [sid for p in partitions for sid in by_partition[p]]


@dataclass
class Feed:
    """Produces the sessions' requests in order, as ingest would, and counts what it sent."""

    bootstrap: str
    topics: Topics
    sessions: list[str]
    base_ns: int = field(default_factory=time.time_ns)
    requests: int = 0  # per session, sent so far

    @property
    def messages(self) -> int:
        return self.requests * len(self.sessions) * MESSAGES_PER_REQUEST

    async def send(self, requests: int, per_second: float | None = None) -> None:
        """The next ``requests`` requests of every session (its logs, then its metrics export);
        at ``per_second`` rounds (one request of every session) a second if given, else at once."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            started = time.monotonic()
            futures = []
            for i in range(requests):
                n = self.requests + i
                for sid in self.sessions:
                    key = f"default/{sid}".encode()
                    futures.append(
                        await producer.send(
                            self.topics.raw(Signal.LOGS),
                            export_for(LOGS, sid, n),
                            key=key,
                            headers=headers(Signal.LOGS, sid),
                        )
                    )
                    futures.append(
                        await producer.send(
                            self.topics.raw(Signal.METRICS),
                            metrics_for(sid, n, self.base_ns),
                            key=key,
                            headers=headers(Signal.METRICS, sid),
                        )
                    )
                if per_second:
                    await asyncio.sleep(max(0.0, started + (i + 1) / per_second - time.monotonic()))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        self.requests += requests


def totals(state: SessionState) -> str:
    return (
        f"api_requests={state.api_requests} events={state.events} tokens={state.tokens.model_dump()} "
        f"cost_nanos={state.cost_nanos} active_time_s={state.active_time_s}"
    )


def expected_totals(session_id: str, requests: int) -> str:
    tokens = Tokens()
    for _ in range(requests * PER_REQUEST.api_requests):
        tokens.add(PER_REQUEST.tokens)
    expected = SessionState(
        tenant="default",
        session_id=session_id,
        agent="claude_code",
        started_at_ns=0,
        last_seen_at_ns=0,
        api_requests=requests * PER_REQUEST.api_requests,
        events=requests * PER_REQUEST.events,
        tokens=tokens,
        cost_nanos=requests * PER_REQUEST.cost_nanos,
        active_time_s=round(requests * PER_REQUEST.active_time_s, 3),
    )
    return totals(expected)


@dataclass
class Stage:
    """One test's topics and consumer group, and the workers it runs on them."""

    bootstrap: str
    workdir: Path
    prefix: str
    workers: list[StreamsWorker] = field(default_factory=list)
    #: What happened when (kill moments, readiness times), reported with any failure.
    notes: list[str] = field(default_factory=list)

    @property
    def app_id(self) -> str:
        return self.prefix + "streams"

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    @property
    def raw_topics(self) -> list[str]:
        return [self.topics.raw(Signal.LOGS), self.topics.raw(Signal.METRICS)]

    async def feed(self, tag: str) -> Feed:
        settings = KafkaSettings(
            kafka_bootstrap=self.bootstrap, topic_prefix=self.prefix, partitions=PARTITIONS
        )
        await ensure_topics(self.bootstrap, pipeline_topics(settings))
        return Feed(self.bootstrap, self.topics, sessions_over_partitions(tag))

    def worker(self, name: str) -> StreamsWorker:
        """A worker of this stage's app id, with a data directory and a port of its own."""
        worker = StreamsWorker(
            name=name,
            bootstrap=self.bootstrap,
            prefix=self.prefix,
            app_id=self.app_id,
            data_dir=self.workdir / name,
            log_path=self.workdir / f"{name}.log",
        )
        self.workers.append(worker)
        return worker

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, message: str) -> NoReturn:
        notes = "".join(f"\n  note: {n}" for n in self.notes)
        logs = "\n".join(w.logs(60) for w in self.workers)
        pytest.fail(f"{message}{notes}\n{logs}", pytrace=False)

    async def states(self) -> tuple[dict[str, SessionState], list[str]]:
        """The highest version of every session's state, and any version seen with two contents."""
        latest: dict[str, SessionState] = {}
        contents: dict[tuple[str, int], set[str]] = defaultdict(set)
        for record in await read_all(self.bootstrap, self.topics.session_state):
            state = SessionState.from_bytes(record.value)  # type: ignore[attr-defined]
            contents[state.session_id, state.version].add(totals(state))
            if state.session_id not in latest or state.version > latest[state.session_id].version:
                latest[state.session_id] = state
        forks = [f"{sid} v{v}: {sorted(c)}" for (sid, v), c in contents.items() if len(c) > 1]
        return latest, forks

    async def lag(self) -> dict[str, int]:
        """Raw messages not yet committed by the consumer group, by partition (none: caught up)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.app_id)
        finally:
            await admin.close()
        ends = await end_offsets(self.bootstrap, self.raw_topics)
        lag = {}
        for tp, end in ends.items():
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            if end > done:
                lag[f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}]@{done}"] = end - done
        return lag

    async def check(
        self, feed: Feed, when: str, timeout_s: float = 40.0, *, commits_required: bool = True
    ) -> dict[str, int]:
        """Wait until every session's last state has one version per message sent (or the time is
        up), then check its totals, and that the group committed every raw message; returns what
        is left uncommitted (``commits_required=False``: reported, not a failure)."""
        want_version = feed.requests * MESSAGES_PER_REQUEST
        deadline = time.monotonic() + timeout_s
        while True:
            latest, forks = await self.states()
            behind = [s for s in feed.sessions if s not in latest or latest[s].version < want_version]
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        problems = [f"one version, two contents: {fork}" for fork in forks]
        for sid in feed.sessions:
            state = latest.get(sid)
            if state is None:
                problems.append(f"{sid}: no session.state at all")
                continue
            want, got = expected_totals(sid, feed.requests), totals(state)
            if got != want or state.version != want_version:
                problems.append(
                    f"{sid}: version {state.version}, want {want_version} (one per raw message)\n"
                    f"      want {want}\n      got  {got}"
                )
        # State first: a stuck commit shows as lag, with the totals already reported above.
        lag = await self.lag()
        while lag and time.monotonic() < deadline + 10:
            await asyncio.sleep(1.0)
            lag = await self.lag()
        if lag and commits_required:
            problems.append(
                f"consumer group {self.app_id} stopped committing; uncommitted raw messages by "
                f"partition[@committed offset]: {lag}"
            )
        if problems:
            self.fail(f"{when}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
        return lag


@pytest.fixture
def stage(bootstrap: str, tmp_path: Path) -> Iterator[Stage]:
    stage = Stage(bootstrap, tmp_path, unique("srec") + ".")
    yield stage
    for worker in stage.workers:
        worker.kill()


async def start(worker: StreamsWorker, timeout_s: float = 60.0) -> float:
    """Start ``worker`` and wait until it is ready; returns the seconds that took."""
    await asyncio.to_thread(worker.start)
    return await asyncio.to_thread(worker.wait_ready, timeout_s)


async def processed_at_least(worker: StreamsWorker, count: int, timeout_s: float) -> int:
    """Poll the worker's message counter until it reaches ``count``; returns the last reading."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = await asyncio.to_thread(worker.messages_processed)
        if seen >= count:
            return seen
        if not worker.running():
            worker.fail(f"{worker.name} exited while processing")
        if time.monotonic() > deadline:
            worker.fail(f"{worker.name} processed only {seen} of {count} messages in {timeout_s}s")
        await asyncio.sleep(0.02)


async def committed_everywhere(stage: Stage, timeout_s: float) -> None:
    """Wait until the group has committed an offset in every raw partition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lag = await stage.lag()
        if not any(key.endswith("@0") for key in lag):
            return
        await asyncio.sleep(0.05)
    stage.fail(f"no offset committed in every raw partition after {timeout_s}s: {await stage.lag()}")


BACKLOG = 100  # requests per session produced before the worker starts: 1 600 messages
LIVE = 40  # requests per session produced while workers run, die and restart
LIVE_RATE = 8.0  # rounds a second (one request of every session): 128 messages/s


@pytest.mark.parametrize("moment", ["mid-backlog", "after-first-commit"])
async def test_kill_and_restart_counts_every_request_once(stage: Stage, moment: str) -> None:
    """SIGKILL a busy worker, restart it on the same data dir, then hand over to a fresh data dir.

    ``mid-backlog``: killed a quarter into a backlog (typically before its first offset
    commit, so all of it comes again; the restarted worker finds changelog records past what
    its RocksDB files hold). ``after-first-commit``: killed as soon as the group committed in
    every partition, so the redelivery starts at a committed offset.
    """
    feed = await stage.feed("kill")
    await feed.send(BACKLOG)
    worker = stage.worker("w1")
    await start(worker)
    live = asyncio.create_task(feed.send(LIVE, per_second=LIVE_RATE))
    try:
        if moment == "mid-backlog":
            await processed_at_least(worker, feed.messages // 4, timeout_s=30)
        else:
            await committed_everywhere(stage, timeout_s=30)
        seen = await asyncio.to_thread(worker.messages_processed)
        worker.kill()
        stage.note(f"w1 killed ({moment}) after {seen} messages, {feed.messages}+ sent")
        await live  # the rest arrives while the worker is dead or recovering
    finally:
        live.cancel()
    took = await start(worker)  # same app id, same data dir: its RocksDB state, then the changelog
    stage.note(f"w1 ready again {took:.1f}s after its restart")
    await stage.check(feed, "after kill -9 and a restart on the same data dir")

    # The changelog must hold the same state: a worker with only the changelog (a lost disk,
    # or the partitions moving to another host) continues from it.
    assert worker.terminate() == 0, worker.logs()
    fresh = stage.worker("w2")
    await start(fresh)
    await feed.send(1)
    await stage.check(feed, "after a handover to a worker with a fresh data dir")


async def test_rebalance_between_two_workers_counts_every_request_once(
    stage: Stage, record_property: Callable[[str, object], None]
) -> None:
    """A second worker joins under load (partitions move), then the first leaves (SIGTERM).

    Each move makes the receiving worker recover the moved partitions from the changelog and
    seek them to the committed offsets while messages keep arriving: the last batch is
    produced just as ``b`` takes over ``a``'s partitions.
    """
    feed = await stage.feed("rebalance")
    a, b = stage.worker("a"), stage.worker("b")
    await start(a)
    await feed.send(BACKLOG // 2)
    await processed_at_least(a, feed.messages // 2, timeout_s=30)
    live = asyncio.create_task(feed.send(LIVE, per_second=LIVE_RATE))
    try:
        await start(b)  # the group rebalances under load: half the partitions move to b
        await processed_at_least(b, 1, timeout_s=30)
        by_a = await asyncio.to_thread(a.messages_processed)
        assert a.terminate() == 0, a.logs()  # and now all of them move to b
        await live
    finally:
        live.cancel()
    await feed.send(BACKLOG // 2)
    stage.note(f"a processed {by_a} messages before it left (replays included)")
    # Exact totals, one version per message: required. Commits: reported, not required here.
    # After this double rebalance faust's consumer can stop committing some partitions for good
    # (1 run in 3 in CI; faust#606 and a commit refused mid-rebalance recorded as done; the
    # stage's commit repair does not get through either, decision 13): nothing is lost or
    # counted twice, the lag drains at the next restart, which replays what was not committed.
    left = await stage.check(feed, "after a worker joined and the first one left", commits_required=False)
    record_property("uncommitted_after_rebalance", left)
