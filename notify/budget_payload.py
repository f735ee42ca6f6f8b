"""What a webhook receives for a budget signal (issue 17; pure: no I/O).

**The payload** (signed and sent like a context signal's, ``notify.core``)::

    {"tenant": "acme", "session_id": null, "signal_id": "bg_0123456789ab:2026-12-01:budget_warning",
     "kind": "budget_warning", "budget_id": "bg_0123456789ab", "scope": "team", "value": "platform",
     "period": "month", "period_start": "2026-12-01T00:00:00.000000Z",
     "period_end": "2027-01-01T00:00:00.000000Z", "amount_usd": 500.0, "spend_usd": 212.4,
     "forecast_usd": 611.9, "message": "…", "at": "2026-12-09T10:00:03.120000Z",
     "text": "[acme] budget warning: team platform month budget 500.00 USD: spent 212.40 USD,
              forecast 611.90 USD by 2027-01-01 00:00 UTC"}      (one line)

``kind`` is ``budget_warning`` (the forecast is over the amount) or ``budget_exceeded`` (the
spend is); each is sent once per budget and period (``signal_id`` says which). ``session_id``
is null: a budget is no one session's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tokentide.budgets import BudgetKind, scope_label

_TITLES = {BudgetKind.BUDGET_WARNING: "budget warning", BudgetKind.BUDGET_EXCEEDED: "budget exceeded"}


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def budget_text(row: dict[str, Any]) -> str:
    """One line for people (and Slack)."""
    label = scope_label(row["scope"], row["value"])
    end = row["period_end"].astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"[{row['tenant']}] {_TITLES[BudgetKind(row['kind'])]}: {label} {row['period']} budget "
        f"{row['amount_usd']:,.2f} USD: spent {row['spend_usd']:,.2f} USD, "
        f"forecast {row['forecast_usd']:,.2f} USD by {end}"
    )


def budget_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON object for one budget signal; ``row`` holds tenant, signal_id, kind, budget_id,
    scope, value, period, period_start, period_end, amount_usd, spend_usd, forecast_usd, at."""
    text = budget_text(row)
    return {
        "tenant": row["tenant"],
        "session_id": None,
        "signal_id": row["signal_id"],
        "kind": str(row["kind"]),
        "budget_id": row["budget_id"],
        "scope": str(row["scope"]),
        "value": row["value"],
        "period": str(row["period"]),
        "period_start": iso(row["period_start"]),
        "period_end": iso(row["period_end"]),
        "amount_usd": round(float(row["amount_usd"]), 4),
        "spend_usd": round(float(row["spend_usd"]), 6),
        "forecast_usd": round(float(row["forecast_usd"]), 6),
        "message": text.partition(": ")[2],
        "at": iso(row["at"]),
        "text": text,
    }
