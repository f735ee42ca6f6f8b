"""What every sink shares: the decoded batch, and the consume -> write -> commit loop.

The delivery contract, in one place: a batch of Kafka messages is written to the store in
one transaction, then the records the store refused (and messages that could not be decoded)
are published to the dead-letter topic, and only after both are Kafka offsets committed. A
crash in between re-delivers the batch; sinks write idempotently, so the second write changes
nothing (a dead letter may then be published twice).

While the store is unavailable (down, slow, busy) the runner keeps the batch in hand, pauses
every assigned partition (so memory holds one batch, whatever the outage lasts), keeps polling
so the group keeps its membership, retries with exponential back-off, and resumes by itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError

from tokentide.kafka import TopicSpec, ensure_topics
from tokentide.records import (
    Event,
    EventBatch,
    Point,
    PointBatch,
    Rollup,
    RollupBatch,
    SessionSignal,
    SessionState,
    SignalBatch,
)
from tokentide.settings import SinkSettings
from tokentide.topics import Topics

log = logging.getLogger(__name__)


class SinkError(Exception):
    """Root of the sinks' errors; ``retriable`` says whether the same write may succeed later."""

    retriable = False


class StoreUnavailable(SinkError):
    """The store cannot take the batch now (down, slow, busy): retry the same batch later."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from in Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass(slots=True)
class Batch:
    """The decoded records of a batch of messages, and where each came from."""

    events: list[Event] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    states: list[SessionState] = field(default_factory=list)
    signals: list[SessionSignal] = field(default_factory=list)
    rollups: list[Rollup] = field(default_factory=list)
    #: ``id(record)`` -> its message (records live as long as the batch, so ids are stable).
    origins: dict[int, Origin] = field(default_factory=dict)
    #: Messages that could not be decoded, with the reason.
    undecodable: list[tuple[Origin, bytes, str]] = field(default_factory=list)

    def track(self, origin: Origin, records: Iterable[object]) -> None:
        for record in records:
            self.origins[id(record)] = origin

    def origin_of(self, record: object) -> Origin | None:
        return self.origins.get(id(record))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the store refused: ``reason`` is its message, ``sqlstate`` PostgreSQL's code."""

    table: str
    record: object
    reason: str
    sqlstate: str | None


@dataclass(slots=True)
class WriteResult:
    """Per table: rows offered, rows written (inserted or changed), raw rows past the retention."""

    offered: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)


class Writer(Protocol):
    async def ping(self) -> None: ...

    async def write(self, batch: Batch) -> WriteResult:
        """Write what the store accepts in one transaction; refused rows come back in
        ``rejected``. Raises :class:`StoreUnavailable` when nothing could be written."""
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
        self.batches = Counter("tokentide_sink_batches", "Batches committed.", registry=registry)
        self.retries = Counter(
            "tokentide_sink_retries", "Batch writes retried after a database error.", registry=registry
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
            "Messages in the partition not yet committed by the sink (high watermark - committed).",
            ["topic", "partition"],
            registry=registry,
        )
        self.paused = Gauge(
            "tokentide_sink_paused",
            "1 while consumption is paused because the database is unavailable.",
            registry=registry,
        )


def decode(topics: Topics, records: Iterable[ConsumerRecord[bytes, bytes]], metrics: SinkMetrics) -> Batch:
    batch = Batch()
    for record in records:
        value = record.value or b""
        origin = Origin(record.topic, record.partition, record.offset, record.key)
        try:
            if record.topic == topics.events:
                events = EventBatch.from_bytes(value).events
                batch.events.extend(events)
                batch.track(origin, events)
            elif record.topic == topics.points:
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
        except ValidationError as exc:
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
    if isinstance(record, BaseModel):
        body["record"] = record.model_dump(mode="json")
    elif isinstance(record, bytes):
        body["value_base64"] = base64.b64encode(record).decode()
    return json.dumps(body, separators=(",", ":"), default=str).encode()


