"""The real Claude Code CLI (``scripts/install-claude-code.sh``) against a local model stub, its
telemetry going to the real pipeline, with ``tokentide hook install`` in its project: the hooks
fire, tokentide's notice reaches the model's context, and compaction saves a checkpoint that the
resumed session gets back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.async_api import async_playwright

from tests.e2e.test_web_ui import SCREENSHOTS, chromium_executable
from tests.support.anthropic_stub import AnthropicStub
from tests.support.pipeline import Pipeline
from tests.support.services import free_port, missing_tool
from tokentide import hook

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = ROOT / ".local" / "claude-code" / "node_modules" / ".bin" / "claude"
VENV_BIN = str(Path(sys.executable).parent)
#: input + cache read + cache write = 166,000 tokens: 83% of the 200k window of MODEL (a model
#: without a long-context variant; Claude Code's default model has a 1M window).
MODEL = "claude-haiku-4-5"
USAGE = {"input_tokens": 161_200, "cache_read_input_tokens": 4_500, "cache_creation_input_tokens": 300}


@pytest.fixture
def stub() -> Iterator[AnthropicStub]:
    model = AnthropicStub(free_port(), usage=dict(USAGE))
    model.start()
    try:
        yield model
    finally:
        model.stop()


def claude_installed() -> Path:
    if not CLAUDE.exists():
        missing_tool(f"{CLAUDE} is missing: run `bash scripts/install-claude-code.sh` (make install does)")
    return CLAUDE


def run_claude(
    pipeline: Pipeline, stub: AnthropicStub, project: Path, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    extra = env or {}
    # Claude Code's own settings (CLAUDE_CONFIG_DIR, CLAUDE_CODE_ENABLE_TASKS, ...) are the test's.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TOKENTIDE_", "OTEL_", "ANTHROPIC_", "CLAUDE_"))
    }
    env.update(
        HOME=str(project.parent / "home"),
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",  # the hook command: `tokentide hook`
        ANTHROPIC_BASE_URL=stub.url,
        ANTHROPIC_API_KEY="sk-ant-stub",
        ANTHROPIC_MODEL=MODEL,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_ENABLE_TELEMETRY="1",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=pipeline.url("ingest"),
        OTEL_LOGS_EXPORT_INTERVAL="500",
        OTEL_METRIC_EXPORT_INTERVAL="1000",
        TOKENTIDE_URL=pipeline.url("dashboard"),
        XDG_STATE_HOME=str(project.parent / "state"),
    )
    env.update(extra)
    done = subprocess.run(
        [str(claude_installed()), "-p", *args, "--output-format", "json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"claude {args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def tokentide_hook(action: str, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{VENV_BIN}/tokentide", "hook", action, "--project", str(project)],
        capture_output=True,
        text=True,
        check=False,
    )


async def wait_for(client: httpx.AsyncClient, url: str, ok: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get(url)
        if response.status_code == 200 and ok(response.json()):
            return response.json()
        await asyncio.sleep(0.3)
    pytest.fail(f"{what} after {timeout_s}s: last answer {response.status_code} {response.text[:500]}")


async def test_claude_code_runs_the_hooks_and_gets_the_checkpoint_back(
    pipeline: Pipeline, stub: AnthropicStub, tmp_path: Path
) -> None:
    claude_installed()
    project = tmp_path / "project"
    project.mkdir()
    installed = tokentide_hook("install", project)
    assert installed.returncode == 0, installed.stderr
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    assert set(settings["hooks"]) == {"PreCompact", "UserPromptSubmit", "SessionStart", "PostToolUse"}

    first = run_claude(pipeline, stub, project, "start the refactor")
    session_id = first["session_id"]
    dashboard = pipeline.url("dashboard")
    async with httpx.AsyncClient(timeout=10) as client:
        # Claude Code's own telemetry reached tokentide, and the 83% context raised a signal.
        await wait_for(
            client,
            f"{dashboard}/api/v1/hook/sessions/{session_id}",
            lambda s: s.get("open_signal") is not None,
            f"no open signal for Claude Code's session {session_id}",
        )

        # The next prompt: the UserPromptSubmit hook's notice is in what the model receives.
        before = len(stub.requests)
        run_claude(pipeline, stub, project, "--resume", session_id, "go on")
        sent = "".join(stub.texts()[before:])
        assert "tokentide: context 83% full (166,000 of 200,000 tokens" in sent, sent[-3000:]

        # Compaction: the PreCompact hook saves a checkpoint.
        run_claude(pipeline, stub, project, "--resume", session_id, "/compact")
        checkpoint = await wait_for(
            client,
            f"{dashboard}/api/v1/sessions/{session_id}/checkpoints/latest",
            lambda c: c["trigger"].startswith("pre_compact"),
            "no checkpoint saved at PreCompact",
        )
        assert checkpoint["summary"]["session"]["session_id"] == session_id

        # Resumed again: the SessionStart hook gives the model the checkpoint.
        before = len(stub.requests)
        run_claude(pipeline, stub, project, "--resume", session_id, "where were we?")
        sent = "".join(stub.texts()[before:])
        assert f"tokentide checkpoint {checkpoint['checkpoint_id']}" in sent, sent[-3000:]

    removed = tokentide_hook("uninstall", project)
    assert removed.returncode == 0
    assert "hooks" not in json.loads((project / ".claude" / "settings.json").read_text())


#: Claude Code's todo list tool (TodoWrite) instead of its task tools (TaskCreate, ...), which
#: this version offers by default.
TODO_TOOLS = {"CLAUDE_CODE_ENABLE_TASKS": "false", "CLAUDE_CODE_ENABLE_TODO_TOOLS": "true"}
TODOS = [
    {"content": "Map the modules", "status": "completed", "activeForm": "Mapping the modules"},
    {"content": "Extract the parser", "status": "in_progress", "activeForm": "Extracting the parser"},
    {"content": "Run the tests", "status": "pending", "activeForm": "Running the tests"},
]


def git_checkout(path: Path, branch: str, remote: str) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "remote", "add", "origin", remote], check=True)
    return path


async def test_claude_codes_todo_list_reaches_the_board(
    pipeline: Pipeline, stub: AnthropicStub, tmp_path: Path
) -> None:
    """The model calls TodoWrite; Claude Code runs it, its PostToolUse hook reports the list with
    the checkout's git context, and the board's card shows it."""
    claude_installed()
    project = git_checkout(
        tmp_path / "widgets", "refactor", "https://ghp_secret@example.com/acme/widgets.git"
    )
    assert tokentide_hook("install", project).returncode == 0
    # TodoWrite is deferred: the model loads it with ToolSearch, then calls it.
    script = [("ToolSearch", {"query": "select:TodoWrite"}), ("TodoWrite", {"todos": TODOS})]
    stub.tool_calls["plan the refactor"] = list(script)

    result = run_claude(pipeline, stub, project, "plan the refactor", env=TODO_TOOLS)
    assert stub.called == script
    session_id = result["session_id"]
    dashboard = pipeline.url("dashboard")
    async with httpx.AsyncClient(timeout=10) as client:
        session = await wait_for(
            client,
            f"{dashboard}/api/v1/sessions/{session_id}",
            lambda s: s.get("plan") is not None,
            f"no plan for Claude Code's session {session_id}",
        )
    plan = session["plan"]
    assert (plan["total"], plan["done"], plan["in_progress"], plan["version"]) == (3, 1, 1, 1)
    assert [i["status"] for i in plan["items"]] == [t["status"] for t in TODOS]
    assert session["project"] == "widgets"
    assert session["workspace"]["git_repository"] == "https://example.com/acme/widgets.git"
    assert session["workspace"]["git_branch"] == "refactor"
    assert "ghp_secret" not in json.dumps(session)

    # The next prompt on a machine that forgot what it sent: UserPromptSubmit reads the list
    # from Claude Code's own transcript and reports it; the same list makes no new version.
    sent = tmp_path / "state" / "tokentide" / "plans"
    assert len(list(sent.iterdir())) == 1
    shutil.rmtree(sent)
    run_claude(pipeline, stub, project, "--resume", session_id, "go on", env=TODO_TOOLS)
    # Written once the dashboard took the report: the digest of what was sent, the list in full.
    body = hook.plan_body(TODOS, str(project), hook.git_context(str(project)))
    [digest] = [p.read_text() for p in sent.iterdir()]
    assert digest == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    async with httpx.AsyncClient(timeout=10) as client:
        again = (await client.get(f"{dashboard}/api/v1/sessions/{session_id}")).json()
    assert again["plan"] == plan

    shown = await board_plan_line(dashboard, session_id, "board-claude-code-plan.png")
    # Open mode's tenant hashes texts (privacy hash, as its prompts): the count and status show.
    assert shown.startswith("1 of 3 done · ")


#: Claude Code's default plan tools (2.1.332): three tasks created, the first completed, the
#: second in progress (``tests/fixtures/claude-code-hooks/task-tools/README.md``).
TASK_SCRIPT: list[tuple[str, dict[str, Any]]] = [
    *[
        (
            "TaskCreate",
            {"subject": t["content"], "description": f"{t['content']}.", "activeForm": t["activeForm"]},
        )
        for t in TODOS
    ],
    ("TaskUpdate", {"taskId": "1", "status": "completed"}),
    ("TaskUpdate", {"taskId": "2", "status": "in_progress"}),
]


async def test_claude_codes_default_task_list_reaches_the_board(
    pipeline: Pipeline, stub: AnthropicStub, tmp_path: Path
) -> None:
    """Default settings (no CLAUDE_CODE_ENABLE_TASKS / ENABLE_TODO_TOOLS): the model plans with
    TaskCreate and TaskUpdate; the PostToolUse hook reports Claude Code's stored task list after
    each call, UserPromptSubmit replays the transcript when that list is gone, and the board's
    card shows ``1 of 3 done`` and the item in progress."""
    claude_installed()
    project = git_checkout(tmp_path / "gadgets", "tasks", "https://example.com/acme/gadgets.git")
    assert tokentide_hook("install", project).returncode == 0
    stub.tool_calls["plan the tasks"] = list(TASK_SCRIPT)
    # The texts shown as written: this tenant's privacy mode is off for the test.
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, redaction) VALUES ('default', 'off')"
            " ON CONFLICT (tenant_id) DO UPDATE SET redaction = 'off'"
        )
    try:
        result = run_claude(pipeline, stub, project, "plan the tasks")
        assert stub.called == TASK_SCRIPT
        session_id = result["session_id"]
        # Claude Code keeps the list in its config directory, one file per task.
        stored = tmp_path / "home" / ".claude" / "tasks" / session_id
        assert sorted(p.name for p in stored.glob("*.json")) == ["1.json", "2.json", "3.json"]
        dashboard = pipeline.url("dashboard")
        async with httpx.AsyncClient(timeout=10) as client:
            session = await wait_for(
                client,
                f"{dashboard}/api/v1/sessions/{session_id}",
                lambda s: s.get("plan") is not None and s["plan"]["version"] == len(TASK_SCRIPT),
                f"no plan of five versions for Claude Code's session {session_id}",
            )
            plan = session["plan"]
            # One version per call that changed the list: three creates, two updates.
            assert (plan["total"], plan["done"], plan["in_progress"], plan["text_mode"]) == (3, 1, 1, "kept")
            assert [(i["content"], i["status"]) for i in plan["items"]] == [
                ("Map the modules", "completed"),
                ("Extract the parser", "in_progress"),
                ("Run the tests", "pending"),
            ]
            assert plan["current"]["active_form"] == "Extracting the parser"
            assert session["project"] == "gadgets"

            # The stored list and what the hook sent are gone: the next prompt's UserPromptSubmit
            # replays the transcript's task calls, the same list, so no new version.
            shutil.rmtree(stored)
            shutil.rmtree(tmp_path / "state" / "tokentide" / "plans")
            run_claude(pipeline, stub, project, "--resume", session_id, "go on")
            assert not stored.exists()  # the plan below came from the transcript
            body = hook.plan_body(TODOS, str(project), hook.git_context(str(project)))
            [digest] = [p.read_text() for p in (tmp_path / "state" / "tokentide" / "plans").iterdir()]
            assert digest == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            again = (await client.get(f"{dashboard}/api/v1/sessions/{session_id}")).json()
            assert again["plan"] == plan

        shown = await board_plan_line(dashboard, session_id, "board-claude-code-tasks.png")
        assert shown == "1 of 3 done · Extracting the parser"
    finally:
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            conn.execute("UPDATE tenants SET redaction = NULL WHERE tenant_id = 'default'")


async def board_plan_line(dashboard: str, session_id: str, screenshot: str) -> str:
    """The board card's plan line of ``session_id`` once it says 1 of 3 done (headless
    Chromium), with a screenshot of the board."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(dashboard + "/")
            line = f'article.card[data-session-id="{session_id}"] .plan[data-done="1"][data-total="3"]'
            await page.wait_for_selector(line, timeout=45_000)
            shown = await page.inner_text(line)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=SCREENSHOTS / screenshot, full_page=True)
            return shown
        finally:
            await browser.close()
