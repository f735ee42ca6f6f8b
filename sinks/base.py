"""What every sink shares: the decoded batch, and the consume -> write -> commit loop.

The delivery contract, in one place: a batch of Kafka messages is written to the store in
one transaction, and only after that transaction committed are the Kafka offsets
committed. A crash in between re-delivers the batch; sinks write idempotently, so the
second write changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import ValidationError

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


@dataclass(slots=True)
class Batch:
    events: list[Event] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    states: list[SessionState] = field(default_factory=list)
    signals: list[SessionSignal] = field(default_factory=list)
    rollups: list[Rollup] = field(default_factory=list)


class Writer(Protocol):
    async def ping(self) -> None: ...
    async def write(self, batch: Batch) -> dict[str, int]: ...
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
        self.batches = Counter("tokentide_sink_batches", "Batches committed.", registry=registry)
        self.retries = Counter(
            "tokentide_sink_retries", "Batch writes retried after a database error.", registry=registry
        )
        self.undecodable = Counter(
            "tokentide_sink_undecodable_messages",
            "Messages skipped as undecodable, by topic.",
            ["topic"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tokentide_sink_batch_seconds",
            "Time to write and commit one batch.",
            registry=registry,
        )


def decode(topics: Topics, records: Iterable[ConsumerRecord[bytes, bytes]], metrics: SinkMetrics) -> Batch:
    batch = Batch()
    for record in records:
        value = record.value or b""
        try:
            if record.topic == topics.events:
                batch.events.extend(EventBatch.from_bytes(value).events)
            elif record.topic == topics.points:
                batch.points.extend(PointBatch.from_bytes(value).points)
            elif record.topic == topics.session_state:
                batch.states.append(SessionState.from_bytes(value))
            elif record.topic == topics.session_signals:
                batch.signals.extend(SignalBatch.from_bytes(value).signals)
            elif record.topic == topics.rollups:
                batch.rollups.extend(RollupBatch.from_bytes(value).rollups)
        except ValidationError as exc:
            metrics.undecodable.labels(record.topic).inc()
            log.warning("skipped undecodable %s@%d: %s", record.topic, record.offset, exc)
    return batch


class SinkRunner:
    """Consumes the derived topics and writes them through a :class:`Writer`."""

    def __init__(self, settings: SinkSettings, writer: Writer, metrics: SinkMetrics) -> None:
        self._settings = settings
        self._writer = writer
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.kafka_ready = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sink-loop")

    async def stop(self) -> None:
        """Stop after the batch in progress (if any); safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        await self._writer.close()

    async def _connect(self) -> AIOKafkaConsumer:
        topics = self._settings.topics
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *topics.all_derived(),
                bootstrap_servers=self._settings.kafka_bootstrap,
                group_id=self._settings.sink_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=self._settings.kafka_max_message_bytes,
                fetch_max_bytes=self._settings.kafka_max_message_bytes * 4,
            )
            try:
                await consumer.start()
            except asyncio.CancelledError:
                await consumer.stop()
                raise
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                log.warning("Kafka not reachable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("sink consuming %s", ", ".join(sorted(consumer.subscription())))
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
                continue
            started = time.perf_counter()
            records = [r for partition in fetched.values() for r in partition]
            await self._write_until_done(decode(settings.topics, records, self._metrics))
            offsets = {tp: rs[-1].offset + 1 for tp, rs in fetched.items() if rs}
            await self._commit(consumer, offsets)
            self._metrics.batches.inc()
            self._metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _write_until_done(self, batch: Batch) -> None:
        delay = 0.2
        while True:
            try:
                counts = await self._writer.write(batch)
            except psycopg.OperationalError as exc:
                self._metrics.retries.inc()
                log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max_backoff_s)
                continue
            for table, count in counts.items():
                self._metrics.rows.labels(table).inc(count)
            return

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we wrote: the new owner re-reads these messages
            # and re-writes them idempotently.
            log.warning("offset commit refused after a rebalance: %s", exc)
