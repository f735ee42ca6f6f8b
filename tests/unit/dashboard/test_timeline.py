"""A session's timeline: events and signals rows -> items (pure)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pglast
import pytest
from pglast import ast

from dashboard.timeline import (
    CATALOGUE,
    DETAIL_KEYS,
    TIMELINE_EVENTS,
    TIMELINE_SIGNALS,
    TimelineKind,
    event_item,
    kind_of,
    merge,
    signal_item,
)
from tokentide.records import EventKind

T0 = datetime(2026, 11, 24, 1, 51, 34, tzinfo=UTC)


def columns(query: str) -> list[str]:
    """The names of the columns ``query`` selects (PostgreSQL's parser, through pglast)."""
    select = pglast.parse_sql(re.sub(r"%\((\w+)\)s", r"$1", query))[0].stmt
    assert isinstance(select, ast.SelectStmt)
    return [t.name or t.val.fields[-1].sval for t in select.targetList or ()]


def event(name: str, at: datetime = T0, seq: int | None = 0, **values: Any) -> dict[str, Any]:
    """An events row as TIMELINE_EVENTS selects it (every column, NULL unless given)."""
    row: dict[str, Any] = dict.fromkeys(columns(TIMELINE_EVENTS))
    row |= {"ts": at, "seq": seq, "event_id": f"e-{name}-{seq}", "name": name}
    return row | values


def api_request(
    at: datetime = T0, seq: int = 0, *, main: bool | None = True, **values: Any
) -> dict[str, Any]:
    return (
        event(
            "api_request",
            at,
            seq,
            kind="usage",
            main_context=main,
            model="claude-opus-4-8",
            query_source="sdk" if main else "generate_session_title",
            input_tokens=1200,
            output_tokens=42,
            cache_read_tokens=4500,
            cache_creation_tokens=300,
            cost_usd=Decimal("0.011175000"),
            duration_ms=812.0,
        )
        | values
    )


def signal(
    at: datetime = T0, kind: str = "context_warning", message: str = "context at 81%"
) -> dict[str, Any]:
    return {
        "ts": at,
        "signal_id": f"g-{kind}-{at.timestamp()}",
        "kind": kind,
        "ratio": 0.81,
        "tokens": 162_000,
        "context_window": 200_000,
        "message": message,
    }


def test_every_canonical_kind_has_a_timeline_kind() -> None:
    for kind in EventKind:
        expected = "api_request" if kind is EventKind.USAGE else kind.value
        assert kind_of(event("x", kind=kind.value)) == expected
    assert {k.value for k in TimelineKind} == {
        "prompt",
        "api_request",
        "api_error",
        "retries_exhausted",
        "tool_result",
        "tool_decision",
        "compaction",
        "context_window",
        "signal",
        "plan",
        "other",
    } | {kind.value for kind, _ in CATALOGUE.values()}


#: Every event the three agents document that carries no usage (agent-telemetry.md sections 2-4,
#: the issue 14 list), with its agent prefix where the agent uses one.
DOCUMENTED = [
    "assistant_response", "subagent_completed", "api_refusal", "hook_registered",
    "hook_execution_start", "hook_execution_complete", "hook_plugin_metrics", "permission_mode_changed",
    "auth", "mcp_server_connection", "internal_error", "plugin_installed", "plugin_loaded",
    "skill_activated", "at_mention", "feedback_survey", "retention_sweep", "managed_settings_resolved",
    "gemini_cli.config", "gemini_cli.model_routing", "gemini_cli.file_operation",
    "gemini_cli.network_retry_attempt", "gemini_cli.ripgrep_fallback", "gemini_cli.startup_stats",
    "gemini_cli.plan.approval_mode_duration", "gemini_cli.conversation_finished", "gemini_cli.flash_fallback",
    "gemini_cli.slash_command", "gemini_cli.malformed_json_response", "gemini_cli.tool_output_truncated",
    "gemini_cli.hook_call", "codex.conversation_starts", "codex.websocket_connect", "codex.startup_phase",
    "codex.turn_ttft", "codex.sse_event", "codex.agent_response", "codex.skill_invocation",
    "codex.responses.reasoning_replay",
]  # fmt: skip


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_documented_event_is_recognised_with_a_summary(name: str) -> None:
    item = event_item(event(name, kind="other"))
    assert item.kind is not TimelineKind.OTHER
    assert item.summary
    assert item.summary != name  # a readable line, not just the name


def test_the_catalogue_reads_only_attributes_the_query_selects() -> None:
    for key in DETAIL_KEYS:
        assert f"'{key}', attributes -> '{key}'" in TIMELINE_EVENTS


def test_catalogue_summaries_use_the_attributes() -> None:
    sub = event_item(
        event(
            "subagent_completed",
            kind="other",
            detail={
                "agent_type": "Explore",
                "total_tokens": 48213,
                "total_tool_uses": 7,
                "duration_ms": 12500,
            },
        )
    )
    assert (sub.kind, sub.summary) == (
        TimelineKind.SUBAGENT,
        "subagent Explore finished · 48,213 tokens in its last request (its own context, not the session's) "
        "· 7 tool uses · 12.5 s",
    )
    mode = event_item(
        event("permission_mode_changed", kind="other", detail={"from_mode": "default", "to_mode": "plan"})
    )
    assert mode.summary == "permission mode default -> plan"
    auto = event_item(
        event("compaction", kind="compaction", tokens_after="24000", tokens_before="182000", trigger="auto")
    )
    assert auto.summary == "compacted (auto) from 182,000 to 24,000 tokens"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("api_request", TimelineKind.API_REQUEST),
        ("user_prompt", TimelineKind.PROMPT),
        ("gemini_cli.user_prompt", TimelineKind.PROMPT),
        ("codex.tool_decision", TimelineKind.TOOL_DECISION),
        ("gemini_cli.tool_call", TimelineKind.TOOL_RESULT),
        ("api_retries_exhausted", TimelineKind.RETRIES_EXHAUSTED),
        ("assistant_response", TimelineKind.RESPONSE),
        ("not_an_event_anyone_documents", TimelineKind.OTHER),
    ],
)
def test_rows_written_before_the_kind_column_fall_back_on_the_name(name: str, expected: TimelineKind) -> None:
    assert kind_of(event(name)) == expected


