"""The notifier process: the :class:`notify.service.Notifier` plus /healthz, /readyz and /metrics
on ``TOKENTIDE_NOTIFY_PORT`` (9465)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from psycopg_pool import PoolTimeout

from notify.service import Notifier, NotifyMetrics
from tokentide.settings import NotifySettings

log = logging.getLogger(__name__)


def create_app(settings: NotifySettings, registry: CollectorRegistry | None = None) -> FastAPI:
    metrics = NotifyMetrics(registry if registry is not None else CollectorRegistry())
    notifier = Notifier(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await notifier.start()
        log.info("notify started (group %s)", settings.notify_group_id)
        try:
            yield
        finally:
            await notifier.stop()
            log.info("notify stopped")

    app = FastAPI(title="tokentide notify", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.notifier = notifier

    @app.get("/healthz")
    async def healthz(response: Response) -> dict[str, str]:
        if not notifier.alive:
            response.status_code = 503
            return {"status": "a notifier loop stopped (see the log)"}
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        database = True
        try:
            await notifier.store.ping()
        except (psycopg.Error, PoolTimeout):
            database = False
        ready = database and notifier.kafka_ready
        response.status_code = 200 if ready else 503
        return {
            "status": "ready" if ready else "not ready",
            "kafka": notifier.kafka_ready,
            "database": database,
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
