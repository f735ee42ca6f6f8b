"""The stream stage as a process: the worker loop (:mod:`streams.worker`) on aiokafka, with
``/healthz``, ``/readyz`` and ``/metrics`` over HTTP (FastAPI, like every other service).

Start-up creates the topics the stage needs (idempotently; the state changelog is compacted
and co-partitioned with the raw topics), refuses to run when partition counts disagree
(a session's state would then live in two places), joins the consumer group and runs the
loop. Shutdown stops the loop after the batch in progress, leaves the group and closes the
tasks; nothing is lost at any point (every batch is one transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.kafka import KafkaChangelogReader, KafkaProducer
from streams.metrics import StreamsMetrics
from streams.normalise import default_registry
from streams.processor import Processor
from streams.store import MemoryStore, RocksStore, StateStore
from streams.worker import RAW_SIGNALS, PausePoints, StreamsWorker
from tokentide.kafka import TopicSpec, ensure_topics, pipeline_topics
from tokentide.settings import StreamsSettings

log = logging.getLogger(__name__)


DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000
#: After the processing loop died: how long /healthz and /readyz say so before the process
#: exits (non-zero), so that a supervisor restarts it.
FATAL_EXIT_AFTER_S = 5.0


class TopologyError(RuntimeError):
    """The topics do not have the partition counts the stage needs."""


def stage_topics(settings: StreamsSettings) -> list[TopicSpec]:
    """Every topic the stage reads or writes: the pipeline's, its changelog, its dead letters."""
    size = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
    return [
        *pipeline_topics(settings),
        TopicSpec(settings.changelog_topic, settings.partitions, {**size, "cleanup.policy": "compact"}),
        # Kept a month: long enough to notice, fix and re-publish (raw topics keep 7 days).
        TopicSpec(
            settings.dead_letter_topic,
            settings.partitions,
            {**size, "retention.ms": str(DEAD_LETTER_RETENTION_MS)},
        ),
    ]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, worker: StreamsWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_partitions_assigned(assigned)


class StreamsService:
    """The worker and its Kafka clients, started and stopped together."""

    def __init__(
        self,
        settings: StreamsSettings,
        metrics: StreamsMetrics,
        on_fatal: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_fatal = on_fatal
        self.consumer: AIOKafkaConsumer | None = None
        self.worker: StreamsWorker | None = None
        self.loop_task: asyncio.Task[None] | None = None
        self.failure: str | None = None

    def _store_for(self, partition: int) -> StateStore:
        settings = self.settings
        if settings.store == "memory":
            return MemoryStore()
        return RocksStore(Path(settings.data_dir) / settings.streams_app_id / f"partition-{partition}")

    def _producer_for(self, partition: int) -> KafkaProducer:
        settings = self.settings
        return KafkaProducer(
            settings.kafka_bootstrap,
            f"{settings.streams_app_id}-{partition}",
            max_request_size=settings.kafka_max_message_bytes,
            timeout_s=settings.transaction_timeout_s,
        )

    async def start(self) -> None:
        settings = self.settings
        await ensure_topics(
            settings.kafka_bootstrap, stage_topics(settings), settings.topic_replication_factor
        )
        topics = settings.topics
        raw = [topics.raw(signal) for signal in RAW_SIGNALS]
        await self._check_partitions([*raw, settings.changelog_topic])
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.streams_app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=settings.kafka_max_message_bytes,
            fetch_max_bytes=settings.kafka_max_message_bytes,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_interval_s * 1000),
        )
        await consumer.start()
        self.consumer = consumer
        processor = Processor(
            default_registry(),
            settings.dedup_window,
            settings.signal_thresholds,
            settings.tenant_signal_thresholds,
        )
        worker = StreamsWorker(
            settings=settings,
            processor=processor,
            consumer=consumer,
            producer_for=self._producer_for,
            changelog=KafkaChangelogReader(
                settings.kafka_bootstrap,
                settings.changelog_topic,
                max_fetch_bytes=settings.kafka_max_message_bytes,
            ),
            store_for=self._store_for,
            metrics=self.metrics,
            pauses=PausePoints(settings.streams_test_pause_at, Path(settings.data_dir)),
        )
        self.worker = worker
        consumer.subscribe(raw, listener=_Listener(worker))
        self.loop_task = asyncio.create_task(self._run(worker), name="streams-loop")
        log.info(
            "streams worker started (group %s, %d partitions)", settings.streams_app_id, settings.partitions
        )

    async def _check_partitions(self, names: list[str], patience_s: float = 30.0) -> None:
        """Refuse to run when a topic's partition count differs; a topic just created may not
        be described yet (metadata still propagating): asked again for ``patience_s``."""
        deadline = time.monotonic() + patience_s
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            while True:
                described = await admin.describe_topics(names)
                counts = {d["topic"]: None if d["error_code"] else len(d["partitions"]) for d in described}
                unknown = [name for name in names if counts.get(name) is None]
                if not unknown or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        finally:
            await admin.close()
        wrong = {name: counts.get(name) for name in names if counts.get(name) != self.settings.partitions}
        if wrong:
            raise TopologyError(
                f"TOKENTIDE_PARTITIONS={self.settings.partitions} but these topics differ: {wrong}; "
                "the raw topics and the state changelog must have the same partition count "
                "(`tokentide admin topics --check` tells more)"
            )

    async def _run(self, worker: StreamsWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the processing loop died: the worker is not ready nor healthy any more")
            if self.on_fatal is not None:
                asyncio.get_running_loop().call_later(FATAL_EXIT_AFTER_S, self.on_fatal)
            raise

    async def stop(self) -> None:
        """Stop after the batch in progress; safe to call twice."""
        worker, task = self.worker, self.loop_task
        if worker is not None:
            worker.stop()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 30)
            except Exception:  # noqa: BLE001 (a dead or stuck loop: cancel it)
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.loop_task = None
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()  # leaves the group: partitions move at once
        if worker is not None:
            await worker.close()
        log.info("streams worker stopped")

    def health(self) -> tuple[bool, dict[str, object]]:
        """(alive, details): alive while the processing loop runs."""
        task = self.loop_task
        alive = task is not None and not task.done()
        return alive, {"loop": "running" if alive else (self.failure or "stopped")}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        alive, details = self.health()
        worker = self.worker
        if worker is None:
            return False, {**details, "joined": False}
        restoring, stalled = worker.not_ready(), worker.stalled()
        ready = alive and worker.joined and not restoring and not stalled
        return ready, {
            **details,
            "joined": worker.joined,
            "partitions": sorted(worker.tasks),
            "restoring": restoring,
            "stalled": stalled,
        }


def _exit_on_fatal() -> None:
    """End the process the way a supervisor notices: SIGTERM to ourselves (uvicorn shuts down
    and re-raises it, so the exit status is non-zero)."""
    log.error("exiting: the processing loop is dead")
    os.kill(os.getpid(), signal.SIGTERM)


def create_app(settings: StreamsSettings, registry: CollectorRegistry | None = None) -> FastAPI:
    metrics = StreamsMetrics(registry if registry is not None else CollectorRegistry())
    service = StreamsService(settings, metrics, on_fatal=_exit_on_fatal)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="tokentide streams", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.get("/healthz")
    async def healthz(response: Response) -> dict[str, object]:
        alive, details = service.health()
        response.status_code = 200 if alive else 503
        return {"status": "ok" if alive else "dead", **details}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        ready, details = service.readiness()
        response.status_code = 200 if ready else 503
        return {"status": "ready" if ready else "not ready", **details}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
