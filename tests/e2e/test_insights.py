"""Recommendations and the cross-model comparison through the real pipeline (issue 17 items 5
and 6): synthetic Claude Code sessions made to trigger every rule and a real captured session
are posted to ingest, go through the stream stage and the sink, and the dashboard's
``/api/v1/recommendations`` and ``/api/v1/compare`` answer with exactly the savings and costs
README's formulas give over the sessions' own items (tests/support/insight_data.py). Then the
two pages in a real headless Chromium, with screenshots (``.local/screenshots/``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from tests.e2e.test_web_ui import SCREENSHOTS, chromium_executable
from tests.support import insight_data as data
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.e2e

WAIT_S = 60


@pytest.fixture(scope="module")
async def posted(pipeline: Pipeline) -> data.Dataset:
    """The dataset and the capture posted to ingest; returns once the dashboard has them all."""
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    start = time.time_ns() - 2 * 3600 * data.SECOND_NS
    dataset = data.Dataset(start, data.plan(prefix, start))
    bodies = [
        *data.bodies(dataset),
        ("default", data.captured(f"{prefix}-captured", "research", "docs")),
        *data.captured_errors(f"{prefix}-errors", start),
    ]
    dashboard = pipeline.url("dashboard")
    async with httpx.AsyncClient(timeout=10) as client:
        for _, body in bodies:
            response = await client.post(
                pipeline.url("ingest") + "/v1/logs",
                content=body,
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert response.status_code == 200, response.text
        want = {s.session_id: len(s.requests) for s in dataset.sessions} | {
            f"{prefix}-captured": 3,
            f"{prefix}-errors": 0,
        }
        deadline = time.monotonic() + WAIT_S
        while True:
            seen, errors = {}, 0
            for session_id in want:
                r = await client.get(f"{dashboard}/api/v1/sessions/{session_id}")
                seen[session_id] = r.json()["api_requests"] if r.status_code == 200 else None
                if session_id.endswith("-errors") and r.status_code == 200:
                    errors = r.json()["api_errors"]
            if seen == want and errors == 3:
                break
            assert time.monotonic() < deadline, f"{seen} != {want}\n{pipeline.logs()}"
            await asyncio.sleep(0.3)
    return dataset


async def test_recommendations_through_the_pipeline_have_the_exact_savings(
    pipeline: Pipeline, posted: data.Dataset
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(pipeline.url("dashboard") + "/api/v1/recommendations")
    assert response.status_code == 200, response.text
    recommendations = response.json()["recommendations"]
    want = data.expected_recommendations(posted.sessions)
    assert len(want) == 5
    errors = next(s.session_id for s in posted.sessions).split("-")[0] + "-errors"
    want[("retry_storm", errors)] = 0  # the captured 500s: three errors, no request billed
    assert {data.subject_key(r): r["savings_nanos"] for r in recommendations} == want
    assert [r["savings_nanos"] for r in recommendations] == sorted(want.values(), reverse=True)
    storm = next(r for r in recommendations if r["subject"].get("session_id") == errors)["evidence"]
    assert (storm["errors"], storm["status_codes"]) == (3, "500")


async def test_the_comparison_through_the_pipeline_prices_the_same_tokens_exactly(
    pipeline: Pipeline, posted: data.Dataset
) -> None:
    models = sorted(data.COMPARE_RATES)
    captured, captured_cost = data.captured_items()
    research = data.expected_group(captured, models) | {"cost_nanos": captured_cost}
    async with httpx.AsyncClient(timeout=10) as client:
        teams = (
            await client.get(
                pipeline.url("dashboard") + "/api/v1/compare", params={"group_by": "team", "models": models}
            )
        ).json()
        projects = (
            await client.get(
                pipeline.url("dashboard") + "/api/v1/compare",
                params={"group_by": "project", "models": models},
            )
        ).json()
    by_team = {g["key"]: data.shape(g) for g in teams["groups"]}
    assert by_team == {
        "platform": data.expected_group([r for s in posted.sessions for r in s.requests], models),
        "research": research,
    }
    by_project = {g["key"]: data.shape(g) for g in projects["groups"]}
    assert by_project == {
        "web": data.expected_group(
            [r for s in posted.sessions if s.project == "web" for r in s.requests], models
        ),
        "api": data.expected_group(
            [r for s in posted.sessions if s.project == "api" for r in s.requests], models
        ),
        "docs": research,
    }


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page
        finally:
            await browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


async def test_the_recommendations_page_lists_them_by_savings(
    pipeline: Pipeline, posted: data.Dataset, page: Page
) -> None:
    want = data.expected_recommendations(posted.sessions)
    want[("retry_storm", "captured")] = 0  # the captured 500s (their session id does not matter here)
    await page.goto(pipeline.url("dashboard") + "/recommendations")
    await page.wait_for_selector("#recommendations tr.recommendation", timeout=WAIT_S * 1000)
    rows: list[dict[str, Any]] = await page.eval_on_selector_all(
        "#recommendations tr.recommendation",
        "rows => rows.map(r => ({kind: r.dataset.kind, nanos: Number(r.dataset.savingsNanos),"
        " saves: r.querySelector('.savings').textContent, text: r.querySelector('.message').textContent}))",
    )
    assert [r["nanos"] for r in rows] == sorted(want.values(), reverse=True)
    assert {r["kind"] for r in rows} == {k for k, _ in want}
    idle = next(r for r in rows if r["kind"] == "idle_context")
    assert idle["saves"] == "$0.7650"  # 765000000 nano-USD, four decimals under a dollar
    assert "/compact" in idle["text"]
    assert await page.is_visible('header a[href="/compare"]')
    await page.screenshot(path=screenshots() / "recommendations.png", full_page=True)
    await page.select_option("#window-days", "7")
    await page.wait_for_selector("#recommendations tr.recommendation", timeout=WAIT_S * 1000)


async def test_the_compare_page_shows_each_group_cheapest_model_first(
    pipeline: Pipeline, posted: data.Dataset, page: Page
) -> None:
    await page.goto(pipeline.url("dashboard") + "/compare")
    await page.wait_for_selector('.compare-group[data-key="platform"] tr.model-cost', timeout=WAIT_S * 1000)
    costs = await page.eval_on_selector_all(
        '.compare-group[data-key="platform"] tr.model-cost',
        "rows => rows.map(r => Number(r.dataset.costNanos))",
    )
    assert len(costs) == 10
    assert costs == sorted(costs)
    await page.screenshot(path=screenshots() / "compare.png", full_page=True)
    await page.select_option("#compare-by", "project")
    await page.wait_for_selector('.compare-group[data-key="web"]', timeout=WAIT_S * 1000)
    await page.wait_for_selector('.compare-group[data-key="docs"]', timeout=WAIT_S * 1000)
    await page.screenshot(path=screenshots() / "compare-by-project.png", full_page=True)
    await page.select_option("#compare-top", "1000")  # every model of the table
    selector = '.compare-group[data-key="api"] tr[data-model="claude-opus-4-8"]'
    await page.wait_for_selector(selector, timeout=WAIT_S * 1000)
    api = [r for s in posted.sessions if s.project == "api" for r in s.requests]
    assert int(await page.get_attribute(selector, "data-cost-nanos") or -1) == sum(
        data.item_cost(data.OPUS, r) for r in api
    )
