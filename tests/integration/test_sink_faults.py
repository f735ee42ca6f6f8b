"""Fault tests of the real ``tokentide sink`` process: SIGKILL between the database commit and
Kafka's, a rebalance away from a sink that stopped, and a Kafka outage under ``/readyz``.

The derived topics get increment rollups (what the exactly-once stream stage emits), events,
session states and signals, in every partition. Whatever happens to the sink processes, the
database must end with every increment added exactly once (``rollups_minute`` and the hours
made of it), every event and signal once, the last state of every session, and the sink's
consumer group must commit the end of every partition.

The kill point is ``TOKENTIDE_SINK_TEST_PAUSE=after_database_commit`` (test only: the sink
stops for good after its first batch's database commit, before the Kafka offsets are
committed, and says so in its log).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from tests.support.broker import Broker
from tests.support.services import committed_offsets, free_port, wait_caught_up
from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.records import (
    Event,
    EventBatch,
    Rollup,
    RollupBatch,
    SessionSignal,
    SessionState,
    SignalBatch,
    SignalKind,
    Tokens,
)
from tokentide.settings import KafkaSettings
from tokentide.topics import Topics

pytestmark = pytest.mark.integration

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
PARTITIONS = 4
SESSIONS = 8  # two per partition
PAUSED = "test pause point after_database_commit reached"
ASSIGNED = "at the database's positions"
HOUR_NS = 3600 * 10**9
MINUTE_NS = 60 * 10**9


@dataclass
class SinkProcess:
    """``tokentide sink`` as a process of its own (its own process group, log and port)."""

    name: str
    bootstrap: str
    database: str
    prefix: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def group(self) -> str:
        return self.prefix + "sink"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
        env.update(
            KAFKA_BOOTSTRAP=self.bootstrap,
            DATABASE_URL=self.database,
            TOKENTIDE_OPEN_MODE="1",
            TOKENTIDE_LOG_LEVEL="INFO",
            TOKENTIDE_TOPIC_PREFIX=self.prefix,
            TOKENTIDE_PARTITIONS=str(PARTITIONS),
            TOKENTIDE_SINK_GROUP_ID=self.group,
            TOKENTIDE_SINK_PORT=str(self.port),
            TOKENTIDE_BATCH_LINGER_MS="50",
            **self.extra_env,
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [TOKENTIDE, "sink"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def readiness(self) -> tuple[int, dict[str, object]] | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return response.status_code, response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, what: str, condition: object, timeout_s: float) -> None:
        """Poll ``condition()`` (bounded); fail with the log if it never holds."""
        deadline = time.monotonic() + timeout_s
        while not condition():  # type: ignore[operator]
            if self.process is None or self.process.poll() is not None:
                self.fail(f"{self.name} exited while waiting for: {what}")
            if time.monotonic() > deadline:
                self.fail(f"{self.name}: not within {timeout_s}s: {what}")
            time.sleep(0.2)

    def wait_log(self, text: str, timeout_s: float = 90.0) -> None:
        self.wait(f"log line {text!r}", lambda: text in self.log(), timeout_s)

    def kill(self) -> None:
        """SIGKILL: no Kafka commit, no clean leave of the group, no database close."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def fail(self, message: str) -> NoReturn:
        tail = "\n".join(self.log().splitlines()[-60:])
        pytest.fail(f"{message}\n----- {self.name} ({self.log_path}) -----\n{tail}")


def _hour_ns() -> int:
    now = time.time_ns()
    return now - now % HOUR_NS


