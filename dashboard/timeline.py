"""``GET /api/v1/sessions/{session_id}/timeline``: one session's events and signals, in order.

Prompts, API requests, API errors and exhausted retries, tool decisions and results,
compactions, the agent's other events and the session's context signals, merged by time; the
most recent ``limit`` of them, oldest first. Main-conversation API requests carry their context
size (``input + cache_read + cache_creation``, README "How the numbers are made"): the web UI's
"context over time" chart.

The SQL and the rows -> API shapes below are pure; :func:`add_timeline_route` wires them to
the app. Every statement starts from the caller's tenant.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, HTTPException, Query
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from dashboard.plans import PLAN_HISTORY, PlanOut, plan_line, plan_out
from dashboard.timestamps import Timestamp
from tokentide.records import EventKind

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000

SESSION_EXISTS = "SELECT 1 FROM sessions WHERE tenant_id = %(tenant)s AND session_id = %(session)s"
#: The session's most recent events, newest first (served by events_by_session_time, 0007).
#: Only the attributes a summary needs leave the database, never the whole JSONB.
TIMELINE_EVENTS = """
    SELECT ts, seq, event_id, name, kind, main_context, model, query_source, duration_ms,
           input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd,
           coalesce(attributes ->> 'tool_name', attributes ->> 'function_name',
                    attributes ->> 'gen_ai.tool.name') AS tool_name,
           attributes ->> 'success' AS success,
           attributes ->> 'decision' AS decision,
           coalesce(attributes ->> 'error', attributes ->> 'error.message',
                    attributes ->> 'error_message') AS error,
           coalesce(attributes ->> 'status_code', attributes ->> 'http.response.status_code') AS status_code,
           attributes ->> 'total_attempts' AS attempts,
           attributes ->> 'prompt_length' AS prompt_length,
           coalesce(attributes ->> 'post_tokens', attributes ->> 'tokens_after') AS tokens_after,
           attributes ->> 'pre_tokens' AS tokens_before,
           attributes ->> 'trigger' AS trigger,
           jsonb_strip_nulls(jsonb_build_object(
               'agent_type', attributes -> 'agent_type',
               'agent.name', attributes -> 'agent.name',
               'total_tokens', attributes -> 'total_tokens',
               'total_tool_uses', attributes -> 'total_tool_uses',
               'duration_ms', attributes -> 'duration_ms',
               'is_async', attributes -> 'is_async',
               'response_length', attributes -> 'response_length',
               'category', attributes -> 'category',
               'hook_event', attributes -> 'hook_event',
               'hook_name', attributes -> 'hook_name',
               'num_hooks', attributes -> 'num_hooks',
               'num_success', attributes -> 'num_success',
               'status', attributes -> 'status',
               'transport_type', attributes -> 'transport_type',
               'server_scope', attributes -> 'server_scope',
               'mcp_server.name', attributes -> 'mcp_server.name',
               'plugin_id', attributes -> 'plugin_id',
               'plugin.name', attributes -> 'plugin.name',
               'plugin_name', attributes -> 'plugin_name',
               'skill.name', attributes -> 'skill.name',
               'skill_name', attributes -> 'skill_name',
               'from_mode', attributes -> 'from_mode',
               'to_mode', attributes -> 'to_mode',
               'action', attributes -> 'action',
               'auth_method', attributes -> 'auth_method',
               'error_name', attributes -> 'error_name',
               'error_code', attributes -> 'error_code',
               'event.kind', attributes -> 'event.kind',
               'provider_name', attributes -> 'provider_name',
               'approval_policy', attributes -> 'approval_policy',
               'operation', attributes -> 'operation',
               'lines', attributes -> 'lines',
               'attempt', attributes -> 'attempt',
               'source', attributes -> 'source',
               'deleted', attributes -> 'deleted',
               'phase', attributes -> 'phase',
               'command_name', attributes -> 'command_name',
               'context_window.size', attributes -> 'context_window.size',
               'context_window.used_percentage', attributes -> 'context_window.used_percentage',
               'http.response.status_code', attributes -> 'http.response.status_code'
           )) AS detail
      FROM events
     WHERE tenant_id = %(tenant)s AND session_id = %(session)s
     ORDER BY ts DESC, seq DESC NULLS LAST, event_id DESC
     LIMIT %(limit)s
