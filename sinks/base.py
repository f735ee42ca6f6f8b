"""What every sink shares: the decoded batch, and the consume -> write -> commit loop.

The delivery contract, in one place: **every Kafka message is applied to the store exactly
once.**

1. The derived topics are read with ``isolation_level="read_committed"``: records of a stream
   stage transaction that was aborted (or is still open) are never handed out, so they never
   reach the store.
2. A :class:`Batch` says, per partition, the offset it leaves that partition at: the
   consumer's position, which steps over transaction markers and aborted records too.
3. The :class:`Writer` applies a batch in one store transaction: it locks the batch's
   partitions in the store's table of applied positions, leaves out the messages below the
   stored position (already applied: a redelivery after a crash between the store's commit
   and Kafka's, or a second sink that held the partition during a rebalance, whose
   transaction the lock makes this one wait for), writes the rest, moves the positions,
   passes the records it refused and the undecodable messages to ``before_commit`` (the
   runner publishes them to the dead-letter topic and waits for Kafka's acknowledgement),
   and commits. Rows and positions commit together or not at all; a refused record moves the
   position as a written one does (it is in the dead-letter topic).
4. Only then are Kafka offsets committed, for lag tooling. The store's positions are the
   truth: a newly assigned partition stays paused until the loop has read its position from
   the store and sought there (asked again with back-off while the store is down; a partition
   the store holds no position for starts at the group's offset), and records fetched before
   that (aiokafka hands out a new assignment's records from the group's offsets before its
   listener runs) are dropped and fetched again, never written: a store restored from a
   backup, behind the group's offsets, gets every message since its positions (decision 45).

So rollup increments are added once, whatever crashes or rebalances happen; a dead letter is
never lost but may be published twice (a crash, or a failed store commit, after it was sent).

While batch n is written, batch n + 1 is fetched and decoded (one fetch at a time; the
positions of a batch are read before the next fetch starts), so memory holds two batches at most.

While the store (or the dead-letter topic) is unavailable the runner keeps the batch in hand
(and the one fetched ahead), pauses every assigned partition (so memory holds two batches,
whatever the outage lasts), keeps polling so the group keeps its membership, retries with
exponential back-off, and resumes by itself. ``kafka_ready`` follows a periodic, bounded probe
of the broker (the end offsets of the assignment, which also feed the lag gauge), not the
first successful connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tokentide.kafka import TopicSpec, ensure_topics
from tokentide.records import (
    CopyRow,
    CopyRows,
    DecodeError,
    Event,
    EventBatch,
    Point,
    PointBatch,
    Record,
    Rollup,
    RollupBatch,
    SessionSignal,
    SessionState,
    SignalBatch,
    to_builtins,
)
from tokentide.settings import SinkSettings
from tokentide.topics import Topics

log = logging.getLogger(__name__)

#: The isolation level of every consumer of derived topics (the stream stage writes them in
#: Kafka transactions): only committed transactions' records are read.
ISOLATION_LEVEL = "read_committed"
#: How long an assignment may wait for the database's positions (the group's rebalance waits).
POSITIONS_TIMEOUT_S = 10.0

#: What one fetch hands out: per partition, its records.
_Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class SinkError(Exception):
    """Root of the sinks' errors; ``retriable`` says whether the same write may succeed later."""

    retriable = False


class StoreUnavailable(SinkError):
    """The store cannot take the batch now (down, slow, busy): retry the same batch later."""

    retriable = True


