"""Publishing raw OTLP requests to Kafka; ingest's only stateful edge.

Contract: :meth:`RawPublisher.publish` returns only after Kafka acknowledged every part
(``acks=all``, idempotent producer), so the HTTP 200 that follows is a promise that the data
is durable. Any failure raises :class:`~ingest.errors.Unavailable` and the client retries;
a part that Kafka took before the failure may then arrive twice, which the stream stage
deduplicates (OTLP accepts duplicates, never loss).

While Kafka is unreachable, publishing fails at once (503) instead of queueing requests; a
background probe notices when Kafka is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.protocol.metadata import MetadataRequest

from ingest.errors import Unavailable
from ingest.metrics import IngestMetrics
from tokentide.compression import use_fast_lz4
from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.settings import IngestSettings

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0


class CachedPartitioner:
    """aiokafka's default partitioner (the Java client's murmur2 of the key, modulo the
    partitions), its hash remembered per key: aiokafka's murmur2 is pure Python (~1% of a
    request), and a session's key recurs with every export of that session."""

    def __init__(self, size: int = 65_536) -> None:
        self._size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        digest = self._hashes.get(key)
        if digest is None:
            if len(self._hashes) >= self._size:
                self._hashes.clear()
            digest = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[digest % len(all_partitions)]


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class RawPublisher:
    """Owns the Kafka producer; connects in the background and watches Kafka's health."""

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._healthy = False

    @property
    def ready(self) -> bool:
        """Connected, and Kafka answered recently."""
        return self._producer is not None and self._healthy

    def _set_health(self, healthy: bool) -> None:
        if healthy != self._healthy:
            log.warning("Kafka is %s", "reachable again" if healthy else "unreachable")
        self._healthy = healthy
        self._metrics.kafka_ready.set(1 if healthy else 0)

    async def start(self) -> None:
        """Start connecting; returns at once. Readiness flips when the producer is up."""
        self._task = asyncio.create_task(self._run(), name="kafka-publisher")

    async def stop(self) -> None:
        """Flush what the producer still holds and close it. Safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        producer, self._producer = self._producer, None
        self._healthy = False  # shutting down: not "Kafka is unreachable"
        self._metrics.kafka_ready.set(0)
        if producer is not None:
            await producer.stop()

    async def publish(self, messages: list[RawMessage]) -> None:
        """Send every message and wait until Kafka acknowledged all of them."""
        producer = self._producer
        if producer is None or not self._healthy:
            raise Unavailable("Kafka is unavailable", self._settings.retry_after_s)
        started = time.perf_counter()
        try:
            futures = [await producer.send(m.topic, m.value, key=m.key, headers=m.headers) for m in messages]
            await asyncio.wait_for(asyncio.gather(*futures), self._settings.kafka_ack_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.warning("Kafka write failed: %r", exc)
            self._set_health(False)
            raise Unavailable(
                "Kafka did not acknowledge the write in time", self._settings.retry_after_s
            ) from exc
        self._metrics.kafka_latency.observe(time.perf_counter() - started)

    async def _run(self) -> None:
        self._producer = await self._connect()
        self._set_health(True)
        log.info("connected to Kafka at %s", self._settings.kafka_bootstrap)
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            self._set_health(await self._probe(self._producer))

    async def _probe(self, producer: AIOKafkaProducer) -> bool:
        """Whether a broker answers a metadata request for our raw topics now.

        Only our topics: a metadata request for the whole cluster costs as much as the
        cluster has topics, every second, on every replica.
        """
        client = producer.client
        node_id = client.get_random_node()
        if node_id is None:
            return False
        request = MetadataRequest(topics=self._settings.topics.all_raw(), allow_auto_topic_creation=False)
        try:
            await asyncio.wait_for(client.send(node_id, request), 2 * PROBE_INTERVAL_S)
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.5
        use_fast_lz4()
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                compression_type="lz4",
                partitioner=CachedPartitioner(),
                linger_ms=self._settings.kafka_linger_ms,
                max_batch_size=min(self._settings.kafka_batch_bytes, self._settings.kafka_max_message_bytes),
                max_request_size=self._settings.kafka_max_message_bytes,
                request_timeout_ms=int(self._settings.kafka_ack_timeout_s * 1000),
            )
            try:
                await ensure_topics(
                    self._settings.kafka_bootstrap,
                    pipeline_topics(self._settings),
                    self._settings.topic_replication_factor,
                )
                await producer.start()
            except asyncio.CancelledError:
                await producer.stop()
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                await producer.stop()
                log.warning(
                    "Kafka not reachable at %s (%r); retrying in %.1fs",
                    self._settings.kafka_bootstrap,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            return producer
