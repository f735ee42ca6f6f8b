"""``GET /api/v1/recommendations`` and ``GET /api/v1/compare`` over a real, migrated PostgreSQL
holding synthetic Claude Code sessions made to trigger every rule and a real captured session,
written by the real stream-stage and sink code (tests/support/insight_data.py).

Expected savings and costs come from the sessions' own items and the formulas of README
"Recommendations" / "Cross-model comparison", written out in the support module and here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard.insights import add_insight_routes
from tests.support import insight_data as data
from tests.support.services import create_database, drop_database

pytestmark = pytest.mark.integration

PRICES = Path(__file__).resolve().parents[2] / "streams" / "prices.json"
CAPTURED = "captured-research"
ERRORS = "captured-errors"


def build() -> data.Dataset:
    start = time.time_ns() - 2 * 3600 * data.SECOND_NS
    return data.Dataset(start, [*data.plan("acme", start), *data.plan("globex", start, tenant="globex")])


@pytest.fixture(scope="module")
def seeded(admin_url: str) -> Iterator[tuple[str, data.Dataset]]:
    dsn = create_database(admin_url)
    dataset = build()
    try:
        extra = [
            ("default", data.captured(CAPTURED, "research", "docs")),
            *data.captured_errors(ERRORS, dataset.start_ns),
        ]
        asyncio.run(data.seed(dsn, dataset, extra))
        yield dsn, dataset
    finally:
        drop_database(admin_url, dsn)


@pytest.fixture
async def pool(seeded: tuple[str, data.Dataset]) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        seeded[0], min_size=1, max_size=2, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open(wait=True, timeout=10)
    yield pool
    await pool.close()


def client_for(pool: AsyncConnectionPool[Any], tenant: str) -> httpx.AsyncClient:
    app = FastAPI()
    add_insight_routes(app, pool, lambda: tenant, "team")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")


def test_the_stated_rates_are_the_price_tables() -> None:
    models = json.loads(PRICES.read_text())["models"]
    for model, rates in data.COMPARE_RATES.items():
        entry = models[model]
        keys = ("input", "output", "cache_read", "cache_creation", "cache_creation_1h")
        assert tuple(Decimal(str(entry[k])) for k in keys) == tuple(Decimal(r) for r in rates), model
        assert all(t["above_context_tokens"] >= 200_000 for t in entry.get("tiers", [])), model


async def test_every_rule_fires_with_its_exact_savings(
    pool: AsyncConnectionPool[Any], seeded: tuple[str, data.Dataset]
) -> None:
    sessions = seeded[1].of("default")
    want = data.expected_recommendations(sessions)
    assert {k for k, _ in want} == {"cache", "compaction", "smaller_model", "retry_storm", "idle_context"}
    # the captured errors, three real api_error events a second apart: a storm with no request billed
    want[("retry_storm", ERRORS)] = 0
    async with client_for(pool, "default") as client:
        response = await client.get("/api/v1/recommendations")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window_days"] == 30
    got = {data.subject_key(r): r["savings_nanos"] for r in body["recommendations"]}
    assert got == want
    savings = [r["savings_nanos"] for r in body["recommendations"]]
    assert savings == sorted(savings, reverse=True)
    assert body["savings_usd"] == pytest.approx(sum(want.values()) / 1e9, abs=1e-9)
    for rec in body["recommendations"]:
        assert rec["savings_usd"] == rec["savings_nanos"] / 1e9
        assert rec["message"]
    by_kind = {r["kind"]: r for r in body["recommendations"]}
    # the evidence, from the items
    assert by_kind["compaction"]["evidence"]["compactions"] == 3
    assert by_kind["compaction"]["evidence"]["model"] == data.OPUS
    storm = next(r for r in body["recommendations"] if r["subject"].get("session_id") == "acme-cat")[
        "evidence"
    ]
    assert (storm["errors"], storm["span_s"], storm["requests_retried"], storm["status_codes"]) == (
        3,
        90,
        2,
        "529",
    )
    smaller = by_kind["smaller_model"]["evidence"]
    assert (smaller["model"], smaller["smaller_model"], smaller["requests_movable"]) == (
        data.OPUS,
        data.HAIKU,
        2,
    )
    assert by_kind["idle_context"]["evidence"]["cache_written_tokens"] == 120_000
    assert by_kind["cache"]["subject"] == {"team": "platform", "user": "ann"}
    captured = next(r for r in body["recommendations"] if r["subject"].get("session_id") == ERRORS)
    assert captured["evidence"]["errors"] == 3
    assert captured["evidence"]["status_codes"] == "500"
    assert captured["evidence"]["span_s"] == 2


async def test_each_tenant_sees_its_own_recommendations_and_an_empty_one_none(
    pool: AsyncConnectionPool[Any], seeded: tuple[str, data.Dataset]
) -> None:
    async with client_for(pool, "globex") as client:
        body = (await client.get("/api/v1/recommendations")).json()
    ids = {r["subject"].get("session_id") for r in body["recommendations"]} - {None}
    assert ids == {"globex-ann-opus", "globex-cat", "globex-bob"}
    assert {
        data.subject_key(r): r["savings_nanos"] for r in body["recommendations"]
    } == data.expected_recommendations(seeded[1].of("globex"))
    async with client_for(pool, "nobody") as client:
        empty = await client.get("/api/v1/recommendations", params={"window_days": 90})
        compared = await client.get("/api/v1/compare")
    assert empty.status_code == 200
    assert empty.json()["recommendations"] == []
    assert empty.json()["savings_usd"] == 0
    assert compared.json()["groups"] == []


async def test_a_window_that_ends_before_the_data_has_nothing(pool: AsyncConnectionPool[Any]) -> None:
    async with client_for(pool, "default") as client:
        body = (
            await client.get(
                "/api/v1/compare", params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-31T00:00:00Z"}
            )
        ).json()
    assert body["groups"] == []


async def test_the_same_tokens_priced_on_each_model_per_team_and_project(
    pool: AsyncConnectionPool[Any], seeded: tuple[str, data.Dataset]
) -> None:
    models = sorted(data.COMPARE_RATES)
    sessions = seeded[1].of("default")
    captured, captured_cost = data.captured_items()
    async with client_for(pool, "default") as client:
        by_team = await client.get("/api/v1/compare", params={"group_by": "team", "models": models})
        by_project = await client.get("/api/v1/compare", params={"group_by": "project", "models": models})
        every = await client.get("/api/v1/compare")
    assert by_team.status_code == 200, by_team.text
    teams = {g["key"]: g for g in by_team.json()["groups"]}
    assert set(teams) == {"platform", "research"}
    platform = [r for s in sessions for r in s.requests]
    assert data.shape(teams["platform"]) == data.expected_group(platform, models)
    research = data.expected_group(captured, models)
    research["cost_nanos"] = captured_cost  # what the agent reported
    assert data.shape(teams["research"]) == research
    assert teams["research"]["unpriced_requests"] == 0
    for m in teams["platform"]["models"]:
        assert m["difference_usd"] == pytest.approx((m["cost_nanos"] - teams["platform"]["cost_nanos"]) / 1e9)
    projects = {g["key"]: g for g in by_project.json()["groups"]}
    assert set(projects) == {"web", "api", "docs"}
    for project in ("web", "api"):
        requests = [r for s in sessions if s.project == project for r in s.requests]
        assert data.shape(projects[project]) == data.expected_group(requests, models), project
    # without models=: every priced model of the table, cheapest first
    groups = every.json()["groups"]
    table = json.loads(PRICES.read_text())["models"]
    listed = {m["model"] for m in groups[0]["models"]}
    snapshots = {s for m in groups[0]["models"] for s in m["snapshots"]}
    assert listed | snapshots == set(table) | {m for m in listed if m not in table}
    assert not listed & snapshots
    assert "gpt-5-nano-2025-08-07" in snapshots
    costs = [m["cost_nanos"] for m in groups[0]["models"]]
    assert costs == sorted(costs)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/recommendations", {"window_days": "0"}),
        ("/api/v1/recommendations", {"window_days": "91"}),
        ("/api/v1/recommendations", {"window_days": "a week"}),
        ("/api/v1/compare", {"group_by": "user"}),
        ("/api/v1/compare", {"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}),
        ("/api/v1/compare", {"from": "2026-01-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}),
        ("/api/v1/compare", {"from": "yesterday"}),
        ("/api/v1/compare", {"models": "no-such-model"}),
        ("/api/v1/compare", {"models": [data.OPUS] * 51}),
    ],
)
async def test_bad_parameters_are_422(
    pool: AsyncConnectionPool[Any], path: str, params: dict[str, Any]
) -> None:
    async with client_for(pool, "default") as client:
        response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
