"""Projects (issue 17), pure: the SQL of ``GET /api/v1/projects`` and ``/api/v1/projects/{p}``
and rows -> API shapes. A session's project is the one definition of ``dashboard.projects``
(hook-reported, else the ``project`` / ``service.namespace`` resource attribute); sessions
without one belong to no project and are not listed.

A project's tokens and cost are the sums of its sessions' totals (``sessions``), so they equal
what the session list shows for ``?project=``. A session is active as on the board (seen within
``dashboard.queries.IDLE_AFTER``); a project is ``parallel`` when more than one of its sessions
is active at once (decision 39).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, LiteralString

from pydantic import BaseModel

from dashboard.projects import PROJECT_JOIN, PROJECT_SQL
from dashboard.queries import SELECT_SESSION, SessionOut, TokensOut
from dashboard.timestamps import Timestamp

_AGGREGATES: LiteralString = """
           count(*) AS sessions,
           count(*) FILTER (WHERE s.last_seen_at > now() - %(idle_after)s) AS active_sessions,
           sum(s.input_tokens)::bigint AS input_tokens,
           sum(s.output_tokens)::bigint AS output_tokens,
           sum(s.cache_read_tokens)::bigint AS cache_read_tokens,
           sum(s.cache_creation_tokens)::bigint AS cache_creation_tokens,
           sum(s.reasoning_tokens)::bigint AS reasoning_tokens,
           sum(s.cache_creation_1h_tokens)::bigint AS cache_creation_1h_tokens,
           sum(s.cost_usd) FILTER (WHERE s.cost_source IS DISTINCT FROM 'unknown') AS cost_usd,
           sum(s.unpriced_requests)::bigint AS unpriced_requests,
           sum(s.api_requests)::bigint AS api_requests,
           min(s.started_at) AS started_at,
           max(s.last_seen_at) AS last_seen_at
"""

#: Every project of the tenant with its totals, those with active sessions first.
PROJECTS: LiteralString = (
    "SELECT "  # noqa: S608 (LiteralString parts; values are parameters)
    + PROJECT_SQL
    + " AS project,"
    + _AGGREGATES
    + " FROM sessions s "
    + PROJECT_JOIN
    + " WHERE s.tenant_id = %(tenant)s AND "
    + PROJECT_SQL
    + " IS NOT NULL GROUP BY 1 ORDER BY active_sessions DESC, last_seen_at DESC, project LIMIT %(limit)s"
)
#: One project's totals (no row: the tenant has no session of it).
PROJECT: LiteralString = (
    "SELECT "  # noqa: S608
    + PROJECT_SQL
    + " AS project,"
    + _AGGREGATES
    + " FROM sessions s "
    + PROJECT_JOIN
    + " WHERE s.tenant_id = %(tenant)s AND "
    + PROJECT_SQL
    + " = %(project)s GROUP BY 1"
)
#: The session ids of the tenant's sessions in a project (the session list's ``project=``).
SESSIONS_IN_PROJECT: LiteralString = (
    "session_id IN (SELECT s.session_id FROM sessions s "  # noqa: S608
    + PROJECT_JOIN
    + " WHERE s.tenant_id = %(tenant)s AND "
    + PROJECT_SQL
    + " = %(project)s)"
)
#: The project and the reported workspace of each of the given sessions.
SESSION_PROJECTS: LiteralString = (
    "SELECT s.session_id, "  # noqa: S608
    + PROJECT_SQL
    + " AS project, sc.cwd, sc.git_repository, sc.git_branch FROM sessions s "
    + PROJECT_JOIN
    + " WHERE s.tenant_id = %(tenant)s AND s.session_id = ANY(%(sessions)s)"
)


#: One project's sessions, most recently active first.
PROJECT_SESSIONS: LiteralString = (
    SELECT_SESSION
    + " WHERE tenant_id = %(tenant)s AND "
    + SESSIONS_IN_PROJECT
    + " ORDER BY last_seen_at DESC, session_id LIMIT %(limit)s"
)


class ProjectOut(BaseModel):
    project: str
    sessions: int
    #: Sessions seen within the idle timeout (5 min), as the board shows them.
    active_sessions: int
    #: More than one session of the project is active at once.
    parallel: bool
    #: The sums of its sessions' tokens.
    tokens: TokensOut
    #: The sum of its sessions' known costs; null when no session's cost is known. With
    #: ``unpriced_requests`` > 0 it is a lower bound.
    cost_usd: float | None
    unpriced_requests: int
    api_requests: int
    started_at: Timestamp
    last_seen_at: Timestamp


class ProjectList(BaseModel):
    projects: list[ProjectOut]


class ProjectDetail(BaseModel):
    project: ProjectOut
    #: Its active sessions (more than one: ``project.parallel``), most recent first.
    active: list[SessionOut]
    #: Its other sessions, most recent first.
    inactive: list[SessionOut]


def project_out(row: dict[str, Any]) -> ProjectOut:
    cost: Decimal | None = row["cost_usd"]
    return ProjectOut(
        project=row["project"],
        sessions=row["sessions"],
        active_sessions=row["active_sessions"],
        parallel=row["active_sessions"] > 1,
        tokens=TokensOut(
            input=row["input_tokens"],
            output=row["output_tokens"],
            cache_read=row["cache_read_tokens"],
            cache_creation=row["cache_creation_tokens"],
            reasoning=row["reasoning_tokens"],
            cache_creation_1h=row["cache_creation_1h_tokens"],
        ),
        cost_usd=None if cost is None else float(cost),
        unpriced_requests=row["unpriced_requests"],
        api_requests=row["api_requests"],
        started_at=row["started_at"],
        last_seen_at=row["last_seen_at"],
    )
