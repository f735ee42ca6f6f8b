"""A session's cost forecast (issue 17, item 4): what an active session will have cost when it ends.

For a session that has not ended (``active`` or ``idle``), from the **history of its project**
(``dashboard.projects``): the project's last :data:`HISTORY_SESSIONS` (50) ended sessions with a
known cost seen in the last :data:`HISTORY_WINDOW` (90 days: the query reads a bounded range of
the tenant's sessions), when there are at least :data:`MIN_HISTORY_SESSIONS` (3) of them::

    own_pace_usd = cost + cost / elapsed * max(0, median_duration - elapsed)
    project_usd  = max(cost, median_cost)

- ``cost``: the session's cost so far; ``elapsed``: ``last_seen_at - started_at``;
- ``median_duration`` and ``median_cost``: the medians (``percentile_cont(0.5)``) of those ended
  sessions' ``last_seen_at - started_at`` and total cost.

``own_pace_usd`` extends the session's own rate (its cost per second so far) to the project's
typical length; once the session is longer than that, it is the cost so far. ``project_usd`` is
what the project's sessions typically cost, never less than this one has already. Without a
project, enough history or elapsed time, the field is null. ``minutes_to_compaction`` is the
session's ``context.predicted_minutes_left``, shown next to them on the board card.

:func:`forecast_of` is pure; :func:`attach_forecasts` is the I/O edge (one query per page, after
``dashboard.context_routes.attach`` has set each session's project).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from pydantic import BaseModel

from dashboard.projects import PROJECT_JOIN, PROJECT_SQL

HISTORY_SESSIONS = 50
HISTORY_WINDOW = timedelta(days=90)
MIN_HISTORY_SESSIONS = 3


class ProjectHistory(BaseModel):
    project: str
    #: Ended sessions used (at most HISTORY_SESSIONS).
    sessions: int
    median_cost_usd: float
    median_duration_s: float


class SessionForecastOut(BaseModel):
    """``forecast`` of a session that has not ended (see the module docstring)."""

    project: str | None
    #: Ended sessions of the project the medians come from.
    history_sessions: int
    own_pace_usd: float | None
    project_usd: float | None
    median_cost_usd: float | None
    median_duration_s: float | None
    minutes_to_compaction: float | None


def forecast_of(
    cost: float | None,
    started_at: datetime,
    last_seen_at: datetime,
    history: ProjectHistory | None,
    minutes_to_compaction: float | None,
) -> SessionForecastOut:
    """The forecast of one session (pure; ``history`` None: no project or too little of it)."""
    usable = history if history is not None and history.sessions >= MIN_HISTORY_SESSIONS else None
    elapsed = (last_seen_at - started_at).total_seconds()
    own = project = None
    if usable is not None and cost is not None:
        project = max(cost, usable.median_cost_usd)
        if elapsed > 0:
            own = cost + cost / elapsed * max(0.0, usable.median_duration_s - elapsed)
    return SessionForecastOut(
        project=history.project if history else None,
        history_sessions=history.sessions if history else 0,
        own_pace_usd=own,
        project_usd=project,
        median_cost_usd=usable.median_cost_usd if usable else None,
        median_duration_s=usable.median_duration_s if usable else None,
        minutes_to_compaction=minutes_to_compaction,
    )


#: The medians of the last HISTORY_SESSIONS ended, priced sessions of each of ``%(projects)s``.
HISTORY_OF: LiteralString = (
    "WITH p AS (SELECT "  # noqa: S608 (LiteralString constants; values are parameters)
    + PROJECT_SQL
    + """ AS project, s.cost_usd::float8 AS cost,
               extract(epoch FROM s.last_seen_at - s.started_at)::float8 AS duration_s,
               row_number() OVER (PARTITION BY """
    + PROJECT_SQL
    + """ ORDER BY s.last_seen_at DESC, s.session_id) AS n
          FROM sessions s """
    + PROJECT_JOIN
    + """
         WHERE s.tenant_id = %(tenant)s AND s.last_seen_at <= now() - %(ended_after)s
           AND s.last_seen_at > now() - %(history_window)s
           AND s.cost_source IS DISTINCT FROM 'unknown' AND s.api_requests > 0
           AND """
    + PROJECT_SQL
    + """ = ANY (%(projects)s))
    SELECT project, count(*) AS sessions,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY cost) AS median_cost,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS median_duration_s
      FROM p WHERE n <= %(history)s GROUP BY project"""
)


async def attach_forecasts(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    tenant: str,
    sessions: Sequence[Any],
    ended_after: timedelta,
) -> None:
    """Set ``forecast`` on each ``SessionOut`` of ``sessions`` that has not ended, from the
    ``project`` ``dashboard.context_routes.attach`` set on it (called first)."""
    live = [s for s in sessions if s.status != "ended"]
    if not live:
        return
    projects = sorted({s.project for s in live if s.project is not None})
    histories: dict[str, ProjectHistory] = {}
    if projects:
        params: dict[str, Any] = {
            "tenant": tenant,
            "projects": projects,
            "ended_after": ended_after,
            "history": HISTORY_SESSIONS,
            "history_window": HISTORY_WINDOW,
        }
        for r in await (await conn.execute(HISTORY_OF, params)).fetchall():
            histories[r["project"]] = ProjectHistory(
                project=r["project"],
                sessions=r["sessions"],
                median_cost_usd=r["median_cost"],
                median_duration_s=r["median_duration_s"],
            )
    for s in live:
        project = s.project
        history = histories.get(project) if project else None
        if project and history is None:
            history = ProjectHistory(project=project, sessions=0, median_cost_usd=0.0, median_duration_s=0.0)
        s.forecast = forecast_of(
            s.cost_usd, s.started_at, s.last_seen_at, history, s.context.predicted_minutes_left
        )