class SinkRunner:
    """Consumes the derived topics and writes them through a :class:`Writer`."""

    def __init__(self, settings: SinkSettings, writer: Writer, metrics: SinkMetrics) -> None:
        self._settings = settings
        self._writer = writer
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self.kafka_ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sink-loop")
        self._maintenance = asyncio.create_task(self._maintain_forever(), name="sink-maintenance")

    async def stop(self) -> None:
        """Stop after the batch in progress (if any); safe to call twice."""
        for task in (self._task, self._maintenance):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._maintenance = None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        await self._writer.close()

    async def _connect(self) -> AIOKafkaConsumer:
        settings = self._settings
        topics = settings.topics
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *topics.all_derived(),
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.sink_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=settings.kafka_max_message_bytes,
                fetch_max_bytes=settings.kafka_max_message_bytes * 4,
            )
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                max_request_size=settings.kafka_max_message_bytes,
            )
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
                await consumer.stop()
                await producer.stop()
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                await consumer.stop()
                await producer.stop()
                log.warning("Kafka not reachable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("sink consuming %s", ", ".join(sorted(consumer.subscription())))
            self._producer = producer
            return consumer

    async def _run(self) -> None:
        self._consumer = consumer = await self._connect()
        self.kafka_ready = True
        settings = self._settings
        while True:
            fetched = await consumer.getmany(
                timeout_ms=max(settings.batch_linger_ms, 1), max_records=settings.batch_max_messages
            )
            if not fetched:
                self._update_lag(consumer)
                continue
            started = time.perf_counter()
            records = [r for partition in fetched.values() for r in partition]
            batch = decode(settings.topics, records, self._metrics)
            result = await self._write_until_done(consumer, batch)
            await self._dead_letter(batch, result)
            offsets = {tp: rs[-1].offset + 1 for tp, rs in fetched.items() if rs}
            await self._commit(consumer, offsets)
            self._metrics.batches.inc()
            self._metrics.batch_seconds.observe(time.perf_counter() - started)
            self._update_lag(consumer)

    async def _write_until_done(self, consumer: AIOKafkaConsumer, batch: Batch) -> WriteResult:
        delay = 0.2
        paused = False
        while True:
            try:
                result = await self._writer.write(batch)
            except StoreUnavailable as exc:
                self._metrics.retries.inc()
                if not paused:
                    log.warning("database unavailable (%s): consumption paused, retrying", exc)
                    paused = True
                    self._metrics.paused.set(1)
                await self._wait_paused(consumer, delay)
                delay = min(delay * 2, self._settings.retry_max_backoff_s)
                continue
            if paused:
                consumer.resume(*consumer.paused())
                self._metrics.paused.set(0)
                log.info("database available again: consumption resumed")
            for table, count in result.offered.items():
                self._metrics.rows.labels(table).inc(count)
            for table, count in result.written.items():
                self._metrics.written.labels(table).inc(count)
            for table, count in result.expired.items():
                self._metrics.expired.labels(table).inc(count)
            return result

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

    async def _dead_letter(self, batch: Batch, result: WriteResult) -> None:
        """Publish refused records and undecodable messages; returns once Kafka acknowledged."""
        letters: list[tuple[bytes | None, bytes, str, str]] = []
        for origin, value, reason in batch.undecodable:
            message = dead_letter(origin, origin.topic, reason, None, value)
            letters.append((origin.key, message, origin.topic, "undecodable"))
        for rejected in result.rejected:
            source = batch.origin_of(rejected.record)
            message = dead_letter(source, rejected.table, rejected.reason, rejected.sqlstate, rejected.record)
            label = rejected.sqlstate or "encoding"
            letters.append((source.key if source else None, message, rejected.table, label))
            log.warning("dead-lettered a %s row: %s", rejected.table, rejected.reason)
        if not letters:
            return
        producer = self._producer
        if producer is None:  # pragma: no cover - _connect starts it before the loop runs
            raise SinkError("dead-letter producer not started")
        delay = 0.2
        while True:
            try:
                sent = [
                    await producer.send(self._settings.dead_letter_topic, value, key=key)
                    for key, value, _, _ in letters
                ]
                await asyncio.gather(*sent)
            except KafkaError as exc:
                self._metrics.retries.inc()
                log.warning("dead-letter topic unavailable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max_backoff_s)
                continue
            break
        for _, _, table, label in letters:
            self._metrics.dead_letters.labels(table, label).inc()

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we wrote: the new owner re-reads these messages
            # and re-writes them idempotently.
            log.warning("offset commit refused after a rebalance: %s", exc)
            return
        self._committed.update(offsets)

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            done = self._committed.get(tp)
            if high is None or done is None:
                continue
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - done, 0))

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