def test_a_row_with_tokens_but_no_kind_is_a_request() -> None:
    assert kind_of(event("gen_ai.client.inference", input_tokens=5)) == TimelineKind.API_REQUEST


def test_a_main_conversation_request_carries_its_context_model_cost_and_duration() -> None:
    item = event_item(api_request())
    assert item.kind == TimelineKind.API_REQUEST
    assert item.context_tokens == 1200 + 4500 + 300
    assert (item.model, item.cost_usd, item.duration_ms) == ("claude-opus-4-8", 0.011175, 812.0)
    assert (
        item.summary == "claude-opus-4-8 · 1,200 in · 42 out · 4,500 cache read · 300 cache write · $0.0112"
    )


def test_a_side_request_has_no_context_and_says_what_it_was_for() -> None:
    item = event_item(api_request(main=False))
    assert item.context_tokens is None
    assert item.summary.endswith("side request: generate_session_title")
    # A row from before migration 0007 (no kind, no main_context): unknown, not on the chart.
    assert event_item(api_request(main=None, kind=None)).context_tokens is None


def test_a_request_of_an_agent_without_side_requests_is_the_main_conversation() -> None:
    # Codex and Gemini usage events say nothing of a main context: the session's gauge counts
    # them (streams.state), so the timeline shows their context too.
    codex = api_request(main=None, name="codex.sse_event", model="gpt-6.2-sol", query_source=None)
    assert event_item(codex).context_tokens == 1200 + 4500 + 300


