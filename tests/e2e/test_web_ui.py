"""The web UI in a real headless Chromium (Debian's package, driven by Playwright), over the
real pipeline: exports posted to ingest show up on the live board through the event stream.

Screenshots of each page go to ``.local/screenshots/`` (or ``TOKENTIDE_SCREENSHOTS``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.captures import claude_logs_with_context
from tests.support.pipeline import Pipeline
from tests.support.services import missing_tool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("TOKENTIDE_SCREENSHOTS", ROOT / ".local" / "screenshots"))
#: Bounded waits for what the pipeline and the event stream must deliver (not timings under test).
WAIT_MS = 45_000


def chromium_executable() -> str:
    """Debian's chromium binary (``/usr/bin/chromium`` is a shell wrapper around it)."""
    for candidate in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return missing_tool(
        "chromium is not installed (scripts/install-system-deps.sh installs Debian's package)"
    )


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def post(pipeline: Pipeline, session_id: str, request_no: int, context_tokens: int) -> float:
    """Post one Claude Code logs export; returns when ingest acknowledged it (monotonic)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            pipeline.url("ingest") + "/v1/logs",
            content=claude_logs_with_context(session_id, request_no, context_tokens),
            headers={"Content-Type": "application/x-protobuf"},
        )
    assert response.status_code == 200, response.text
    return time.monotonic()


def card_selector(session_id: str) -> str:
    return f'article.card[data-session-id="{session_id}"]'


async def ratio_of(page: Page, session_id: str) -> float:
    return float(await page.get_attribute(card_selector(session_id), "data-ratio") or "nan")


async def test_the_board_shows_a_new_session_its_growing_context_and_a_signal(
    pipeline: Pipeline, page: Page, screenshots: Path, record_property: Callable[[str, object], None]
) -> None:
    session_id = f"ui-{uuid.uuid4()}"
    await page.goto(pipeline.url("dashboard") + "/")
    await page.wait_for_selector("#connection:text('live')", timeout=WAIT_MS)

    # A session posted after the page loaded arrives over the event stream.
    acknowledged = await post(pipeline, session_id, 0, 40_000)
    card = await page.wait_for_selector(card_selector(session_id), timeout=WAIT_MS)
    assert card is not None
    shown_after = time.monotonic() - acknowledged
    first = await ratio_of(page, session_id)
    assert first == pytest.approx(40_000 / 200_000)
    assert "claude_code" in await card.inner_text()

    # A bigger request moves the gauge.
    await post(pipeline, session_id, 1, 120_000)
    await page.wait_for_function(
        "([sel, before]) => Number(document.querySelector(sel)?.dataset.ratio) > before",
        arg=[card_selector(session_id), first],
        timeout=WAIT_MS,
    )
    assert await ratio_of(page, session_id) == pytest.approx(120_000 / 200_000)
    width = await page.eval_on_selector(card_selector(session_id) + " .fill", "n => n.style.width")
    assert float(width.rstrip("%")) == pytest.approx(60.0)

    # Past 80% of the window: a context warning appears in the signal feed, the card turns amber.
    await post(pipeline, session_id, 2, 170_000)
    await page.wait_for_selector(
        f'#feed li[data-session-id="{session_id}"][data-kind="context_warning"]', timeout=WAIT_MS
    )
    assert "warning" in (await page.get_attribute(card_selector(session_id), "class") or "")
    await page.screenshot(path=screenshots / "board.png", full_page=True)
    record_property("board_shown_after_ingest_s", round(shown_after, 3))

    # The session's page: its totals, its gauge and its signals.
    await page.click(card_selector(session_id) + " a")
    await page.wait_for_selector("#title:has-text('" + session_id + "')", timeout=WAIT_MS)
    assert await ratio_of(page, session_id) == pytest.approx(170_000 / 200_000)
    totals = await page.inner_text("#totals")
    assert "API requests / errors" in totals
    assert "200,000 tokens (from the model table)" in totals
    # Usage by source: the captured export's main requests and its title request.
    sources = await page.eval_on_selector_all(
        "#sources tr[data-source]", "rows => rows.map(r => r.dataset.source)"
    )
    assert sorted(sources) == ["auxiliary", "main"]
    await page.screenshot(path=screenshots / "session.png", full_page=True)


async def test_the_usage_page_charts_and_tabulates_cost(
    pipeline: Pipeline, page: Page, screenshots: Path
) -> None:
    await post(pipeline, f"ui-usage-{uuid.uuid4()}", 0, 30_000)
    async with httpx.AsyncClient(timeout=10) as client:
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            usage = (await client.get(pipeline.url("dashboard") + "/api/v1/usage?group_by=model")).json()
            if usage["groups"]:
                break
    assert usage["groups"], "no usage rolled up"
    await page.goto(pipeline.url("dashboard") + "/usage")
    await page.wait_for_selector("#groups tr[data-key]", timeout=WAIT_MS)
    keys = await page.eval_on_selector_all("#groups tr[data-key]", "rows => rows.map(r => r.dataset.key)")
    assert set(keys) == {g["key"] for g in usage["groups"]}
    for chart in ("#daily-chart", "#by-group-chart", "#by-group-tokens"):
        assert await page.query_selector(f"{chart} canvas") is not None, chart  # uPlot drew it
    await page.select_option("#group-by", "agent")
    await page.wait_for_selector('#groups tr[data-key="claude_code"]', timeout=WAIT_MS)
    await page.select_option("#group-by", "query_source")
    await page.wait_for_selector('#groups tr[data-key="main"]', timeout=WAIT_MS)
    await page.wait_for_selector('#groups tr[data-key="auxiliary"]', timeout=WAIT_MS)
    await page.select_option("#group-by", "agent")
    await page.wait_for_selector('#groups tr[data-key="claude_code"]', timeout=WAIT_MS)
    await page.screenshot(path=screenshots / "usage.png", full_page=True)


PLAN = [
    {"content": f"Step {i}", "activeForm": f"Doing step {i}", "status": s}
    for i, s in enumerate(["completed"] * 3 + ["in_progress"] + ["pending"] * 3, start=1)
]


async def report_plan(pipeline: Pipeline, session_id: str, body: dict[str, object]) -> None:
    """What ``tokentide hook`` sends (open mode: no session proof)."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.put(
            f"{pipeline.url('dashboard')}/api/v1/hook/sessions/{session_id}/plan", json=body
        )
    assert response.status_code == 200, response.text


