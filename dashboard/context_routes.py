"""Routes of issue 17: a session's plan and context from the hook, and projects.

- ``PUT /api/v1/hook/sessions/{id}/plan`` (HOOK: the agent's ingest key and, outside open
  mode, the session's proof, as the checkpoint routes): records the session's working
  directory, git repository/branch and project (``session_context``), and its plan as a new
  version (``session_plans``) when it differs from the latest. A session need not have
  telemetry yet: the hook reports at the first prompt, before the agent's first export.
  422 on a malformed body or a field over its cap (``dashboard.plans``); nothing is written
  then.
- ``GET /api/v1/projects`` and ``GET /api/v1/projects/{project}`` (READ; the project is the
  rest of the path, a name may hold ``/``): the tenant's projects with their sessions' totals,
  and one project's sessions, the active ones together.

:func:`attach` gives API sessions their ``project``, ``workspace`` and ``plan``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, HTTPException, Path, Query
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from dashboard import plans, project_list
from dashboard.checkpoints import Proof, SessionId, prove
from dashboard.queries import IDLE_AFTER, SessionOut, session_out
from ingest.redact import Redactor
from tokentide.hook import project_of, strip_credentials
from tokentide.settings import DEV_REDACTION_KEY, DashboardSettings

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]
Conn = psycopg.AsyncConnection[dict[str, Any]]

_TENANT_PRIVACY = "SELECT redaction FROM tenants WHERE tenant_id = %s"


def redactor_of(settings: DashboardSettings) -> Redactor | None:
    """The keyed hash of plan texts under privacy ``hash`` (ingest's key); None outside open
    mode without a key of its own: such texts are then dropped (decision 38)."""
    configured = settings.redaction_key.get_secret_value() if settings.redaction_key else None
    key = configured or (DEV_REDACTION_KEY if settings.open_mode else None)
    if key is None or (key == DEV_REDACTION_KEY and not settings.open_mode):
        log.warning("TOKENTIDE_REDACTION_KEY unset: plan texts of tenants in privacy mode hash are dropped")
        return None
    return Redactor(key.encode())


def text_mode(privacy: str | None, redactor: Redactor | None, default: str = "hash") -> plans.TextMode:
    """How item texts are stored for a tenant of privacy mode ``privacy`` (unset: ``default``,
    ingest's ``TOKENTIDE_REDACTION``); without a redaction key of its own (``redactor`` None) the
    dashboard drops what it would hash (a hash under a known key could be reversed by guessing
    short texts)."""
    mode = plans.TEXT_MODES[privacy or default]
    return "dropped" if mode == "hashed" and redactor is None else mode


async def attach(conn: Conn, tenant: str, sessions: Sequence[SessionOut]) -> None:
    """Set ``project``, ``workspace`` and ``plan`` of ``sessions`` (all of ``tenant``)."""
    if not sessions:
        return
    params = {"tenant": tenant, "sessions": [s.session_id for s in sessions]}
    places = {
        r["session_id"]: r
        for r in await (await conn.execute(project_list.SESSION_PROJECTS, params)).fetchall()
    }
    latest = {r["session_id"]: r for r in await (await conn.execute(plans.LATEST_PLANS, params)).fetchall()}
    for session in sessions:
        place = places.get(session.session_id)
        if place is not None:
            session.project = place["project"]
            if any(place[k] is not None for k in ("cwd", "git_repository", "git_branch")):
                session.workspace = plans.WorkspaceOut(
                    cwd=place["cwd"], git_repository=place["git_repository"], git_branch=place["git_branch"]
                )
        plan = latest.get(session.session_id)
        if plan is not None:
            session.plan = plans.plan_out(plan)


async def record(
    conn: Conn,
    tenant: str,
    session_id: str,
    body: plans.PlanIn,
    redactor: Redactor | None,
    *,
    default_privacy: str = "hash",
) -> plans.PlanPutOut:
    """Record the context, and the plan when it changed, in one transaction."""
    repository = strip_credentials(body.git_repository) if body.git_repository else None
    project = body.project or project_of(repository, body.cwd)
    async with conn.transaction():
        context = await (
            await conn.execute(
                plans.UPSERT_CONTEXT,
                {
                    "tenant": tenant,
                    "session": session_id,
                    "cwd": body.cwd,
                    "git_repository": repository,
                    "git_branch": body.git_branch,
                    "project": project,
                },
            )
        ).fetchone()
        stored_project = context["project"] if context else project
        if body.todos is None:
            return plans.PlanPutOut(session_id=session_id, changed=False, project=stored_project, plan=None)
        privacy = await (await conn.execute(_TENANT_PRIVACY, (tenant,))).fetchone()
        mode = text_mode(privacy["redaction"] if privacy else None, redactor, default_privacy)
        digest = redactor.digest if redactor is not None else None
        items = plans.stored_items(body.todos, mode, digest)
        new_digest = plans.plan_digest(items)
        latest = await (await conn.execute(plans.LATEST_DIGEST, (tenant, session_id))).fetchone()
        if latest is not None and bytes(latest["digest"]) == new_digest:
            params = {"tenant": tenant, "session": session_id, "limit": 1}
            row = await (await conn.execute(plans.PLAN_HISTORY, params)).fetchone()
            current = plans.plan_out(row) if row else None
            return plans.PlanPutOut(
                session_id=session_id, changed=False, project=stored_project, plan=current
            )
        total, done, in_progress = plans.counts(items)
        version = (latest["version"] if latest else 0) + 1
        row = await (
            await conn.execute(
                plans.INSERT_PLAN,
                (tenant, session_id, version, new_digest, Jsonb(items), total, done, in_progress, mode),
            )
        ).fetchone()
    if row is None:  # INSERT ... RETURNING always returns its row
        raise RuntimeError("plan not saved")
    return plans.PlanPutOut(
        session_id=session_id, changed=True, project=stored_project, plan=plans.plan_out(row)
    )


ProjectName = Annotated[str, Path(min_length=1, max_length=plans.PROJECT_MAX)]


def add_context_routes(
    app: FastAPI,
    pool: Pool,
    tenant: Callable[[], str],
    redactor: Redactor | None,
    *,
    open_mode: bool = False,
    default_privacy: str = "hash",
) -> None:
    """The plan hook route and the project routes above; ``redactor``: the keyed hash of
    ``hash``-mode texts (None: such texts are dropped); ``default_privacy``: the mode of tenants
    without their own; ``open_mode`` checks no session proof."""

    @app.put(
        "/api/v1/hook/sessions/{session_id}/plan",
        summary="Report the session's plan and working context (the agent's hook)",
        responses={
            401: {"description": "no ingest key, or no session proof"},
            403: {"description": "the session is bound to another agent's proof"},
            422: {"description": "a field is malformed or over its cap"},
        },
    )
    async def put_plan(session_id: SessionId, body: plans.PlanIn, proof: Proof = None) -> plans.PlanPutOut:
        async with pool.connection() as conn:
            if not open_mode:
                await prove(conn, tenant(), session_id, proof)
            return await record(conn, tenant(), session_id, body, redactor, default_privacy=default_privacy)

    @app.get("/api/v1/projects")
    async def list_projects(
        limit: Annotated[int, Query(ge=1, le=1000, description="at most this many projects")] = 200,
    ) -> project_list.ProjectList:
        """The tenant's projects with their sessions' tokens and cost, those with active sessions
        first; ``parallel`` when more than one of a project's sessions is active."""
        params = {"tenant": tenant(), "idle_after": IDLE_AFTER, "limit": limit}
        async with pool.connection() as conn:
            rows = await (await conn.execute(project_list.PROJECTS, params)).fetchall()
        return project_list.ProjectList(projects=[project_list.project_out(r) for r in rows])

    # ``:path``: a project named by a resource attribute may hold a "/" (``payments/api``).
    @app.get("/api/v1/projects/{project:path}")
    async def get_project(
        project: ProjectName,
        limit: Annotated[int, Query(ge=1, le=1000, description="at most this many sessions")] = 200,
    ) -> project_list.ProjectDetail:
        """One project's totals and its sessions: the active ones together, then the others."""
        params = {"tenant": tenant(), "project": project, "idle_after": IDLE_AFTER, "limit": limit}
        async with pool.connection() as conn:
            totals = await (await conn.execute(project_list.PROJECT, params)).fetchone()
            if totals is None:
                raise HTTPException(status_code=404, detail=f"no session of project {project!r}")
            rows = await (await conn.execute(project_list.PROJECT_SESSIONS, params)).fetchall()
            now = datetime.now(UTC)
            sessions = [session_out(r, now) for r in rows]
            await attach(conn, tenant(), sessions)
        return project_list.ProjectDetail(
            project=project_list.project_out(totals),
            active=[s for s in sessions if s.status == "active"],
            inactive=[s for s in sessions if s.status != "active"],
        )
