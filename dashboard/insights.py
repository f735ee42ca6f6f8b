"""The recommendations and the cross-model comparison: the routes (the I/O edge).

``GET /api/v1/recommendations`` runs the queries of :mod:`dashboard.recommendations` over the
caller's tenant and hands the rows to its rules; ``GET /api/v1/compare`` runs
:func:`dashboard.compare.compare_sql` and prices the sums at every model of the price table.
Both are READ routes (``dashboard/auth.py``: any ``/api/`` path); every statement starts from
the caller's tenant and every value travels as a parameter. The pages ``/recommendations`` and
``/compare`` (``dashboard.app``'s web UI) are static files over these routes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, HTTPException, Query
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from dashboard import recommendations as rules
from dashboard.compare import (
    MAX_WINDOW_DAYS,
    NANOS_PER_USD,
    CompareBy,
    compare,
    compare_sql,
    default_catalogue,
    group_rows,
)
from dashboard.timestamps import Timestamp

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]
#: At most this many models named in one comparison (``models=``).
MAX_MODELS = 50


class RecommendationOut(BaseModel):
    kind: rules.Kind
    scope: rules.Scope
    subject: dict[str, str | None]
    evidence: dict[str, int | float | str | bool | None]
    savings_usd: float
    #: The same, exactly, in nano-USD (10^-9 USD).
    savings_nanos: int
    message: str


class RecommendationsOut(BaseModel):
    window_days: int
    start: Timestamp
    end: Timestamp
    #: The price table the savings were priced with.
    prices: str
    #: The sum of every recommendation's savings.
    savings_usd: float
    recommendations: list[RecommendationOut]


class CompareTokens(BaseModel):
    input: int
    output: int
    cache_read: int
    cache_creation: int
    #: The part of ``cache_creation`` written with a one-hour lifetime.
    cache_creation_1h: int
    #: The part of ``output`` that was reasoning (priced as output, never twice).
    reasoning: int


class ModelCostOut(BaseModel):
    model: str
    provider: str | None
    cost_usd: float
    cost_nanos: int
    #: ``cost_usd`` minus the group's actual cost (negative: cheaper than what was paid).
    difference_usd: float
    #: The table's price for this model is an assumption (``prices.local.json``'s reason).
    assumed: bool
    #: Dated snapshots of the model the table prices exactly as it (not listed apart).
    snapshots: list[str]


class CompareGroup(BaseModel):
    #: The team or project; null when the sessions have none.
    key: str | None
    requests: int
    #: Requests whose cost is unknown (their model is not priced); ``cost_usd`` leaves them out.
    unpriced_requests: int
    tokens: CompareTokens
    cost_usd: float
    cost_nanos: int
    #: The same tokens priced on each model, cheapest first.
    models: list[ModelCostOut]


class CompareOut(BaseModel):
    group_by: CompareBy
    start: Timestamp
    end: Timestamp
    prices: str
    groups: list[CompareGroup]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def window(start: datetime | None, end: datetime | None, default_days: int) -> tuple[datetime, datetime]:
    """``[from, to)``: defaults to the ``default_days`` days before now; 422 unless
    ``from < to`` and the window is at most MAX_WINDOW_DAYS days."""
    end = _aware(end) if end is not None else datetime.now(UTC)
    start = _aware(start) if start is not None else end - timedelta(days=default_days)
    if start >= end:
        raise HTTPException(status_code=422, detail="`from` must be before `to`")
    if end - start > timedelta(days=MAX_WINDOW_DAYS):
        raise HTTPException(status_code=422, detail=f"the window is at most {MAX_WINDOW_DAYS} days")
    return start, end


def add_insight_routes(app: FastAPI, pool: Pool, tenant: Callable[[], str], team_attribute: str) -> None:
    """Register ``/api/v1/recommendations`` and ``/api/v1/compare``."""

    @app.get("/api/v1/recommendations")
    async def get_recommendations(
        window_days: Annotated[int, Query(ge=1, le=MAX_WINDOW_DAYS)] = rules.DEFAULT_WINDOW_DAYS,
    ) -> RecommendationsOut:
        """Recommendations for the caller's tenant over the last ``window_days`` days, each with
        its evidence and the money it would have saved, largest savings first (README
        "Recommendations" states every rule, threshold and formula)."""
        end = datetime.now(UTC)
        start = end - timedelta(days=window_days)
        params: dict[str, Any] = {
            "tenant": tenant(),
            "from": start,
            "to": end,
            "team_key": team_attribute,
            "storm_min": rules.STORM_MIN_ERRORS,
            "idle_s": rules.IDLE_MIN_S,
            "idle_context": rules.IDLE_MIN_CONTEXT,
        }
        catalogue = default_catalogue()
        params["thresholds"] = list(catalogue.thresholds)
        inputs = rules.Inputs()
        async with pool.connection() as conn:
            for name, sql in (
                ("cache", rules.CACHE_SQL),
                ("compactions", rules.COMPACTION_SQL),
                ("patterns", rules.PATTERNS_SQL),
                ("errors", rules.PROJECT_ERRORS_SQL),
                ("storms", rules.STORM_SQL),
                ("idle", rules.IDLE_SQL),
            ):
                setattr(inputs, name, await (await conn.execute(sql, params)).fetchall())
            candidates = rules.smaller_model_candidates(inputs.patterns, inputs.errors, catalogue)
            if candidates:
                movable = {**params, **rules.movable_params(candidates)}
                inputs.movable = await (await conn.execute(rules.MOVABLE_SQL, movable)).fetchall()
        found = rules.recommend(inputs, catalogue)
        return RecommendationsOut(
            window_days=window_days,
            start=start,
            end=end,
            prices=catalogue.table.full_version,
            savings_usd=sum(r.savings_nanos for r in found) / NANOS_PER_USD,
            recommendations=[
                RecommendationOut(
                    kind=r.kind,
                    scope=r.scope,
                    subject=r.subject,
                    evidence=r.evidence,
                    savings_usd=r.savings_usd,
                    savings_nanos=r.savings_nanos,
                    message=r.message,
                )
                for r in found
            ],
        )

    @app.get("/api/v1/compare")
    async def get_compare(
        group_by: CompareBy = CompareBy.TEAM,
        start: Annotated[
            datetime | None, Query(alias="from", description="default: 30 days before `to`")
        ] = None,
        end: Annotated[datetime | None, Query(alias="to", description="default: now")] = None,
        models: Annotated[
            list[str] | None,
            Query(max_length=MAX_MODELS, description="only these priced models (default: every one)"),
        ] = None,
    ) -> CompareOut:
        """Per team or project over ``[from, to)`` (at most 90 days): the usage events' tokens by
        type and actual cost, and what the same tokens would have cost on each priced model of
        the price table, cheapest first."""
        start, end = window(start, end, rules.DEFAULT_WINDOW_DAYS)
        catalogue = default_catalogue()
        chosen = catalogue.models
        if models:
            named = []
            for name in models:
                priced = catalogue.lookup(name)
                if priced is None:
                    detail = f"model {name[:200]!r} is not in the price table"
                    raise HTTPException(status_code=422, detail=detail)
                named.append(priced)
            chosen = tuple({m.name: m for m in named}.values())
        params = {
            "tenant": tenant(),
            "from": start,
            "to": end,
            "team_key": team_attribute,
            "thresholds": list(catalogue.thresholds),
        }
        async with pool.connection() as conn:
            rows = await (await conn.execute(compare_sql(group_by), params)).fetchall()
        groups = []
        for group in group_rows(rows):
            t = group.tokens
            groups.append(
                CompareGroup(
                    key=group.key,
                    requests=group.requests,
                    unpriced_requests=group.unpriced_requests,
                    tokens=CompareTokens(
                        input=t.input,
                        output=t.output,
                        cache_read=t.cache_read,
                        cache_creation=t.cache_creation,
                        cache_creation_1h=t.cache_creation_1h,
                        reasoning=t.reasoning,
                    ),
                    cost_usd=group.cost_nanos / NANOS_PER_USD,
                    cost_nanos=group.cost_nanos,
                    models=[
                        ModelCostOut(
                            model=c.model,
                            provider=c.provider,
                            cost_usd=c.cost_nanos / NANOS_PER_USD,
                            cost_nanos=c.cost_nanos,
                            difference_usd=c.difference_nanos / NANOS_PER_USD,
                            assumed=c.assumed,
                            snapshots=list(c.snapshots),
                        )
                        for c in compare(group, catalogue, chosen)
                    ],
                )
            )
        return CompareOut(
            group_by=group_by, start=start, end=end, prices=catalogue.table.full_version, groups=groups
        )
