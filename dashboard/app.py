"""The dashboard service: the JSON API, its event stream and the web UI, over the database."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, Field, SecretStr

from dashboard import filters, live, queries
from dashboard.auth import (
    Access,
    Authenticator,
    Caller,
    Forbidden,
    Unauthorized,
    access_of,
    current_caller,
    current_tenant,
    set_current_caller,
)
from dashboard.budget_routes import add_budget_routes
from dashboard.checkpoints import add_checkpoint_routes
from dashboard.context_routes import add_context_routes, attach, redactor_of
from dashboard.filters import Bucket, GroupBy, SessionQuery, UsageOut, usage_group
from dashboard.insights import add_insight_routes
from dashboard.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit, NoNulBytes
from dashboard.plans import PLAN_MAX_BODY_BYTES
from dashboard.queries import SessionOut, SessionPage, session_out, signal_out
from dashboard.session_forecast import attach_forecasts
from dashboard.timeline import add_timeline_route
from dashboard.usage_exporter import add_usage_metrics
from dashboard.web_sessions import COOKIE, WebSessions, cookie_secure
from dashboard.webhooks import add_webhook_routes
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
        mode = (
            f"open mode: tenant {OPEN_MODE_TENANT!r}, unauthenticated" if settings.open_mode else "read keys"
        )
        log.info("dashboard on %s:%d (%s)", settings.host, settings.dashboard_port, mode)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="tokentide dashboard", version="0.1.0", lifespan=lifespan)
    add_usage_metrics(app, pool, settings, tenant_of=lambda: current_caller().tenant)

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

    tenant = current_tenant
    authenticator = Authenticator(
        pool,
        open_mode=settings.open_mode,
        admin_token=_secret(settings.dashboard_admin_token),
        metrics_token=_secret(settings.metrics_token),
        sessions=WebSessions(pool, idle_s=settings.web_session_idle_s, max_s=settings.web_session_max_s),
    )

    app.add_middleware(NoNulBytes)  # inside the authentication below: callers are known first
    _add_auth(app, authenticator, settings)

    _add_session_routes(app, pool, settings, tenant)
    _add_usage_and_stream(app, pool, settings, tenant, authenticator)
    add_timeline_route(app, pool, tenant)
    add_checkpoint_routes(
        app,
        pool,
        tenant,
        settings.checkpoint_transcript_max_bytes,
        open_mode=settings.open_mode,
        team_key=settings.team_attribute,
    )
    add_webhook_routes(app, pool, tenant)
    add_insight_routes(app, pool, tenant, settings.team_attribute)
    add_budget_routes(app, pool, tenant, settings.team_attribute)
    add_context_routes(
        app,
        pool,
        tenant,
        redactor_of(settings),
        open_mode=settings.open_mode,
        default_privacy=settings.redaction.value,
    )
    _add_web_ui(app)

    _add_health(app, pool, registry)

    def body_limit(path: str) -> int:
        hook_checkpoints = path.startswith("/api/v1/hook/") and path.endswith("/checkpoints")
        if path.startswith("/api/v1/hook/") and path.endswith("/plan"):
            return PLAN_MAX_BODY_BYTES
        return settings.checkpoint_max_body_bytes if hook_checkpoints else DEFAULT_MAX_BODY_BYTES

    app.add_middleware(BodyLimit, limit_for=body_limit)  # outermost: before anything reads a body
    return app


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _add_session_routes(
    app: FastAPI,
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    settings: DashboardSettings,
    tenant: Callable[[], str],
) -> None:
    @app.get("/api/v1/sessions")
    async def list_sessions(query: Annotated[SessionQuery, Query()]) -> SessionPage:
        """Sessions of the caller's tenant, most recently active first; every filter narrows."""
        limit, offset = query.limit, query.offset
        page, count_sql, params = filters.list_sessions(query, settings.team_attribute)
        params |= {"tenant": tenant(), "limit": limit, "offset": offset}
        async with pool.connection() as conn:
            rows = await (await conn.execute(page, params)).fetchall()
            count = await (await conn.execute(count_sql, params)).fetchone()
            now = datetime.now(UTC)
            sessions = [session_out(r, now) for r in rows]
            await attach(conn, tenant(), sessions)
            await attach_forecasts(conn, tenant(), sessions, queries.ENDED_AFTER)
        total = count["count"] if count else 0
        return SessionPage(sessions=sessions, total=total, limit=limit, offset=offset)

    @app.get("/api/v1/sessions/{session_id}")
    async def get_session(session_id: str) -> SessionOut:
        """One session's totals (tokens by type, cost, requests) and context position."""
        async with pool.connection() as conn:
            row = await (await conn.execute(queries.GET_SESSION, (tenant(), session_id))).fetchone()
            if row is None:
                raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
            signals = await (await conn.execute(queries.SESSION_SIGNALS, (tenant(), session_id))).fetchall()
            session = session_out(row, datetime.now(UTC))
            await attach(conn, tenant(), [session])
            await attach_forecasts(conn, tenant(), [session], queries.ENDED_AFTER)
        session.signals = [signal_out(s) for s in signals]
        return session


