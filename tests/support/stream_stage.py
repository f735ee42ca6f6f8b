"""The stream stage on a real Kafka, fed as ingest would feed it, and everything a user sees of it.

Raw messages are produced straight to the raw topics exactly as ingest writes them (key
``tenant/session``, the ``tt-*`` headers) from the captured Claude Code exports, renumbered per
session and request, to sessions spread over every partition:

- *normal* sessions: the ``stub-text-protobuf`` logs export (one API request) and metrics
  export per request; their totals are read from the capture itself (plain protobuf, never
  the code under test);
- *signal* sessions: logs whose main requests fill the 200k context to 50%, 75%, 85%, 91%,
  96%: each of ``context_warning``, ``checkpoint_requested`` and ``context_critical`` must
  exist exactly once;
- *poison* sessions: one message per kind of bad input (:data:`POISON_KINDS`), mixed in.

:class:`Outcome` reads back every derived topic ``read_committed`` (what the sink and the
notifier see), and :meth:`Stage.check` asserts all of it: exact totals and one state version
per message for normal sessions, every expected signal exactly once, rollups summing to every
session's totals, each event emitted exactly once, a dead letter per poison message with its
reason, and the group's committed offset at the end of every raw partition.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from sinks.postgres.rows import event_rows, point_rows
from tests.support.captures import FIXTURES, claude_logs_with_context, export_for
from tests.support.streams_worker import StreamsWorker
from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.records import (
    NANOS_PER_USD,
    EventBatch,
    PointBatch,
    RollupBatch,
    SessionState,
    SignalBatch,
    SignalKind,
    Tokens,
    to_builtins,
)
from tokentide.settings import KafkaSettings
from tokentide.topics import Signal, Topics

CASE = FIXTURES / "claude-code" / "stub-text-protobuf"
LOGS = ExportLogsServiceRequest.FromString((CASE / "0001_v1_logs.pb").read_bytes())
METRICS = ExportMetricsServiceRequest.FromString((CASE / "0002_v1_metrics.pb").read_bytes())
PARTITIONS = 4
MESSAGES_PER_REQUEST = 2  # one logs export and one metrics export
#: Main-conversation context of a signal session's successive requests (200k window).
SIGNAL_STEPS = (100_000, 150_000, 170_000, 182_000, 192_000)
SIGNAL_KINDS = (SignalKind.CONTEXT_WARNING, SignalKind.CHECKPOINT_REQUESTED, SignalKind.CONTEXT_CRITICAL)
#: The bad inputs mixed into the traffic, each the reason its dead letter must carry.
POISON_KINDS = (
    "cost_too_large",
    "cost_not_finite",
    "tokens_negative",
    "tokens_not_integer",
    "tokens_too_large",
    "time_in_future",
    "undecodable",
    "metric_tokens_negative",
)
#: Poison kind -> the dead letter's reason (a metric point's negative tokens: tokens_negative).
POISON_REASON = {kind: kind.removeprefix("metric_") for kind in POISON_KINDS}


def _attrs(kvs: object) -> dict[str, object]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PerRequest:
    """What one logs + one metrics export of the capture add to a session (read from the capture)."""

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
#: The capture's context per main request (input + cache read + cache write).
CONTEXT_PER_REQUEST = PER_REQUEST.tokens.context // PER_REQUEST.api_requests


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


#: Poison kind -> (attribute of the api_request, AnyValue field, value).
_BAD_VALUES: dict[str, tuple[str, str, object]] = {
    "cost_too_large": ("cost_usd", "double_value", 1e300),
    "cost_not_finite": ("cost_usd", "double_value", math.nan),
    "tokens_negative": ("input_tokens", "int_value", -5),
    "tokens_not_integer": ("output_tokens", "double_value", 3.5),
    "tokens_too_large": ("cache_read_tokens", "int_value", 10**13),
}


def poison(kind: str, session_id: str, request_no: int) -> tuple[Signal, bytes]:
    """One raw message carrying the bad input ``kind`` (its other records are fine)."""
    if kind == "undecodable":
        return Signal.LOGS, b"\x0a\xff\xff\xff\xff\x0f not an OTLP request"
    if kind == "metric_tokens_negative":
        request = ExportMetricsServiceRequest.FromString(metrics_for(session_id, request_no, time.time_ns()))
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "claude_code.token.usage":
                        metric.sum.data_points[0].as_double = -5.0
        return Signal.METRICS, request.SerializeToString()
    request = ExportLogsServiceRequest.FromString(export_for(LOGS, session_id, request_no))
    records = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    usage = next(r for r in records if any(kv.key == "input_tokens" for kv in r.attributes))
    values = {kv.key: kv.value for kv in usage.attributes}
    if kind == "time_in_future":
        usage.time_unix_nano = usage.observed_time_unix_nano = time.time_ns() + 2 * 86_400 * 10**9
    else:
        attribute, field_name, value = _BAD_VALUES[kind]
        setattr(values[attribute], field_name, value)
    return Signal.LOGS, request.SerializeToString()


def headers(signal: Signal, session_id: str) -> list[tuple[str, bytes]]:
    """The headers ingest puts on every raw message."""
    return [
        ("tt-tenant", b"default"),
        ("tt-signal", signal.value.encode()),
        ("tt-received-at-ns", str(time.time_ns()).encode()),
        ("tt-session", session_id.encode()),
    ]


def sessions_over_partitions(tag: str, per_partition: int) -> list[str]:
    """Session ids, ``per_partition`` in each partition (murmur2, as every producer)."""
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    by_partition: dict[int, list[str]] = defaultdict(list)
    while any(len(by_partition[p]) < per_partition for p in partitions):
        sid = f"{tag}-{uuid.uuid4()}"
        partition = partitioner(f"default/{sid}".encode(), partitions, partitions)
        if len(by_partition[partition]) < per_partition:
            by_partition[partition].append(sid)
    return [sid for p in partitions for sid in by_partition[p]]


@dataclass
class Feed:
    """Produces the sessions' requests in order, as ingest would, and counts what it sent."""

    bootstrap: str
    topics: Topics
    normal: list[str]
    signal: list[str] = field(default_factory=list)
    poisoned: list[str] = field(default_factory=list)
    base_ns: int = field(default_factory=time.time_ns)
    requests: int = 0  # per normal session, sent so far
    signal_requests: int = 0  # per signal session, sent so far
    poison_sent: Counter[str] = field(default_factory=Counter)  # dead-letter reason -> messages
    messages: Counter[str] = field(default_factory=Counter)  # per session

    async def _produce(self, items: list[tuple[Signal, str, bytes]], per_second: float | None) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            started = time.monotonic()
            futures = []
            for i, (signal, sid, value) in enumerate(items):
                futures.append(
                    await producer.send(
                        self.topics.raw(signal),
                        value,
                        key=f"default/{sid}".encode(),
                        headers=headers(signal, sid),
                    )
                )
                self.messages[sid] += 1
                if per_second:
                    await asyncio.sleep(max(0.0, started + (i + 1) / per_second - time.monotonic()))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def send(
        self, requests: int, per_second: float | None = None, *, with_poison: bool = False
    ) -> None:
        """The next ``requests`` requests of every normal session (logs, then metrics), the next
        signal step of every signal session, and (``with_poison``) one message of every poison
        kind for every poisoned session, interleaved; ``per_second`` messages a second if given."""
        items: list[tuple[Signal, str, bytes]] = []
        kinds = list(POISON_KINDS) if with_poison else []
        for i in range(requests):
            n = self.requests + i
            for sid in self.normal:
                items.append((Signal.LOGS, sid, export_for(LOGS, sid, n)))
                items.append((Signal.METRICS, sid, metrics_for(sid, n, self.base_ns)))
            if self.signal_requests < len(SIGNAL_STEPS):
                step = SIGNAL_STEPS[self.signal_requests]
                n_step = self.signal_requests
                items.extend(
                    (Signal.LOGS, sid, claude_logs_with_context(sid, n_step, step)) for sid in self.signal
                )
                self.signal_requests += 1
            if kinds:
                kind = kinds.pop(0)
                for sid in self.poisoned:
                    signal, value = poison(kind, sid, n)
                    items.append((signal, sid, value))
                    self.poison_sent[POISON_REASON[kind]] += 1
        for kind in kinds:  # fewer requests than kinds: the rest at the end
            for sid in self.poisoned:
                signal, value = poison(kind, sid, self.requests + requests)
                items.append((signal, sid, value))
                self.poison_sent[POISON_REASON[kind]] += 1
        await self._produce(items, per_second)
        self.requests += requests

    @property
    def total_messages(self) -> int:
        return sum(self.messages.values())


