"""The window of ``/api/v1/compare`` (dashboard/insights.py): defaults, UTC, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import HTTPException

from dashboard.insights import window

T = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_missing_start_is_the_default_days_before_the_end_and_naive_times_are_utc() -> None:
    assert window(None, T, 30) == (T - timedelta(days=30), T)
    naive = datetime(2026, 12, 1, 8, 30)  # what a query string without an offset gives
    assert window(naive, T, 30) == (naive.replace(tzinfo=UTC), T)


def test_exactly_ninety_days_is_allowed_a_second_more_is_not() -> None:
    assert window(T - timedelta(days=90), T, 30) == (T - timedelta(days=90), T)
    with pytest.raises(HTTPException) as longer:
        window(T - timedelta(days=90, seconds=1), T, 30)
    assert longer.value.status_code == 422


@pytest.mark.parametrize("start", [T, T + timedelta(seconds=1)])
def test_the_start_must_be_before_the_end(start: datetime) -> None:
    with pytest.raises(HTTPException) as refused:
        window(start, T, 30)
    assert refused.value.status_code == 422
    assert "before" in str(refused.value.detail)
