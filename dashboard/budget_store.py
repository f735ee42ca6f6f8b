"""Budgets in PostgreSQL (migration 0019): their spend from the rollups, and their evaluation.

Shared by the dashboard (``GET /api/v1/budgets``, ``/metrics/usage``) and the notifier (the
periodic evaluation that raises budget signals), so that every place shows the same numbers:
:func:`evaluate` is the one computation, :mod:`tokentide.budgets` the one formula.

Spend over ``[from, to)`` is read as ``GET /api/v1/usage`` reads it (``dashboard.filters``):
hourly rollups for the whole hours inside, per-minute rollups at the partial edges. A
budget's scope narrows the rollups joined with their session: ``team`` is the session's team
attribute (``TOKENTIDE_TEAM_ATTRIBUTE``), ``user`` the rollup's user, ``project`` the
session's project (``dashboard.projects``). Every statement starts from the caller's tenant;
values are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from dashboard.filters import hour_bounds
from dashboard.projects import PROJECT_JOIN, PROJECT_SQL
from tokentide.budgets import (
    HISTORY_HOURS,
    RECENT_HOURS,
    Forecast,
    Period,
    Scope,
    Status,
    floor_hour,
    forecast,
    period_bounds,
    profile,
    status,
)

AnyConnection = psycopg.AsyncConnection[Any]

BUDGET_COLUMNS: LiteralString = (
    "budget_id, tenant_id, scope, scope_value, period, amount_usd, created_at, updated_at"
)
BUDGETS_OF: LiteralString = (
    "SELECT " + BUDGET_COLUMNS + " FROM budgets WHERE tenant_id = %(tenant)s"  # noqa: S608 (constants)
    " ORDER BY scope, scope_value, period"
)
TENANTS_WITH_BUDGETS: LiteralString = "SELECT DISTINCT tenant_id FROM budgets ORDER BY tenant_id"

#: The rollup rows of ``[%(from)s, %(to)s)`` (whole hours from ``rollups_hour``).
_ROWS: LiteralString = """
    SELECT tenant_id, session_id, user_id, cost_usd, hour AS at FROM rollups_hour
     WHERE tenant_id = %(tenant)s AND hour >= %(from_hour)s AND hour < %(to_hour)s
    UNION ALL
    SELECT tenant_id, session_id, user_id, cost_usd, minute AS at FROM rollups_minute
     WHERE tenant_id = %(tenant)s AND minute >= %(from)s AND minute < LEAST(%(from_hour)s, %(to)s)
    UNION ALL
    SELECT tenant_id, session_id, user_id, cost_usd, minute AS at FROM rollups_minute
     WHERE tenant_id = %(tenant)s AND minute >= GREATEST(%(to_hour)s, %(from_hour)s) AND minute < %(to)s
"""
_SCOPE: dict[Scope, LiteralString] = {
    Scope.TENANT: "TRUE",
    Scope.TEAM: "s.attributes ->> %(team_key)s = %(value)s",
    Scope.USER: "r.user_id = %(value)s",
    Scope.PROJECT: PROJECT_SQL + " = %(value)s",
}
_FROM: LiteralString = (
    " r JOIN sessions s ON s.tenant_id = r.tenant_id AND s.session_id = r.session_id " + PROJECT_JOIN
)


def spend_sql(scope: Scope) -> LiteralString:
    """The spend (``spend``, numeric) of ``scope`` over ``[%(from)s, %(to)s)``."""
    return (
        "SELECT coalesce(sum(r.cost_usd), 0) AS spend FROM ("  # noqa: S608 (constants)
        + _ROWS
        + ")"
        + _FROM
        + " WHERE "
        + _SCOPE[scope]
    )


def hourly_sql(scope: Scope) -> LiteralString:
    """Spend of ``scope`` per UTC hour over ``[%(from)s, %(to)s)`` (whole hours)."""
    return (
        "SELECT r.hour, sum(r.cost_usd) AS spend FROM rollups_hour"  # noqa: S608 (constants)
        + _FROM
        + " WHERE r.tenant_id = %(tenant)s AND r.hour >= %(from)s AND r.hour < %(to)s AND "
        + _SCOPE[scope]
        + " GROUP BY r.hour"
    )


@dataclass(frozen=True, slots=True)
class Budget:
    budget_id: str
    tenant: str
    scope: Scope
    value: str
    period: Period
    amount_usd: float
    created_at: datetime
    updated_at: datetime


def budget_of(row: dict[str, Any]) -> Budget:
    amount: Decimal = row["amount_usd"]
    return Budget(
        row["budget_id"],
        row["tenant_id"],
        Scope(row["scope"]),
        row["scope_value"],
        Period(row["period"]),
        float(amount),
        row["created_at"],
        row["updated_at"],
    )


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A budget at ``as_of``: its current period, spend, forecast and status."""

    budget: Budget
    as_of: datetime
    period_start: datetime
    period_end: datetime
    forecast: Forecast
    status: Status


