"""Session list filters and usage grouping -> SQL (pure: builds statements, runs nothing).

Every statement starts from the caller's tenant (``tenant_id = %(tenant)s``): no filter can
widen a query beyond it. Values always travel as parameters, never as SQL text; the only
identifiers chosen by the caller (the usage grouping) come from a closed set.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, LiteralString

from pydantic import BaseModel, ConfigDict, Field

from dashboard.project_list import SESSIONS_IN_PROJECT
from dashboard.projects import PROJECT_JOIN, PROJECT_SQL
from dashboard.queries import ENDED_AFTER, IDLE_AFTER, SELECT_SESSION
from dashboard.timestamps import Timestamp


class SessionFilter(BaseModel):
    """``GET /api/v1/sessions`` query: every given field narrows the list (AND)."""

    #: True: only sessions seen within the idle timeout; False: only the others.
    active: bool | None = None
    agent: str | None = None
    user: str | None = None
    #: A model the session used (any of them).
    model: str | None = None
    #: The value of the team attribute (``TOKENTIDE_TEAM_ATTRIBUTE``, from ``OTEL_RESOURCE_ATTRIBUTES``).
    team: str | None = None
    status: str | None = None
    #: The session's project (``dashboard.projects``).
    project: str | None = None


class SessionQuery(SessionFilter):
    """The query string of ``GET /api/v1/sessions``: the filters and a page."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10**9)
    active: bool | None = Field(default=None, description="only active (true) or inactive (false)")
    status: str | None = Field(default=None, pattern="^(active|idle|ended)$")
    agent: str | None = Field(default=None, max_length=200)
    user: str | None = Field(default=None, max_length=500)
    model: str | None = Field(default=None, max_length=200, description="a model the session used")
    team: str | None = Field(default=None, max_length=500, description="the team attribute's value")
    project: str | None = Field(
        default=None, min_length=1, max_length=200, description="the session's project"
    )
    tenant: str | None = Field(
        default=None,
        max_length=63,
        description="the tenant to read (admin token only; a read key reads its own)",
    )


def sessions_where(f: SessionFilter, team_attribute: str) -> tuple[LiteralString, dict[str, Any]]:
    """The WHERE clause (tenant first) and its parameters for ``f``."""
    clauses: list[LiteralString] = ["tenant_id = %(tenant)s"]
    params: dict[str, Any] = {}
    if f.active is not None:
        params["idle_after"] = IDLE_AFTER
        clauses.append(
            "last_seen_at > now() - %(idle_after)s" if f.active else "last_seen_at <= now() - %(idle_after)s"
        )
    if f.status is not None:
        params["idle_after"], params["ended_after"] = IDLE_AFTER, ENDED_AFTER
        clauses.append(_STATUS[f.status])
    if f.agent is not None:
        params["agent"] = f.agent
        clauses.append("agent = %(agent)s")
    if f.user is not None:
        params["user"] = f.user
        clauses.append("user_id = %(user)s")
    if f.model is not None:
        params["model"] = f.model
        clauses.append("%(model)s = ANY (models)")
    if f.team is not None:
        params["team_key"], params["team"] = team_attribute, f.team
        clauses.append("attributes ->> %(team_key)s = %(team)s")
    if f.project is not None:
        params["project"] = f.project
        clauses.append(SESSIONS_IN_PROJECT)
    return " AND ".join(clauses), params


_STATUS: dict[str, LiteralString] = {
    "active": "last_seen_at > now() - %(idle_after)s",
    "idle": "last_seen_at <= now() - %(idle_after)s AND last_seen_at > now() - %(ended_after)s",
    "ended": "last_seen_at <= now() - %(ended_after)s",
}
STATUSES = tuple(_STATUS)


def list_sessions(
    f: SessionFilter, team_attribute: str
) -> tuple[LiteralString, LiteralString, dict[str, Any]]:
    """(page query, count query, parameters without tenant/limit/offset) for ``f``."""
    where, params = sessions_where(f, team_attribute)
    page = (
        SELECT_SESSION
        + " WHERE "
        + where
        + " ORDER BY last_seen_at DESC, session_id LIMIT %(limit)s OFFSET %(offset)s"
    )
    count = "SELECT count(*) FROM sessions WHERE " + where  # noqa: S608 (LiteralString parts; values are parameters)
    return page, count, params