def _add_health(
    app: FastAPI,
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    registry: CollectorRegistry,
) -> None:
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


def _add_auth(app: FastAPI, authenticator: Authenticator, settings: DashboardSettings) -> None:
    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        """Every route but the public ones answers for its authenticated caller only (dashboard.auth)."""
        access = access_of(request.url.path)
        if access is not Access.PUBLIC:
            try:
                set_current_caller(
                    await authenticator.authenticate(
                        access,
                        request.headers.get("authorization"),
                        request.cookies.get(COOKIE),
                        request.query_params.get("tenant"),
                    )
                )
            except Unauthorized as exc:
                return JSONResponse(
                    {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
            except Forbidden as exc:
                return JSONResponse({"detail": str(exc)}, status_code=403)
            except (psycopg.OperationalError, PoolTimeout) as exc:
                log.warning("database unavailable for authentication: %s", exc)
                return JSONResponse(
                    {"detail": "database unavailable"}, status_code=503, headers={"Retry-After": "5"}
                )
        return await call_next(request)

    @app.post(
        "/api/v1/login",
        responses={
            401: {"description": "not a valid read key (the admin token and ingest keys never sign in)"}
        },
    )
    async def login(body: LoginIn, request: Request) -> JSONResponse:
        """The web UI's sign-in: a tenant's read key for a server-side session, kept by the browser
        in an HttpOnly, SameSite=Strict cookie (``Secure`` over HTTPS)."""
        if settings.open_mode:
            return JSONResponse({"tenant": OPEN_MODE_TENANT, "via": "open"})
        if authenticator.is_admin_token(body.key):
            return _refused(
                "the admin token does not sign in: send it as 'Authorization: Bearer' from a tool; "
                "sign in with a tenant's read key (tokentide admin key create --tenant <team> --scope read)"
            )
        try:
            tenant, key_id = await authenticator.key(body.key, "read")
        except Unauthorized as exc:
            return _refused(str(exc))
        sessions = authenticator.sessions
        if sessions is None:  # create_app always gives the authenticator its sessions
            raise RuntimeError("web sessions are not configured")
        session_id, expires_at = await sessions.create(tenant, key_id)
        response = JSONResponse(
            {"tenant": tenant, "via": "web_session", "expires_at": expires_at.isoformat()}
        )
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(settings.web_session_max_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=cookie_secure(
                request.url.scheme,
                request.headers.get("x-forwarded-proto"),
                trust_forwarded_proto=settings.trust_forwarded_proto,
            ),
        )
        return response

    @app.post("/api/v1/logout")
    async def logout(request: Request) -> JSONResponse:
        """Ends the web session of the cookie sent (on every replica at once) and clears the cookie."""
        session_id = request.cookies.get(COOKIE)
        if session_id and authenticator.sessions is not None and not settings.open_mode:
            await authenticator.sessions.revoke(session_id)
        response = JSONResponse({"status": "signed out"})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/api/v1/me")
    async def me() -> MeOut:
        """Who the caller is: the tenant read and how the caller signed in."""
        caller = current_caller()
        return MeOut(tenant=caller.tenant or OPEN_MODE_TENANT, via=caller.via)


def _refused(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _add_usage_and_stream(
    app: FastAPI,
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    settings: DashboardSettings,
    tenant: Callable[[], str],
    authenticator: Authenticator,
) -> None:
    @app.get("/api/v1/usage")
    async def get_usage(
        group_by: GroupBy,
        bucket: Annotated[Bucket | None, Query(description="a series per group: per UTC hour or day")] = None,
        start: Annotated[
            datetime | None, Query(alias="from", description="default: 30 days before `to`")
        ] = None,
        end: Annotated[datetime | None, Query(alias="to", description="default: now")] = None,
    ) -> UsageOut:
        """Tokens by type, cost, requests and errors of the caller's tenant per team, user,
        model, agent or UTC day (per-minute rollups), or per query source (main, subagent,
        auxiliary), subagent type, skill or MCP server (usage events), over ``[from, to)``."""
        end = _aware(end) if end is not None else datetime.now(UTC)
        start = _aware(start) if start is not None else end - timedelta(days=30)
        if start >= end:
            raise HTTPException(status_code=422, detail="`from` must be before `to`")
        from_hour, to_hour = filters.hour_bounds(start.astimezone(UTC), end.astimezone(UTC))
        params = {
            "tenant": tenant(),
            "from": start,
            "to": end,
            "from_hour": from_hour,
            "to_hour": to_hour,
            "team_key": settings.team_attribute,
        }
        async with pool.connection() as conn:
            rows = await (await conn.execute(filters.usage(group_by, bucket), params)).fetchall()
        return UsageOut(
            group_by=group_by, bucket=bucket, start=start, end=end, groups=[usage_group(r) for r in rows]
        )

    @app.get(
        "/api/v1/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        request: Request, last_event_id: Annotated[str | None, Header(max_length=100)] = None
    ) -> StreamingResponse:
        """Server-Sent Events: ``session`` (a session changed) and ``signal`` (a context signal),
        for the caller's tenant, in the order the database took them; resumes after
        ``Last-Event-ID``, else sends what commits after the request; a comment line every 15 s."""
        # The start is fixed before the response begins, so a client that has its headers
        # gets everything committed after them.
        async with pool.connection() as conn:
            begin = await live.start(conn, last_event_id)
        frames = live.events(
            pool,
            tenant(),
            begin,
            disconnected=_gone(request, authenticator, current_caller()),
            poll_s=settings.stream_poll_s,
        )
        return StreamingResponse(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


#: How often a live event stream checks that its caller's credentials still hold.
RECHECK_S = 10.0


def _gone(request: Request, authenticator: Authenticator, caller: Caller) -> Callable[[], Awaitable[bool]]:
    """The stream's end condition: the client went away, or (checked every RECHECK_S) signed
    out, its session expired or its key was revoked."""
    checked = time.monotonic()

    async def gone() -> bool:
        nonlocal checked
        if await request.is_disconnected():
            return True
        if time.monotonic() - checked < RECHECK_S:
            return False
        checked = time.monotonic()
        if await authenticator.still_valid(caller):
            return False
        log.info("event stream ended: the caller's credentials no longer hold (%s)", caller.via)
        return True

    return gone


def _aware(at: datetime) -> datetime:
    """A query time without an offset is UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


STATIC = Path(__file__).with_name("static")


def _add_web_ui(app: FastAPI) -> None:
    """The web UI: pages over the API, its scripts and the vendored chart library."""
    if not (STATIC / "vendor" / "uPlot.iife.min.js").is_file():
        log.warning("web UI charts missing: run `bash scripts/vendor-web.sh` (make install does)")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def page(name: str) -> FileResponse:
        return FileResponse(STATIC / f"{name}.html", headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def board() -> FileResponse:
        return page("board")

    @app.get("/sessions/{session_id}", include_in_schema=False)
    async def session_page(session_id: str) -> FileResponse:
        return page("session")

    @app.get("/usage", include_in_schema=False)
    async def usage_page() -> FileResponse:
        return page("usage")

    @app.get("/webhooks", include_in_schema=False)
    async def webhooks_page() -> FileResponse:
        return page("webhooks")

    @app.get("/budgets", include_in_schema=False)
    async def budgets_page() -> FileResponse:
        return page("budgets")

    @app.get("/projects", include_in_schema=False)
    async def projects_page() -> FileResponse:
        return page("projects")

    @app.get("/projects/{project:path}", include_in_schema=False)
    async def project_page(project: str) -> FileResponse:
        return page("projects")

    @app.get("/recommendations", include_in_schema=False)
    async def recommendations_page() -> FileResponse:
        return page("recommendations")

    @app.get("/compare", include_in_schema=False)
    async def compare_page() -> FileResponse:
        return page("compare")


class LoginIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)


class MeOut(BaseModel):
    tenant: str
    #: ``open``, ``read_key``, ``web_session`` or ``admin_token``.
    via: str