class DeadLettersUnavailable(SinkError):
    """The dead-letter topic did not acknowledge in time: the batch's transaction is rolled
    back (nothing of it applied), retry the same batch later."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None


#: A Kafka partition as the database knows it: (topic, partition).
Partition = tuple[str, int]


@dataclass(slots=True)
class Batch:
    """The decoded records of a batch of messages, where each came from, and where the batch
    leaves each of its partitions.

    Records without an origin (written straight through a :class:`Writer`, as tests and
    tools do) are not tied to any Kafka position: they are always written.
    """

    #: Records, or rows prepared by the stream stage (:class:`~tokentide.records.CopyRow`).
    events: list[Event | CopyRow] = field(default_factory=list)
    points: list[Point | CopyRow] = field(default_factory=list)
    states: list[SessionState] = field(default_factory=list)
    signals: list[SessionSignal] = field(default_factory=list)
    rollups: list[Rollup] = field(default_factory=list)
    #: ``id(record)`` -> its message (records live as long as the batch, so ids are stable).
    origins: dict[int, Origin] = field(default_factory=dict)
    #: Messages that could not be decoded, with the reason.
    undecodable: list[tuple[Origin, bytes, str]] = field(default_factory=list)
    #: Every message of the batch, decodable or not.
    messages: list[Origin] = field(default_factory=list)
    #: Per partition, the offset the batch leaves it at: every message below it is applied
    #: once the batch is (control records and aborted transactions' records included).
    positions: dict[Partition, int] = field(default_factory=dict)

    def track(self, origin: Origin, records: Iterable[object]) -> None:
        for record in records:
            self.origins[id(record)] = origin

    def origin_of(self, record: object) -> Origin | None:
        return self.origins.get(id(record))

    def consumed(self, origin: Origin) -> None:
        """``origin`` is one of the batch's messages: the batch moves its partition past it."""
        self.messages.append(origin)
        self.advance((origin.topic, origin.partition), origin.offset + 1)

    def advance(self, partition: Partition, next_offset: int) -> None:
        """The batch leaves ``partition`` at ``next_offset`` at least (the consumer's position:
        past transaction markers and aborted records, which are never handed out)."""
        if next_offset > self.positions.get(partition, -1):
            self.positions[partition] = next_offset

    def unapplied(self, applied: Mapping[Partition, int]) -> tuple[Batch, dict[str, int]]:
        """The part of the batch not applied yet, given the positions stored with the data
        (``applied``: per partition, every message below that offset is in the store), and the
        number of messages left out per topic. Always a new batch; the records are the same
        objects, so :meth:`origin_of` answers for them."""

        def new(origin: Origin | None) -> bool:
            return origin is None or origin.offset >= applied.get((origin.topic, origin.partition), 0)

        def keep(records: list[Any]) -> list[Any]:
            return [r for r in records if new(self.origins.get(id(r)))]

        skipped: dict[str, int] = {}
        for origin in self.messages:
            if not new(origin):
                skipped[origin.topic] = skipped.get(origin.topic, 0) + 1
        if not skipped:  # the usual case: no record to look at one by one
            return replace(
                self,
                events=list(self.events),
                points=list(self.points),
                states=list(self.states),
                signals=list(self.signals),
                rollups=list(self.rollups),
                origins=dict(self.origins),
                undecodable=list(self.undecodable),
                messages=list(self.messages),
                positions=dict(self.positions),
            ), skipped
        rest = Batch(
            events=keep(self.events),
            points=keep(self.points),
            states=keep(self.states),
            signals=keep(self.signals),
            rollups=keep(self.rollups),
            origins=dict(self.origins),
            undecodable=[u for u in self.undecodable if new(u[0])],
            messages=[m for m in self.messages if new(m)],
            positions=dict(self.positions),
        )
        return rest, skipped


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the store refused: ``reason`` is its message, ``sqlstate`` PostgreSQL's code."""

    table: str
    record: object
    reason: str
    sqlstate: str | None


@dataclass(slots=True)
class WriteResult:
    """Per table: rows offered, rows written (inserted or changed), raw rows past the retention;
    the records refused; per topic, the messages left out as already applied; per partition,
    the position stored once the write committed."""

    offered: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    already_applied: dict[str, int] = field(default_factory=dict)
    positions: dict[Partition, int] = field(default_factory=dict)