"""
TIMELINE_SIGNALS = """
    SELECT ts, signal_id, kind, ratio, tokens, context_window, message
      FROM signals
     WHERE tenant_id = %(tenant)s AND session_id = %(session)s
     ORDER BY ts DESC, signal_id DESC
     LIMIT %(limit)s
"""


class TimelineKind(enum.StrEnum):
    PROMPT = "prompt"
    API_REQUEST = "api_request"
    API_ERROR = "api_error"
    RETRIES_EXHAUSTED = "retries_exhausted"
    TOOL_RESULT = "tool_result"
    TOOL_DECISION = "tool_decision"
    COMPACTION = "compaction"
    CONTEXT_WINDOW = "context_window"
    SIGNAL = "signal"
    #: A new version of the session's plan (its todo list, reported by the hook).
    PLAN = "plan"
    #: The agents' other documented events (catalogue below): recognised, never counted.
    RESPONSE = "response"
    SUBAGENT = "subagent"
    REFUSAL = "refusal"
    HOOK = "hook"
    MCP = "mcp"
    PLUGIN = "plugin"
    SKILL = "skill"
    PERMISSION = "permission"
    AUTH = "auth"
    CONFIG = "config"
    SESSION = "session"
    NETWORK = "network"
    FILE = "file"
    ERROR = "error"
    HOUSEKEEPING = "housekeeping"
    OTHER = "other"


#: The canonical event kind (``events.kind``) -> the timeline's.
KINDS = {
    EventKind.USAGE: TimelineKind.API_REQUEST,
    EventKind.API_ERROR: TimelineKind.API_ERROR,
    EventKind.RETRIES_EXHAUSTED: TimelineKind.RETRIES_EXHAUSTED,
    EventKind.PROMPT: TimelineKind.PROMPT,
    EventKind.TOOL_RESULT: TimelineKind.TOOL_RESULT,
    EventKind.TOOL_DECISION: TimelineKind.TOOL_DECISION,
    EventKind.COMPACTION: TimelineKind.COMPACTION,
    EventKind.CONTEXT_WINDOW: TimelineKind.CONTEXT_WINDOW,
    EventKind.OTHER: TimelineKind.OTHER,
}
#: Rows written before migration 0007 have no kind: the agents' event names (without their
#: ``gemini_cli.``/``codex.`` prefix) that say it.
KINDS_BY_NAME = {
    "api_request": TimelineKind.API_REQUEST,
    "api_response": TimelineKind.API_REQUEST,
    "api_error": TimelineKind.API_ERROR,
    "api_retries_exhausted": TimelineKind.RETRIES_EXHAUSTED,
    "user_prompt": TimelineKind.PROMPT,
    "tool_result": TimelineKind.TOOL_RESULT,
    "tool_call": TimelineKind.TOOL_RESULT,
    "tool_decision": TimelineKind.TOOL_DECISION,
    "compaction": TimelineKind.COMPACTION,
    "chat_compression": TimelineKind.COMPACTION,
}


#: Attributes the catalogue's summaries read: :data:`TIMELINE_EVENTS` selects exactly these
#: (a unit test keeps the two in step), never the whole JSONB.
DETAIL_KEYS = (
    "agent_type",
    "agent.name",
    "total_tokens",
    "total_tool_uses",
    "duration_ms",
    "is_async",
    "response_length",
    "category",
    "hook_event",
    "hook_name",
    "num_hooks",
    "num_success",
    "status",
    "transport_type",
    "server_scope",
    "mcp_server.name",
    "plugin_id",
    "plugin.name",
    "plugin_name",
    "skill.name",
    "skill_name",
    "from_mode",
    "to_mode",
    "action",
    "auth_method",
    "error_name",
    "error_code",
    "event.kind",
    "provider_name",
    "approval_policy",
    "operation",
    "lines",
    "attempt",
    "source",
    "deleted",
    "phase",
    "command_name",
    "context_window.size",
    "context_window.used_percentage",
    "http.response.status_code",
)


def _detail(row: dict[str, Any], *keys: str) -> str | None:
    """The first of ``keys`` that the event carries, as text."""
    detail = row.get("detail") or {}
    for key in keys:
        value = detail.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _joined(*parts: str | None) -> str:
    return " · ".join(p for p in parts if p)


def _subagent(row: dict[str, Any]) -> str:
    tokens = _int(_detail(row, "total_tokens"))
    tools = _int(_detail(row, "total_tool_uses"))
    took = _int(_detail(row, "duration_ms"))
    return _joined(
        " ".join(filter(None, ("subagent", _detail(row, "agent_type", "agent.name"), "finished"))),
        f"{tokens:,} tokens in its last request (its own context, not the session's)" if tokens else None,
        f"{tools} tool uses" if tools is not None else None,
        f"{took / 1000:.1f} s" if took else None,
    )


def _hook(row: dict[str, Any]) -> str:
    name = str(row["name"]).rsplit(".", 1)[-1]
    what = {"hook_registered": "registered", "hook_execution_start": "started"}.get(name, "ran")
    hooks = _int(_detail(row, "num_hooks"))
    return _joined(
        f"{_detail(row, 'hook_event') or 'hook'} hook {what}",
        _detail(row, "hook_name"),
        f"{hooks} hooks" if hooks is not None and hooks != 1 else None,
    )


#: The documented events of the three agents that carry no usage (agent-telemetry.md sections
#: 2-4 and Claude Code 2.1.33x's newer ones), by name without the agent's prefix: their kind and a
#: readable summary. Anything else stays "other", its name as summary.
CATALOGUE: dict[str, tuple[TimelineKind, Callable[[dict[str, Any]], str]]] = {
    "assistant_response": (
        TimelineKind.RESPONSE,
        lambda r: _joined(
            "response", _detail(r, "response_length") and f"{_detail(r, 'response_length')} characters"
        ),
    ),
    "agent_response": (TimelineKind.RESPONSE, lambda r: "response"),
    "subagent_completed": (TimelineKind.SUBAGENT, _subagent),
    "api_refusal": (
        TimelineKind.REFUSAL,
        lambda r: _joined(f"{r['model'] or 'model'} refused to answer", _detail(r, "category")),
    ),
    "hook_registered": (TimelineKind.HOOK, _hook),
    "hook_execution_start": (TimelineKind.HOOK, _hook),
    "hook_execution_complete": (TimelineKind.HOOK, _hook),
    "hook_plugin_metrics": (TimelineKind.HOOK, lambda r: "hook plugin metrics"),
    "hook_call": (TimelineKind.HOOK, _hook),
    "mcp_server_connection": (
        TimelineKind.MCP,
        lambda r: _joined(
            " ".join(filter(None, ("MCP server", _detail(r, "mcp_server.name"), _detail(r, "status")))),
            _detail(r, "transport_type"),
            _detail(r, "server_scope"),
        ),
    ),
    "plugin_installed": (
        TimelineKind.PLUGIN,
        lambda r: _joined("plugin installed", _detail(r, "plugin.name", "plugin_name", "plugin_id")),
    ),
    "plugin_loaded": (
        TimelineKind.PLUGIN,
        lambda r: _joined("plugin loaded", _detail(r, "plugin.name", "plugin_name", "plugin_id")),
    ),
    "skill_activated": (
        TimelineKind.SKILL,
        lambda r: _joined("skill activated", _detail(r, "skill.name", "skill_name")),
    ),
    "skill_invocation": (
        TimelineKind.SKILL,
        lambda r: _joined("skill used", _detail(r, "skill.name", "skill_name")),
    ),
    "permission_mode_changed": (
        TimelineKind.PERMISSION,
        lambda r: f"permission mode {_detail(r, 'from_mode') or '?'} -> {_detail(r, 'to_mode') or '?'}",
    ),
    "plan.approval_mode_duration": (TimelineKind.PERMISSION, lambda r: "plan approval mode"),
    "auth": (
        TimelineKind.AUTH,
        lambda r: _joined(
            " ".join(filter(None, ("authentication", _detail(r, "action")))),
            _detail(r, "auth_method"),
            _detail(r, "status"),
        ),
    ),
    "managed_settings_resolved": (TimelineKind.CONFIG, lambda r: "managed settings resolved"),
    "config": (TimelineKind.CONFIG, lambda r: "configuration"),
    "model_routing": (TimelineKind.CONFIG, lambda r: _joined("model routing", r["model"])),
    "conversation_starts": (
        TimelineKind.SESSION,
        lambda r: _joined("conversation started", _detail(r, "provider_name"), _detail(r, "approval_policy")),
    ),
    "startup_stats": (TimelineKind.SESSION, lambda r: "startup"),
    "startup_phase": (TimelineKind.SESSION, lambda r: _joined("startup", _detail(r, "phase"))),
    "conversation_finished": (TimelineKind.SESSION, lambda r: "conversation finished"),
    "slash_command": (TimelineKind.SESSION, lambda r: _joined("slash command", _detail(r, "command_name"))),
    "at_mention": (TimelineKind.SESSION, lambda r: "@-mention"),
    "feedback_survey": (TimelineKind.SESSION, lambda r: "feedback survey"),
    "turn_ttft": (
        TimelineKind.NETWORK,
        lambda r: _joined(
            "time to first token", _detail(r, "duration_ms") and f"{_detail(r, 'duration_ms')} ms"
        ),
    ),
    "websocket_connect": (TimelineKind.NETWORK, lambda r: _joined("websocket connect", _detail(r, "status"))),
    "network_retry_attempt": (
        TimelineKind.NETWORK,
        lambda r: _joined("network retry", _detail(r, "attempt") and f"attempt {_detail(r, 'attempt')}"),
    ),
    "flash_fallback": (TimelineKind.NETWORK, lambda r: "fell back to a flash model"),
    # Codex's HTTP call to the model API (its usage is in the sse_event with tokens).
    "api_request": (
        TimelineKind.NETWORK,
        lambda r: _joined(
            "API call",
            _detail(r, "http.response.status_code") and f"status {_detail(r, 'http.response.status_code')}",
            _detail(r, "attempt") and f"attempt {_detail(r, 'attempt')}",
            _detail(r, "duration_ms") and f"{_detail(r, 'duration_ms')} ms",
        ),
    ),
    "sse_event": (TimelineKind.NETWORK, lambda r: _joined("stream event", _detail(r, "event.kind"))),
    "responses.reasoning_replay": (TimelineKind.NETWORK, lambda r: "reasoning replayed"),
    "file_operation": (
        TimelineKind.FILE,
        lambda r: _joined(
            "file", _detail(r, "operation"), _detail(r, "lines") and f"{_detail(r, 'lines')} lines"
        ),
    ),
    "ripgrep_fallback": (TimelineKind.FILE, lambda r: "ripgrep unavailable: fell back"),
    "tool_output_truncated": (TimelineKind.FILE, lambda r: "tool output truncated"),
    "malformed_json_response": (TimelineKind.ERROR, lambda r: "malformed JSON response"),
    "internal_error": (
        TimelineKind.ERROR,
        lambda r: _joined("internal error", _detail(r, "error_name"), _detail(r, "error_code")),
    ),
    "retention_sweep": (
        TimelineKind.HOUSEKEEPING,
        lambda r: _joined("retention sweep", _detail(r, "deleted") and f"{_detail(r, 'deleted')} removed"),
    ),
}


class TimelineItem(BaseModel):
    at: Timestamp
    kind: TimelineKind
    #: The agent's event name (``api_request``, ``gemini_cli.tool_call``, ...) or the signal's
    #: kind (``context_warning``, ...).
    name: str
    summary: str
    #: Main-conversation API requests only: input + cache_read + cache_creation tokens.
    context_tokens: int | None = None
    model: str | None = None
    cost_usd: float | None = None
    duration_ms: float | None = None
    #: Plan items only: the plan version as it was then (items, counts, the item in progress).
    plan: PlanOut | None = None


class TimelineOut(BaseModel):
    session_id: str
    #: Oldest first; the most recent ``limit`` items of the session.
    items: list[TimelineItem]


def _short_name(row: dict[str, Any]) -> str:
    """The agent's event name without its agent prefix (``gemini_cli.``, ``codex.``, ...)."""
    name = str(row["name"])
    for prefix in ("claude_code.", "gemini_cli.", "codex."):
        if name.startswith(prefix):
            return name.removeprefix(prefix)
    return name


