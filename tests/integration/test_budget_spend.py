"""Budget spend and forecasts over a real, migrated PostgreSQL holding sessions written by the
real stream-stage and sink code (tests/support/usage_data.py), per tenant, team, user and
project; the same numbers in ``GET /api/v1/budgets``'s store and ``/metrics/usage``.

Expected spend is summed from the synthetic sessions' own requests; the forecast is stated here
independently of ``tokentide.budgets`` (no history older than 7 days: the flat rule)::

    forecast = spend + spend(last 6 h) / 6 * hours(as_of -> period end)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard import budget_store
from dashboard.usage_exporter import USAGE_METRICS_PATH, UsageMetricsSettings, add_usage_metrics
from tests.support.usage_data import SeededSession, seed
from tokentide import admin

pytestmark = pytest.mark.integration

SECOND_NS = 1_000_000_000


@pytest.fixture
async def pool(database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database, min_size=1, max_size=2, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open(wait=True, timeout=10)
    yield pool
    await pool.close()


def period_start(period: str, now: datetime) -> datetime:
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=now.weekday())
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def period_end(period: str, now: datetime) -> datetime:
    start = period_start(period, now)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)


def spent(
    sessions: list[SeededSession], keep: Callable[[SeededSession], bool], start: datetime, end: datetime
) -> float:
    lo, hi = start.timestamp() * SECOND_NS, end.timestamp() * SECOND_NS
    nanos = sum(
        r.cost_nanos for s in sessions if keep(s) for r in s.generated.requests if lo <= r.time_ns < hi
    )
    return nanos / 1e9


async def test_spend_and_forecast_per_tenant_team_user_and_project(
    database: str, pool: AsyncConnectionPool[Any]
) -> None:
    dataset = await seed(database, captures=False)
    sessions = [s for s in dataset.sessions if not s.metrics_only]
    critical = dataset.session("platform-critical")
    project_session = dataset.session("data-active")
    with psycopg.connect(database) as conn:
        # What the hook route records: data-active works on project "tide".
        conn.execute(
            "INSERT INTO session_context (tenant_id, session_id, project) VALUES ('default', %s, 'tide')",
            (project_session.session_id,),
        )
        set_ = admin.set_budget
        set_(conn, "default", scope="tenant", value=None, period="day", amount_usd=1000)
        set_(conn, "default", scope="team", value="platform", period="day", amount_usd=0.01)
        set_(conn, "default", scope="user", value=critical.user_id, period="week", amount_usd=1000)
        set_(conn, "default", scope="project", value="tide", period="month", amount_usd=1000)
        set_(conn, "acme", scope="team", value="platform", period="month", amount_usd=1000)
    keeps: dict[tuple[str, str, str], Callable[[SeededSession], bool]] = {
        ("default", "tenant", ""): lambda s: s.tenant == "default",
        ("default", "team", "platform"): lambda s: s.tenant == "default" and s.team == "platform",
        ("default", "user", critical.user_id): lambda s: (
            s.tenant == "default" and s.user_id == critical.user_id
        ),
        ("default", "project", "tide"): lambda s: s is project_session,
        ("acme", "team", "platform"): lambda s: s.tenant == "acme" and s.team == "platform",
    }

    seen: dict[tuple[str, str, str], budget_store.Evaluation] = {}
    async with pool.connection() as conn:
        now = await budget_store.database_now(conn)
        for tenant in await budget_store.tenants_with_budgets(conn):
            for e in await budget_store.evaluate(conn, tenant, "team", now):
                seen[(tenant, str(e.budget.scope), e.budget.value)] = e
    assert set(seen) == set(keeps)
    oldest = min(r.time_ns for s in sessions for r in s.generated.requests)
    assert oldest >= (now - timedelta(hours=6) + timedelta(minutes=1)).timestamp() * SECOND_NS  # all recent

    for key, keep in keeps.items():
        e = seen[key]
        period = str(e.budget.period)
        start, end = period_start(period, now), period_end(period, now)
        assert (e.period_start, e.period_end) == (start, end), key
        spend = spent(sessions, keep, start, now)
        recent = spent(sessions, keep, now - timedelta(hours=6), now)
        assert spend > 0, key
        assert e.forecast.spend_usd == spend, key
        assert e.forecast.recent_spend_usd == recent, key
        assert e.forecast.from_history is False
        forecast = spend + recent / 6 * ((end - now).total_seconds() / 3600)
        assert e.forecast.forecast_usd == pytest.approx(forecast, rel=1e-12), key
        expected_status = (
            "exceeded"
            if spend >= e.budget.amount_usd
            else "warning"
            if forecast > e.budget.amount_usd
            else "ok"
        )
        assert e.status == expected_status, key
    assert seen[("default", "team", "platform")].status == "exceeded"
    # Tenants stay apart: acme's platform team is not default's.
    assert (
        seen[("acme", "team", "platform")].forecast.spend_usd
        != seen[("default", "team", "platform")].forecast.spend_usd
    )

    app_settings = UsageMetricsSettings(usage_cache_s=0)
    app = FastAPI()
    add_usage_metrics(app, pool, app_settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as client:
        response = await client.get(USAGE_METRICS_PATH)
    assert response.status_code == 200, response.text
    gauges: dict[str, dict[tuple[str, str, str, str], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        if family.name.startswith("tokentide_budget"):
            for sample in family.samples:
                key4 = tuple(sample.labels[k] for k in ("tenant", "scope", "value", "period"))
                gauges[sample.name][key4] = sample.value  # type: ignore[index]
    for (tenant, scope, value), e in seen.items():
        key4 = (tenant, scope, value, str(e.budget.period))
        assert gauges["tokentide_budget_usd"][key4] == e.budget.amount_usd
        assert gauges["tokentide_budget_spend_usd"][key4] == e.forecast.spend_usd
        # Scraped a moment later: the time left shrank by at most a minute of the recent rate.
        drift = e.forecast.recent_spend_usd / 6 / 60
        assert gauges["tokentide_budget_forecast_usd"][key4] == pytest.approx(
            e.forecast.forecast_usd, abs=drift
        )