def totals(state: SessionState) -> str:
    return (
        f"api_requests={state.api_requests} events={state.events} tokens={to_builtins(state.tokens)} "
        f"cost_nanos={state.cost_nanos} active_time_s={state.active_time_s} context={state.context.tokens}"
    )


def expected_totals(session_id: str, requests: int) -> str:
    tokens = Tokens()
    for _ in range(requests):
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
    expected.context.tokens = CONTEXT_PER_REQUEST if requests else 0
    return totals(expected)


async def partitions_of(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[TopicPartition]:
    """The partitions of ``topic``; asks again while the broker answers with an error (a busy
    broker does), fails if the topic never shows up."""
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while True:
            (described,) = await admin.describe_topics([topic])
            if described["error_code"] == 0 and described["partitions"]:
                return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not described after {timeout_s}s: {described}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def read_committed(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[object]:
    """Every committed message of ``topic`` (up to its last stable offset now), as the sink reads it."""
    partitions = await partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    plain = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    await plain.start()
    out: list[object] = []
    try:
        consumer.assign(partitions)
        # Wait for open transactions to end (their records are what a reader must not see
        # yet): the last stable offsets reach the high watermarks.
        deadline = time.monotonic() + timeout_s
        while True:
            stable = await consumer.end_offsets(partitions)  # read_committed: last stable offsets
            high = await plain.end_offsets(partitions)
            if stable == high:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: transactions still open: stable {stable}, high {high}")
            await asyncio.sleep(0.2)
        await consumer.seek_to_beginning(*partitions)
        wanted = {tp: end for tp, end in stable.items() if end > 0}
        while wanted and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(records)
            for tp in list(wanted):
                if await consumer.position(tp) >= wanted[tp]:
                    del wanted[tp]
        if wanted:
            raise TimeoutError(f"{topic}: could not read to {wanted} in {timeout_s}s")
    finally:
        await consumer.stop()
        await plain.stop()
    return out


@dataclass
class Outcome:
    """Everything the stage published (committed records only)."""

    states: dict[str, SessionState]
    forks: list[str]
    signals: dict[str, Counter[str]]  # session -> kind -> records
    signal_ids: Counter[str]
    rollups: dict[
        str, list[int]
    ]  # session -> [input, output, cache_read, cache_creation, cost, requests, errors]
    events: Counter[str]  # session -> events emitted
    event_ids: Counter[tuple[str, str]]
    dead_letters: list[dict[str, object]]
    #: Messages on ``events``/``points`` whose prepared rows are missing or not their records'.
    unprepared: list[str]


async def outcome(bootstrap: str, topics: Topics) -> Outcome:
    states: dict[str, SessionState] = {}
    contents: dict[tuple[str, int], set[str]] = defaultdict(set)
    for record in await read_committed(bootstrap, topics.session_state):
        state = SessionState.from_bytes(record.value)  # type: ignore[attr-defined]
        contents[state.session_id, state.version].add(totals(state))
        if state.session_id not in states or state.version > states[state.session_id].version:
            states[state.session_id] = state
    forks = [f"{sid} v{v}: {sorted(c)}" for (sid, v), c in contents.items() if len(c) > 1]
    signals: dict[str, Counter[str]] = defaultdict(Counter)
    signal_ids: Counter[str] = Counter()
    for record in await read_committed(bootstrap, topics.session_signals):
        for signal in SignalBatch.from_bytes(record.value).signals:  # type: ignore[attr-defined]
            signals[signal.session_id][str(signal.kind)] += 1
            signal_ids[signal.signal_id] += 1
    rollups: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    for record in await read_committed(bootstrap, topics.rollups):
        for r in RollupBatch.from_bytes(record.value).rollups:  # type: ignore[attr-defined]
            assert r.increment, "the stream stage emits rollup increments"
            row = rollups[r.session_id]
            for i, v in enumerate(
                (
                    r.tokens.input,
                    r.tokens.output,
                    r.tokens.cache_read,
                    r.tokens.cache_creation,
                    r.cost_nanos,
                    r.requests,
                    r.errors,
                )
            ):
                row[i] += v
    events: Counter[str] = Counter()
    event_ids: Counter[tuple[str, str]] = Counter()
    unprepared: list[str] = []
    for record in await read_committed(bootstrap, topics.events):
        batch = EventBatch.from_bytes(record.value)  # type: ignore[attr-defined]
        for event in batch.events:
            events[event.session_id] += 1
            event_ids[event.session_id, event.event_id] += 1
        if batch.copy != event_rows(batch.events):
            unprepared.append(f"events@{record.offset}: the sink's rows are not its events' (decision 44)")  # type: ignore[attr-defined]
    for record in await read_committed(bootstrap, topics.points):
        points = PointBatch.from_bytes(record.value)  # type: ignore[attr-defined]
        if points.copy != point_rows(points.points):
            unprepared.append(f"points@{record.offset}: the sink's rows are not its points' (decision 44)")  # type: ignore[attr-defined]
    letters = [
        json.loads(r.value) for r in await read_committed(bootstrap, f"{topics.prefix}streams.dead-letters")
    ]  # type: ignore[attr-defined]
    return Outcome(states, forks, signals, signal_ids, rollups, events, event_ids, letters, unprepared)


def rollup_totals(state: SessionState) -> list[int]:
    t = state.tokens
    return [
        t.input,
        t.output,
        t.cache_read,
        t.cache_creation,
        state.cost_nanos,
        state.api_requests,
        state.api_errors,
    ]


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

    async def feed(self, tag: str, *, normal: int = 2, signal: int = 1, poisoned: int = 1) -> Feed:
        settings = KafkaSettings(
            kafka_bootstrap=self.bootstrap, topic_prefix=self.prefix, partitions=PARTITIONS
        )
        await ensure_topics(self.bootstrap, pipeline_topics(settings))
        every = sessions_over_partitions(tag, normal + signal + poisoned)
        by_role: dict[str, list[str]] = defaultdict(list)
        for i, sid in enumerate(every):
            role = i % (normal + signal + poisoned)
            by_role["normal" if role < normal else "signal" if role < normal + signal else "poison"].append(
                sid
            )
        return Feed(self.bootstrap, self.topics, by_role["normal"], by_role["signal"], by_role["poison"])

    def worker(self, name: str, **env: str) -> StreamsWorker:
        """A worker of this stage's app id, with a data directory and a port of its own."""
        worker = StreamsWorker(
            name=name,
            bootstrap=self.bootstrap,
            prefix=self.prefix,
            app_id=self.app_id,
            data_dir=self.workdir / name,
            log_path=self.workdir / f"{name}.log",
            extra_env=dict(env),
        )
        self.workers.append(worker)
        return worker

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, message: str) -> NoReturn:
        notes = "".join(f"\n  note: {n}" for n in self.notes)
        logs = "\n".join(w.logs(60) for w in self.workers)
        pytest.fail(f"{message}{notes}\n{logs}", pytrace=False)

    async def lag(self) -> dict[str, int]:
        """Raw messages not yet committed by the consumer group, by partition (none: caught up)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.app_id)
        finally:
            await admin.close()
        partitions = [tp for topic in self.raw_topics for tp in await partitions_of(self.bootstrap, topic)]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        lag = {}
        for tp, end in ends.items():
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            if end > done:
                lag[f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}]@{done}"] = end - done
        return lag

    async def caught_up(self, timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        lag = await self.lag()
        while lag and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            lag = await self.lag()
        return lag

    async def check(self, feed: Feed, when: str, timeout_s: float = 60.0) -> Outcome:
        """Wait until the group committed every raw message, then check everything a user sees."""
        lag = await self.caught_up(timeout_s)
        problems = []
        if lag:
            problems.append(f"consumer group {self.app_id} did not commit every raw message: {lag}")
        out = await outcome(self.bootstrap, self.topics)
        problems += [f"one version, two contents: {fork}" for fork in out.forks]
        problems += out.unprepared
        problems += _normal_problems(feed, out)
        problems += _signal_problems(feed, out)
        for sid, state in out.states.items():
            if out.rollups.get(sid, [0] * 7) != rollup_totals(state):
                got = out.rollups.get(sid)
                problems.append(f"{sid}: rollups sum to {got}, totals are {rollup_totals(state)}")
        reasons = Counter(str(letter["reason"]) for letter in out.dead_letters)
        if reasons != feed.poison_sent:
            problems.append(f"dead letters by reason {dict(reasons)}, want {dict(feed.poison_sent)}")
        if problems:
            self.fail(f"{when}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
        return out


def _normal_problems(feed: Feed, out: Outcome) -> list[str]:
    problems = []
    for sid in feed.normal:
        state = out.states.get(sid)
        if state is None:
            problems.append(f"{sid}: no session.state at all")
            continue
        want, got = expected_totals(sid, feed.requests), totals(state)
        if got != want or state.version != feed.messages[sid]:
            problems.append(
                f"{sid}: version {state.version}, want {feed.messages[sid]} (one per raw message)\n"
                f"      want {want}\n      got  {got}"
            )
        if out.events[sid] != feed.requests * PER_REQUEST.events:
            problems.append(
                f"{sid}: {out.events[sid]} events emitted, want {feed.requests * PER_REQUEST.events}"
            )
    twice = [key for key, n in out.event_ids.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} events emitted more than once, e.g. {twice[:3]}")
    return problems


def _signal_problems(feed: Feed, out: Outcome) -> list[str]:
    problems = []
    if feed.signal_requests == len(SIGNAL_STEPS):
        for sid in feed.signal:
            got_kinds = {k: out.signals[sid][k.value] for k in SIGNAL_KINDS}
            if got_kinds != dict.fromkeys(SIGNAL_KINDS, 1):
                problems.append(f"{sid}: signals {dict(out.signals[sid])}, want each of {SIGNAL_KINDS} once")
    repeated = [sid for sid, n in out.signal_ids.items() if n > 1]
    if repeated:
        problems.append(f"signals published more than once: {repeated}")
    return problems


async def start(worker: StreamsWorker, timeout_s: float = 60.0) -> float:
    """Start ``worker`` and wait until it is ready; returns the seconds that took."""
    await asyncio.to_thread(worker.start)
    return await asyncio.to_thread(worker.wait_ready, timeout_s)


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float, stage: Stage) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(predicate):
        if time.monotonic() > deadline:
            stage.fail(f"{what}: not after {timeout_s}s")
        await asyncio.sleep(0.1)


__all__ = [
    "PARTITIONS",
    "POISON_KINDS",
    "Feed",
    "Outcome",
    "Stage",
    "outcome",
    "start",
    "wait_for",
]
