"""Topic declarations (partitions and configs as code) and their idempotent creation."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from tokentide.settings import KafkaSettings

log = logging.getLogger(__name__)

RAW_RETENTION_MS = 7 * 24 * 3600 * 1000  # >= 24 h: raw topics are replayable


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def pipeline_topics(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic the pipeline reads or writes, co-partitioned (same partition count)."""
    topics = settings.topics
    size = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
    raw = {**size, "retention.ms": str(RAW_RETENTION_MS)}
    specs = [TopicSpec(name, settings.partitions, raw) for name in topics.all_raw()]
    specs += [
        TopicSpec(topics.events, settings.partitions, size),
        TopicSpec(topics.points, settings.partitions, size),
        TopicSpec(topics.session_state, settings.partitions, {**size, "cleanup.policy": "compact"}),
        TopicSpec(topics.session_signals, settings.partitions, size),
        TopicSpec(topics.rollups, settings.partitions, size),
    ]
    return specs


async def ensure_topics(
    bootstrap: str, specs: list[TopicSpec], replication_factor: int = 1, timeout_s: float = 30.0
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    Raises ``KafkaError`` (retriable ones included) when Kafka cannot be reached in time.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=replication_factor,
                topic_configs=s.config,
            )
            for s in missing
        ]
        response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
        for name, code, *_ in response.topic_errors:
            # Another replica may have created a topic between our list and create.
            if code not in (0, TopicAlreadyExistsError.errno):
                raise for_code(code)(f"cannot create topic {name}")
        log.info("created topics %s", ", ".join(s.name for s in missing))
    finally:
        await admin.close()


__all__ = ["KafkaError", "TopicSpec", "ensure_topics", "pipeline_topics"]