def kind_of(row: dict[str, Any]) -> TimelineKind:
    """The timeline kind of an events row: its canonical kind (a documented event without usage
    by the catalogue), else (older rows) its name."""
    kind = row.get("kind")
    if kind == EventKind.OTHER:
        known = CATALOGUE.get(_short_name(row))
        return known[0] if known is not None else TimelineKind.OTHER
    if kind in set(EventKind):
        return KINDS[EventKind(kind)]
    if row.get("input_tokens") is not None:
        return TimelineKind.API_REQUEST
    by_name = KINDS_BY_NAME.get(str(row["name"]).rsplit(".", 1)[-1])
    if by_name is not None:
        return by_name
    known = CATALOGUE.get(_short_name(row))
    return known[0] if known is not None else TimelineKind.OTHER


def _truth(value: str | None) -> bool | None:
    text = (value or "").strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def _usd(cost: float) -> str:
    return f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(float(value))
    except ValueError:
        return None


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _request_summary(row: dict[str, Any], cost: float | None) -> str:
    parts = [row["model"] or "unknown model"]
    tokens = [
        (row["input_tokens"], "in"),
        (row["output_tokens"], "out"),
        (row["cache_read_tokens"], "cache read"),
        (row["cache_creation_tokens"], "cache write"),
    ]
    parts += [f"{n:,} {label}" for n, label in tokens if n]
    if cost is not None:
        parts.append(_usd(cost))
    if row["main_context"] is False and row["query_source"]:
        parts.append(f"side request: {row['query_source']}")
    return " · ".join(parts)


