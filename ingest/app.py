"""The OTLP/HTTP receiver: check, decode, split by session, publish, answer per the OTLP spec."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ingest.decode import decode, decompress, media_type
from ingest.errors import JSON, PROTOBUF, IngestError, PayloadTooLarge, response_headers, status_body
from ingest.metrics import IngestMetrics
from ingest.partition import split_by_session
from ingest.producer import RawMessage, RawPublisher
from tokentide.settings import OPEN_MODE_TENANT, IngestSettings
from tokentide.topics import (
    HEADER_RECEIVED_AT,
    HEADER_SESSION,
    HEADER_SIGNAL,
    HEADER_TENANT,
    Signal,
    session_key,
)

log = logging.getLogger(__name__)

_EMPTY_RESPONSE = {
    Signal.LOGS: ExportLogsServiceResponse(),
    Signal.METRICS: ExportMetricsServiceResponse(),
    Signal.TRACES: ExportTraceServiceResponse(),
}


async def _read_body(request: Request, limit: int) -> bytes:
    """Read a sized or chunked body, refusing (413) as soon as it passes ``limit``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return bytes(body)


def create_app(
    settings: IngestSettings,
    *,
    publisher: RawPublisher | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    publisher = publisher if publisher is not None else RawPublisher(settings, metrics)
    topics = settings.topics

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info(
            "ingest listening on %s:%d (open mode: tenant %r, unauthenticated)",
            settings.host,
            settings.ingest_port,
            OPEN_MODE_TENANT,
        )
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()
            log.info("ingest stopped")

    app = FastAPI(title="tokentide ingest", lifespan=lifespan, docs_url=None, redoc_url=None)

    async def export(signal: Signal, request: Request) -> Response:
        media = JSON
        try:
            media = media_type(request.headers.get("content-type"))
            raw = await _read_body(request, settings.max_body_bytes)
            metrics.bytes.labels(signal.value).inc(len(raw))
            encoding = request.headers.get("content-encoding")
            body = decompress(raw, encoding, settings.max_body_bytes)
            message = decode(signal, body, media)
            parts = split_by_session(signal, message)
            tenant = OPEN_MODE_TENANT
            received = str(time.time_ns()).encode()
            reuse_body = media == PROTOBUF and len(parts) == 1
            batch = [
                RawMessage(
                    topic=topics.raw(signal),
                    key=session_key(tenant, part.session_id).encode(),
                    value=body if reuse_body else part.request.SerializeToString(),
                    headers=[
                        (HEADER_TENANT, tenant.encode()),
                        (HEADER_SIGNAL, signal.value.encode()),
                        (HEADER_RECEIVED_AT, received),
                        (HEADER_SESSION, (part.session_id or "").encode()),
                    ],
                )
                for part in parts
                if part.records
            ]
            if batch:
                await publisher.publish(batch)
        except IngestError as error:
            metrics.rejects.labels(error.reason).inc()
            metrics.requests.labels(signal.value, str(error.status)).inc()
            return Response(
                status_body(error, media),
                status_code=error.status,
                media_type=media,
                headers=response_headers(error),
            )
        metrics.records.labels(signal.value).inc(sum(p.records for p in parts))
        metrics.requests.labels(signal.value, "200").inc()
        empty = _EMPTY_RESPONSE[signal]
        content = empty.SerializeToString() if media == PROTOBUF else b"{}"
        return Response(content, status_code=200, media_type=media)

    @app.post("/v1/logs")
    async def export_logs(request: Request) -> Response:
        return await export(Signal.LOGS, request)

    @app.post("/v1/metrics")
    async def export_metrics(request: Request) -> Response:
        return await export(Signal.METRICS, request)

    @app.post("/v1/traces")
    async def export_traces(request: Request) -> Response:
        return await export(Signal.TRACES, request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if publisher.ready:
            return Response('{"status":"ready"}', media_type=JSON)
        return Response('{"status":"kafka unavailable"}', status_code=503, media_type=JSON)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
