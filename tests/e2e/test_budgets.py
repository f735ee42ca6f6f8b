"""Budgets and session forecasts through the real pipeline (issue 17).

Synthetic Claude Code requests of known cost cross a team's daily budget; the API's spend and
forecast match the formula stated here; the notifier (``tokentide notify``, a process) POSTs
``budget_warning`` then ``budget_exceeded`` to a local receiver exactly once each; the hook's
notice (``tokentide hook``) shows it. The budget formula, independently of
``tokentide.budgets`` (no history, so the profile is flat)::

    forecast = spend + (spend of the last 6 h) / 6 * (hours from as_of to the end of the day)

A project's ended sessions and an active one give the active one's forecast::

    own_pace = cost + cost / elapsed * max(0, median duration - elapsed)
    project  = max(cost, median cost)
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import Page, async_playwright

from notify.core import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.support.pipeline import TOKENTIDE, Pipeline
from tests.support.services import free_port, missing_tool, unique
from tokentide import admin

pytestmark = pytest.mark.e2e

SECRET = "whsec_budget-e2e-secret-0123456789"
COST = 0.25  # USD per synthetic request (the agent's own cost_usd)


class _Hook(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's signature)
        return None


class _Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Hook)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/budgets"

    def kinds(self) -> list[str]:
        with self.lock:
            return [json.loads(body)["kind"] for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def notifier(pipeline: Pipeline, tmp_path: Path) -> Iterator[str]:
    """``tokentide notify`` beside the pipeline, evaluating budgets every 0.3 s; its URL."""
    port = free_port()
    env = pipeline.env() | {
        "TOKENTIDE_NOTIFY_PORT": str(port),
        "TOKENTIDE_NOTIFY_GROUP_ID": unique("budget-notify-"),
        "TOKENTIDE_NOTIFY_POLL_S": "0.3",
        "TOKENTIDE_NOTIFY_BUDGET_INTERVAL_S": "0.3",
    }
    log = (tmp_path / "notify.log").open("ab")
    proc = subprocess.Popen([TOKENTIDE, "notify"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "notify.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "notify.log").read_text()
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _attr(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {"key": key, "value": {"stringValue": str(value)}}
    return {"key": key, "value": {"intValue": value} if isinstance(value, int) else {"doubleValue": value}}


def api_requests(
    session_id: str,
    team: str,
    user: str,
    count: int,
    first: int,
    *,
    end_ns: int | None = None,
    spacing_ns: int = 1_000_000,
    project: str | None = None,
) -> bytes:
    """``count`` Claude Code api_request events of ``COST`` USD each, ``spacing_ns`` apart, the
    last at ``end_ns`` (default: now), as OTLP/JSON logs."""
    end_ns = end_ns if end_ns is not None else time.time_ns()
    records = []
    for i in range(count):
        ts = end_ns - (count - 1 - i) * spacing_ns
        stamp = datetime.fromtimestamp(ts / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        attributes = {
            "user.id": user,
            "session.id": session_id,
            "event.name": "api_request",
            "event.timestamp": stamp,
            "event.sequence": first + i,
            "model": "claude-opus-4-8",
            "input_tokens": 1000,
            "output_tokens": 10,
            "cache_read_tokens": 0,
            "cache_creation_tokens": 0,
            "cost_usd": COST,
            "duration_ms": 100,
            "request_id": f"req_{session_id[:8]}_{first + i}",
        }
        records.append(
            {
                "timeUnixNano": str(ts),
                "observedTimeUnixNano": str(ts),
                "body": {"stringValue": "claude_code.api_request"},
                "attributes": [_attr(k, v) for k, v in attributes.items()],
            }
        )
    resource = [
        _attr("service.name", "claude-code"),
        _attr("service.version", "2.1.197"),
        _attr("team", team),
    ]
    if project is not None:
        resource.append(_attr("project", project))
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": resource},
                "scopeLogs": [{"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": records}],
            }
        ]
    }
    return json.dumps(document).encode()


def post_logs(pipeline: Pipeline, body: bytes) -> None:
    response = httpx.post(
        pipeline.url("ingest") + "/v1/logs",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def wait_for(what: str, check: Any, pipeline: Pipeline, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pipeline.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


def budget(pipeline: Pipeline) -> dict[str, Any]:
    response = httpx.get(pipeline.url("dashboard") + "/api/v1/budgets", timeout=10)
    assert response.status_code == 200, response.text
    [only] = response.json()["budgets"]
    return dict(only)


def session_cost(pipeline: Pipeline, session_id: str) -> float | None:
    response = httpx.get(pipeline.url("dashboard") + f"/api/v1/sessions/{session_id}", timeout=10)
    return response.json()["cost_usd"] if response.status_code == 200 else None


def flat_forecast(spend: float, recent: float, as_of: datetime, end: datetime) -> float:
    return spend + recent / 6 * ((end - as_of).total_seconds() / 3600)


def hook_notice(pipeline: Pipeline, session_id: str, home: Path) -> str:
    event = {"hook_event_name": "UserPromptSubmit", "session_id": session_id, "prompt": "go on"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")} | {
        "TOKENTIDE_URL": pipeline.url("dashboard"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
    }
    done = subprocess.run(
        [TOKENTIDE, "hook"],
        input=json.dumps(event),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_team_budget_crossed_by_synthetic_sessions_warns_then_exceeds_once_each(
    pipeline: Pipeline, notifier: str, receiver: _Receiver, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight - now < timedelta(minutes=10):  # the day would end mid-test: start in the next one
        time.sleep((midnight - now).total_seconds() + 1)
        now = datetime.now(UTC)
        midnight += timedelta(days=1)
    hours_left = (midnight - now).total_seconds() / 3600
    # Three requests (0.75 USD) then the forecast 0.75 + 0.75/6 * hours_left; the amount sits
    # halfway between the spend and that forecast (so: warning), below 1.25 (five requests).
    amount = round(min(0.75 + 0.125 * hours_left / 2, 1.2), 4)

    with psycopg.connect(pipeline.database_url) as conn:
        _, _ = admin.add_webhook(
            conn, "default", receiver.url, kinds=["budget_warning", "budget_exceeded"], secret=SECRET
        )
    dashboard = pipeline.url("dashboard")
    put = httpx.put(
        dashboard + "/api/v1/budgets",
        json={"scope": "team", "value": "platform", "period": "day", "amount_usd": amount},
        timeout=10,
    )
    assert put.status_code == 200, put.text
    assert put.json()["spend_usd"] == 0.0
    assert put.json()["status"] == "ok"
    assert (
        httpx.put(
            dashboard + "/api/v1/budgets",
            json={"scope": "team", "period": "day", "amount_usd": 1},
            timeout=10,
        ).status_code
        == 422
    )  # a team budget needs its team

    assert httpx.delete(dashboard + "/api/v1/budgets/bg_000000000000", timeout=10).status_code == 404
    assert httpx.delete(dashboard + "/api/v1/budgets/not-a-budget", timeout=10).status_code == 422
    for refused in (0, 0.00001):  # 0.00001 is 0 at the table's 4 decimals: 422, not the CHECK's 500
        assert (
            httpx.put(
                dashboard + "/api/v1/budgets",
                json={"scope": "team", "value": "x", "period": "day", "amount_usd": refused},
                timeout=10,
            ).status_code
            == 422
        )
    gone = httpx.put(
        dashboard + "/api/v1/budgets",
        json={"scope": "user", "value": "zed", "period": "month", "amount_usd": 9},
        timeout=10,
    )
    assert (
        httpx.delete(dashboard + f"/api/v1/budgets/{gone.json()['budget_id']}", timeout=10).status_code == 204
    )

    ours, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    post_logs(pipeline, api_requests(ours, "platform", "alice", 3, 0))
    post_logs(pipeline, api_requests(theirs, "research", "bob", 4, 0))  # another team: not counted
    wait_for(
        "both sessions' cost",
        lambda: session_cost(pipeline, ours) == 0.75 and session_cost(pipeline, theirs) == 1.0,
        pipeline,
    )

    seen = budget(pipeline)
    as_of, end = datetime.fromisoformat(seen["as_of"]), datetime.fromisoformat(seen["period_end"])
    assert datetime.fromisoformat(seen["period_start"]) == midnight - timedelta(days=1)
    assert end == midnight
    assert (seen["spend_usd"], seen["recent_spend_usd"], seen["forecast_from_history"]) == (0.75, 0.75, False)
    assert seen["forecast_usd"] == pytest.approx(flat_forecast(0.75, 0.75, as_of, end), abs=1e-9)
    assert seen["status"] == "warning"

    wait_for("the budget_warning delivery", lambda: receiver.kinds() == ["budget_warning"], pipeline)
    headers, body = receiver.received[0]
    assert verify_signature(
        SECRET, body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), time.time()
    )
    warning = json.loads(body)
    assert (warning["tenant"], warning["scope"], warning["value"], warning["period"]) == (
        "default",
        "team",
        "platform",
        "day",
    )
    assert warning["budget_id"] == seen["budget_id"]
    assert (
        warning["signal_id"] == f"{seen['budget_id']}:{midnight - timedelta(days=1):%Y-%m-%d}:budget_warning"
    )
    assert (warning["amount_usd"], warning["spend_usd"]) == (amount, 0.75)
    assert warning["forecast_usd"] > amount
    assert warning["text"].startswith(f"[default] budget warning: team platform day budget {amount:,.2f} USD")

    notice = hook_notice(pipeline, ours, tmp_path)
    assert "daily team budget forecast to be exceeded (0.75 USD spent of" in notice, notice
    assert hook_notice(pipeline, theirs, tmp_path) == ""  # team research has no budget signal

    post_logs(pipeline, api_requests(ours, "platform", "alice", 2, 3))
    wait_for(
        "the budget_exceeded delivery",
        lambda: receiver.kinds() == ["budget_warning", "budget_exceeded"],
        pipeline,
    )
    exceeded = json.loads(receiver.received[1][1])
    assert (exceeded["kind"], exceeded["spend_usd"]) == ("budget_exceeded", 1.25)
    seen = budget(pipeline)
    assert (seen["status"], seen["spend_usd"], seen["signals"]) == (
        "exceeded",
        1.25,
        ["budget_exceeded", "budget_warning"],
    )
    notice = hook_notice(pipeline, ours, tmp_path)
    assert f"daily team budget exceeded (1.25 USD spent of {amount:,.2f}, forecast" in notice, notice

    # More rounds (every 0.3 s) raise nothing more in this period: still one POST per kind.
    rounds = _budget_rounds(notifier)
    wait_for("five more evaluation rounds", lambda: _budget_rounds(notifier) >= rounds + 5, pipeline)
    assert receiver.kinds() == ["budget_warning", "budget_exceeded"]


def _budget_rounds(notifier: str) -> float:
    text = httpx.get(notifier + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('tokentide_notify_budget_rounds_total{result="ok"}')
    )


def session(pipeline: Pipeline, session_id: str) -> dict[str, Any] | None:
    response = httpx.get(pipeline.url("dashboard") + f"/api/v1/sessions/{session_id}", timeout=10)
    return dict(response.json()) if response.status_code == 200 else None


def test_an_active_sessions_forecast_from_its_pace_and_its_projects_ended_sessions(
    pipeline: Pipeline,
) -> None:
    second = 1_000_000_000
    two_hours_ago = time.time_ns() - 7200 * second
    # Three ended sessions of project "tide": 2, 3 and 4 requests over 600, 1200 and 1800 s;
    # one of project "ebb" (not counted); the active one: 2 requests 300 s apart, ending now.
    past = {str(uuid.uuid4()): (n, d) for n, d in ((2, 600), (3, 1200), (4, 1800))}
    for sid, (n, duration) in past.items():
        post_logs(
            pipeline,
            api_requests(
                sid,
                "t",
                "u",
                n,
                0,
                end_ns=two_hours_ago,
                spacing_ns=duration * second // (n - 1),
                project="tide",
            ),
        )
    other = str(uuid.uuid4())
    post_logs(
        pipeline,
        api_requests(other, "t", "u", 9, 0, end_ns=two_hours_ago, spacing_ns=60 * second, project="ebb"),
    )
    active = str(uuid.uuid4())
    post_logs(pipeline, api_requests(active, "t", "u", 2, 0, spacing_ns=300 * second, project="tide"))

    def all_in() -> bool:
        seen = [session(pipeline, sid) for sid in [*past, other, active]]
        return (
            all(s is not None for s in seen)
            and session_cost(pipeline, active) == 0.5
            and all(session_cost(pipeline, sid) == COST * n for sid, (n, _) in past.items())
        )

    wait_for("every session", all_in, pipeline)
    ended = [session(pipeline, sid) for sid in past]
    durations = sorted(
        (datetime.fromisoformat(s["last_seen_at"]) - datetime.fromisoformat(s["started_at"])).total_seconds()
        for s in ended
        if s is not None
    )
    assert durations == [600.0, 1200.0, 1800.0]
    assert all(s is not None and s["status"] == "ended" and s["forecast"] is None for s in ended)

    body = session(pipeline, active)
    assert body is not None
    assert body["status"] == "active"
    elapsed = (
        datetime.fromisoformat(body["last_seen_at"]) - datetime.fromisoformat(body["started_at"])
    ).total_seconds()
    assert elapsed == 300.0
    forecast = body["forecast"]
    assert (forecast["project"], forecast["history_sessions"]) == ("tide", 3), forecast
    assert (forecast["median_cost_usd"], forecast["median_duration_s"]) == (0.75, 1200.0)
    assert forecast["own_pace_usd"] == 0.5 + 0.5 / 300 * (1200 - 300)
    assert forecast["project_usd"] == max(0.5, 0.75)
    assert forecast["minutes_to_compaction"] == body["context"]["predicted_minutes_left"]
    listed = httpx.get(
        pipeline.url("dashboard") + "/api/v1/sessions", params={"status": "active"}, timeout=10
    ).json()
    [row] = [s for s in listed["sessions"] if s["session_id"] == active]
    assert row["forecast"] == forecast


# --- the budget page and the board card, in headless Chromium -----------------------------

SCREENSHOTS = Path(
    os.environ.get("TOKENTIDE_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".local" / "screenshots")
)
WAIT_MS = 45_000


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


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


async def test_the_budget_page_and_the_forecast_on_the_card(
    pipeline: Pipeline, page: Page, screenshots: Path
) -> None:
    dashboard = pipeline.url("dashboard")
    user, project = f"carol-{uuid.uuid4().hex[:6]}", f"reef-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=dashboard, timeout=10) as client:
        over = (
            await client.put(
                "/api/v1/budgets", json={"scope": "user", "value": user, "period": "day", "amount_usd": 0.4}
            )
        ).json()
        fine = (
            await client.put(
                "/api/v1/budgets",
                json={"scope": "project", "value": project, "period": "week", "amount_usd": 1000},
            )
        ).json()
    second = 1_000_000_000
    two_hours_ago = time.time_ns() - 7200 * second
    for _ in range(3):  # ended sessions of the project: 0.5 USD over 600 s each
        post_logs(
            pipeline,
            api_requests(
                str(uuid.uuid4()),
                "t",
                "dave",
                2,
                0,
                end_ns=two_hours_ago,
                spacing_ns=600 * second,
                project=project,
            ),
        )
    active = str(uuid.uuid4())
    post_logs(pipeline, api_requests(active, "t", user, 2, 0, spacing_ns=120 * second, project=project))

    past_times = [two_hours_ago - 600 * second, two_hours_ago]  # each ended session's two requests
    week_start = datetime.fromisoformat(fine["period_start"]).timestamp() * second
    # The project's week: the active session's 0.5 USD and the ended sessions' requests in it.
    project_spend = 0.5 + 3 * COST * sum(t >= week_start for t in past_times)

    def spent() -> dict[str, dict[str, Any]] | None:
        # The sessions and their rollups arrive on different topics: wait for both.
        listed = {
            b["budget_id"]: b for b in httpx.get(dashboard + "/api/v1/budgets", timeout=10).json()["budgets"]
        }
        seen = session(pipeline, active)
        if seen is None or seen["forecast"] is None or seen["forecast"]["history_sessions"] != 3:
            return None
        if listed[fine["budget_id"]]["spend_usd"] != project_spend:
            return None
        return listed if listed[over["budget_id"]]["spend_usd"] == 0.5 else None

    listed = wait_for("the budgets' spend and the project's sessions", spent, pipeline)
    assert listed[fine["budget_id"]]["period_start"] == fine["period_start"]
    await page.goto(dashboard + "/budgets")
    row = f'tr.budget[data-budget-id="{over["budget_id"]}"]'
    await page.wait_for_selector(row + '[data-status="exceeded"]', timeout=WAIT_MS)
    assert await page.inner_text(row + " .spent") == "$0.5000"
    assert (await page.inner_text(row + " td")).strip() == f"user {user}"
    assert float((await page.inner_text(row + " .forecast")).lstrip("$")) >= 0.5
    width = await page.eval_on_selector(row + " .fill", "n => n.style.width")
    assert float(width.rstrip("%")) == 100.0  # 0.5 of 0.4, capped
    other = f'tr.budget[data-budget-id="{fine["budget_id"]}"]'
    assert await page.get_attribute(other, "data-status") == "ok"
    other_width = await page.eval_on_selector(other + " .fill", "n => n.style.width")
    assert float(other_width.rstrip("%")) == round(100 * project_spend / 1000, 1)
    await page.screenshot(path=screenshots / "budgets.png", full_page=True)

    # The board card: 0.5 + 0.5/120 * (600 - 120) = 2.50 at this pace; the project's median 0.5.
    body = session(pipeline, active)
    assert body is not None
    assert body["forecast"]["own_pace_usd"] == 0.5 + 0.5 / 120 * (600 - 120)
    await page.goto(dashboard + "/")
    line = await page.wait_for_selector(
        f'article.card[data-session-id="{active}"] .forecast', timeout=WAIT_MS
    )
    assert line is not None
    text = await line.inner_text()
    assert text.startswith(f"forecast $2.50 at this pace · $0.5000 typical of {project} (3 sessions)"), text
    minutes = body["context"]["predicted_minutes_left"]
    assert ("compaction in" in text) == (minutes is not None), text
    await page.screenshot(path=screenshots / "board-forecast.png", full_page=True)


def chromium_executable() -> str:
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
