"""Budget periods, the burn-rate forecast and statuses (tokentide.budgets), by hand-computed numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokentide import budgets
from tokentide.budgets import InvalidBudget, Period, Profile, Scope, Status

H = timedelta(hours=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (Period.DAY, "2026-12-03T00:00", "2026-12-04T00:00"),
        (Period.WEEK, "2026-11-30T00:00", "2026-12-07T00:00"),  # 2026-11-30 is a Monday
        (Period.MONTH, "2026-12-01T00:00", "2027-01-01T00:00"),
    ],
)
def test_periods_are_utc_day_iso_week_and_month(period: Period, start: str, end: str) -> None:
    assert budgets.period_bounds(period, at("2026-12-03T14:12:05")) == (at(start), at(end))


def test_a_period_starts_at_its_first_instant() -> None:
    assert budgets.period_bounds(Period.WEEK, at("2026-11-30T00:00")) == (
        at("2026-11-30T00:00"),
        at("2026-12-07T00:00"),
    )
    assert budgets.period_bounds(Period.MONTH, at("2026-02-28T23:59:59"))[1] == at("2026-03-01T00:00")


def test_flat_forecast_is_the_last_six_hours_rate_times_the_time_left() -> None:
    # 9.5 h left in the day; 3 USD in the last 6 h: 0.5 USD/h; 10 + 0.5 * 9.5 = 14.75.
    now = at("2026-12-03T14:30")
    result = budgets.forecast(10.0, 3.0, now, at("2026-12-04T00:00"))
    assert result.rate_usd_per_hour == 0.5
    assert result.forecast_usd == 14.75
    assert result.from_history is False


def test_forecast_at_the_end_of_the_period_is_the_spend() -> None:
    end = at("2026-12-04T00:00")
    assert budgets.forecast(7.25, 3.0, end, end).forecast_usd == 7.25


def test_hour_of_week_profile_weights_the_remaining_hours() -> None:
    # Week 1 Monday 10:00 and week 2 Monday 10:00 spent 3 USD each, nothing else. Now: week 3
    # Monday 08:00. History: 2 * 168 - 2 = 334 hours, mean 6/334; mean of hour-of-week 10 is 3:
    # w_10 = 1/2 + 1/2 * 3 / (6/334) = 84; every other weight 1/2.
    week1 = at("2026-11-30T10:00")
    hourly = {week1: 3.0, week1 + 168 * H: 3.0}
    now = at("2026-12-14T08:00")
    weights = budgets.profile(hourly, now)
    assert weights.from_history is True
    assert weights.weights[10] == 84.0
    assert weights.weights[9] == 0.5
    assert weights.weights[11] == 0.5
    assert sum(weights.weights) == pytest.approx(0.5 * 167 + 84)
    # W_recent = 6 * 0.5 = 3 (02:00-08:00); W_remaining = 15 * 0.5 + 84 = 91.5 (08:00-24:00).
    # forecast = 2 + 1.5 / 3 * 91.5 = 47.75
    result = budgets.forecast(2.0, 1.5, now, at("2026-12-15T00:00"), weights)
    assert result.forecast_usd == 47.75
    assert result.from_history is True


def test_partial_hours_count_their_fraction_of_the_weight() -> None:
    weights = Profile(tuple(float(k) for k in range(168)), True)
    # Monday 10:30 to 12:15: half of hour 10, all of 11, a quarter of 12: 5 + 11 + 3 = 19.
    assert weights.weight(at("2026-11-30T10:30"), at("2026-11-30T12:15")) == 19.0


def test_less_than_seven_days_of_history_is_flat() -> None:
    now = at("2026-12-14T08:00")
    hourly = {now - 167 * H: 5.0, now - 2 * H: 1.0}
    assert budgets.profile(hourly, now) == Profile.flat()
    # exactly 168 hours of history is enough
    assert budgets.profile({now - 168 * H: 5.0}, now).from_history is True


def test_history_older_than_28_days_and_the_current_hour_are_left_out() -> None:
    now = at("2026-12-14T08:20")
    assert budgets.profile({now - 29 * 24 * H: 5.0, now: 9.0}, now) == Profile.flat()


@pytest.mark.parametrize(
    ("spend", "forecast", "expected"),
    [
        (99.99, 100.0, Status.OK),
        (99.0, 100.01, Status.WARNING),
        (100.0, 100.0, Status.EXCEEDED),
        (120.0, 180.0, Status.EXCEEDED),
    ],
)
def test_status(spend: float, forecast: float, expected: Status) -> None:
    assert budgets.status(spend, forecast, 100.0) is expected


def test_signal_ids_are_one_per_budget_period_and_kind() -> None:
    start = at("2026-12-01T00:00")
    assert budgets.signal_id("bg_0123456789ab", start, budgets.BudgetKind.BUDGET_WARNING) == (
        "bg_0123456789ab:2026-12-01:budget_warning"
    )


def test_checked_budgets() -> None:
    assert budgets.checked("team", " platform ", "week", 50.123456) == (
        Scope.TEAM,
        "platform",
        Period.WEEK,
        50.1235,
    )
    assert budgets.checked("tenant", None, "day", 5) == (Scope.TENANT, "", Period.DAY, 5)


@pytest.mark.parametrize(
    ("scope", "value", "period", "amount", "message"),
    [
        ("org", "x", "day", 1.0, "unknown scope"),
        ("team", "x", "year", 1.0, "unknown period"),
        ("tenant", "x", "day", 1.0, "takes no value"),
        ("user", "", "day", 1.0, "needs the user"),
        ("team", "x" * 501, "day", 1.0, "longer than 500"),
        ("team", "x", "day", 0.0, "at least 0.0001"),
        ("team", "x", "day", float("nan"), "at least 0.0001"),
        # 0 once rounded to the table's 4 decimals (the column's CHECK would refuse it: a 500).
        ("team", "x", "day", 0.00004, "at least 0.0001"),
        ("team", "x", "day", 2e9, "at most"),
    ],
)
def test_invalid_budgets(scope: str, value: str, period: str, amount: float, message: str) -> None:
    with pytest.raises(InvalidBudget, match=message):
        budgets.checked(scope, value, period, amount)
