"""The event stream while the pipeline runs 30 s and more behind, with real processes.

A real ``tokentide sink`` writes what this test produces straight to the derived topics
(``session.signals``, ``session.state``; the stream stage is not needed for that), and SSE
clients read a real ``tokentide dashboard``. Signals arrive with event times long past (late
telemetry), and while the sink is stopped for more than 30 s (a backlog that lands all at once
when it comes back). Every client must receive every signal exactly once, in the order the
database took them (per session: the order they were produced), every session's latest state,
and a client that reconnects with ``Last-Event-ID`` (to a restarted dashboard) exactly what it
missed. The former 5 s look-back on event time lost all of these.

Waits are bounded; nothing is asserted about how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from tests.support.pipeline import TOKENTIDE, Pipeline
from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.records import SessionSignal, SessionState, SignalBatch, SignalKind
from tokentide.settings import OPEN_MODE_TENANT, KafkaSettings

pytestmark = pytest.mark.integration

TENANT = OPEN_MODE_TENANT
SESSIONS = [f"behind-{i}" for i in range(4)]
#: How long the sink stays down while signals keep coming: the pipeline 30 s and more behind.
OUTAGE_S = 32.0
#: Event times this far before the signals reach the database (late telemetry).
LATE_S = 45.0
WAIT_S = 90.0

Event = dict[str, Any]


class Services:
    """``tokentide sink`` and ``tokentide dashboard`` as processes, each startable and
    stoppable on its own, on one pipeline's topics and database."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.env = pipeline.env() | {"TOKENTIDE_STREAM_POLL_S": "0.2"}

    def start(self, service: str, timeout_s: float = 60.0) -> None:
        with self.pipeline.log_path(service).open("ab") as log:
            proc = subprocess.Popen(
                [TOKENTIDE, service],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pipeline.processes[service] = proc
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                self.pipeline.fail(f"{service} exited with {proc.returncode} during start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.pipeline.url(service) + "/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.pipeline.fail(f"{service} not ready after {timeout_s}s")
            time.sleep(0.2)

    def stop(self, service: str, timeout_s: float = 20.0) -> None:
        proc = self.pipeline.processes.pop(service)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
async def services(bootstrap: str, database: str, tmp_path: Path) -> AsyncIterator[Services]:
    pipeline = Pipeline(bootstrap, database, tmp_path)
    await ensure_topics(bootstrap, pipeline_topics(KafkaSettings(topic_prefix=pipeline.prefix)))
    running = Services(pipeline)
    try:
        running.start("sink")
        running.start("dashboard")
        yield running
    finally:
        pipeline.stop()


class Listener:
    """One SSE connection to the dashboard, read in the background into ``events``."""

    def __init__(self, url: str, last_event_id: str | None = None) -> None:
        self.url = url
        self.headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.events: list[Event] = []
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        client = await self._stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))
        )
        response = await self._stack.enter_async_context(
            client.stream("GET", self.url + "/api/v1/stream", headers=self.headers)
        )
        assert response.status_code == 200
        self._task = asyncio.create_task(self._read(response))
        return self

    async def _read(self, response: httpx.Response) -> None:
        current: dict[str, str] = {}
        async for line in response.aiter_lines():
            if not line:
                if "data" in current:
                    self.events.append({**current, "data": json.loads(current["data"])})
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value

    async def wait_for(
        self, done: Callable[[list[Event]], bool], what: str, timeout_s: float = WAIT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.events):
            if self._task is not None and self._task.done():
                self._task.result()  # the stream ended: say why
                pytest.fail(f"the stream ended while waiting for {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not received after {timeout_s}s; got {signal_ids(self.events)}")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await self._task
        await self._stack.aclose()


def signal_ids(events: list[Event]) -> list[str]:
    """The signals received; the API shape has no signal id, so each carries it as its message."""
    return [e["data"]["message"] for e in events if e["event"] == "signal"]


def has_signal(signal_id: str) -> Callable[[list[Event]], bool]:
    return lambda events: signal_id in signal_ids(events)


