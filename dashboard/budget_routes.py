"""Budgets in the API (issue 17): ``GET /api/v1/budgets`` for readers, writes for the admin.

- ``GET /api/v1/budgets``: every budget of the caller's tenant with its current period
  (``period_start``, ``period_end``, UTC), ``spend_usd`` so far, ``forecast_usd`` (spend at
  the end of the period, ``tokentide.budgets``), ``status`` (``ok``, ``warning``, ``exceeded``)
  and the budget signals raised in this period. Read access (a read key, a web session, the
  admin token with ``?tenant=``).
- ``PUT /api/v1/budgets`` (``{"scope", "value", "period", "amount_usd"}``: set a budget, new or
  the existing one's amount) and ``DELETE /api/v1/budgets/{budget_id}``: **admin only**, the
  admin token (``TOKENTIDE_DASHBOARD_ADMIN_TOKEN``) with ``?tenant=`` naming the tenant (open
  mode: anyone, tenant ``default``). A read key or a web session is 403: the path is READ in
  ``dashboard.auth`` (who is asking is known), and :func:`require_admin` narrows the writes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any, LiteralString

import psycopg
from fastapi import FastAPI, HTTPException, Path, Query
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from dashboard import budget_store
from dashboard.auth import current_caller
from dashboard.timestamps import Timestamp
from tokentide import budgets

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]

_SIGNALS_OF_TENANT: LiteralString = """
    SELECT budget_id, kind, period_start FROM budget_signals
     WHERE tenant_id = %(tenant)s AND period_end > %(now)s
