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
