"""The webhook payload of a budget signal (notify.budget_payload)."""

from __future__ import annotations

from datetime import UTC, datetime

from notify.budget_payload import budget_payload
from notify.core import encode_body
from tokentide.budgets import BudgetKind, Period, Scope


def test_payload_fields_and_slack_text() -> None:
    row = {
        "tenant": "acme",
        "budget_id": "bg_0123456789ab",
        "scope": Scope.TEAM,
        "value": "platform",
        "period": Period.MONTH,
        "period_start": datetime(2026, 12, 1, tzinfo=UTC),
        "period_end": datetime(2027, 1, 1, tzinfo=UTC),
        "kind": BudgetKind.BUDGET_WARNING,
        "signal_id": "bg_0123456789ab:2026-12-01:budget_warning",
        "amount_usd": 500.0,
        "spend_usd": 212.4,
        "forecast_usd": 611.9,
        "at": datetime(2026, 12, 9, 10, 0, 3, 120000, tzinfo=UTC),
    }
    payload = budget_payload(row)
    assert payload == {
        "tenant": "acme",
        "session_id": None,
        "signal_id": "bg_0123456789ab:2026-12-01:budget_warning",
        "kind": "budget_warning",
        "budget_id": "bg_0123456789ab",
        "scope": "team",
        "value": "platform",
        "period": "month",
        "period_start": "2026-12-01T00:00:00.000000Z",
        "period_end": "2027-01-01T00:00:00.000000Z",
        "amount_usd": 500.0,
        "spend_usd": 212.4,
        "forecast_usd": 611.9,
        "message": "team platform month budget 500.00 USD: spent 212.40 USD, "
        "forecast 611.90 USD by 2027-01-01 00:00 UTC",
        "at": "2026-12-09T10:00:03.120000Z",
        "text": "[acme] budget warning: team platform month budget 500.00 USD: spent 212.40 USD, "
        "forecast 611.90 USD by 2027-01-01 00:00 UTC",
    }
    assert encode_body(payload)  # JSON-encodable, no NaN
