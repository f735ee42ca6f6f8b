"""SQL of the dashboard API, and rows -> API shapes (pure)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

_SELECT_SESSION = """
    SELECT session_id, agent, service_name, user_id, started_at, last_seen_at,
           input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
           reasoning_tokens, cost_usd, api_requests, api_errors, events, models,
           context_tokens, context_window, context_model
      FROM sessions
"""
GET_SESSION = _SELECT_SESSION + "WHERE tenant_id = %s AND session_id = %s"
LIST_SESSIONS = (
    _SELECT_SESSION + "WHERE tenant_id = %s ORDER BY last_seen_at DESC, session_id LIMIT %s OFFSET %s"
)
COUNT_SESSIONS = "SELECT count(*) FROM sessions WHERE tenant_id = %s"


class TokensOut(BaseModel):
    input: int
    output: int
    cache_read: int
    cache_creation: int
    reasoning: int


class ContextOut(BaseModel):
    tokens: int
    limit: int
    ratio: float
    model: str | None


class SessionOut(BaseModel):
    session_id: str
    agent: str
    service_name: str | None
    user_id: str | None
    tokens: TokensOut
    cost_usd: float
    api_requests: int
    api_errors: int
    events: int
    models: list[str]
    context: ContextOut
    started_at: datetime
    last_seen_at: datetime


class SessionPage(BaseModel):
    sessions: list[SessionOut]
    total: int
    limit: int
    offset: int


def session_out(row: dict[str, Any]) -> SessionOut:
    cost: Decimal = row["cost_usd"]
    window = row["context_window"]
    return SessionOut(
        session_id=row["session_id"],
        agent=row["agent"],
        service_name=row["service_name"],
        user_id=row["user_id"],
        tokens=TokensOut(
            input=row["input_tokens"],
            output=row["output_tokens"],
            cache_read=row["cache_read_tokens"],
            cache_creation=row["cache_creation_tokens"],
            reasoning=row["reasoning_tokens"],
        ),
        cost_usd=float(cost),
        api_requests=row["api_requests"],
        api_errors=row["api_errors"],
        events=row["events"],
        models=list(row["models"]),
        context=ContextOut(
            tokens=row["context_tokens"],
            limit=window,
            ratio=round(row["context_tokens"] / window, 6) if window else 0.0,
            model=row["context_model"],
        ),
        started_at=row["started_at"],
        last_seen_at=row["last_seen_at"],
    )
