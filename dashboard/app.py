"""The dashboard service: the JSON API over the database (web UI and SSE come later)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard import queries
from dashboard.queries import SessionOut, SessionPage, session_out, signal_out
from tokentide.settings import OPEN_MODE_TENANT, DashboardSettings

log = logging.getLogger(__name__)


def create_app(settings: DashboardSettings, registry: CollectorRegistry | None = None) -> FastAPI:
    registry = registry if registry is not None else CollectorRegistry()
    requests = Counter(
        "tokentide_dashboard_requests",
        "API requests answered, by route and status.",
        ["route", "status"],
        registry=registry,
    )
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=settings.pool_max_size,
        kwargs={"row_factory": dict_row, "autocommit": True},
        open=False,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Open without waiting: the service starts (and says not ready) while the database is down.
        await pool.open(wait=False)
        log.info(
            "dashboard on %s:%d (open mode: tenant %r, unauthenticated)",
            settings.host,
            settings.dashboard_port,
            OPEN_MODE_TENANT,
        )
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="tokentide dashboard", version="0.1.0", lifespan=lifespan)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse({"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"})

    def tenant() -> str:
        return OPEN_MODE_TENANT

    @app.get("/api/v1/sessions")
    async def list_sessions(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> SessionPage:
        """Sessions of the caller's tenant, most recently active first."""
        async with pool.connection() as conn:
            rows = await (await conn.execute(queries.LIST_SESSIONS, (tenant(), limit, offset))).fetchall()
            count = await (await conn.execute(queries.COUNT_SESSIONS, (tenant(),))).fetchone()
        total = count["count"] if count else 0
        now = datetime.now(UTC)
        return SessionPage(
            sessions=[session_out(r, now) for r in rows], total=total, limit=limit, offset=offset
        )

    @app.get("/api/v1/sessions/{session_id}")
    async def get_session(session_id: str) -> SessionOut:
        """One session's totals (tokens by type, cost, requests) and context position."""
        async with pool.connection() as conn:
            row = await (await conn.execute(queries.GET_SESSION, (tenant(), session_id))).fetchone()
            if row is None:
                raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
            signals = await (await conn.execute(queries.SESSION_SIGNALS, (tenant(), session_id))).fetchall()
        session = session_out(row, datetime.now(UTC))
        session.signals = [signal_out(s) for s in signals]
        return session

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, str]:
        try:
            async with pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError) as exc:
            response.status_code = 503
            return {"status": "database unavailable", "error": str(exc)}
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
