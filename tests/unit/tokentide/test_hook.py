"""``tokentide hook``: what it installs and removes, and what it says (pure parts)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tokentide import hook

THEIRS = {"type": "command", "command": "~/bin/lint-on-save"}


def settings_with_others() -> dict[str, Any]:
    return {
        "model": "opus",
        "hooks": {
            "PreCompact": [{"matcher": "", "hooks": [THEIRS]}],
            "Stop": [{"matcher": "", "hooks": [{"type": "command", "command": "notify-send done"}]}],
        },
    }


def test_install_adds_each_event_once_and_keeps_everything_else() -> None:
    settings = hook.install(settings_with_others())
    again = hook.install(copy.deepcopy(settings))
    assert again == settings  # idempotent
    for event, matcher in hook.EVENTS.items():
        ours = [e for e in settings["hooks"][event] if any(h["command"] == hook.COMMAND for h in e["hooks"])]
        assert len(ours) == 1, event
        assert ours[0]["matcher"] == matcher
    assert THEIRS in settings["hooks"]["PreCompact"][0]["hooks"]
    assert settings["model"] == "opus"
    assert "Stop" in settings["hooks"]


def test_uninstall_removes_exactly_what_install_added() -> None:
    original = settings_with_others()
    assert hook.uninstall(hook.install(copy.deepcopy(original))) == original
    assert hook.uninstall(hook.install({})) == {}


def test_install_and_uninstall_edit_the_projects_settings_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ".claude" / "settings.json"
    path.parent.mkdir()
    path.write_text(json.dumps(settings_with_others()))
    assert hook.main(["install", "--project", str(tmp_path)]) == 0
    assert "UserPromptSubmit" in json.loads(path.read_text())["hooks"]
    assert hook.main(["uninstall", "--project", str(tmp_path)]) == 0
    assert json.loads(path.read_text()) == settings_with_others()
    assert str(path) in capsys.readouterr().out


STATE = {"ratio": 0.91, "tokens": 182_000, "limit": 200_000, "predicted_requests_left": 3.6}


def test_no_notice_without_an_open_signal() -> None:
    assert hook.notice({**STATE, "open_signal": None}) == ""
    assert hook.notice({"known": False}) == ""


@pytest.mark.parametrize(
    ("signal", "level"),
    [
        ("context_warning", "warning"),
        ("checkpoint_requested", "checkpoint requested"),
        ("context_critical", "critical"),
    ],
)
def test_the_notice_says_where_the_context_stands(signal: str, level: str) -> None:
    text = hook.notice({**STATE, "open_signal": signal, "latest_checkpoint_at": None})
    assert text.startswith(f"tokentide: context 91% full (182,000 of 200,000 tokens, {level})")
    assert "about 4 requests left" in text
    assert "no checkpoint saved yet" in text
    saved = hook.notice({**STATE, "open_signal": signal, "latest_checkpoint_at": "2026-11-24T06:00:00Z"})
    assert "a checkpoint was saved at 2026-11-24T06:00:00Z" in saved


def test_the_resume_text_carries_the_summary_and_todos() -> None:
    text = hook.resume_text(
        {
            "checkpoint_id": "abc",
            "created_at": "2026-11-24T06:00:00Z",
            "trigger": "pre_compact_auto",
            "summary": {
                "session": {
                    "api_requests": 12,
                    "cost_usd": 1.5,
                    "models": ["m"],
                    "context": {"ratio": 0.9, "limit": 200_000},
                },
                "todos": [{"content": "port the tests", "status": "in_progress"}],
            },
        }
    )
    assert text.splitlines()[0].startswith(
        "tokentide checkpoint abc saved 2026-11-24T06:00:00Z (pre_compact_auto)"
    )
    assert "12 model requests, $1.5000, models m; context was 90% of 200,000 tokens" in text
    assert "- todo [in_progress]: port the tests" in text


def test_the_resume_text_says_an_unknown_cost() -> None:
    checkpoint = {
        "checkpoint_id": "abc",
        "created_at": "2026-11-24T06:00:00Z",
        "trigger": "api",
        "summary": {
            "session": {"api_requests": 2, "cost_usd": None, "cost_source": "unknown", "models": ["m"]}
        },
    }
    assert "2 model requests, cost unknown, models m;" in hook.resume_text(checkpoint)


def test_the_latest_todo_list_is_read_from_the_transcript() -> None:
    def todo_write(todos: list[dict[str, str]]) -> bytes:
        entry = {
            "message": {"content": [{"type": "tool_use", "name": "TodoWrite", "input": {"todos": todos}}]}
        }
        return json.dumps(entry).encode()

    transcript = b"\n".join(
        [
            todo_write([{"content": "old"}]),
            b'{"message": {"content": "hi"}}',
            todo_write([{"content": "new"}]),
            b"{broken",
        ]
    )
    assert hook.latest_todos(transcript) == [{"content": "new"}]
    assert hook.latest_todos(b'{"message": {"content": "no todos"}}') is None


def test_a_long_transcript_is_cut_to_its_tail_at_a_line_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, "TRANSCRIPT_TAIL_BYTES", 100)
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"line": {i:04d}}}\n' for i in range(50)))
    tail, cut = hook.transcript_tail(str(path))
    assert cut
    assert tail.startswith(b'{"line"')
    assert tail.endswith(b'{"line": 0049}\n')
    assert len(tail) <= 100
    assert hook.transcript_tail(str(tmp_path / "missing")) == (b"", False)
    assert hook.transcript_tail(None) == (b"", False)


def test_other_events_and_events_without_a_session_say_nothing() -> None:
    assert hook.handle(json.dumps({"hook_event_name": "Stop", "session_id": "s"})) == ""
    assert hook.handle(json.dumps({"hook_event_name": "UserPromptSubmit"})) == ""