async def test_plans_on_the_board_and_session_page_and_parallel_sessions_of_a_project(
    pipeline: Pipeline, page: Page, screenshots: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    project, first, second = f"shop-{run}", f"ui-plan-{run}-1", f"ui-plan-{run}-2"
    # The texts shown as written: this tenant's privacy mode is off for the test.
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute("UPDATE tenants SET redaction = 'off' WHERE tenant_id = 'default'")
    try:
        for session in (first, second):
            await post(pipeline, session, 0, 50_000)
        context = {"cwd": f"/home/dev/{project}", "git_branch": "feature/cart", "project": project}
        await report_plan(pipeline, first, {"todos": [*PLAN[:4], dict(PLAN[4], status="pending")], **context})
        await report_plan(pipeline, first, {"todos": PLAN, **context})  # version 2: seven items
        await report_plan(pipeline, second, {"todos": PLAN[:2], **context})

        # The board: the card says the item in progress and "3 of 7 done", and the project.
        await page.goto(pipeline.url("dashboard") + "/")
        plan_line = card_selector(first) + ' .plan[data-done="3"][data-total="7"]'
        await page.wait_for_selector(plan_line, timeout=WAIT_MS)
        assert await page.inner_text(plan_line) == "3 of 7 done · Doing step 4"
        # Both sessions of the project are active: their cards say they run in parallel.
        for session in (first, second):
            line = card_selector(session) + " .project"
            assert await page.inner_text(line) == f"{project} · feature/cart2 in parallel"
            assert await page.query_selector(line + " .badge.parallel") is not None
        await page.screenshot(path=screenshots / "board-plan.png", full_page=True)

        # The plan moves on; the session's next export brings the card over the event stream.
        moved = [*PLAN[:3], dict(PLAN[3], status="completed"), dict(PLAN[4], status="in_progress"), *PLAN[5:]]
        await report_plan(pipeline, first, {"todos": moved, **context})
        await post(pipeline, first, 1, 60_000)
        await page.wait_for_selector(card_selector(first) + ' .plan[data-done="4"]', timeout=WAIT_MS)
        assert await page.inner_text(card_selector(first) + " .plan") == "4 of 7 done · Doing step 5"
        await page.reload()
        await page.wait_for_selector(card_selector(first) + ' .plan[data-done="4"]', timeout=WAIT_MS)

        # The session page: the whole plan, and its two versions in the timeline.
        await page.goto(f"{pipeline.url('dashboard')}/sessions/{first}")
        await page.wait_for_selector("#plan li.plan-item", timeout=WAIT_MS)
        statuses = await page.eval_on_selector_all(
            "#plan li.plan-item", "ns => ns.map(n => n.dataset.status)"
        )
        assert statuses == [p["status"] for p in moved]
        assert "4 of 7 done · version 3" in await page.inner_text("#plan-summary")
        await page.wait_for_selector('#timeline tr[data-kind="plan"]', timeout=WAIT_MS)
        changes = await page.eval_on_selector_all(
            '#timeline tr[data-kind="plan"]', "rows => rows.map(r => r.cells[2].textContent)"
        )
        assert changes == [
            "plan v1: 3 of 5 done · in progress: Doing step 4",
            "plan v2: 3 of 7 done · in progress: Doing step 4",
            "plan v3: 4 of 7 done · in progress: Doing step 5",
        ]
        await page.screenshot(path=screenshots / "session-plan.png", full_page=True)

        # The projects page: the project, flagged for its two active sessions; its page shows
        # them together.
        await page.goto(pipeline.url("dashboard") + "/projects")
        row = f'#projects tr[data-project="{project}"]'
        await page.wait_for_selector(row, timeout=WAIT_MS)
        assert await page.get_attribute(row, "data-parallel") == "true"
        assert "2 in parallel" in await page.inner_text(row)
        await page.screenshot(path=screenshots / "projects.png", full_page=True)
        await page.click(f"{row} a")
        await page.wait_for_selector("#active.parallel article.card", timeout=WAIT_MS)
        cards = await page.eval_on_selector_all(
            "#active article.card", "ns => ns.map(n => n.dataset.sessionId)"
        )
        assert sorted(cards) == [first, second]
        assert "2 sessions active in parallel" in await page.inner_text("#active h2")
        await page.screenshot(path=screenshots / "project.png", full_page=True)
    finally:
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            conn.execute("UPDATE tenants SET redaction = NULL WHERE tenant_id = 'default'")