#: Called by :meth:`Writer.write` inside the store transaction, after the rows were written
#: and before the commit, with the part of the batch not applied before and the result so far;
#: if it raises, the transaction is rolled back and the exception propagates.
BeforeCommit = Callable[[Batch, WriteResult], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Layouts:
    """The layouts of prepared rows (:class:`~tokentide.records.CopyRows`) a writer forwards as
    they are, per topic; a message without them, or of another layout, is read as records."""

    events: int | None = None
    points: int | None = None


class Writer(Protocol):
    #: What prepared rows the writer takes (none: every message is read as records).
    layouts: Layouts

    async def ping(self) -> None: ...

    async def positions(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The stored positions of ``partitions`` (every message below is applied); partitions
        never written are left out. Raises :class:`StoreUnavailable`."""
        ...

    async def write(self, batch: Batch, before_commit: BeforeCommit | None = None) -> WriteResult:
        """Apply the messages of ``batch`` not applied yet, and move the stored positions to
        ``batch.positions``, in one transaction (see the module's contract); refused rows come
        back in ``rejected``. Raises :class:`StoreUnavailable` when nothing could be written,
        or what ``before_commit`` raised."""
        ...

    async def maintain(self) -> list[tuple[str, str]]:
        """Periodic housekeeping (partitions ahead, retention); raises StoreUnavailable."""
        ...

    async def close(self) -> None: ...


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.rows = Counter(
            "tokentide_sink_rows_offered",
            "Rows offered to the database (duplicates included), by table.",
            ["table"],
            registry=registry,
        )
        self.written = Counter(
            "tokentide_sink_rows_written",
            "Rows inserted or changed in the database (re-delivered duplicates excluded), by table.",
            ["table"],
            registry=registry,
        )
        self.expired = Counter(
            "tokentide_sink_rows_expired",
            "Raw rows not written because they are older than the retention, by table.",
            ["table"],
            registry=registry,
        )
        self.already_applied = Counter(
            "tokentide_sink_messages_already_applied",
            "Messages left out because the database already held them (redelivered after a crash "
            "or a rebalance), by topic.",
            ["topic"],
            registry=registry,
        )
        self.batches = Counter("tokentide_sink_batches", "Batches committed.", registry=registry)
        self.retries = Counter(
            "tokentide_sink_retries",
            "Batch writes retried after a database (or dead-letter topic) error.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "tokentide_sink_dead_letters",
            "Records (or undecodable messages) sent to the dead-letter topic, by table and reason "
            "(PostgreSQL's SQLSTATE, 'encoding' or 'undecodable').",
            ["table", "reason"],
            registry=registry,
        )
        self.undecodable = Counter(
            "tokentide_sink_undecodable_messages",
            "Messages skipped as undecodable, by topic.",
            ["topic"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tokentide_sink_batch_seconds",
            "Time to write and commit one batch (retries included).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.lag = Gauge(
            "tokentide_sink_lag",
            "Messages of an assigned partition not applied to the database yet (end offset of "
            "committed records - the position stored with the data).",
            ["topic", "partition"],
            registry=registry,
        )
        self.paused = Gauge(
            "tokentide_sink_paused",
            "1 while consumption is paused because the database is unavailable (a write, or the "
            "positions of newly assigned partitions, cannot be done).",
            registry=registry,
        )
        self.ahead = Gauge(
            "tokentide_sink_messages_ahead",
            "Messages of the next batch fetched and decoded while the current one is written.",
            registry=registry,
        )
        self.skipped_offsets = Counter(
            "tokentide_sink_skipped_offsets",
            "Messages Kafka's retention deleted before the sink applied them (found on assignment: "
            "the stored position is below the partition's first offset), by topic and partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.kafka_ready = Gauge(
            "tokentide_sink_kafka_ready",
            "1 while the last probe of the broker (end offsets, bounded by a timeout) answered.",
            registry=registry,
        )


class _PreparedEvents(msgspec.Struct, tag="events.2", tag_field="schema"):
    """What the sink reads of an :class:`EventBatch` that carries prepared rows: only them
    (decoding steps over the records without building them)."""

    copy: CopyRows | None = None


class _PreparedPoints(msgspec.Struct, tag="points.2", tag_field="schema"):
    copy: CopyRows | None = None


_PREPARED_EVENTS = msgspec.msgpack.Decoder(_PreparedEvents)
_PREPARED_POINTS = msgspec.msgpack.Decoder(_PreparedPoints)


def _prepared(
    decoder: msgspec.msgpack.Decoder[_PreparedEvents] | msgspec.msgpack.Decoder[_PreparedPoints],
    value: bytes,
    layout: int | None,
) -> list[CopyRow] | None:
    """The message's prepared rows when they are of ``layout``; None when the records must be
    read instead (none prepared, another layout, schema 1 JSON, not decodable: the full
    decoding then says why)."""
    if layout is None or value[:1] == b"{":
        return None
    try:
        copy = decoder.decode(value).copy
    except DecodeError:
        return None
    return copy.rows if copy is not None and copy.layout == layout else None


def decode(
    topics: Topics,
    records: Iterable[ConsumerRecord[bytes, bytes]],
    metrics: SinkMetrics,
    layouts: Layouts = Layouts(),
) -> Batch:
    """The batch of ``records``: prepared rows of ``layouts`` as they are, records decoded."""
    batch = Batch()
    for record in records:
        value = record.value or b""
        origin = Origin(record.topic, record.partition, record.offset, record.key)
        batch.consumed(origin)
        try:
            if record.topic == topics.events:
                events: list[Event] | list[CopyRow] | None
                events = _prepared(_PREPARED_EVENTS, value, layouts.events)
                if events is None:
                    events = EventBatch.from_bytes(value).events
                batch.events.extend(events)
                batch.track(origin, events)
            elif record.topic == topics.points:
                points: list[Point] | list[CopyRow] | None
                points = _prepared(_PREPARED_POINTS, value, layouts.points)
                if points is None:
                    points = PointBatch.from_bytes(value).points
                batch.points.extend(points)
                batch.track(origin, points)
            elif record.topic == topics.session_state:
                state = SessionState.from_bytes(value)
                batch.states.append(state)
                batch.track(origin, [state])
            elif record.topic == topics.session_signals:
                signals = SignalBatch.from_bytes(value).signals
                batch.signals.extend(signals)
                batch.track(origin, signals)
            elif record.topic == topics.rollups:
                rollups = RollupBatch.from_bytes(value).rollups
                batch.rollups.extend(rollups)
                batch.track(origin, rollups)
        except DecodeError as exc:
            metrics.undecodable.labels(record.topic).inc()
            log.warning("undecodable %s@%d: dead-lettered", record.topic, record.offset)
            batch.undecodable.append((origin, value, str(exc)))
    return batch


def dead_letter(
    origin: Origin | None, table: str, reason: str, sqlstate: str | None, record: object
) -> bytes:
    """The dead-letter message: where the record came from, why it was refused, the record."""
    body: dict[str, object] = {
        "source": None
        if origin is None
        else {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
        "table": table,
        "reason": reason,
        "sqlstate": sqlstate,
    }
    if isinstance(record, Record):
        body["record"] = to_builtins(record)
    elif isinstance(record, CopyRow):  # a row the stream stage prepared: as COPY text
        body["row"] = record.text
    elif isinstance(record, bytes):
        body["value_base64"] = base64.b64encode(record).decode()
    return json.dumps(body, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True, slots=True)
class _Letter:
    key: bytes | None
    value: bytes
    table: str
    reason: str


def dead_letters(batch: Batch, result: WriteResult) -> list[_Letter]:
    """The dead letters of a write: its undecodable messages, then the records it refused."""
    letters: list[_Letter] = []
    for origin, value, reason in batch.undecodable:
        message = dead_letter(origin, origin.topic, reason, None, value)
        letters.append(_Letter(origin.key, message, origin.topic, "undecodable"))
    for rejected in result.rejected:
        source = batch.origin_of(rejected.record)
        message = dead_letter(source, rejected.table, rejected.reason, rejected.sqlstate, rejected.record)
        letters.append(
            _Letter(source.key if source else None, message, rejected.table, rejected.sqlstate or "encoding")
        )
    return letters


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped: its base is Any
    """Hands assignment changes to the runner (aiokafka awaits these during the rebalance)."""

    def __init__(self, runner: SinkRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._runner.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runner.resume_at_stored_positions(assigned)


class SinkRunner:
    """Consumes the derived topics and writes them through a :class:`Writer`."""

    def __init__(self, settings: SinkSettings, writer: Writer, metrics: SinkMetrics) -> None:
        self._settings = settings
        self._writer = writer
        self._metrics = metrics
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        #: Per assigned partition, the position the database holds (as far as this runner knows).
        self._applied: dict[TopicPartition, int] = {}
        #: Positions read from the database on assignment, for the loop to commit to Kafka (the
        #: group's offsets may be behind them, and nothing new may come to move them).
        self._to_commit: dict[Partition, int] = {}
        #: Assigned partitions whose database position is known and sought to, each with the
        #: number of its positioning: records fetched before it (or across a new one) are
        #: dropped, never written (aiokafka hands out a new assignment's records from the
        #: group's offsets before its listener has even run).
        self._positioned: dict[TopicPartition, int] = {}
        self._positionings = 0
        #: Assigned partitions paused until their database position is read.
        self._unpositioned: set[TopicPartition] = set()
        #: When to ask the database for them again, and how many times it did not answer.
        self._position_at = 0.0
        self._position_failures = 0
        #: Whether the loop holds every partition paused for an outage.
        self._outage = False
        #: The dead letters the last write attempt published (counted once the write committed).
        self._letters: list[_Letter] = []
        self._probe_now = asyncio.Event()
        #: Whether the consumer and the producer have started (what the probe may ask).
        self._connected = False
        #: Whether the last probe of the broker answered in time (``/readyz``).
        self.kafka_ready = False

    @property
    def consuming(self) -> bool:
        """Whether the consume loop is running (it ends only by ``stop`` or a bug)."""
        return self._loop is not None and not self._loop.done()

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="sink-loop")
        self._tasks = [
            self._loop,
            asyncio.create_task(self._maintain_forever(), name="sink-maintenance"),
            asyncio.create_task(self._probe_forever(), name="sink-kafka-probe"),
        ]

    async def stop(self) -> None:
        """Stop after the batch in progress (if any); safe to call twice."""
        tasks, self._tasks, self._loop = self._tasks, [], None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.kafka_ready = self._connected = False
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        await self._writer.close()

    # ------------------------------------------------------------------ assignment

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        """Partitions taken away: their positions and lag are another member's now."""
        for tp in revoked:
            self._applied.pop(tp, None)
            self._positioned.pop(tp, None)
            self._unpositioned.discard(tp)
            self._to_commit.pop((tp.topic, tp.partition), None)
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(tp.topic, str(tp.partition))

    async def resume_at_stored_positions(self, assigned: Iterable[TopicPartition]) -> None:
        """Newly assigned partitions wait, paused, for the loop to seek them to the position the
        database holds (:meth:`_position`). Nothing here awaits: aiokafka runs this listener
        with the group's heartbeat stopped, and may already be fetching these partitions from
        the group's offsets."""
        consumer = self._consumer
        if consumer is None or not assigned:
            return
        consumer.pause(*assigned)
        for tp in assigned:
            self._positioned.pop(tp, None)
        self._unpositioned.update(assigned)
        self._position_at = 0.0

    async def _position(self, consumer: AIOKafkaConsumer) -> None:
        """Seek the partitions waiting for it to the position the database holds, ahead of or
        behind the group's committed offset (behind: a database restored from a backup, whose
        positions match its rows), and resume them (unless an outage holds every partition
        paused: its end does). A partition the database holds no position for starts at the
        group's committed offset (the procedures that rebuild the derived tables set it), else
        at the beginning. While the database cannot say, they stay paused (``paused`` 1) and
        are asked for again with back-off."""
        self._unpositioned.intersection_update(consumer.assignment())
        partitions = sorted(self._unpositioned)
        if not partitions or time.monotonic() < self._position_at:
            return
        try:
            stored = await asyncio.wait_for(
                self._writer.positions((tp.topic, tp.partition) for tp in partitions), POSITIONS_TIMEOUT_S
            )
            starts: dict[TopicPartition, int] = {}
            known: set[TopicPartition] = set()
            for tp in partitions:
                position = stored.get((tp.topic, tp.partition))
                if position is None:
                    committed = await asyncio.wait_for(consumer.committed(tp), POSITIONS_TIMEOUT_S)
                    position = committed if committed is not None and committed >= 0 else None
                if position is not None:
                    known.add(tp)
                starts[tp] = position or 0
            beginnings = await asyncio.wait_for(consumer.beginning_offsets(partitions), POSITIONS_TIMEOUT_S)
        except (StoreUnavailable, KafkaError, TimeoutError) as exc:
            if not self._position_failures:
                log.warning("positions not read (%s): %d partitions wait, paused", exc, len(partitions))
            self._position_failures += 1
            self._metrics.paused.set(1)
            delay = min(0.5 * 2**self._position_failures, self._settings.retry_max_backoff_s)
            self._position_at = time.monotonic() + delay
            return
        assigned = consumer.assignment()
        ready = [tp for tp in partitions if tp in assigned and tp in self._unpositioned]
        for tp in ready:
            position = stored.get((tp.topic, tp.partition))
            if position is not None:
                self._to_commit[tp.topic, tp.partition] = position
            if tp in known and starts[tp] < (beginning := beginnings.get(tp, 0)):
                # Kafka deleted them (retention) before this database applied them: say so.
                lost = beginning - starts[tp]
                log.warning(
                    "%s: %d messages from offset %d expired in Kafka before they were applied",
                    tp,
                    lost,
                    starts[tp],
                )
                self._metrics.skipped_offsets.labels(tp.topic, str(tp.partition)).inc(lost)
            self._applied[tp] = starts[tp]
            consumer.seek(tp, starts[tp])
            self._positionings += 1
            self._positioned[tp] = self._positionings
            self._unpositioned.discard(tp)
        if not self._outage:
            consumer.resume(*ready)
            self._metrics.paused.set(0)
        if self._position_failures:
            log.info("positions read again after %d attempts: consumption resumed", self._position_failures)
        self._position_failures = 0
        log.info("assigned %d partitions, %d at the database's positions", len(ready), len(stored))

    # ------------------------------------------------------------------ the loop

    async def _connect(self) -> AIOKafkaConsumer:
        settings = self._settings
        topics = settings.topics
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.sink_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level=ISOLATION_LEVEL,
                max_partition_fetch_bytes=settings.kafka_max_message_bytes,
                fetch_max_bytes=settings.kafka_max_message_bytes * 4,
            )
            consumer.subscribe(list(topics.all_derived()), listener=_Rebalance(self))
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                max_request_size=settings.kafka_max_message_bytes,
            )
            # Before start: the first assignment's listener seeks through this consumer.
            self._consumer = consumer
            try:
                await ensure_topics(
                    settings.kafka_bootstrap,
                    # Rare, unordered, read by people: one partition is plenty.
                    [TopicSpec(settings.dead_letter_topic, 1)],
                    settings.topic_replication_factor,
                )
                await producer.start()
                await consumer.start()
            except asyncio.CancelledError:
                self._consumer = None
                await consumer.stop()
                await producer.stop()
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                self._consumer = None
                await consumer.stop()
                await producer.stop()
                log.warning("Kafka not reachable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("sink consuming %s", ", ".join(sorted(consumer.subscription())))
            self._producer = producer
            self._connected = True
            return consumer

    async def _run(self) -> None:
        consumer = await self._connect()
        self._probe_now.set()
        settings = self._settings
        #: The next batch, fetched and decoded while the current one is written (one at most).
        ahead: asyncio.Task[tuple[_Fetched, Batch]] | None = None
        try:
            while True:
                if self._unpositioned:
                    await self._position(consumer)
                fetched, batch = await (ahead if ahead is not None else self._fetch(consumer))
                ahead = None
                self._metrics.ahead.set(0)
                started = time.perf_counter()
                # Before the next fetch: the positions are those of exactly this batch's records.
                for tp, position in (await self._positions(consumer, fetched)).items():
                    batch.advance((tp.topic, tp.partition), position)
                if self._to_commit:
                    to_commit, self._to_commit = self._to_commit, {}
                    await self._commit(consumer, to_commit)
                if not batch.positions:
                    continue
                ahead = asyncio.create_task(self._fetch(consumer, ahead=True), name="sink-fetch-ahead")
                result = await self._write_until_done(consumer, batch, ahead)
                if settings.sink_test_pause == "after_database_commit":
                    await self._test_pause(settings.sink_test_pause)
                await self._commit(consumer, result.positions)
                self._metrics.batches.inc()
                self._metrics.batch_seconds.observe(time.perf_counter() - started)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ahead

    async def _fetch(self, consumer: AIOKafkaConsumer, ahead: bool = False) -> tuple[_Fetched, Batch]:
        """The next messages, decoded. The loop runs this for batch n + 1 while batch n is in
        the database (the fetch waits on Kafka and the decoding uses the CPU the write leaves
        idle); it is the only fetch while it runs, so a batch's records and the consumer's
        positions after them always belong together."""
        settings = self._settings
        positioned = dict(self._positioned)
        fetched = await consumer.getmany(
            timeout_ms=max(settings.batch_linger_ms, 1), max_records=settings.batch_max_messages
        )
        # Only records of partitions positioned before this fetch began, and not again since:
        # the others are fetched again from the position sought (they may lie beyond it).
        dropped = [tp for tp in fetched if self._positioned.get(tp, -1) != positioned.get(tp)]
        for tp in dropped:
            log.info("%s: %d records fetched before its position was sought, dropped", tp, len(fetched[tp]))
            del fetched[tp]
            if tp in self._positioned and tp in consumer.assignment():
                consumer.seek(tp, self._applied.get(tp, 0))  # again from the database's position
        batch = decode(
            settings.topics, [r for rs in fetched.values() for r in rs], self._metrics, self._writer.layouts
        )
        if ahead:
            self._metrics.ahead.set(len(batch.messages))
        return fetched, batch

    async def _positions(
        self, consumer: AIOKafkaConsumer, fetched: Mapping[TopicPartition, list[Any]]
    ) -> dict[TopicPartition, int]:
        """The consumer's position of every partition it moved past what the database holds:
        those records were handed out, and also partitions where it only stepped over
        transaction markers or aborted records (a batch with nothing but positions)."""
        out: dict[TopicPartition, int] = {}
        for tp in sorted(consumer.assignment()):
            # Checked again at every step: a rebalance may take partitions away at any await.
            if tp not in consumer.assignment() or tp in consumer.paused() or tp not in self._positioned:
                continue
            if tp not in fetched:
                high = consumer.highwater(tp)
                if high is None or high <= self._applied.get(tp, 0):
                    continue  # not fetched from yet, or nothing past the stored position
            try:
                # A fetched partition has a valid position: this returns at once.
                position = int(await asyncio.wait_for(consumer.position(tp), 1.0))
            except (KafkaError, TimeoutError):
                continue  # revoked meanwhile, or being reset: the next round sees it
            if position > self._applied.get(tp, 0):
                out[tp] = position
        return out

    async def _write_until_done(
        self, consumer: AIOKafkaConsumer, batch: Batch, ahead: asyncio.Task[Any] | None = None
    ) -> WriteResult:
        """Write ``batch``, retrying with back-off while the store is unavailable. ``ahead`` is
        the fetch of the next batch running meanwhile: it ends (its records kept for the next
        round) before the partitions are paused and polled here, so two fetches never overlap."""
        delay = 0.2
        paused = False
        while True:
            self._letters = []
            try:
                result = await self._writer.write(batch, before_commit=self._publish_dead_letters)
            except SinkError as exc:
                if not exc.retriable:
                    raise
                self._metrics.retries.inc()
                if ahead is not None:
                    await asyncio.wait([ahead])
                if not paused:
                    log.warning("%s: consumption paused, retrying", exc)
                    paused = self._outage = True
                    self._metrics.paused.set(1)
                await self._wait_paused(consumer, delay)
                delay = min(delay * 2, self._settings.retry_max_backoff_s)
                continue
            if paused:
                self._outage = False
                consumer.resume(*(tp for tp in consumer.paused() if tp not in self._unpositioned))
                self._metrics.paused.set(0)
                log.info("database available again: consumption resumed")
            self._applied_now(consumer, batch, result)
            return result

    def _applied_now(self, consumer: AIOKafkaConsumer, batch: Batch, result: WriteResult) -> None:
        """Book a committed write: metrics, positions, lag; where the database is ahead of this
        batch (another sink applied more meanwhile), skip forward."""
        metrics = self._metrics
        for table, count in result.offered.items():
            metrics.rows.labels(table).inc(count)
        for table, count in result.written.items():
            metrics.written.labels(table).inc(count)
        for table, count in result.expired.items():
            metrics.expired.labels(table).inc(count)
        for topic, count in result.already_applied.items():
            metrics.already_applied.labels(topic).inc(count)
        for letter in self._letters:
            metrics.dead_letters.labels(letter.table, letter.reason).inc()
        self._letters = []
        assigned = consumer.assignment()
        for (topic, partition), position in result.positions.items():
            tp = TopicPartition(topic, partition)
            if tp not in assigned:
                continue
            self._applied[tp] = position
            if position > batch.positions.get((topic, partition), position):
                consumer.seek(tp, position)
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is not None:
                metrics.lag.labels(topic, str(partition)).set(max(end - position, 0))

    async def _wait_paused(self, consumer: AIOKafkaConsumer, seconds: float) -> None:
        """Wait ``seconds`` with every assigned partition paused, polling all along so that
        the group does not consider this member dead (max.poll.interval.ms)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            consumer.pause(*consumer.assignment())
            fetched = await consumer.getmany(timeout_ms=max(int(left * 1000), 1))
            for tp, records in fetched.items():
                # Assigned by a rebalance after the pause: rewind, take them after the outage.
                if records:
                    consumer.seek(tp, records[0].offset)
                    consumer.pause(tp)

    async def _publish_dead_letters(self, batch: Batch, result: WriteResult) -> None:
        """``before_commit`` of every write: publish the write's dead letters and wait for
        Kafka's acknowledgement, at most ``dead_letter_timeout_s`` (else the write rolls back)."""
        letters = dead_letters(batch, result)
        if not letters:
            return
        producer = self._producer
        if producer is None:  # pragma: no cover - _connect starts it before the loop runs
            raise SinkError("dead-letter producer not started")
        for letter in letters:
            log.warning("dead-lettering a %s record (%s)", letter.table, letter.reason)

        async def send_all() -> None:
            topic = self._settings.dead_letter_topic
            sent = [await producer.send(topic, letter.value, key=letter.key) for letter in letters]
            await asyncio.gather(*sent)

        try:
            await asyncio.wait_for(send_all(), self._settings.dead_letter_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise DeadLettersUnavailable(f"dead-letter topic unavailable ({exc!r})") from exc
        self._letters = letters

    async def _commit(self, consumer: AIOKafkaConsumer, positions: Mapping[Partition, int]) -> None:
        """Commit the stored positions of the partitions still assigned to Kafka (for lag
        tooling; the database holds the truth, so a refused commit loses nothing)."""
        assigned = consumer.assignment()
        offsets = {
            tp: position
            for (topic, partition), position in positions.items()
            if (tp := TopicPartition(topic, partition)) in assigned
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we wrote: the new owner starts at the database's positions.
            log.warning("offset commit refused after a rebalance: %s", exc)
        except KafkaError as exc:
            log.warning("offset commit failed (%r): the database holds the positions", exc)

    async def _test_pause(self, point: str) -> None:
        """TEST ONLY (``TOKENTIDE_SINK_TEST_PAUSE``): stop here until killed, so that a fault
        test can SIGKILL the process at a known point."""
        log.warning("test pause point %s reached: waiting to be killed", point)
        await asyncio.Event().wait()

    # ------------------------------------------------------------------ health

    async def _probe_forever(self) -> None:
        """Every ``kafka_probe_interval_s`` (and at once after connecting): ask the broker for
        the end offsets of the assignment, bounded by ``kafka_probe_timeout_s``; the answer
        sets ``kafka_ready`` and the lag gauge."""
        while True:
            ready = await self._probe()
            if ready != self.kafka_ready:
                if ready:
                    log.info("Kafka reachable")
                else:
                    log.warning("Kafka unreachable: not ready")
            self.kafka_ready = ready
            self._metrics.kafka_ready.set(1 if ready else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), self._settings.kafka_probe_interval_s)
            self._probe_now.clear()

    async def _probe(self) -> bool:
        consumer = self._consumer
        if consumer is None or not self._connected:
            return False
        try:
            ends = await asyncio.wait_for(self._end_offsets(consumer), self._settings.kafka_probe_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.debug("Kafka probe failed: %r", exc)
            return False
        assigned = consumer.assignment()
        for tp, end in ends.items():
            applied = self._applied.get(tp)
            if tp not in assigned or applied is None:
                continue
            if end < applied:
                log.warning(
                    "%s[%d] ends at %d, below the position %d the database holds: was the topic "
                    "recreated? (see docs/operations.md, sink positions)",
                    tp.topic,
                    tp.partition,
                    end,
                    applied,
                )
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(end - applied, 0))
        return True

    @staticmethod
    async def _end_offsets(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        """End offsets of the assignment (of every subscribed partition while there is none);
        a metadata request when not even those are known yet. Raises when the broker does not
        answer."""
        partitions = set(consumer.assignment())
        if not partitions:
            for topic in consumer.subscription():
                partitions |= {TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()}
        if not partitions:
            await consumer.topics()
            return {}
        return dict(await consumer.end_offsets(sorted(partitions)))

    async def _maintain_forever(self) -> None:
        """Partitions ahead and retention at start-up, then every ``maintenance_interval_s``;
        while the database is unavailable, again every few seconds."""
        while True:
            try:
                await self._writer.maintain()
            except StoreUnavailable as exc:
                log.warning("maintenance postponed, database unavailable: %s", exc)
                await asyncio.sleep(min(5.0, self._settings.maintenance_interval_s))
                continue
            await asyncio.sleep(self._settings.maintenance_interval_s)