async def spend(
    conn: AnyConnection, budget: Budget, start: datetime, end: datetime, *, team_key: str
) -> float:
    """The spend of one scope over ``[start, end)``, in USD."""
    from_hour, to_hour = hour_bounds(start.astimezone(UTC), end.astimezone(UTC))
    params = {
        "tenant": budget.tenant,
        "from": start,
        "to": end,
        "from_hour": from_hour,
        "to_hour": to_hour,
        "team_key": team_key,
        "value": budget.value,
    }
    cursor = conn.cursor(row_factory=dict_row)
    row = await (await cursor.execute(spend_sql(budget.scope), params)).fetchone()
    return float(row["spend"]) if row else 0.0


async def hourly(
    conn: AnyConnection, budget: Budget, now: datetime, *, team_key: str
) -> dict[datetime, float]:
    """Spend per whole UTC hour of the :data:`HISTORY_HOURS` before ``now``'s hour."""
    current = floor_hour(now)
    params = {
        "tenant": budget.tenant,
        "from": current - timedelta(hours=HISTORY_HOURS),
        "to": current,
        "team_key": team_key,
        "value": budget.value,
    }
    cursor = conn.cursor(row_factory=dict_row)
    rows = await (await cursor.execute(hourly_sql(budget.scope), params)).fetchall()
    return {r["hour"]: float(r["spend"]) for r in rows}


async def evaluate_one(conn: AnyConnection, budget: Budget, now: datetime, team_key: str) -> Evaluation:
    start, end = period_bounds(budget.period, now)
    so_far = await spend(conn, budget, start, now, team_key=team_key)
    recent = await spend(conn, budget, now - timedelta(hours=RECENT_HOURS), now, team_key=team_key)
    weights = profile(await hourly(conn, budget, now, team_key=team_key), now)
    result = forecast(so_far, recent, now, end, weights)
    return Evaluation(budget, now, start, end, result, status(so_far, result.forecast_usd, budget.amount_usd))


async def budgets_of(conn: AnyConnection, tenant: str) -> list[Budget]:
    cursor = conn.cursor(row_factory=dict_row)
    rows = await (await cursor.execute(BUDGETS_OF, {"tenant": tenant})).fetchall()
    return [budget_of(r) for r in rows]


async def evaluate(
    conn: AnyConnection, tenant: str, team_key: str, now: datetime | None = None
) -> list[Evaluation]:
    """Every budget of ``tenant`` evaluated at ``now`` (default: the database's clock)."""
    if now is None:
        now = await database_now(conn)
    return [await evaluate_one(conn, b, now, team_key) for b in await budgets_of(conn, tenant)]


async def tenants_with_budgets(conn: AnyConnection) -> list[str]:
    rows = await (await conn.execute(TENANTS_WITH_BUDGETS)).fetchall()
    return [_first(r) for r in rows]


def _first(row: Any) -> Any:
    return row["tenant_id"] if isinstance(row, dict) else row[0]


async def database_now(conn: AnyConnection) -> datetime:
    """The database's clock (UTC) to the millisecond (what the API shows as ``as_of``, so the
    numbers can be recomputed from it): the instant of every evaluation of one request or round."""
    row = await (await conn.execute("SELECT now() AS now")).fetchone()
    value = (row["now"] if isinstance(row, dict) else row[0]) if row is not None else None
    at = value.astimezone(UTC) if isinstance(value, datetime) else datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


#: Open budget signals (of a period not over yet) concerning a session: its tenant's budgets,
#: its team's, its user's and its project's; the strongest kind per budget. A signal raised
#: under an amount the budget no longer has (changed mid-period) is not open any more.
OPEN_SIGNALS_OF_SESSION: LiteralString = (
    "WITH me AS ("  # noqa: S608 (LiteralString constants; values are parameters)
    + """
        SELECT s.tenant_id, s.attributes ->> %(team_key)s AS team, s.user_id, """
    + PROJECT_SQL
    + """ AS project
          FROM sessions s """
    + PROJECT_JOIN
    + """
         WHERE s.tenant_id = %(tenant)s AND s.session_id = %(session)s
    )
    SELECT DISTINCT ON (b.budget_id) b.budget_id, b.scope, b.scope_value, b.period,
           bs.kind, bs.amount_usd, bs.spend_usd, bs.forecast_usd, bs.period_end, bs.at
      FROM me
      JOIN budgets b ON b.tenant_id = me.tenant_id
      JOIN budget_signals bs ON bs.budget_id = b.budget_id AND bs.tenant_id = me.tenant_id
     WHERE bs.period_end > now() AND bs.amount_usd = b.amount_usd
       AND (b.scope = 'tenant'
            OR (b.scope = 'team' AND b.scope_value = me.team)
            OR (b.scope = 'user' AND b.scope_value = me.user_id)
            OR (b.scope = 'project' AND b.scope_value = me.project))
     ORDER BY b.budget_id, (bs.kind = 'budget_exceeded') DESC, bs.at DESC
    """
)
