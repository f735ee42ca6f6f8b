"""``GET /metrics/usage`` over a real, migrated PostgreSQL holding sessions written by the real
stream-stage and sink code (tests/support/usage_data.py).

Expected values come from the synthetic sessions' own requests, never from the exporter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard.usage_exporter import (
    LEVEL_KINDS,
    NO_TEAM,
    USAGE_METRICS_PATH,
    UsageMetricsSettings,
    add_usage_metrics,
)
from tests.support.scenarios import WINDOW
from tests.support.usage_data import Dataset, SeededSession, seed

pytestmark = pytest.mark.integration

Labels = tuple[tuple[str, str], ...]
TYPES = ("input", "output", "cache_read", "cache_creation")


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


async def scrape(client: httpx.AsyncClient) -> dict[str, dict[Labels, float]]:
    response = await client.get(USAGE_METRICS_PATH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
async def pool(database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    # As the dashboard opens it (dict rows, autocommit): the exporter must not depend on either.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database, min_size=1, max_size=2, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open(wait=True, timeout=10)
    yield pool
    await pool.close()


def client_for(pool: AsyncConnectionPool[Any], settings: UsageMetricsSettings) -> httpx.AsyncClient:
    app = FastAPI()
    add_usage_metrics(app, pool, settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")


def expected_usage(dataset: Dataset) -> dict[Labels, dict[str, float]]:
    """(tenant, team, model) -> tokens by type, cost (USD) and requests, from the scenarios."""
    out: dict[Labels, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in dataset.sessions:
        team = s.team or NO_TEAM
        for model, m in s.by_model().items():
            # A metrics-only session: the same tokens and cost per model, from the agent's
            # metrics (which name the model), and no request counts (only events count those).
            row = out[labels(tenant=s.tenant, team=team, model=model)]
            for kind in TYPES:
                row[kind] += m[kind]
            row["cost"] += m["cost_nanos"] / 1e9
            row["requests"] += 0 if s.metrics_only else m["requests"]
    return out


def main_context(s: SeededSession) -> float:
    """Context ratio after the session's last main-conversation request (no compaction after it)."""
    last = [r for r in s.generated.requests if r.main][-1]
    assert not any(c.time_ns > last.time_ns for c in s.generated.compactions)
    return last.context / WINDOW


async def test_usage_counters_and_context_gauges(database: str, pool: AsyncConnectionPool[Any]) -> None:
    dataset = await seed(database, captures=False)
    settings = UsageMetricsSettings(usage_top_sessions=1, usage_cache_s=0)
    async with client_for(pool, settings) as client:
        metrics = await scrape(client)

    # Counters: exactly the scenarios' usage per tenant, team, model and type.
    want = expected_usage(dataset)
    tokens = metrics["tokentide_usage_tokens_total"]
    cost = metrics["tokentide_usage_cost_usd_total"]
    requests = metrics["tokentide_usage_requests_total"]
    assert set(cost) == set(want)
    for key, row in want.items():
        for kind in TYPES:
            assert tokens[(*key, ("type", kind))] == row[kind], (key, kind)
        assert tokens[(*key, ("type", "reasoning"))] == 0
        assert cost[key] == pytest.approx(row["cost"], abs=1e-6), key
        assert requests[key] == row["requests"], key

    # Active now: the critical and data sessions of `default`, the acme session.
    critical = dataset.session("platform-critical")
    data = dataset.session("data-active")
    compacted = dataset.session("data-compacted")
    acme = dataset.session("acme-active")
    active = metrics["tokentide_sessions_active"]
    assert active == {labels(tenant="default"): 3, labels(tenant="acme"): 1}

    # Top 1 per tenant by context ratio; the other default session is summarised.
    ratios = metrics["tokentide_session_context_ratio"]
    assert set(ratios) == {
        labels(tenant="default", session=critical.session_id, agent="claude_code", user=critical.user_id),
        labels(tenant="acme", session=acme.session_id, agent="claude_code", user=acme.user_id),
    }
    assert ratios[
        labels(tenant="default", session=critical.session_id, agent="claude_code", user=critical.user_id)
    ] == pytest.approx(main_context(critical))
    assert metrics["tokentide_sessions_context_ratio_others"][labels(tenant="default")] == 2
    assert metrics["tokentide_sessions_context_ratio_others_max"][labels(tenant="default")] == pytest.approx(
        max(main_context(data), main_context(compacted))
    )
    assert metrics["tokentide_sessions_context_ratio_others"][labels(tenant="acme")] == 0

    # Signals: every one the scenarios raise, and those standing on active sessions.
    raised: dict[Labels, int] = defaultdict(int)
    for s in dataset.sessions:
        for signal in s.generated.signals:
            raised[labels(tenant=s.tenant, kind=signal.kind)] += 1
    assert metrics["tokentide_usage_signals_total"] == raised
    assert {signal.kind for signal in critical.generated.signals} == set(LEVEL_KINDS)
    assert {signal.kind for signal in compacted.generated.signals} == {*LEVEL_KINDS, "compaction_observed"}
    standing = metrics["tokentide_signals_open"]
    for kind in LEVEL_KINDS:
        # Only the critical session's: the compacted one is active but compacted since it
        # raised them, the long one compacted and is no longer active.
        assert standing[labels(tenant="default", kind=kind)] == 1, kind
        assert standing[labels(tenant="acme", kind=kind)] == 0, kind


