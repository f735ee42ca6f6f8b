"""The OTLP/HTTP receiver (and the process that also serves OTLP/gRPC).

Per request: refuse a signal not accepted (traces, by default: 404) -> authenticate -> admit
(tenant rate, in-flight memory) -> read the body within the size limit -> decompress -> decode
-> :class:`ingest.service.Ingestor` -> answer exactly as the OTLP spec says, in the request's
encoding.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.types import Receive, Scope, Send

from ingest.auth import TENANT_HEADER
from ingest.decode import decode, decompress, media_type
from ingest.errors import (
    JSON,
    PROTOBUF,
    IngestError,
    PayloadTooLarge,
    response_headers,
    status_body,
)
from ingest.limits import InflightBudget
from ingest.runtime import Runtime
from ingest.service import export_response, require_accepted
from tokentide.settings import OPEN_MODE_TENANT, IngestSettings
from tokentide.topics import Signal

log = logging.getLogger(__name__)


def encode(message: Message, media: str) -> bytes:
    if media == PROTOBUF:
        encoded: bytes = message.SerializeToString()
        return encoded
    return str(json_format.MessageToJson(message, indent=None)).encode()


class _Held:
    """Bytes this request holds against the process-wide in-flight budget."""

    def __init__(self, budget: InflightBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def add(self, size: int) -> None:
        self._budget.acquire(size)
        self.bytes += size

    def release(self) -> None:
        self._budget.release(self.bytes)
        self.bytes = 0


async def _read_body(request: Request, limit: int, held: _Held) -> bytes:
    """Read a sized or chunked body, refusing (413) as soon as it passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        held.add(len(chunk))
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


async def handle_export(runtime: Runtime, signal: Signal, request: Request) -> Response:
    """One OTLP/HTTP export, from the first header to the answer."""
    settings, metrics = runtime.settings, runtime.metrics
    content_type = request.headers.get("content-type") or ""
    media = PROTOBUF if content_type.lower().startswith(PROTOBUF) else JSON
    held = _Held(runtime.budget)
    try:
        require_accepted(signal, settings.signals)
        tenant = await runtime.authenticator.authenticate(
            request.headers.get("authorization"), request.headers.get(TENANT_HEADER)
        )
        media = media_type(content_type)
        await runtime.limiter.admit_request(tenant)
        limit = min(settings.max_body_bytes, tenant.max_body_bytes or settings.max_body_bytes)
        raw = await _read_body(request, limit, held)
        metrics.received(signal.value, len(raw))
        await runtime.limiter.admit_bytes(tenant, len(raw))
        body = decompress(raw, request.headers.get("content-encoding"), limit)
        if body is not raw:
            held.add(len(body))
        message = decode(signal, body, media)
        outcome = await runtime.ingestor.export(
            signal, tenant, message, body if media == PROTOBUF else None, max_bytes=limit
        )
    except IngestError as error:
        metrics.rejects.labels(error.reason).inc()
        metrics.answered(signal.value, str(error.status))
        return Response(
            status_body(error, media),
            status_code=error.status,
            media_type=media,
            headers=response_headers(error),
        )
    finally:
        held.release()
    metrics.answered(signal.value, "200")
    return Response(encode(export_response(signal, outcome), media), status_code=200, media_type=media)


class IngestApp(FastAPI):
    """FastAPI, with the OTLP exports answered before its middleware stack.

    An export needs none of what the stack does per request (error pages, exception handlers,
    routing through every route, dependency exit stacks, telemetry checks): about 15% of
    ingest's CPU per request went there. ``POST`` to an OTLP path goes straight to
    :func:`handle_export`; everything else (other methods and paths, lifespan) through FastAPI
    as before. An unexpected exception reaches uvicorn, which logs it and answers 500.
    """

    otlp_runtime: Runtime | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.otlp_runtime
        if runtime is not None and scope["type"] == "http" and scope["method"] == "POST":
            signal = _OTLP_PATHS.get(scope["path"])
            if signal is not None:
                response = await handle_export(runtime, signal, Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_OTLP_PATHS = {f"/v1/{signal.value}": signal for signal in Signal}


def create_app(
    settings: IngestSettings,
    *,
    runtime: Runtime | None = None,
    registry: CollectorRegistry | None = None,
    worker: bool = False,
) -> FastAPI:
    """The ingest app; ``worker``: one of several worker processes (ingest/workers.py): gRPC
    shares its port, ``/metrics`` answers for every worker."""
    runtime = runtime if runtime is not None else Runtime.create(settings, registry)
    metrics = runtime.metrics

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        grpc_server = None
        if settings.grpc_port:
            from ingest.grpc import serve_grpc  # noqa: PLC0415 - grpcio only when gRPC is on

            grpc_server = await serve_grpc(runtime, reuse_port=worker)
        if settings.open_mode:
            log.warning(
                "OPEN MODE: every export is accepted, unauthenticated, as tenant %r", OPEN_MODE_TENANT
            )
        log.info(
            "ingest listening: OTLP/HTTP %s:%d, OTLP/gRPC %s",
            settings.host,
            settings.ingest_port,
            f"{settings.host}:{settings.grpc_port}" if settings.grpc_port else "off",
        )
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=settings.shutdown_grace_s)
            await runtime.stop()
            log.info("ingest stopped")

    app = IngestApp(
        title="tokentide ingest", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.otlp_runtime = runtime
    # An unknown path is 404 (OTLP, and the Collector), not a redirect: /v1/logs/ included.
    app.router.redirect_slashes = False

    # Routes for what IngestApp does not take itself (other methods: 405 with Allow); plain
    # Starlette routes: the OTLP endpoints need none of FastAPI's per-request machinery.
    for signal in Signal:

        async def export(request: Request, signal: Signal = signal) -> Response:
            return await handle_export(runtime, signal, request)

        app.add_route(f"/v1/{signal.value}", export, methods=["POST"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = runtime.all_ready
        body = {
            "status": "ready" if ready else "not ready",
            "kafka": runtime.publisher.ready,
            "auth": runtime.authenticator.ready,
        }
        return Response(json.dumps(body), status_code=200 if ready else 503, media_type=JSON)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        if not worker:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
        # Every worker's samples, live and dead (prometheus_client's multiprocess mode).
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return Response(generate_latest(merged), media_type=CONTENT_TYPE_LATEST)

    app.state.runtime = runtime
    return app
