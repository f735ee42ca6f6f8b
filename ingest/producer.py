"""Publishing raw OTLP requests to Kafka; ingest's only stateful edge.

Contract: :meth:`RawPublisher.publish` returns only after Kafka acknowledged every part
(``acks=all``, idempotent producer), so the HTTP 200 that follows is a promise that the data
is durable. Any failure raises :class:`~ingest.errors.Unavailable` and the client retries;
a part that Kafka took before the failure may then arrive twice, which the stream stage
deduplicates (OTLP accepts duplicates, never loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingest.errors import Unavailable
from ingest.metrics import IngestMetrics
from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.settings import IngestSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class RawPublisher:
    """Owns the Kafka producer; (re)connects in the background until Kafka is reachable."""

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Start connecting; returns at once. Readiness flips when the producer is up."""
        self._connector = asyncio.create_task(self._connect_forever(), name="kafka-connect")

    async def stop(self) -> None:
        """Stop connecting and flush what the producer still holds. Safe to call twice."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
            self._connector = None
        producer, self._producer = self._producer, None
        self._metrics.kafka_ready.set(0)
        if producer is not None:
            await producer.stop()

    async def publish(self, messages: list[RawMessage]) -> None:
        """Send every message and wait until Kafka acknowledged all of them."""
        producer = self._producer
        if producer is None:
            raise Unavailable("Kafka is not reachable yet", self._settings.retry_after_s)
        started = time.perf_counter()
        try:
            futures = [await producer.send(m.topic, m.value, key=m.key, headers=m.headers) for m in messages]
            await asyncio.wait_for(asyncio.gather(*futures), self._settings.kafka_ack_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.warning("Kafka write failed: %r", exc)
            raise Unavailable(
                "Kafka did not acknowledge the write in time", self._settings.retry_after_s
            ) from exc
        self._metrics.kafka_latency.observe(time.perf_counter() - started)

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                compression_type="lz4",
                linger_ms=2,
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
            self._producer = producer
            self._metrics.kafka_ready.set(1)
            log.info("connected to Kafka at %s", self._settings.kafka_bootstrap)
            return
