"""A ``sessions`` row -> the API's session shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from dashboard.queries import SessionOut, session_out
from dashboard.timestamps import rfc3339_ms


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session_id": "f91221a8-0311-4362-9fe6-0628c6b87e21",
        "agent": "claude_code",
        "service_name": "claude-code",
        "user_id": "u-1",
        "started_at": datetime(2026, 11, 24, 1, 51, 10, tzinfo=UTC),
        "last_seen_at": datetime(2026, 11, 24, 1, 51, 11, 123_000, tzinfo=UTC),
        "input_tokens": 3600,
        "output_tokens": 126,
        "cache_read_tokens": 13_500,
        "cache_creation_tokens": 900,
        "reasoning_tokens": 7,
        "cost_usd": Decimal("0.024585000"),  # numeric(20, 9)
        "api_requests": 3,
        "api_errors": 1,
        "events": 9,
        "models": ("claude-haiku-4-5-20251001", "claude-opus-4-8"),
        "context_tokens": 6000,
        "context_window": 1_000_000,
        "context_model": "claude-opus-4-8",
        "context_growth": 812.5,
        "context_requests_left": 1223.4,
        "context_minutes_left": 85.6,
        "compactions": 1,
        "totals_source": "events",
        "retries_exhausted": 0,
        "prompts": 2,
        "tool_calls": 4,
        "tool_failures": 1,
        "attributes": {"team": "payments"},
        "lines_added": 12,
        "lines_removed": 3,
        "commits": 1,
        "pull_requests": 0,
        "active_time_s": 31.5,
        "cost_source": "agent",
        "unpriced_requests": 0,
        "cache_creation_1h_tokens": 300,
        "context_window_source": "model_table",
        "context_auto_compact_at": None,
        "by_source": [
            {"query_source": "auxiliary", "tokens": {"input": 10}, "cost_nanos": 1_000, "requests": 1},
            {
                "query_source": "main",
                "tokens": {"input": 1200, "output": 42},
                "cost_nanos": 11_175_000,
                "requests": 2,
            },
        ],
    }
    return {**row, **changes}


#: Shortly after the row's last activity: the session is active.
NOW = datetime(2026, 11, 24, 1, 52, tzinfo=UTC)


def test_session_out_maps_every_column() -> None:
    out = session_out(_row(), NOW)
    assert isinstance(out, SessionOut)
    assert out.session_id == "f91221a8-0311-4362-9fe6-0628c6b87e21"
    assert (out.agent, out.service_name, out.user_id) == ("claude_code", "claude-code", "u-1")
    assert out.tokens.model_dump() == {
        "input": 3600,
        "output": 126,
        "cache_read": 13_500,
        "cache_creation": 900,
        "reasoning": 7,
        "cache_creation_1h": 300,
    }
    assert out.cost_usd == 0.024585
    assert isinstance(out.cost_usd, float)
    assert (out.cost_source, out.unpriced_requests) == ("agent", 0)
    assert (out.api_requests, out.api_errors, out.events) == (3, 1, 9)
    assert out.models == ["claude-haiku-4-5-20251001", "claude-opus-4-8"]
    assert out.context.model_dump() == {
        "tokens": 6000,
        "limit": 1_000_000,
        "ratio": 0.006,
        "model": "claude-opus-4-8",
        "growth_per_request": 812.5,
        "predicted_requests_left": 1223.4,
        "predicted_minutes_left": 85.6,
        "compactions": 1,
        "limit_source": "model_table",
        "auto_compact_at": None,
    }
    # by source, the costliest first
    assert [(s.query_source, s.tokens.input, s.cost_usd, s.requests) for s in out.by_source] == [
        ("main", 1200, 0.011175, 2),
        ("auxiliary", 10, 0.000001, 1),
    ]
    assert [s.unpriced_requests for s in out.by_source] == [0, 0]
    assert out.attributes == {"team": "payments"}
    assert (out.tool_calls, out.tool_failures, out.lines_added, out.commits) == (4, 1, 12, 1)
    assert out.status == "active"
    assert out.last_seen_at == datetime(2026, 11, 24, 1, 51, 11, 123_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "unpriced", "stored", "cost"),
    [
        ("unknown", 3, Decimal(0), None),  # no request priced: not known, not $0
        ("mixed", 1, Decimal("0.001474400"), 0.0014744),  # a lower bound, said by unpriced
        ("price_table", 0, Decimal(0), 0.0),
        (None, 0, Decimal("0.5"), 0.5),  # written before migration 0015
    ],
)
def test_an_unknown_cost_is_null(
    source: str | None, unpriced: int, stored: Decimal, cost: float | None
) -> None:
    out = session_out(_row(cost_source=source, unpriced_requests=unpriced, cost_usd=stored), NOW)
    assert (out.cost_usd, out.cost_source, out.unpriced_requests) == (cost, source, unpriced)
    document = out.model_dump(mode="json")
    assert (document["cost_usd"], document["cost_source"], document["unpriced_requests"]) == (
        cost,
        source,
        unpriced,
    )


@pytest.mark.parametrize(
    ("tokens", "window", "ratio"),
    [(6000, 200_000, 0.03), (190_000, 200_000, 0.95), (0, 200_000, 0.0), (6000, 0, 0.0), (1, 3, 0.333333)],
)
def test_context_ratio(tokens: int, window: int, ratio: float) -> None:
    context = session_out(_row(context_tokens=tokens, context_window=window), NOW).context
    assert context.ratio == ratio
    assert context.limit == window


def test_session_out_serialises_to_json() -> None:
    document = session_out(_row(service_name=None, user_id=None, context_model=None), NOW).model_dump(
        mode="json"
    )
    assert document["cost_usd"] == 0.024585
    assert document["service_name"] is None
    assert document["context"]["model"] is None
    assert document["started_at"] == "2026-11-24T01:51:10.000Z"  # always milliseconds and Z


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (datetime(2026, 11, 24, 1, 51, 50, tzinfo=UTC), "2026-11-24T01:51:50.000Z"),
        (datetime(2026, 11, 24, 1, 51, 50, 789_000, tzinfo=UTC), "2026-11-24T01:51:50.789Z"),
        (datetime(2026, 11, 24, 1, 51, 50, 789_999, tzinfo=UTC), "2026-11-24T01:51:50.789Z"),
        (
            datetime(2026, 11, 24, 2, 51, 50, 5_000, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-24T01:51:50.005Z",
        ),
        (datetime(2026, 11, 24, 1, 51, 50), "2026-11-24T01:51:50.000Z"),  # naive: UTC
    ],
)
def test_api_timestamps_are_rfc3339_with_milliseconds_and_z(at: datetime, text: str) -> None:
    assert rfc3339_ms(at) == text


@pytest.mark.parametrize(
    ("quiet_minutes", "expected"), [(0, "active"), (4.9, "active"), (5, "idle"), (29, "idle"), (30, "ended")]
)
def test_status_follows_inactivity(quiet_minutes: float, expected: str) -> None:
    row = _row()
    now = row["last_seen_at"] + timedelta(minutes=quiet_minutes)
    assert session_out(row, now).status == expected


def test_an_unpriced_source_has_an_unknown_cost_not_zero() -> None:
    by_source = [
        {
            "query_source": "main",
            "tokens": {"input": 476},
            "cost_nanos": 0,
            "requests": 1,
            "unpriced_requests": 1,
        },
        {
            "query_source": "auxiliary",
            "tokens": {"input": 9},
            "cost_nanos": 2_000,
            "requests": 2,
            "unpriced_requests": 1,
        },
    ]
    out = session_out(_row(by_source=by_source, cost_source="mixed", unpriced_requests=2), NOW)
    assert [(s.query_source, s.cost_usd, s.requests, s.unpriced_requests) for s in out.by_source] == [
        ("auxiliary", 0.000002, 2, 1),  # a lower bound: one request of two priced
        ("main", None, 1, 1),
    ]