@dataclass
class Workload:
    """Messages of ``SESSIONS`` sessions (two per partition) on the derived topics, and what
    the database must hold once they are applied exactly once."""

    topics: Topics
    start_ns: int = field(default_factory=lambda: _hour_ns() - 2 * HOUR_NS)
    events: set[str] = field(default_factory=set)
    signals: set[str] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)
    #: (session, model, minute ns) -> (input tokens, requests, cost nanos): the increments' sums.
    minutes: Counter[tuple[str, str, int, str]] = field(default_factory=Counter)

    def rollups(self, session: str, n: int) -> list[Rollup]:
        """Two increments per message: minutes spread over two hours, several per minute."""
        out = []
        for model, minute_ns in (
            ("claude-opus-4-8", self.start_ns + (n % 3) * MINUTE_NS),
            ("claude-haiku-4-5", self.start_ns + HOUR_NS + (n % 2) * 7 * MINUTE_NS),
        ):
            out.append(
                Rollup(
                    tenant="default",
                    session_id=session,
                    agent="claude_code",
                    model=model,
                    minute_ns=minute_ns,
                    tokens=Tokens(input=n + 1, output=1),
                    cost_nanos=1000 * (n + 1),
                    requests=1,
                    increment=True,
                )
            )
        return out

    async def produce(self, bootstrap: str, messages: range) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for n in messages:
                for s in range(SESSIONS):
                    await self._send(producer, f"s-{s}", s % PARTITIONS, n)
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, session: str, partition: int, n: int) -> None:
        topics, key = self.topics, f"default/{session}".encode()
        now = self.start_ns + n * 1000
        events = [
            Event(
                tenant="default",
                session_id=session,
                event_id=f"{session}-{n}-{i}",
                agent="claude_code",
                name="api_request",
                time_ns=now + i,
                tokens=Tokens(input=n + 1),
            )
            for i in range(2)
        ]
        rollups = self.rollups(session, n)
        state = SessionState(
            tenant="default",
            session_id=session,
            agent="claude_code",
            started_at_ns=self.start_ns,
            last_seen_at_ns=now,
            api_requests=n + 1,
            version=n + 1,
        )
        sends = [
            (topics.events, EventBatch(events=events).to_bytes()),
            (topics.rollups, RollupBatch(rollups=rollups).to_bytes()),
            (topics.session_state, state.to_bytes()),
        ]
        if n % 4 == 0:
            sig = SessionSignal(
                tenant="default",
                session_id=session,
                signal_id=f"{session}-warning-{n}",
                kind=SignalKind.CONTEXT_WARNING,
                time_ns=now,
                ratio=0.8,
                tokens=160_000,
                window=200_000,
            )
            sends.append((topics.session_signals, SignalBatch(signals=[sig]).to_bytes()))
            self.signals.add(sig.signal_id)
        for topic, value in sends:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
        self.events.update(e.event_id for e in events)
        self.versions[session] = n + 1
        for r in rollups:
            self.minutes[(session, r.model, r.minute_ns, "input")] += r.tokens.input
            self.minutes[(session, r.model, r.minute_ns, "requests")] += r.requests
            self.minutes[(session, r.model, r.minute_ns, "cost")] += r.cost_nanos

    def derived(self) -> list[str]:
        t = self.topics
        return [t.events, t.rollups, t.session_state, t.session_signals]

    def check(self, dsn: str) -> None:
        """The database holds every message's records exactly once."""
        want_minutes: dict[tuple[str, str, int], tuple[int, int, Decimal]] = {}
        want_hours: Counter[tuple[str, str, int, str]] = Counter()
        for (session, model, minute_ns, what), value in self.minutes.items():
            key = (session, model, minute_ns)
            inputs, requests, cost = want_minutes.get(key, (0, 0, Decimal(0)))
            if what == "input":
                inputs = value
            elif what == "requests":
                requests = value
            else:
                cost = Decimal(value).scaleb(-9)
            want_minutes[key] = (inputs, requests, cost)
            want_hours[(session, model, minute_ns - minute_ns % HOUR_NS, what)] += value
        with psycopg.connect(dsn) as conn:
            minutes = {
                (s, m, int(t.timestamp()) * 10**9): (i, r, c)
                for s, m, t, i, r, c in conn.execute(
                    "SELECT session_id, model, minute, input_tokens, requests, cost_usd FROM rollups_minute"
                )
            }
            hours = {
                (s, m, int(t.timestamp()) * 10**9): (i, r, c)
                for s, m, t, i, r, c in conn.execute(
                    "SELECT session_id, model, hour, input_tokens, requests, cost_usd FROM rollups_hour"
                )
            }
            events = [r[0] for r in conn.execute("SELECT event_id FROM events")]
            signals = [r[0] for r in conn.execute("SELECT signal_id FROM signals")]
            versions = dict(conn.execute("SELECT session_id, state_version FROM sessions").fetchall())
        assert minutes == want_minutes  # every increment added once
        assert hours == {
            (s, m, h): (
                want_hours[(s, m, h, "input")],
                want_hours[(s, m, h, "requests")],
                Decimal(want_hours[(s, m, h, "cost")]).scaleb(-9),
            )
            for s, m, h, _ in want_hours
        }
        assert sorted(events) == sorted(self.events)
        assert sorted(signals) == sorted(self.signals)
        assert versions == self.versions


