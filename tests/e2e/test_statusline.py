"""``tokentide statusline`` end to end (issue 14 item 1): Claude Code's statusline JSON on stdin,
the window it says goes through ingest and the stream worker, and wins over the model table: a
session on a model the table gives 200,000 tokens, whose agent says 980,000, is never warned.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_checkpoint_bridge import agent_command, post_request
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.e2e

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
AGENT_WINDOW = 980_000  # what Claude Code says of a 1M model (its effective window)
#: Contexts that cross every threshold of a 200,000 window (claude-opus-4-8, the captured model).
CONTEXTS = [100_000, 150_000, 170_000, 190_000]


def statusline(pipeline: Pipeline, home: Path, event: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``tokentide statusline`` as Claude Code runs it: its status JSON on stdin."""
    return agent_command("statusline", pipeline, home, event)


def status(session_id: str, used: float) -> dict[str, Any]:
    return {
        "hook_event_name": "Status",
        "session_id": session_id,
        "model": {"id": "claude-opus-4-8", "display_name": "Opus 4.8"},
        "cost": {"total_cost_usd": 0.5},
        "context_window": {"context_window_size": AGENT_WINDOW, "used_percentage": used},
    }


async def session(client: httpx.AsyncClient, pipeline: Pipeline, session_id: str) -> dict[str, Any]:
    response = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def window_reports(client: httpx.AsyncClient, url: str) -> list[str]:
    timeline = await client.get(url)
    assert timeline.status_code == 200, timeline.text
    return [i["summary"] for i in timeline.json()["items"] if i["kind"] == "context_window"]


async def test_the_agents_window_wins_and_no_false_signal(pipeline: Pipeline, tmp_path: Path) -> None:
    session_id = f"statusline-{uuid.uuid4()}"
    async with httpx.AsyncClient(timeout=10) as client:
        await post_request(client, pipeline, session_id, 0, CONTEXTS[0])
        before = await session(client, pipeline, session_id)
        assert (before["context"]["limit"], before["context"]["limit_source"]) == (200_000, "model_table")

        shown = statusline(pipeline, tmp_path / "a", status(session_id, 10.2))
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("ctx 10% of 980k · $0.50"), shown.stdout
        deadline = time.monotonic() + 60
        while (now := await session(client, pipeline, session_id))["context"]["limit_source"] != "agent":
            assert time.monotonic() < deadline, pipeline.logs()
            await asyncio.sleep(0.2)
        assert now["context"]["limit"] == AGENT_WINDOW

        for n, context in enumerate(CONTEXTS[1:], start=1):
            await post_request(client, pipeline, session_id, n, context)
        after = await session(client, pipeline, session_id)
        assert after["context"]["limit"] == AGENT_WINDOW
        assert after["context"]["limit_source"] == "agent"
        assert after["context"]["ratio"] == pytest.approx(CONTEXTS[-1] / AGENT_WINDOW, abs=1e-3)
        # On the table's 200,000 tokens 190,000 would be 95% full: warned and critical. Not here.
        assert after["signals"] == [], after["signals"]
        assert after["context"]["predicted_requests_left"] is not None

        # A fresh status line (its own cache empty) asks tokentide for the prediction.
        again = statusline(pipeline, tmp_path / "b", status(session_id, 19.4))
        left = round(after["context"]["predicted_requests_left"])
        assert again.stdout.strip() == f"ctx 19% of 980k · $0.50 · ~{left} requests to compaction"

        wanted = [
            "the agent reports a 980,000-token window · 10% used",
            "the agent reports a 980,000-token window · 19% used",
        ]
        timeline_url = f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}/timeline"
        deadline = time.monotonic() + 60
        while (reports := await window_reports(client, timeline_url)) != wanted:
            assert time.monotonic() < deadline, reports
            await asyncio.sleep(0.2)
        # The report is tokentide's, not one of the agent's events: never counted as one.
        assert after["events"] == before["events"] * len(CONTEXTS)