@pytest.mark.parametrize(
    ("row", "kind", "summary"),
    [
        (event("user_prompt", kind="prompt", prompt_length="42"), "prompt", "prompt (42 characters)"),
        (event("user_prompt", kind="prompt"), "prompt", "prompt"),
        (
            event("tool_result", kind="tool_result", tool_name="Write", success="true", duration_ms=9.0),
            "tool_result",
            "Write succeeded in 9 ms",
        ),
        (
            event("tool_result", kind="tool_result", tool_name="Bash", success="false"),
            "tool_result",
            "Bash failed",
        ),
        (
            event("tool_decision", kind="tool_decision", tool_name="Write", decision="accept"),
            "tool_decision",
            "Write: accept",
        ),
        (
            event(
                "api_error",
                kind="api_error",
                model="claude-opus-4-8",
                error="stub: internal server error",
                status_code="500",
            ),
            "api_error",
            "claude-opus-4-8: stub: internal server error (500)",
        ),
        (
            event("api_retries_exhausted", kind="retries_exhausted", error="Connection error.", attempts="7"),
            "retries_exhausted",
            "gave up after 7 attempts: Connection error.",
        ),
        (
            event("compaction", kind="compaction", tokens_after="24000"),
            "compaction",
            "compacted to 24,000 tokens",
        ),
        (event("assistant_response", kind="other"), "response", "response"),
        (event("something_new", kind="other"), "other", "something_new"),
    ],
)
def test_summaries_are_short_and_human(row: dict[str, Any], kind: str, summary: str) -> None:
    item = event_item(row)
    assert (item.kind, item.summary, item.context_tokens) == (kind, summary, None)
    assert item.name == row["name"]


def test_a_long_error_message_is_shortened_to_one_line() -> None:
    item = event_item(event("api_error", kind="api_error", error="boom\n" + "x" * 1000))
    assert "\n" not in item.summary
    assert len(item.summary) <= 200


def test_a_signal_is_its_message() -> None:
    item = signal_item(signal())
    assert (item.kind, item.name, item.summary) == ("signal", "context_warning", "context at 81%")
    assert item.context_tokens is None
    assert signal_item(signal(message="")).summary == "context_warning: context at 81% of 200,000 tokens"


def test_merge_orders_by_time_then_sequence_with_signals_after_their_request() -> None:
    s = timedelta(seconds=1)
    events = [  # newest first, as the query returns them
        api_request(T0 + 2 * s, seq=3),
        event("assistant_response", T0 + 2 * s, seq=4, kind="other"),
        event("tool_result", T0 + s, seq=2, kind="tool_result"),
        event("user_prompt", T0, seq=1, kind="prompt"),
    ]
    signals = [signal(T0 + 2 * s), signal(T0 + 3 * s, kind="context_critical")]
    items = merge(events, signals, limit=100)
    assert [(i.name, i.at) for i in items] == [
        ("user_prompt", T0),
        ("tool_result", T0 + s),
        ("api_request", T0 + 2 * s),
        ("assistant_response", T0 + 2 * s),
        ("context_warning", T0 + 2 * s),
        ("context_critical", T0 + 3 * s),
    ]


def test_merge_keeps_the_most_recent_items_oldest_first() -> None:
    s = timedelta(seconds=1)
    events = [api_request(T0 + i * s, seq=i) for i in range(10)]
    signals = [signal(T0 + 9.5 * s)]
    items = merge(events, signals, limit=3)
    assert [i.at for i in items] == [T0 + 8 * s, T0 + 9 * s, T0 + 9.5 * s]
    assert merge([], [], limit=3) == []


def test_the_queries_are_scoped_to_the_tenant_and_bounded() -> None:
    for query in (TIMELINE_EVENTS, TIMELINE_SIGNALS):
        assert "tenant_id = %(tenant)s AND session_id = %(session)s" in query
        assert "LIMIT %(limit)s" in query
        assert "ORDER BY ts DESC" in query


def test_the_rows_built_here_have_the_queries_columns() -> None:
    assert set(event("x")) == set(columns(TIMELINE_EVENTS))
    assert set(signal()) == set(columns(TIMELINE_SIGNALS))


def test_codex_api_calls_are_network_items_not_other() -> None:
    """``codex.api_request`` is Codex's HTTP call (its usage is in an ``sse_event``): kind
    other in the events, shown as what it is."""
    row = event(
        "codex.api_request",
        kind="other",
        detail={"http.response.status_code": 200, "attempt": 1, "duration_ms": "812"},
    )
    item = event_item(row)
    assert (item.kind, item.summary) == (TimelineKind.NETWORK, "API call · status 200 · attempt 1 · 812 ms")
    assert item.context_tokens is None