def _error_summary(row: dict[str, Any], prefix: str) -> str:
    error = _short(row["error"]) if row["error"] else "error"
    status = f" ({row['status_code']})" if row["status_code"] else ""
    model = f"{row['model']}: " if row["model"] and not prefix else ""
    return f"{prefix}{model}{error}{status}"


def _api_request(row: dict[str, Any]) -> str:
    cost = row["cost_usd"]
    return _request_summary(row, None if cost is None else float(cost))


def _retries_exhausted(row: dict[str, Any]) -> str:
    attempts = _int(row["attempts"])
    return _error_summary(row, f"gave up after {attempts} attempts: " if attempts else "gave up: ")


def _prompt(row: dict[str, Any]) -> str:
    length = _int(row["prompt_length"])
    return f"prompt ({length:,} characters)" if length is not None else "prompt"


def _tool_result(row: dict[str, Any]) -> str:
    success = _truth(row["success"])
    outcome = "" if success is None else " succeeded" if success else " failed"
    took = f" in {row['duration_ms']:,.0f} ms" if row["duration_ms"] is not None else ""
    return f"{row['tool_name'] or 'tool'}{outcome}{took}"


def _tool_decision(row: dict[str, Any]) -> str:
    tool = row["tool_name"] or "tool"
    return f"{tool}: {row['decision']}" if row["decision"] else tool


