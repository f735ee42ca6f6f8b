"""A session's cost forecast (dashboard.session_forecast.forecast_of), by hand-computed numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dashboard.session_forecast import ProjectHistory, forecast_of

START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
HISTORY = ProjectHistory(project="tide", sessions=3, median_cost_usd=0.75, median_duration_s=1200.0)


def test_own_pace_extends_the_rate_to_the_projects_median_length() -> None:
    # 0.5 USD in 300 s; the project's sessions last 1200 s: 0.5 + 0.5/300 * 900 = 2.0
    out = forecast_of(0.5, START, START + timedelta(seconds=300), HISTORY, 12.5)
    assert out.own_pace_usd == 2.0
    assert out.project_usd == 0.75  # max(0.5, 0.75)
    assert (out.project, out.history_sessions, out.minutes_to_compaction) == ("tide", 3, 12.5)
    assert (out.median_cost_usd, out.median_duration_s) == (0.75, 1200.0)


def test_a_session_longer_or_costlier_than_the_median_is_its_cost_so_far() -> None:
    out = forecast_of(3.0, START, START + timedelta(seconds=4000), HISTORY, None)
    assert (out.own_pace_usd, out.project_usd) == (3.0, 3.0)


def test_too_little_history_no_project_no_cost_or_no_time_give_nulls() -> None:
    few = HISTORY.model_copy(update={"sessions": 2})
    out = forecast_of(0.5, START, START + timedelta(seconds=300), few, None)
    assert (out.own_pace_usd, out.project_usd, out.project, out.history_sessions) == (None, None, "tide", 2)
    out = forecast_of(0.5, START, START + timedelta(seconds=300), None, 3.0)
    assert (out.own_pace_usd, out.project_usd, out.project) == (None, None, None)
    assert forecast_of(None, START, START + timedelta(seconds=300), HISTORY, None).own_pace_usd is None
    out = forecast_of(0.5, START, START, HISTORY, None)
    assert (out.own_pace_usd, out.project_usd) == (None, 0.75)
