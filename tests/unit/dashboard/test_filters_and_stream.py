"""Session filters and usage grouping -> SQL (pure); the event stream's cursor and frames: test_live.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from dashboard.filters import (
    SOURCE_GROUPS,
    GroupBy,
    SessionFilter,
    SessionQuery,
    hour_bounds,
    list_sessions,
    sessions_where,
    usage,
)


def test_no_filter_is_the_tenant_alone() -> None:
    where, params = sessions_where(SessionFilter(), "team")
    assert where == "tenant_id = %(tenant)s"
    assert params == {}


def test_every_filter_adds_one_parameterised_clause_after_the_tenant() -> None:
    f = SessionFilter(agent="claude_code", user="u'1", model="m", team="payments", active=True)
    where, params = sessions_where(f, "team.name")
    assert where.startswith("tenant_id = %(tenant)s AND ")
    assert where.count(" AND ") == 5
    assert params["agent"] == "claude_code"
    assert params["user"] == "u'1"  # a value, never SQL text
    assert "u'1" not in where
    assert params["team_key"] == "team.name"
    assert params["team"] == "payments"


@pytest.mark.parametrize("status", ["active", "idle", "ended"])
def test_status_filters_use_the_idle_and_ended_timeouts(status: str) -> None:
    where, params = sessions_where(SessionFilter(status=status), "team")
    assert "last_seen_at" in where
    assert set(params) == {"idle_after", "ended_after"}


def test_the_query_refuses_unknown_statuses_fields_and_pages() -> None:
    with pytest.raises(ValidationError):
        SessionQuery(status="asleep")
    with pytest.raises(ValidationError):
        SessionQuery(limit=0)
    with pytest.raises(ValidationError):
        SessionQuery.model_validate({"colour": "red"})


def test_list_and_count_share_the_where_clause() -> None:
    page, count, _ = list_sessions(SessionFilter(agent="codex"), "team")
    where = "WHERE tenant_id = %(tenant)s AND agent = %(agent)s"
    assert where in page
    assert count.endswith(where)
    assert "LIMIT %(limit)s OFFSET %(offset)s" in page


@pytest.mark.parametrize("group_by", sorted(set(GroupBy) - SOURCE_GROUPS))
def test_usage_is_tenant_scoped_in_each_of_its_three_ranges(group_by: GroupBy) -> None:
    statement = usage(group_by)
    assert statement.count("tenant_id = %(tenant)s") == 3  # hours, the leading and trailing minutes
    assert "hour >= %(from_hour)s AND hour < %(to_hour)s" in statement
    assert "GROUP BY 1" in statement


@pytest.mark.parametrize("group_by", sorted(SOURCE_GROUPS))
def test_usage_by_source_reads_the_tenants_usage_events_in_the_window(group_by: GroupBy) -> None:
    statement = usage(group_by)
    assert "FROM events" in statement
    assert "rollups" not in statement
    assert "WHERE tenant_id = %(tenant)s AND ts >= %(from)s AND ts < %(to)s" in statement
    assert "kind IN ('usage', 'api_error')" in statement


def _minutes_counted(start: datetime, end: datetime) -> list[datetime]:
    """The minutes the usage query's three ranges cover, by the same bounds, as a list."""
    from_hour, to_hour = hour_bounds(start, end)
    covered: list[datetime] = []
    at = start.replace(second=0, microsecond=0)
    at = at if at >= start else at + timedelta(minutes=1)
    while at < end:
        in_hours = from_hour <= at.replace(minute=0) and at.replace(minute=0) < to_hour
        leading = start <= at < min(from_hour, end)
        trailing = max(to_hour, from_hour) <= at < end
        covered += [at] * (int(in_hours) + int(leading) + int(trailing))
        at += timedelta(minutes=1)
    return covered


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("10:10", "10:50"),  # inside one hour
        ("10:00", "13:00"),  # whole hours only
        ("10:10", "13:20"),  # partial hours at both edges
        ("10:00", "10:30"),
        ("10:59", "11:01"),
    ],
)
def test_hours_and_edge_minutes_cover_every_minute_exactly_once(start: str, end: str) -> None:
    day = datetime(2026, 11, 24, tzinfo=UTC)
    s, e = (day + timedelta(hours=int(t[:2]), minutes=int(t[3:])) for t in (start, end))
    covered = _minutes_counted(s, e)
    assert len(covered) == len(set(covered)) == (e - s) // timedelta(minutes=1)
