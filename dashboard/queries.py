"""SQL of the dashboard API, and rows -> API shapes (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from dashboard.plans import PlanOut, WorkspaceOut
from dashboard.session_forecast import SessionForecastOut
from dashboard.timestamps import Timestamp

SESSION_COLUMNS = """
           session_id, agent, service_name, user_id, started_at, last_seen_at,
           input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
           reasoning_tokens, cost_usd, totals_source, api_requests, api_errors,
           retries_exhausted, prompts, tool_calls, tool_failures, events, models, attributes,
           lines_added, lines_removed, commits, pull_requests, active_time_s,
           context_tokens, context_window, context_model, context_growth,
           context_requests_left, context_minutes_left, compactions,
           cost_source, unpriced_requests, cache_creation_1h_tokens,
           context_window_source, context_auto_compact_at, by_source
"""
SELECT_SESSION = "SELECT" + SESSION_COLUMNS + "FROM sessions\n"
GET_SESSION = SELECT_SESSION + "WHERE tenant_id = %s AND session_id = %s"
SESSION_SIGNALS = """
    SELECT kind, ts, ratio, tokens, context_window, requests_left, minutes_left, message
      FROM signals WHERE tenant_id = %s AND session_id = %s ORDER BY ts DESC, signal_id LIMIT 50