def _compaction(row: dict[str, Any]) -> str:
    after, before = _int(row.get("tokens_after")), _int(row.get("tokens_before"))
    trigger = row.get("trigger")
    how = f"compacted ({trigger})" if trigger in ("auto", "manual") else "compacted"
    if before is not None and after is not None:
        return f"{how} from {before:,} to {after:,} tokens"
    return f"{how} to {after:,} tokens" if after is not None else how


def _context_window(row: dict[str, Any]) -> str:
    size = _int(_detail(row, "context_window.size"))
    used = _detail(row, "context_window.used_percentage")
    return _joined(
        f"the agent reports a {size:,}-token window" if size else "the agent reports its window",
        f"{float(used):.0f}% used" if used is not None and used.replace(".", "", 1).isdigit() else None,
    )


_SUMMARIES: dict[TimelineKind, Callable[[dict[str, Any]], str]] = {
    TimelineKind.CONTEXT_WINDOW: _context_window,
    TimelineKind.API_REQUEST: _api_request,
    TimelineKind.API_ERROR: lambda row: _error_summary(row, ""),
    TimelineKind.RETRIES_EXHAUSTED: _retries_exhausted,
    TimelineKind.PROMPT: _prompt,
    TimelineKind.TOOL_RESULT: _tool_result,
    TimelineKind.TOOL_DECISION: _tool_decision,
    TimelineKind.COMPACTION: _compaction,
}