async def test_totals_survive_retention_of_raw_rows(database: str, pool: AsyncConnectionPool[Any]) -> None:
    await seed(database, captures=True)
    async with client_for(pool, UsageMetricsSettings(usage_cache_s=0)) as client:
        before = await scrape(client)
        # The retention the sink runs, as if three days had passed: every raw partition goes.
        with psycopg.connect(database, autocommit=True) as conn:
            dropped = conn.execute(
                "SELECT relation FROM tokentide_maintain(INTERVAL '1 hour', 1, now() + INTERVAL '3 days')"
                " WHERE action = 'dropped'"
            ).fetchall()
            left = conn.execute("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM metric_points)")
            remaining = left.fetchone()
        assert dropped
        assert remaining == (0,)
        after = await scrape(client)
    for family in (
        "tokentide_usage_tokens_total",
        "tokentide_usage_cost_usd_total",
        "tokentide_usage_requests_total",
        "tokentide_usage_signals_total",
    ):
        assert after[family] == before[family], family
        assert any(v > 0 for v in after[family].values()), family


async def test_counters_hold_their_highest_value(database: str, pool: AsyncConnectionPool[Any]) -> None:
    dataset = await seed(database, captures=False)
    acme = dataset.session("acme-active")
    key = labels(tenant="acme", team="platform", model="claude-opus-4-8")
    async with client_for(pool, UsageMetricsSettings(usage_cache_s=0)) as client:
        first = (await scrape(client))["tokentide_usage_cost_usd_total"][key]
        # A total that falls in the database (e.g. a late event re-opening a finalised minute).
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                "UPDATE rollups_hour SET cost_usd = 0 WHERE tenant_id = 'acme' AND session_id = %s",
                (acme.session_id,),
            )
        second = (await scrape(client))["tokentide_usage_cost_usd_total"][key]
    assert first > 0
    assert second == first


async def test_database_unavailable_answers_503(admin_url: str) -> None:
    missing = psycopg.conninfo.make_conninfo(admin_url, dbname="tokentide_no_such_database")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(missing, min_size=1, max_size=1, open=False)
    await pool.open(wait=False)
    try:
        settings = UsageMetricsSettings(usage_query_timeout_s=1, usage_cache_s=0)
        async with client_for(pool, settings) as client:
            response = await client.get(USAGE_METRICS_PATH)
    finally:
        await pool.close()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "unavailable" in response.text