def stored_positions(dsn: str) -> dict[tuple[str, int], int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT topic, partition, next_offset FROM sink_offsets").fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


@pytest.fixture
async def workload(bootstrap: str, prefix: str) -> Workload:
    await ensure_topics(bootstrap, pipeline_topics(KafkaSettings(topic_prefix=prefix, partitions=PARTITIONS)))
    return Workload(Topics(prefix))


async def test_a_sink_killed_after_the_database_commit_applies_nothing_twice(
    bootstrap: str, prefix: str, database: str, workload: Workload, tmp_path: Path
) -> None:
    await workload.produce(bootstrap, range(12))
    first = SinkProcess(
        "sink-killed",
        bootstrap,
        database,
        prefix,
        tmp_path,
        {"TOKENTIDE_SINK_TEST_PAUSE": "after_database_commit"},
    )
    first.start()
    try:
        await asyncio.to_thread(first.wait_log, PAUSED)
        applied = {p: o for p, o in stored_positions(database).items() if o > 0}
        kafka = await committed_offsets(bootstrap, first.group)
        assert applied, "the first batch was committed to the database"
        # ... and not to Kafka: without the database's positions a restart would apply it again.
        assert all(kafka.get(p, 0) < o for p, o in applied.items()), (applied, kafka)
    finally:
        first.kill()

    second = SinkProcess("sink-restarted", bootstrap, database, prefix, tmp_path)
    second.start()
    try:
        await wait_caught_up(bootstrap, second.group, workload.derived(), timeout_s=120)
        workload.check(database)
    finally:
        second.terminate()
    assert ASSIGNED in second.log()  # it resumed at the database's positions


async def test_a_rebalance_away_from_a_stuck_sink_applies_nothing_twice(
    bootstrap: str, prefix: str, database: str, workload: Workload, tmp_path: Path
) -> None:
    """The first sink stops for good after a database commit (its Kafka offsets behind), a
    second one joins the group and takes some of its partitions at once, then all of them
    once the first is killed; messages keep coming all along."""
    await workload.produce(bootstrap, range(8))
    stuck = SinkProcess(
        "sink-stuck",
        bootstrap,
        database,
        prefix,
        tmp_path,
        {"TOKENTIDE_SINK_TEST_PAUSE": "after_database_commit"},
    )
    other = SinkProcess("sink-other", bootstrap, database, prefix, tmp_path)
    stuck.start()
    try:
        await asyncio.to_thread(stuck.wait_log, PAUSED)
        other.start()
        # The group rebalanced: the newcomer was given partitions, the stuck one kept some.
        await asyncio.to_thread(other.wait_log, ASSIGNED)
        await workload.produce(bootstrap, range(8, 16))
        stuck.kill()  # its partitions move once the group's session timeout expires
        await wait_caught_up(bootstrap, other.group, workload.derived(), timeout_s=180)
        workload.check(database)
    finally:
        stuck.kill()
        other.terminate()
    assert other.log().count(ASSIGNED) >= 2, "the second sink was assigned twice (join, then the rest)"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    (tmp_path / "kafka").mkdir()
    broker = Broker(tmp_path / "kafka")
    broker.start()
    yield broker
    broker.kill()


async def test_readiness_follows_kafka_away_and_back(
    broker: Broker, prefix: str, database: str, tmp_path: Path
) -> None:
    await ensure_topics(
        broker.bootstrap, pipeline_topics(KafkaSettings(topic_prefix=prefix, partitions=PARTITIONS))
    )
    workload = Workload(Topics(prefix))
    sink = SinkProcess(
        "sink-outage",
        broker.bootstrap,
        database,
        prefix,
        tmp_path,
        {"TOKENTIDE_KAFKA_PROBE_INTERVAL_S": "0.5", "TOKENTIDE_KAFKA_PROBE_TIMEOUT_S": "2"},
    )
    sink.start()
    try:

        def answers(status: int, kafka: bool) -> bool:
            seen = sink.readiness()
            return seen is not None and seen[0] == status and seen[1].get("kafka") is kafka

        await asyncio.to_thread(sink.wait, "ready", lambda: answers(200, True), 90)
        ready = sink.readiness()
        assert ready is not None
        assert ready[1] == {"status": "ready", "kafka": True, "database": True, "consuming": True}
        await workload.produce(broker.bootstrap, range(2))

        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(sink.wait, "503 with Kafka gone", lambda: answers(503, False), 60)
        down = sink.readiness()
        assert down is not None
        assert down[1] == {"status": "not ready", "kafka": False, "database": True, "consuming": True}

        await asyncio.to_thread(broker.start)
        await asyncio.to_thread(sink.wait, "ready again with Kafka back", lambda: answers(200, True), 120)
        # And it consumes again: what was sent before and after the outage is applied once.
        await workload.produce(broker.bootstrap, range(2, 4))
        await wait_caught_up(broker.bootstrap, sink.group, workload.derived(), timeout_s=120)
        workload.check(database)
    finally:
        sink.terminate()