class Producer:
    """Signals and session states, produced as the stream stage would (keyed by session);
    remembers what Kafka acknowledged, in order."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.topics = pipeline.topics
        self.kafka = AIOKafkaProducer(
            bootstrap_servers=pipeline.kafka_bootstrap, acks="all", enable_idempotence=True
        )
        self.signals: list[tuple[str, str]] = []  # (session, signal id)
        self.versions: dict[str, int] = {}

    async def signal(self, session: str, name: str, *, late_s: float = 0.0) -> str:
        signal_id = f"{session}/{name}"
        record = SessionSignal(
            tenant=TENANT,
            session_id=session,
            signal_id=signal_id,
            kind=SignalKind.CONTEXT_WARNING,
            time_ns=time.time_ns() - int(late_s * 1e9),
            ratio=0.8,
            tokens=160_000,
            window=200_000,
            message=signal_id,
        )
        key = f"{TENANT}/{session}".encode()
        await self.kafka.send_and_wait(
            self.topics.session_signals, SignalBatch(signals=[record]).to_bytes(), key=key
        )
        self.signals.append((session, signal_id))
        return signal_id

    async def state(self, session: str, *, late_s: float = 0.0) -> None:
        """The session's next version; ``api_requests`` carries the version, so that what the
        stream sends says which state it is."""
        version = self.versions.get(session, 0) + 1
        at = time.time_ns() - int(late_s * 1e9)
        record = SessionState(
            tenant=TENANT,
            session_id=session,
            agent="claude_code",
            started_at_ns=at,
            last_seen_at_ns=at,
            api_requests=version,
            version=version,
        )
        key = f"{TENANT}/{session}".encode()
        await self.kafka.send_and_wait(self.topics.session_state, record.to_bytes(), key=key)
        self.versions[session] = version

    async def round(self, name: str, *, late_s: float = 0.0) -> list[str]:
        """A signal and a new state for every session."""
        ids = []
        for session in SESSIONS:
            ids.append(await self.signal(session, name, late_s=late_s))
            await self.state(session, late_s=late_s)
        return ids


@pytest.fixture
async def producer(services: Services) -> AsyncIterator[Producer]:
    out = Producer(services.pipeline)
    await out.kafka.start()
    try:
        yield out
    finally:
        await out.kafka.stop()


def stored_signals(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM signals").fetchone()
    return int(row[0]) if row else 0


async def wait_stored(dsn: str, count: int, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while stored_signals(dsn) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{count} signals not stored after {timeout_s}s ({stored_signals(dsn)} are)")
        await asyncio.sleep(0.2)


def check_exactly_once(events: list[Event], produced: list[tuple[str, str]]) -> None:
    """Every produced signal once, none other; per session in the order produced; the whole
    stream in position order (ids increasing); session states never going back."""
    got = signal_ids(events)
    duplicates = [s for s, n in Counter(got).items() if n > 1]
    assert not duplicates, duplicates
    assert sorted(got) == sorted(s for _, s in produced)
    for session in SESSIONS:
        assert [s for s in got if s.startswith(session + "/")] == [s for k, s in produced if k == session]
    positions = [tuple(int(p) for p in e["id"].split("-")) for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    for session in SESSIONS:
        states = [
            e["data"]["api_requests"]
            for e in events
            if e["event"] == "session" and e["data"]["session_id"] == session
        ]
        assert states == sorted(set(states)), (session, states)


async def test_every_signal_arrives_once_however_far_behind_the_pipeline_runs(
    services: Services, producer: Producer
) -> None:
    url = services.pipeline.url("dashboard")
    dsn = services.pipeline.database_url
    async with Listener(url) as first:
        # Late telemetry: event times 45 s before the signals reach the database.
        await producer.round("late-1", late_s=LATE_S)
        last = (await producer.round("late-2", late_s=LATE_S))[-1]
        await first.wait_for(has_signal(last), "the late signals")

        # The sink stops; signals and states keep coming for more than 30 s, then land at once.
        services.stop("sink")
        received = len(first.events)
        outage_ends = time.monotonic() + OUTAGE_S
        n = 0
        while time.monotonic() < outage_ends:
            n += 1
            await producer.round(f"outage-{n}")
            await asyncio.sleep(2.0)
        assert len(first.events) == received  # nothing reached the database meanwhile
        services.start("sink")
        last = (await producer.round("after-outage"))[-1]
        await first.wait_for(has_signal(last), "the signals of the outage")
        check_exactly_once(first.events, producer.signals)
        for session in SESSIONS:  # every session's latest state arrived
            latest = [
                e for e in first.events if e["event"] == "session" and e["data"]["session_id"] == session
            ]
            assert latest[-1]["data"]["api_requests"] == producer.versions[session]
        resume_at = first.events[-1]["id"]
        seen = list(first.events)

    # Away: more signals (late ones too), and the dashboard restarts meanwhile.
    already = len(producer.signals)
    services.stop("dashboard")
    await producer.round("away-1")
    await producer.round("away-2", late_s=LATE_S)
    await wait_stored(dsn, len(producer.signals))
    services.start("dashboard")
    async with Listener(url, last_event_id=resume_at) as again:
        sentinel = await producer.signal(SESSIONS[0], "sentinel")
        await again.wait_for(has_signal(sentinel), "the signals missed while away")
        missed = producer.signals[already:]
        check_exactly_once(again.events, missed)
        assert {e["id"] for e in again.events}.isdisjoint(e["id"] for e in seen)
        assert [int(p) for p in again.events[0]["id"].split("-")] > [int(p) for p in resume_at.split("-")]


async def test_a_former_last_event_id_starts_from_now(services: Services, producer: Producer) -> None:
    """An id of the former ``<micros>.<micros>`` format (a browser open across the upgrade)
    resumes from now on: nothing from before, everything after."""
    before = await producer.signal(SESSIONS[0], "before")
    await wait_stored(services.pipeline.database_url, 1)
    former = f"{time.time_ns() // 1000 - 60_000_000}.{time.time_ns() // 1000 - 60_000_000}"
    async with Listener(services.pipeline.url("dashboard"), last_event_id=former) as listener:
        after = await producer.signal(SESSIONS[0], "after")
        await listener.wait_for(has_signal(after), "a signal after connecting")
    assert signal_ids(listener.events) == [after]
    assert before not in signal_ids(listener.events)