"""

#: A session with no activity for this long is idle, and after ENDED_AFTER ended.
IDLE_AFTER = timedelta(minutes=5)
ENDED_AFTER = timedelta(minutes=30)


class TokensOut(BaseModel):
    input: int
    output: int
    cache_read: int
    cache_creation: int
    reasoning: int
    #: The part of ``cache_creation`` written with a one-hour lifetime (like ``reasoning`` is
    #: part of ``output``).
    cache_creation_1h: int


class ContextOut(BaseModel):
    tokens: int
    limit: int
    ratio: float
    model: str | None
    growth_per_request: float | None
    predicted_requests_left: float | None
    predicted_minutes_left: float | None
    compactions: int
    #: Where ``limit`` comes from: ``agent`` (the agent said so), ``long_context`` (a ``[1m]``
    #: variant was seen), ``model_table``, ``default``; null for rows before migration 0016.
    limit_source: str | None = None
    #: Where the agent compacts by itself (its last automatic compaction's size): the point
    #: the predictions aim at; null until one was seen.
    auto_compact_at: int | None = None


class SourceOut(BaseModel):
    """Usage of one source of the session: ``main``, a ``subagent`` (``agent_name``) or
    ``auxiliary`` requests, by skill and MCP server where the agent says."""

    query_source: str
    agent_name: str | None
    skill: str | None
    mcp_server: str | None
    tokens: TokensOut
    #: None when no request of the source has a known cost (as the session's ``cost_usd``).
    cost_usd: float | None
    requests: int
    #: Requests whose cost is unknown: when > 0, a ``cost_usd`` given is a lower bound.
    unpriced_requests: int = 0


class SignalOut(BaseModel):
    kind: str
    at: Timestamp
    ratio: float
    tokens: int
    limit: int
    requests_left: float | None
    minutes_left: float | None
    message: str


class SessionOut(BaseModel):
    session_id: str
    agent: str
    service_name: str | None
    user_id: str | None
    attributes: dict[str, str]
    status: str
    tokens: TokensOut
    #: The sum of the known costs; null when no request's cost is known (``cost_source``
    #: ``unknown``), never a made-up zero.
    cost_usd: float | None
    #: ``agent``, ``price_table``, ``mixed``, ``unknown``; null before the first request (and
    #: for sessions last written before migration 0015).
    cost_source: str | None
    #: Requests whose cost is unknown: when > 0, ``cost_usd`` is a lower bound.
    unpriced_requests: int
    totals_source: str
    api_requests: int
    api_errors: int
    retries_exhausted: int
    prompts: int
    tool_calls: int
    tool_failures: int
    events: int
    lines_added: int
    lines_removed: int
    commits: int
    pull_requests: int
    active_time_s: float
    models: list[str]
    context: ContextOut
    #: Usage by source, the costliest first; they sum to the session's event totals.
    by_source: list[SourceOut] = []
    started_at: Timestamp
    last_seen_at: Timestamp
    signals: list[SignalOut] | None = None
    #: Expected cost at the end of a session that has not ended (``dashboard.session_forecast``).
    forecast: SessionForecastOut | None = None
    #: The session's project (``dashboard.projects``: hook-reported, else the ``project`` or
    #: ``service.namespace`` resource attribute); null when none is known.
    project: str | None = None
    #: Where it works, as the Claude Code hook reported it; null when it did not.
    workspace: WorkspaceOut | None = None
    #: Its latest plan (the agent's todo list, ``dashboard.plans``); null when none was reported.
    plan: PlanOut | None = None


class SessionPage(BaseModel):
    sessions: list[SessionOut]
    total: int
    limit: int
    offset: int


def status(last_seen_at: datetime, now: datetime) -> str:
    """``active``, ``idle`` (no activity for 5 min) or ``ended`` (30 min)."""
    quiet = now - last_seen_at
    return "ended" if quiet >= ENDED_AFTER else "idle" if quiet >= IDLE_AFTER else "active"


def signal_out(row: dict[str, Any]) -> SignalOut:
    return SignalOut(
        kind=row["kind"],
        at=row["ts"],
        ratio=row["ratio"],
        tokens=row["tokens"],
        limit=row["context_window"],
        requests_left=row["requests_left"],
        minutes_left=row["minutes_left"],
        message=row["message"],
    )


def _source_cost(source: dict[str, Any]) -> float | None:
    """A source's cost in USD; None when every request of it was unpriced (sources stored
    before ``unpriced_requests`` existed have none)."""
    requests, unpriced = source.get("requests", 0), source.get("unpriced_requests", 0)
    if requests and unpriced >= requests:
        return None
    return float(source.get("cost_nanos", 0)) / 1e9


def sources_out(stored: Any) -> list[SourceOut]:
    """``sessions.by_source`` (SessionState.by_source as JSON), the costliest first."""
    out = []
    for source in stored or []:
        tokens = source.get("tokens") or {}
        out.append(
            SourceOut(
                query_source=str(source.get("query_source")),
                agent_name=source.get("agent_name"),
                skill=source.get("skill"),
                mcp_server=source.get("mcp_server"),
                tokens=TokensOut(
                    input=tokens.get("input", 0),
                    output=tokens.get("output", 0),
                    cache_read=tokens.get("cache_read", 0),
                    cache_creation=tokens.get("cache_creation", 0),
                    reasoning=tokens.get("reasoning", 0),
                    cache_creation_1h=tokens.get("cache_creation_1h", 0),
                ),
                cost_usd=_source_cost(source),
                requests=source.get("requests", 0),
                unpriced_requests=source.get("unpriced_requests", 0),
            )
        )
    out.sort(key=lambda s: (-(s.cost_usd or 0.0), -s.requests))
    return out


def session_out(row: dict[str, Any], now: datetime) -> SessionOut:
    cost: Decimal = row["cost_usd"]
    window = row["context_window"]
    return SessionOut(
        session_id=row["session_id"],
        agent=row["agent"],
        service_name=row["service_name"],
        user_id=row["user_id"],
        attributes=row["attributes"] or {},
        status=status(row["last_seen_at"], now),
        tokens=TokensOut(
            input=row["input_tokens"],
            output=row["output_tokens"],
            cache_read=row["cache_read_tokens"],
            cache_creation=row["cache_creation_tokens"],
            reasoning=row["reasoning_tokens"],
            cache_creation_1h=row["cache_creation_1h_tokens"],
        ),
        cost_usd=None if row["cost_source"] == "unknown" else float(cost),
        cost_source=row["cost_source"],
        unpriced_requests=row["unpriced_requests"],
        totals_source=row["totals_source"],
        api_requests=row["api_requests"],
        api_errors=row["api_errors"],
        retries_exhausted=row["retries_exhausted"],
        prompts=row["prompts"],
        tool_calls=row["tool_calls"],
        tool_failures=row["tool_failures"],
        events=row["events"],
        lines_added=row["lines_added"],
        lines_removed=row["lines_removed"],
        commits=row["commits"],
        pull_requests=row["pull_requests"],
        active_time_s=row["active_time_s"],
        models=list(row["models"]),
        context=ContextOut(
            tokens=row["context_tokens"],
            limit=window,
            ratio=round(row["context_tokens"] / window, 6) if window else 0.0,
            model=row["context_model"],
            growth_per_request=row["context_growth"],
            predicted_requests_left=row["context_requests_left"],
            predicted_minutes_left=row["context_minutes_left"],
            compactions=row["compactions"],
            limit_source=row["context_window_source"],
            auto_compact_at=row["context_auto_compact_at"],
        ),
        by_source=sources_out(row["by_source"]),
        started_at=row["started_at"],
        last_seen_at=row["last_seen_at"],
    )
