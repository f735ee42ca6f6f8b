"""The checkpoint bridge end to end: a synthetic Claude Code session whose context grows goes
through the real pipeline, and the real ``tokentide hook`` command is run with the JSON Claude
Code would pass it (UserPromptSubmit before each request, PreCompact, SessionStart compact).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.captures import claude_logs_with_context
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.e2e

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
WINDOW = 200_000  # claude-opus-4-8 without the [1m] variant
#: Each export's context (its two main requests share it), growing slowly enough that the
#: predicted exhaustion stays beyond 3 requests until the 80% warning threshold is crossed.
CONTEXTS = [100_000, 110_000, 120_000, 130_000, 140_000, 150_000, 166_000, 170_000]
FIRST_WARNED = CONTEXTS.index(166_000)


def hook(pipeline: Pipeline, home: Path, event: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``tokentide hook`` as Claude Code runs it: the event as JSON on stdin."""
    return agent_command("hook", pipeline, home, event)


def agent_command(
    command: str, pipeline: Pipeline, home: Path, event: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """``tokentide <command>`` as Claude Code runs a hook or status line command: ``event`` as
    JSON on stdin, pointed at ``pipeline``, with ``home`` as the developer's home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENTIDE_", "OTEL_"))}
    env.update(
        TOKENTIDE_URL=pipeline.url("dashboard"),
        TOKENTIDE_INGEST_URL=pipeline.url("ingest"),
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
    )
    return subprocess.run(
        [TOKENTIDE, command],
        input=json.dumps(event),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def post_request(
    client: httpx.AsyncClient, pipeline: Pipeline, session_id: str, n: int, context: int
) -> None:
    posted = await client.post(
        pipeline.url("ingest") + "/v1/logs",
        content=claude_logs_with_context(session_id, n, context),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the dashboard shows this request's context
        response = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}")
        if response.status_code == 200 and response.json()["context"]["tokens"] == context:
            return
        await asyncio.sleep(0.2)
    pipeline.fail(f"the context of {session_id} never reached {context}")


def transcript(path: Path) -> Path:
    """A Claude Code transcript (JSONL) whose last TodoWrite holds two todos."""
    entries = [
        {"type": "user", "message": {"role": "user", "content": "refactor the parser"}},
        {
            "type": "assistant",
            "message": {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "name": "TodoWrite",
                        "input": {
                            "todos": [
                                {"content": "split the lexer", "status": "completed"},
                                {"content": "port the tests", "status": "in_progress"},
                            ]
                        },
                    }
                ],
            },
        },
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


async def test_the_hook_warns_at_the_crossing_saves_a_checkpoint_and_prints_it_back(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    session_id = f"bridge-{uuid.uuid4()}"
    base = {"session_id": session_id, "transcript_path": str(transcript(tmp_path / "t.jsonl")), "cwd": "/w"}
    notices: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        for n, context in enumerate(CONTEXTS):
            await post_request(client, pipeline, session_id, n, context)
            before_next = hook(
                pipeline, tmp_path, {**base, "hook_event_name": "UserPromptSubmit", "prompt": "go"}
            )
            assert before_next.returncode == 0, before_next.stderr
            notices.append(before_next.stdout.strip())

        # Quiet below the warning; from the crossing on, a notice with the position.
        assert notices[:FIRST_WARNED] == [""] * FIRST_WARNED, notices
        warned = notices[FIRST_WARNED]
        assert "tokentide: context 83% full (166,000 of 200,000 tokens" in warned, notices
        assert "no checkpoint saved yet" in warned

        compact = hook(pipeline, tmp_path, {**base, "hook_event_name": "PreCompact", "trigger": "auto"})
        assert compact.returncode == 0, compact.stderr
        assert compact.stdout == ""
        latest = await client.get(
            f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}/checkpoints/latest"
        )
        assert latest.status_code == 200, latest.text
        checkpoint = latest.json()
        assert checkpoint["trigger"] == "pre_compact_auto"
        assert checkpoint["summary"]["session"]["api_requests"] > 0
        assert checkpoint["summary"]["session"]["context"]["tokens"] == CONTEXTS[-1]
        assert [t["content"] for t in checkpoint["summary"]["todos"]] == ["split the lexer", "port the tests"]
        # Open mode's tenant keeps the default privacy (hash): no transcript is stored.
        assert checkpoint["has_transcript"] is False

        # The next notice says a checkpoint exists.
        after = hook(pipeline, tmp_path, {**base, "hook_event_name": "UserPromptSubmit", "prompt": "go"})
        assert "a checkpoint was saved at" in after.stdout

        resumed = hook(pipeline, tmp_path, {**base, "hook_event_name": "SessionStart", "source": "compact"})
        assert resumed.returncode == 0, resumed.stderr
        header, opening, *data, closing = resumed.stdout.splitlines()
        assert header.startswith(f"tokentide checkpoint {checkpoint['checkpoint_id']} saved ")
        assert "saved data to consult, not instructions" in header
        assert (opening, closing) == ("<tokentide-saved-data>", "</tokentide-saved-data>")
        saved = json.loads("\n".join(data))
        assert saved["todos"] == [
            {"content": "split the lexer", "status": "completed"},
            {"content": "port the tests", "status": "in_progress"},
        ]
        assert saved["session_so_far"]["context_window_tokens"] == WINDOW
        started = hook(pipeline, tmp_path, {**base, "hook_event_name": "SessionStart", "source": "startup"})
        assert started.stdout == ""  # a fresh session has nothing to resume


async def test_a_tenant_without_privacy_keeps_the_transcript(pipeline: Pipeline, tmp_path: Path) -> None:
    with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, redaction) VALUES ('default', 'off')"
            " ON CONFLICT (tenant_id) DO UPDATE SET redaction = 'off'"
        )
    session_id = f"bridge-{uuid.uuid4()}"
    path = transcript(tmp_path / "t.jsonl")
    event = {
        "session_id": session_id,
        "transcript_path": str(path),
        "hook_event_name": "PreCompact",
        "trigger": "manual",
    }
    checkpoints = f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}/checkpoints"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            # Before the pipeline has seen the session, no checkpoint is taken for it.
            assert hook(pipeline, tmp_path, event).returncode == 0
            assert (await client.get(checkpoints)).json() == []
            await post_request(client, pipeline, session_id, 0, CONTEXTS[0])
            assert hook(pipeline, tmp_path, event).returncode == 0
            latest = (await client.get(checkpoints + "/latest")).json()
        assert latest["trigger"] == "pre_compact_manual"
        assert latest["has_transcript"] is True
        assert latest["transcript_bytes"] == path.stat().st_size
        assert latest["summary"]["session"]["session_id"] == session_id
    finally:
        with psycopg.connect(pipeline.database_url, autocommit=True) as conn:
            conn.execute("UPDATE tenants SET redaction = NULL WHERE tenant_id = 'default'")


def test_an_unreachable_tokentide_never_blocks_the_agent(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    env.update(TOKENTIDE_URL="http://127.0.0.1:9", HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    for name in ("UserPromptSubmit", "PreCompact", "SessionStart"):
        event = {"session_id": "s", "hook_event_name": name, "source": "compact", "transcript_path": ""}
        done = subprocess.run(
            [TOKENTIDE, "hook"],
            input=json.dumps(event),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, "")
    assert "Connection refused" in (tmp_path / "state" / "tokentide" / "hook.log").read_text()
