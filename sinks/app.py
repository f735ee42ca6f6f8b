"""The sink process: the consume/write loop plus /healthz, /readyz and /metrics over HTTP.

``/readyz`` is 200 while the database answers, the last probe of Kafka answered (the runner
asks the broker every ``TOKENTIDE_KAFKA_PROBE_INTERVAL_S``, bounded by
``TOKENTIDE_KAFKA_PROBE_TIMEOUT_S``) and the consume loop runs; 503 otherwise, saying which.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sinks.base import SinkMetrics, SinkRunner
from sinks.postgres.writer import PostgresWriter
from tokentide.settings import SinkSettings

log = logging.getLogger(__name__)


def create_app(settings: SinkSettings, registry: CollectorRegistry | None = None) -> FastAPI:
    metrics = SinkMetrics(registry if registry is not None else CollectorRegistry())
    retention = settings.raw_retention_days
    writer = PostgresWriter(
        settings.database_url.get_secret_value(),
        retention=None if retention is None else timedelta(days=retention),
        days_ahead=settings.partitions_ahead_days,
        statement_timeout_s=settings.statement_timeout_s,
    )
    runner = SinkRunner(settings, writer, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runner.start()
        log.info("sink started (group %s)", settings.sink_group_id)
        try:
            yield
        finally:
            await runner.stop()
            log.info("sink stopped")

    app = FastAPI(title="tokentide sink", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        database = True
        try:
            await writer.ping()
        except psycopg.Error:
            database = False
        kafka, consuming = runner.kafka_ready, runner.consuming
        ready = database and kafka and consuming
        response.status_code = 200 if ready else 503
        return {
            "status": "ready" if ready else "not ready",
            "kafka": kafka,
            "database": database,
            "consuming": consuming,
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