class GroupBy(enum.StrEnum):
    TEAM = "team"
    USER = "user"
    MODEL = "model"
    AGENT = "agent"
    DAY = "day"
    #: Where the agent says (Claude Code): ``main``, ``subagent`` or ``auxiliary`` requests,
    #: each subagent type, skill and MCP server. Read from the usage events, not the rollups.
    QUERY_SOURCE = "query_source"
    AGENT_NAME = "agent_name"
    SKILL = "skill"
    MCP_SERVER = "mcp_server"
    #: The session's project (``dashboard.projects``: hook-reported, else a resource attribute).
    PROJECT = "project"


#: The groupings only the usage events know (rollups are per session, model and minute).
SOURCE_GROUPS = frozenset({GroupBy.QUERY_SOURCE, GroupBy.AGENT_NAME, GroupBy.SKILL, GroupBy.MCP_SERVER})


#: The SQL of each grouping's key over ``rollups r JOIN sessions s``.
_GROUP_KEY: dict[GroupBy, LiteralString] = {
    GroupBy.TEAM: "s.attributes ->> %(team_key)s",
    GroupBy.USER: "r.user_id",
    GroupBy.MODEL: "r.model",
    GroupBy.AGENT: "r.agent",
    # A UTC day, as date_bin would give on plain PostgreSQL and TimescaleDB alike.
    GroupBy.DAY: (
        "to_char(date_bin('1 day', r.at, TIMESTAMPTZ '2000-01-03 00:00:00+00')"
        " AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    ),
    GroupBy.QUERY_SOURCE: "r.query_source",
    GroupBy.AGENT_NAME: "r.agent_name",
    GroupBy.SKILL: "r.skill",
    GroupBy.MCP_SERVER: "r.mcp_server",
    GroupBy.PROJECT: PROJECT_SQL,
}

#: ``[from, to)`` from hourly rollups for the whole hours inside it and per-minute rollups for
#: the partial hours at its edges (``%(from_hour)s`` = ``from`` rounded up to the hour,
#: ``%(to_hour)s`` = ``to`` rounded down; the usage route computes both): a 30-day window reads
#: about 1/60 of the rows the minutes alone would.
_ROLLUPS_IN_WINDOW: LiteralString = """
    SELECT tenant_id, session_id, model, user_id, agent, input_tokens, output_tokens,
           cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd, requests, errors,
           hour AS at
      FROM rollups_hour
     WHERE tenant_id = %(tenant)s AND hour >= %(from_hour)s AND hour < %(to_hour)s
    UNION ALL
    SELECT tenant_id, session_id, model, user_id, agent, input_tokens, output_tokens,
           cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd, requests, errors,
           minute AS at
      FROM rollups_minute
     WHERE tenant_id = %(tenant)s AND minute >= %(from)s AND minute < LEAST(%(from_hour)s, %(to)s)
    UNION ALL
    SELECT tenant_id, session_id, model, user_id, agent, input_tokens, output_tokens,
           cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd, requests, errors,
           minute AS at
      FROM rollups_minute
     WHERE tenant_id = %(tenant)s AND minute >= GREATEST(%(to_hour)s, %(from_hour)s) AND minute < %(to)s
"""


#: The usage and API error events in ``[%(from)s, %(to)s)`` in the rollups' shape, with their
#: source. ``query_source`` is classified as streams.state.source_of does for the session's
#: ``by_source`` (tests/integration/test_usage_by_source.py holds the two together).
_EVENTS_IN_WINDOW: LiteralString = """
    SELECT tenant_id, session_id, model, user_id, agent,
           coalesce(input_tokens, 0) AS input_tokens, coalesce(output_tokens, 0) AS output_tokens,
           coalesce(cache_read_tokens, 0) AS cache_read_tokens,
           coalesce(cache_creation_tokens, 0) AS cache_creation_tokens,
           coalesce(reasoning_tokens, 0) AS reasoning_tokens, coalesce(cost_usd, 0) AS cost_usd,
           (kind = 'usage')::int AS requests, (kind = 'api_error')::int AS errors, ts AS at,
           CASE WHEN attributes ->> 'agent.name' IS NOT NULL OR lower(query_source) = 'subagent'
                     OR lower(query_source) LIKE 'agent%%' THEN 'subagent'
                WHEN main_context IS NOT FALSE THEN 'main'
                ELSE 'auxiliary' END AS query_source,
           attributes ->> 'agent.name' AS agent_name,
           attributes ->> 'skill.name' AS skill,
           attributes ->> 'mcp_server.name' AS mcp_server
      FROM events
     WHERE tenant_id = %(tenant)s AND ts >= %(from)s AND ts < %(to)s
       AND kind IN ('usage', 'api_error')
"""


class Bucket(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"


#: The UTC hour or day of a rollup row (``date_bin``, the same on both database layouts).
_BUCKET: dict[Bucket | None, LiteralString] = {
    None: "NULL::timestamptz",
    Bucket.HOUR: "date_bin('1 hour', r.at, TIMESTAMPTZ '2000-01-03 00:00:00+00')",
    Bucket.DAY: "date_bin('1 day', r.at, TIMESTAMPTZ '2000-01-03 00:00:00+00')",
}


def usage(group_by: GroupBy, bucket: Bucket | None = None) -> LiteralString:
    """Tokens by type, cost, requests and errors per group over ``[%(from)s, %(to)s)``; with
    ``bucket``, per group and UTC hour or day (a time series per group). The source groupings
    read the usage events (kept as long as the raw retention says), the others the rollups."""
    key = _GROUP_KEY[group_by]
    rows = _EVENTS_IN_WINDOW if group_by in SOURCE_GROUPS else _ROLLUPS_IN_WINDOW
    # LiteralString parts from closed sets; values are parameters.
    return (
        "SELECT "  # noqa: S608
        + _BUCKET[bucket]
        + " AS start, "
        + key
        + """ AS key,
               sum(r.input_tokens)::bigint AS input_tokens,
               sum(r.output_tokens)::bigint AS output_tokens,
               sum(r.cache_read_tokens)::bigint AS cache_read_tokens,
               sum(r.cache_creation_tokens)::bigint AS cache_creation_tokens,
               sum(r.reasoning_tokens)::bigint AS reasoning_tokens,
               sum(r.cost_usd) AS cost_usd,
               sum(r.requests)::bigint AS requests,
               sum(r.errors)::bigint AS errors,
               count(DISTINCT r.session_id) AS sessions
          FROM ("""
        + rows
        + """) r
          JOIN sessions s ON s.tenant_id = r.tenant_id AND s.session_id = r.session_id
         """
        + (PROJECT_JOIN if group_by is GroupBy.PROJECT else "")
        + """
         GROUP BY 1, 2
         ORDER BY start, cost_usd DESC, key"""
    )


def hour_bounds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``start`` rounded up and ``end`` rounded down to whole hours (UTC offsets are whole hours
    or the rounding is done in UTC anyway: these are instants)."""
    floor = end.replace(minute=0, second=0, microsecond=0)
    ceil = start.replace(minute=0, second=0, microsecond=0)
    if ceil < start:
        ceil += timedelta(hours=1)
    return ceil, floor


class UsageTokens(BaseModel):
    input: int
    output: int
    cache_read: int
    cache_creation: int
    reasoning: int


class UsageGroup(BaseModel):
    #: The group's team, user, model, agent, day (YYYY-MM-DD, UTC), query source, subagent,
    #: skill, MCP server or project; null when unknown (or, for a source grouping, not said).
    key: str | None
    #: With ``bucket``: the UTC hour or day this row sums (a series per key).
    start: Timestamp | None = None
    tokens: UsageTokens
    cost_usd: float
    requests: int
    errors: int
    sessions: int


class UsageOut(BaseModel):
    group_by: GroupBy
    bucket: Bucket | None = None
    start: Timestamp
    end: Timestamp
    groups: list[UsageGroup]


def usage_group(row: dict[str, Any]) -> UsageGroup:
    cost: Decimal = row["cost_usd"]
    return UsageGroup(
        key=row["key"],
        start=row["start"],
        tokens=UsageTokens(
            input=row["input_tokens"],
            output=row["output_tokens"],
            cache_read=row["cache_read_tokens"],
            cache_creation=row["cache_creation_tokens"],
            reasoning=row["reasoning_tokens"],
        ),
        cost_usd=float(cost),
        requests=row["requests"],
        errors=row["errors"],
        sessions=row["sessions"],
    )
