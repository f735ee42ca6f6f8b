"""The stream stage's Kafka edge: what :mod:`streams.worker` needs, and aiokafka behind it.

Three parts, each a small protocol so that the worker's logic is unit-tested against
in-memory fakes (tests/unit/streams/test_worker.py) and runs on aiokafka here:

- :class:`Consumer`: the group consumer of the raw topics (``AIOKafkaConsumer`` has exactly
  these methods);
- :class:`TransactionalProducer`: one per task (input partition number), transactional id
  ``<app id>-<partition>``: starting it fences any earlier producer of that task (a dead or
  stalled worker) and aborts its open transaction (Kafka's exactly-once, KIP-98);
- :class:`ChangelogReader`: reads a changelog partition from an offset to its end,
  ``read_committed`` (records of aborted transactions are never restored).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from tokentide.compression import use_fast_lz4


class Consumer(Protocol):
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


class TransactionalProducer(Protocol):
    async def start(self) -> None:
        """Initialise the transactional id: fences its earlier producers."""
        ...

    async def stop(self) -> None: ...

    async def begin(self) -> None: ...

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, partition: int | None = None
    ) -> Awaitable[Any]:
        """Queue a record in the open transaction; the awaitable gives its metadata (``.offset``)."""
        ...

    async def send_offsets(self, offsets: dict[TopicPartition, int], group_id: str) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


class ChangelogReader(Protocol):
    def read(self, partition: int, start: int) -> AsyncIterator[tuple[int, bytes, bytes | None]]:
        """``(offset, key, value)`` of the committed records from ``start`` to the end."""
        ...

    async def bounds(self, partition: int) -> tuple[int, int]:
        """The first and the end offset of ``partition`` (end: past its last committed record)."""
        ...

    async def close(self) -> None: ...


class KafkaProducer:
    """:class:`TransactionalProducer` on aiokafka."""

    def __init__(
        self, bootstrap: str, transactional_id: str, *, max_request_size: int, timeout_s: float
    ) -> None:
        use_fast_lz4()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=transactional_id,
            acks="all",
            enable_idempotence=True,
            max_request_size=max_request_size,
            transaction_timeout_ms=int(timeout_s * 1000),
            compression_type="lz4",
            linger_ms=0,
            # A transaction begun right after the previous one committed meets
            # CONCURRENT_TRANSACTIONS until the broker has written the markers (KAFKA-5477);
            # aiokafka then waits retry_backoff_ms: 100 ms by default, 5-10x a signal's
            # latency. The Java client waits 20 ms there.
            retry_backoff_ms=20,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def begin(self) -> None:
        await self._producer.begin_transaction()

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, partition: int | None = None
    ) -> Awaitable[Any]:
        future: Awaitable[Any] = await self._producer.send(topic, value, key=key, partition=partition)
        return future

    async def send_offsets(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        await self._producer.send_offsets_to_transaction(offsets, group_id)

    async def commit(self) -> None:
        await self._producer.commit_transaction()

    async def abort(self) -> None:
        await self._producer.abort_transaction()


class KafkaChangelogReader:
    """:class:`ChangelogReader` on one aiokafka consumer (no group, ``read_committed``)."""

    def __init__(self, bootstrap: str, topic: str, *, max_fetch_bytes: int, patience_s: float = 60.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._max_fetch_bytes = max_fetch_bytes
        self._patience_s = patience_s
        self._consumer: AIOKafkaConsumer | None = None

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=self._max_fetch_bytes,
                fetch_max_bytes=self._max_fetch_bytes,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def bounds(self, partition: int) -> tuple[int, int]:
        consumer = await self._ensure()
        tp = TopicPartition(self._topic, partition)
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]  # read_committed: the last stable offset
        return first, end

    async def read(self, partition: int, start: int) -> AsyncIterator[tuple[int, bytes, bytes | None]]:
        consumer = await self._ensure()
        tp = TopicPartition(self._topic, partition)
        _, end = await self.bounds(partition)
        if start >= end:
            return
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + self._patience_s
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=2000)
            records = batches.get(tp, [])
            if records:
                deadline = time.monotonic() + self._patience_s
            elif time.monotonic() > deadline:
                raise KafkaError(
                    f"{self._topic}[{partition}]: stuck at {await consumer.position(tp)} of {end}"
                )
            for record in records:
                if record.key is not None:
                    yield record.offset, record.key, record.value

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


async def gather_sends(futures: Iterable[Awaitable[Any]]) -> list[Any]:
    """The metadata of every queued send (raises the first error)."""
    return list(await asyncio.gather(*futures))