"""


BudgetId = Annotated[str, Path(pattern=f"^{budgets.BUDGET_ID_PATTERN}$")]
#: The admin token's tenant (``dashboard.auth`` reads the same parameter).
TenantParam = Annotated[str | None, Query(alias="tenant", max_length=200)]


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: budgets.Scope
    #: The team, user or project; empty (or absent) for a tenant budget.
    value: str = Field(default="", max_length=budgets.VALUE_MAX)
    period: budgets.Period
    amount_usd: float = Field(gt=0, le=budgets.MAX_AMOUNT_USD, allow_inf_nan=False)


class BudgetOut(BaseModel):
    budget_id: str
    scope: budgets.Scope
    #: The team, user or project; "" for a tenant budget.
    value: str
    period: budgets.Period
    amount_usd: float
    #: The current period, ``[period_start, period_end)``, UTC.
    period_start: Timestamp
    period_end: Timestamp
    #: The instant the numbers are for (the database's clock).
    as_of: Timestamp
    spend_usd: float
    #: Spend of the last 6 hours (``tokentide.budgets.RECENT_HOURS``).
    recent_spend_usd: float
    #: ``recent_spend_usd / W_recent``: USD per hour (of weight 1 when the profile applies).
    rate_usd_per_hour: float
    forecast_usd: float
    #: Whether the hour-of-week profile (>= 7 days of history) weighted the forecast.
    forecast_from_history: bool
    status: budgets.Status
    #: Budget signals raised in the current period (``budget_warning``, ``budget_exceeded``).
    signals: list[str]


class BudgetsOut(BaseModel):
    budgets: list[BudgetOut]


def require_admin(tenant_param: str | None) -> None:
    """403 unless the caller is the admin token (or anyone in open mode); the admin names the
    tenant it writes to (``?tenant=``, 422 without it: a forgotten parameter must not change
    the ``default`` tenant's budgets, as it may for reads)."""
    via = current_caller().via
    if via not in ("admin_token", "open"):
        raise HTTPException(
            status_code=403,
            detail="budgets are set with the admin token or `tokentide admin budget set`; read keys read",
        )
    if via == "admin_token" and not tenant_param:
        raise HTTPException(status_code=422, detail="name the tenant whose budget this is: ?tenant=<tenant>")


def budget_out(evaluation: budget_store.Evaluation, signals: list[str]) -> BudgetOut:
    b, f = evaluation.budget, evaluation.forecast
    return BudgetOut(
        budget_id=b.budget_id,
        scope=b.scope,
        value=b.value,
        period=b.period,
        amount_usd=b.amount_usd,
        period_start=evaluation.period_start,
        period_end=evaluation.period_end,
        as_of=evaluation.as_of,
        spend_usd=f.spend_usd,
        recent_spend_usd=f.recent_spend_usd,
        rate_usd_per_hour=f.rate_usd_per_hour,
        forecast_usd=f.forecast_usd,
        forecast_from_history=f.from_history,
        status=evaluation.status,
        signals=signals,
    )


def add_budget_routes(app: FastAPI, pool: Pool, tenant: Callable[[], str], team_key: str) -> None:
    @app.get("/api/v1/budgets")
    async def list_budgets() -> BudgetsOut:
        """The caller's tenant's budgets: spend so far, forecast, period bounds and status."""
        async with pool.connection() as conn:
            evaluations = await budget_store.evaluate(conn, tenant(), team_key)
            now = evaluations[0].as_of if evaluations else None
            raised: dict[str, list[str]] = {}
            if now is not None:
                rows = await (
                    await conn.execute(_SIGNALS_OF_TENANT, {"tenant": tenant(), "now": now})
                ).fetchall()
                for row in rows:
                    raised.setdefault(row["budget_id"], []).append(row["kind"])
        return BudgetsOut(
            budgets=[budget_out(e, sorted(raised.get(e.budget.budget_id, []))) for e in evaluations]
        )

    @app.put(
        "/api/v1/budgets",
        responses={403: {"description": "not the admin token"}, 422: {"description": "an invalid budget"}},
    )
    async def set_budget(body: BudgetIn, tenant_param: TenantParam = None) -> BudgetOut:
        """Set a budget of the tenant (admin only): a new one, or the amount of the one with the
        same scope, value and period."""
        require_admin(tenant_param)
        try:
            scope, value, period, amount = budgets.checked(
                body.scope, body.value, body.period, body.amount_usd
            )
        except budgets.InvalidBudget as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        params = {
            "budget_id": budgets.new_budget_id(secrets.token_hex(6)),
            "tenant": tenant(),
            "scope": str(scope),
            "value": value,
            "period": str(period),
            "amount": amount,
        }
        async with pool.connection() as conn:
            try:
                row = await (await conn.execute(budgets.UPSERT_BUDGET, params)).fetchone()
            except psycopg.errors.ForeignKeyViolation:
                raise HTTPException(status_code=404, detail=f"no tenant {tenant()!r}") from None
            if row is None:  # INSERT ... RETURNING always returns its row
                raise RuntimeError("budget not set")
            evaluation = await budget_store.evaluate_one(
                conn, budget_store.budget_of(row), await budget_store.database_now(conn), team_key
            )
        return budget_out(evaluation, [])

    @app.delete("/api/v1/budgets/{budget_id}", status_code=204, responses={403: {}, 404: {}})
    async def delete_budget(budget_id: BudgetId, tenant_param: TenantParam = None) -> None:
        """Delete a budget of the tenant and its signals (admin only)."""
        require_admin(tenant_param)
        async with pool.connection() as conn:
            row = await (
                await conn.execute(budgets.DELETE_BUDGET, {"tenant": tenant(), "budget_id": budget_id})
            ).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail=f"no budget {budget_id!r}")


class BudgetSignalOut(BaseModel):
    """An open budget signal concerning a session (the hook's notice): of a budget of its
    tenant, team, user or project, raised in the budget's current period."""

    budget_id: str
    scope: budgets.Scope
    value: str
    period: budgets.Period
    #: ``budget_warning`` or ``budget_exceeded`` (the stronger one when both were raised).
    kind: str
    amount_usd: float
    #: Spend and forecast when the signal was raised.
    spend_usd: float
    forecast_usd: float
    period_end: Timestamp


async def open_budget_signals(
    conn: psycopg.AsyncConnection[dict[str, Any]], tenant: str, session_id: str, team_key: str
) -> list[BudgetSignalOut]:
    """The open budget signals concerning ``session_id`` of ``tenant``, by budget id."""
    params = {"tenant": tenant, "session": session_id, "team_key": team_key}
    rows = await (await conn.execute(budget_store.OPEN_SIGNALS_OF_SESSION, params)).fetchall()
    return [
        BudgetSignalOut(
            budget_id=r["budget_id"],
            scope=r["scope"],
            value=r["scope_value"],
            period=r["period"],
            kind=r["kind"],
            amount_usd=float(r["amount_usd"]),
            spend_usd=r["spend_usd"],
            forecast_usd=r["forecast_usd"],
            period_end=r["period_end"],
        )
        for r in rows
    ]