def summary(row: dict[str, Any], kind: TimelineKind) -> str:
    """A short human line for an events row: model, tokens and cost of an API request, a
    tool's name and outcome, an error's message; the agent's event name for the rest."""
    describe = _SUMMARIES.get(kind)
    if describe is not None:
        return describe(row)
    known = CATALOGUE.get(_short_name(row))
    return known[1](row) if known is not None and known[0] is kind else str(row["name"])


def event_item(row: dict[str, Any]) -> TimelineItem:
    """An events row (:data:`TIMELINE_EVENTS`) as a timeline item."""
    kind = kind_of(row)
    cost: Decimal | None = row["cost_usd"]
    item = TimelineItem(
        at=row["ts"],
        kind=kind,
        name=row["name"],
        summary=summary(row, kind),
        model=row["model"],
        cost_usd=None if cost is None else float(cost),
        duration_ms=row["duration_ms"],
    )
    # The main conversation as the session's gauge counts it (streams.state): unless the agent
    # said otherwise (Codex and Gemini say nothing). Rows from before migration 0007 (no kind)
    # are unknown.
    main = row["main_context"] or (row["main_context"] is None and row["kind"] == EventKind.USAGE)
    if kind is TimelineKind.API_REQUEST and main and row["input_tokens"] is not None:
        item.context_tokens = (
            row["input_tokens"] + (row["cache_read_tokens"] or 0) + (row["cache_creation_tokens"] or 0)
        )
    return item


def signal_item(row: dict[str, Any]) -> TimelineItem:
    """A signals row (:data:`TIMELINE_SIGNALS`) as a timeline item."""
    message = row["message"] or (
        f"{row['kind']}: context at {row['ratio']:.0%} of {row['context_window']:,} tokens"
    )
    return TimelineItem(at=row["ts"], kind=TimelineKind.SIGNAL, name=row["kind"], summary=message)


def plan_item(row: dict[str, Any]) -> TimelineItem:
    """A session_plans row (``dashboard.plans.PLAN_HISTORY``) as a timeline item."""
    plan = plan_out(row)
    return TimelineItem(
        at=plan.updated_at, kind=TimelineKind.PLAN, name="plan", summary=plan_line(plan), plan=plan
    )


def merge(
    events: Iterable[dict[str, Any]],
    signals: Iterable[dict[str, Any]],
    limit: int,
    plans: Iterable[dict[str, Any]] = (),
) -> list[TimelineItem]:
    """The most recent ``limit`` of all, oldest first. At the same instant events go by their
    sequence number, and a signal after the events (it follows from the request that raised it),
    a plan version last."""
    keyed: list[tuple[tuple[datetime, int, int, str], TimelineItem]] = [
        ((r["ts"], 0, r["seq"] if r["seq"] is not None else -1, r["event_id"]), event_item(r)) for r in events
    ]
    keyed += [((r["ts"], 1, 0, r["signal_id"]), signal_item(r)) for r in signals]
    keyed += [((r["at"], 2, r["version"], ""), plan_item(r)) for r in plans]
    keyed.sort(key=lambda k: k[0])
    return [item for _, item in keyed[-limit:]] if limit > 0 else []


def add_timeline_route(
    app: FastAPI,
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    tenant: Callable[[], str],
) -> None:
    """Register ``GET /api/v1/sessions/{session_id}/timeline`` on ``app``, scoped to ``tenant()``."""

    @app.get("/api/v1/sessions/{session_id}/timeline")
    async def get_timeline(
        session_id: str,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="the most recent N items, returned oldest first")
        ] = DEFAULT_LIMIT,
    ) -> TimelineOut:
        """One session's prompts, API requests, API errors, tool decisions and results,
        compactions, other events, context signals and plan versions, in time order; main-conversation API
        requests carry their context size (``context_tokens``)."""
        params = {"tenant": tenant(), "session": session_id, "limit": limit}
        async with pool.connection() as conn:
            if await (await conn.execute(SESSION_EXISTS, params)).fetchone() is None:
                raise HTTPException(status_code=404, detail=f"no session {session_id!r}")
            events = await (await conn.execute(TIMELINE_EVENTS, params)).fetchall()
            signals = await (await conn.execute(TIMELINE_SIGNALS, params)).fetchall()
            plans = await (await conn.execute(PLAN_HISTORY, params)).fetchall()
        return TimelineOut(session_id=session_id, items=merge(events, signals, limit, plans))
