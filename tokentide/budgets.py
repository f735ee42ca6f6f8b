"""Budgets (issue 17): periods, the burn-rate forecast and a budget's status (pure: no I/O).

A budget is an amount in USD per tenant, team, user or project (:class:`Scope`) and period
(:class:`Period`, UTC: a day, an ISO week from Monday 00:00, a calendar month). Spend is what
the rollups say was spent in ``[period start, now)``.

**The forecast** (spend at the end of the period), :func:`forecast`::

    forecast = spend + recent_spend / W_recent * W_remaining

- ``spend``: the spend in ``[start, now)``;
- ``recent_spend``: the spend in ``[now - N h, now)``, ``N`` = :data:`RECENT_HOURS` (6), even
  where that reaches back into the previous period;
- ``W_recent`` and ``W_remaining``: the weights of the hours of ``[now - N h, now)`` and
  ``[now, end)``, a partial hour counting its fraction. **Without history**, every hour weighs 1,
  so ``W_recent = N`` and ``W_remaining = (end - now)`` in hours: the last 6 hours' mean rate
  times the time left. **With history** (spend recorded at least :data:`MIN_HISTORY_HOURS`
  (7 days) before the current hour, looking back at most :data:`HISTORY_HOURS` (28 days)), an
  hour of the week ``k`` (0 = Monday 00:00-01:00 UTC, ... 167) weighs::

      w_k = 1/2 + 1/2 * mean_k / mean

  ``mean_k``: the mean spend of the history hours whose hour of the week is ``k``; ``mean``: the
  mean spend of all history hours. The history hours are the whole UTC hours from the first
  hour with spend in the last 28 days up to the current hour (excluded). Half the weight is the
  weekly pattern, half a flat floor, so a quiet hour of the week still counts (and ``W_recent``
  is never 0); with a history of whole weeks the weights of a week sum to 168 (otherwise about
  that: only the ratios of weights enter the forecast).

**Status**: ``exceeded`` when ``spend >= amount``, else ``warning`` when ``forecast > amount``,
else ``ok``. A budget raises ``budget_exceeded`` and ``budget_warning`` (:class:`BudgetKind`)
at most once per period each; one that goes straight to exceeded raises no warning.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: Hours of recent spend whose rate the forecast extends.
RECENT_HOURS = 6
#: The hour-of-week profile applies once spend was recorded this long before the current hour.
MIN_HISTORY_HOURS = 7 * 24
#: How far back the profile looks.
HISTORY_HOURS = 28 * 24
HOURS_PER_WEEK = 7 * 24
_HOUR = timedelta(hours=1)


class Scope(enum.StrEnum):
    TENANT = "tenant"
    TEAM = "team"
    USER = "user"
    PROJECT = "project"


class Period(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class BudgetKind(enum.StrEnum):
    """The two budget signal kinds (beside ``tokentide.records.SignalKind``'s context ones)."""

    BUDGET_WARNING = "budget_warning"
    BUDGET_EXCEEDED = "budget_exceeded"


class Status(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    EXCEEDED = "exceeded"


#: The kind a status raises (``ok`` raises none).
KIND_OF_STATUS = {Status.WARNING: BudgetKind.BUDGET_WARNING, Status.EXCEEDED: BudgetKind.BUDGET_EXCEEDED}


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the UTC ``period`` containing ``now`` (an aware datetime)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.DAY:
        return day, day + timedelta(days=1)
    if period is Period.WEEK:
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    first = day.replace(day=1)
    if first.month == 12:
        return first, first.replace(year=first.year + 1, month=1)
    return first, first.replace(month=first.month + 1)


def hour_of_week(at: datetime) -> int:
    """0 for Monday 00:00-01:00 UTC ... 167 for Sunday 23:00-24:00."""
    at = at.astimezone(UTC)
    return at.weekday() * 24 + at.hour


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Profile:
    """The weight ``w_k`` of each hour of the week (168 values); all 1 without history."""

    weights: tuple[float, ...]
    #: Whether the weights come from history (False: flat, every weight 1).
    from_history: bool

    @classmethod
    def flat(cls) -> Profile:
        return cls((1.0,) * HOURS_PER_WEEK, False)

    def weight(self, start: datetime, end: datetime) -> float:
        """The summed weight of ``[start, end)``, each hour's weight times the fraction of it inside."""
        total = 0.0
        hour = floor_hour(start)
        while hour < end:
            inside = (min(end, hour + _HOUR) - max(start, hour)) / _HOUR
            if inside > 0:
                total += self.weights[hour_of_week(hour)] * inside
            hour += _HOUR
        return total


def profile(hourly: Mapping[datetime, float], now: datetime) -> Profile:
    """The hour-of-week profile from ``hourly`` (spend per UTC hour start; hours absent spent 0)
    over the history hours before ``now``'s hour (see the module docstring); flat when that
    history is shorter than :data:`MIN_HISTORY_HOURS` or spent nothing."""
    current = floor_hour(now)
    oldest = current - HISTORY_HOURS * _HOUR
    spent = {floor_hour(h): v for h, v in hourly.items() if oldest <= floor_hour(h) < current and v > 0}
    if not spent:
        return Profile.flat()
    first = min(spent)
    hours = int((current - first) / _HOUR)
    if hours < MIN_HISTORY_HOURS:
        return Profile.flat()
    sums = [0.0] * HOURS_PER_WEEK
    counts = [0] * HOURS_PER_WEEK
    for i in range(hours):
        hour = first + i * _HOUR
        k = hour_of_week(hour)
        counts[k] += 1
        sums[k] += spent.get(hour, 0.0)
    mean = sum(sums) / hours
    weights = tuple(
        0.5 + 0.5 * (sums[k] / counts[k]) / mean if counts[k] else 1.0 for k in range(HOURS_PER_WEEK)
    )
    return Profile(weights, True)


@dataclass(frozen=True, slots=True)
class Forecast:
    spend_usd: float
    recent_spend_usd: float
    forecast_usd: float
    #: ``recent_spend / W_recent``: USD per hour of weight 1.
    rate_usd_per_hour: float
    from_history: bool


def forecast(
    spend: float, recent_spend: float, now: datetime, end: datetime, weights: Profile | None = None
) -> Forecast:
    """The spend at ``end`` (module docstring): ``spend + recent_spend / W_recent * W_remaining``."""
    weights = weights or Profile.flat()
    recent = weights.weight(now - RECENT_HOURS * _HOUR, now)
    remaining = weights.weight(now, end) if end > now else 0.0
    rate = recent_spend / recent if recent > 0 else 0.0
    total = spend + rate * remaining
    if not math.isfinite(total):
        total = spend
    return Forecast(spend, recent_spend, total, rate, weights.from_history)


def status(spend: float, forecast_usd: float, amount: float) -> Status:
    """``exceeded`` (spend >= amount), ``warning`` (forecast > amount) or ``ok``."""
    if spend >= amount:
        return Status.EXCEEDED
    if forecast_usd > amount:
        return Status.WARNING
    return Status.OK


def signal_id(budget_id: str, period_start: datetime, kind: BudgetKind) -> str:
    """The natural id of a budget signal: one per budget, period and kind."""
    return f"{budget_id}:{period_start.astimezone(UTC):%Y-%m-%d}:{kind}"


def scope_label(scope: Scope, value: str) -> str:
    """``tenant`` or ``team platform``: how people read a budget's scope."""
    return str(scope) if scope is Scope.TENANT else f"{scope} {value}"


# --- setting budgets (validation and SQL text; run by `tokentide admin budget` and the API) ---

#: Largest budget accepted, in USD (``budgets.amount_usd`` is numeric(14, 4)).
MAX_AMOUNT_USD = 1e9
VALUE_MAX = 500


class InvalidBudget(ValueError):
    """A budget that cannot be set: the message says which field and why."""


def checked(
    scope: str, value: str | None, period: str, amount_usd: float
) -> tuple[Scope, str, Period, float]:
    """``(scope, value, period, amount)`` validated: a known scope and period, a value for every
    scope but ``tenant`` (which takes none), ``0 < amount <= 1e9`` USD. Raises :class:`InvalidBudget`."""
    try:
        known_scope = Scope(scope)
    except ValueError:
        raise InvalidBudget(f"unknown scope {scope!r}: use {', '.join(Scope)}") from None
    try:
        known_period = Period(period)
    except ValueError:
        raise InvalidBudget(f"unknown period {period!r}: use {', '.join(Period)}") from None
    value = (value or "").strip()
    if known_scope is Scope.TENANT and value:
        raise InvalidBudget("a tenant budget takes no value (it is the tenant's own)")
    if known_scope is not Scope.TENANT and not value:
        raise InvalidBudget(f"a {known_scope} budget needs the {known_scope} it is for (value)")
    if len(value) > VALUE_MAX:
        raise InvalidBudget(f"value longer than {VALUE_MAX} characters")
    # Rounded first (the table keeps 4 decimals): 0.00001 USD is 0 there, and refused here.
    amount = round(amount_usd, 4) if math.isfinite(amount_usd) else amount_usd
    if not (math.isfinite(amount) and 0 < amount <= MAX_AMOUNT_USD):
        raise InvalidBudget(f"amount must be at least 0.0001 and at most {MAX_AMOUNT_USD:,.0f} USD")
    return known_scope, value, known_period, amount


#: Set a budget (insert, or change the amount of the one with the same natural key); the
#: parameters are ``budget_id`` (used when new), ``tenant``, ``scope``, ``value``, ``period``,
#: ``amount``.
UPSERT_BUDGET = """
    INSERT INTO budgets (budget_id, tenant_id, scope, scope_value, period, amount_usd)
    VALUES (%(budget_id)s, %(tenant)s, %(scope)s, %(value)s, %(period)s, %(amount)s)
    ON CONFLICT (tenant_id, scope, scope_value, period)
    DO UPDATE SET amount_usd = EXCLUDED.amount_usd, updated_at = now()
    RETURNING budget_id, tenant_id, scope, scope_value, period, amount_usd, created_at, updated_at
"""
DELETE_BUDGET = """
    DELETE FROM budgets WHERE tenant_id = %(tenant)s AND budget_id = %(budget_id)s
    RETURNING budget_id, tenant_id, scope, scope_value, period, amount_usd, created_at, updated_at
"""
BUDGET_ID_PATTERN = r"bg_[0-9a-f]{12}"


def new_budget_id(random_hex: str) -> str:
    """``bg_`` + 12 hex digits (``secrets.token_hex(6)`` at the caller)."""
    return f"bg_{random_hex}"
