"""``tokentide hook``: the plan report (PostToolUse on TodoWrite, UserPromptSubmit) and the git
context it carries (pure parts, the dashboard call replaced)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tokentide import hook

TODOS = [
    {"content": "Read the code", "status": "completed", "activeForm": "Reading the code"},
    {"content": "Write the tests", "status": "in_progress", "activeForm": "Writing the tests"},
    {"content": "Ship it", "status": "pending", "activeForm": "Shipping it"},
]


@pytest.mark.parametrize(
    ("remote", "stripped", "name"),
    [
        (
            "https://ghp_secret@github.com/acme/tokentide.git",
            "https://github.com/acme/tokentide.git",
            "tokentide",
        ),
        ("https://user:pa%40ss@gitlab.example/a/b/widgets", "https://gitlab.example/a/b/widgets", "widgets"),
        ("git@github.com:acme/tokentide.git", "git@github.com:acme/tokentide.git", "tokentide"),
        ("ssh://git@host:2222/acme/repo.git/", "ssh://host:2222/acme/repo.git/", "repo"),
        ("/srv/git/monorepo.git", "/srv/git/monorepo.git", "monorepo"),
    ],
)
def test_remote_urls_lose_their_credentials_and_name_the_repository(
    remote: str, stripped: str, name: str
) -> None:
    assert hook.strip_credentials(remote) == stripped
    assert hook.repository_name(remote) == name


def test_the_project_is_the_repository_else_the_top_level_else_the_cwd() -> None:
    assert hook.project_of("https://t@github.com/acme/api.git", "/home/dev/api/src") == "api"
    assert hook.project_of("/home/dev/checkout", "/home/dev/checkout/src") == "checkout"
    assert hook.project_of(None, "/home/dev/scratch/") == "scratch"
    assert hook.project_of(None, None) is None
    assert hook.project_of(None, "/" + "x" * 300) == "x" * hook.PROJECT_MAX


def test_git_context_asks_git_three_things_and_strips_the_remote() -> None:
    asked: list[list[str]] = []
    answers = {
        "rev-parse": "/home/dev/api",
        "remote": "https://oauth2:tok@gitlab.example/acme/api.git",
        "branch": "feature/plans",
    }

    def run(args: list[str]) -> str | None:
        asked.append(args)
        return answers[args[2]]

    assert hook.git_context("/home/dev/api/src", run) == {
        "toplevel": "/home/dev/api",
        "repository": "https://gitlab.example/acme/api.git",
        "branch": "feature/plans",
    }
    assert asked == [
        ["-C", "/home/dev/api/src", "rev-parse", "--show-toplevel"],
        ["-C", "/home/dev/api", "remote", "get-url", "origin"],
        ["-C", "/home/dev/api", "branch", "--show-current"],
    ]
    assert hook.git_context("/srv/not-a-repo", lambda args: None) == {}


def test_git_context_of_a_real_repository(tmp_path: Path) -> None:
    repo = tmp_path / "widgets"
    (repo / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "remote", "add", "origin", "https://me:secret@example.com/acme/widgets.git"],
        check=True,
    )
    assert hook.git_context(str(repo / "src")) == {
        "toplevel": str(repo),
        "repository": "https://example.com/acme/widgets.git",
        "branch": "main",
    }
    assert hook.git_context(str(tmp_path)) == {}


def test_the_plan_body_keeps_only_items_the_dashboard_accepts() -> None:
    todos = [
        *TODOS,
        {"content": "", "status": "pending"},
        {"content": "no status"},
        {"content": "odd status", "status": "blocked"},
        {"content": "x", "status": "pending", "priority": "high", "id": "7"},
    ]
    body = hook.plan_body(
        todos, "/home/dev/api", {"repository": "https://github.com/acme/api", "branch": "main"}
    )
    assert body == {
        "todos": [*TODOS, {"content": "x", "status": "pending"}],
        "cwd": "/home/dev/api",
        "git_repository": "https://github.com/acme/api",
        "git_branch": "main",
        "project": "api",
    }
    many = hook.plan_body([{"content": str(i), "status": "pending"} for i in range(150)], None, {})
    assert len(many["todos"]) == hook.MAX_TODOS
    assert hook.plan_body(None, None, {})["todos"] is None


@pytest.fixture
def sent(hook_calls: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str, Any]]:
    return hook_calls


def post_tool_use(session: str, todos: list[dict[str, Any]], tool: str = "TodoWrite") -> str:
    event = {
        "hook_event_name": "PostToolUse",
        "session_id": session,
        "cwd": "/home/dev/api",
        "tool_name": tool,
        "tool_input": {"todos": todos},
    }
    return hook.handle(json.dumps(event))


def test_post_tool_use_reports_the_todo_list_once_per_change(sent: list[tuple[str, str, str, Any]]) -> None:
    assert post_tool_use("s1", TODOS) == ""
    assert post_tool_use("s1", TODOS) == ""  # unchanged: not sent again
    assert post_tool_use("s1", TODOS, tool="Bash") == ""  # another tool: nothing
    changed = [dict(TODOS[0]), dict(TODOS[1], status="completed"), dict(TODOS[2], status="in_progress")]
    post_tool_use("s1", changed)
    post_tool_use("s2", changed)  # another session: its own digest
    assert [(m, s, x) for m, s, x, _ in sent] == [
        ("PUT", "s1", "/plan"),
        ("PUT", "s1", "/plan"),
        ("PUT", "s2", "/plan"),
    ]
    assert sent[0][3]["todos"] == TODOS
    assert sent[1][3]["todos"] == changed
    assert sent[0][3]["project"] == "api"


def test_a_failed_report_is_sent_again_next_time(
    sent: list[tuple[str, str, str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    working = hook.request

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr(hook, "request", down)
    with pytest.raises(OSError, match="connection refused"):  # hook.main logs it, exits 0
        post_tool_use("s1", TODOS)
    monkeypatch.setattr(hook, "request", working)
    post_tool_use("s1", TODOS)  # the digest was not kept: sent now
    assert [(m, x, b["todos"]) for m, _, x, b in sent] == [("PUT", "/plan", TODOS)]


def test_user_prompt_submit_reports_the_transcripts_todos_then_asks_for_the_notice(
    sent: list[tuple[str, str, str, Any]], tmp_path: Path
) -> None:
    transcript = tmp_path / "t.jsonl"
    entry = {"message": {"content": [{"type": "tool_use", "name": "TodoWrite", "input": {"todos": TODOS}}]}}
    transcript.write_text(json.dumps({"type": "user"}) + "\n" + json.dumps(entry) + "\n")
    event = {
        "hook_event_name": "UserPromptSubmit",
        "session_id": "s1",
        "cwd": "/home/dev/api",
        "transcript_path": str(transcript),
    }
    hook.handle(json.dumps(event))
    hook.handle(json.dumps(event))
    assert [(m, x) for m, _, x, _ in sent] == [("PUT", "/plan"), ("GET", ""), ("GET", "")]
    assert sent[0][3]["todos"] == TODOS


def test_the_hook_installs_on_todo_write_and_the_task_tools_and_uninstalls_it() -> None:
    settings = hook.install({})
    assert settings["hooks"]["PostToolUse"] == [
        {
            "matcher": "TodoWrite|TaskCreate|TaskUpdate",
            "hooks": [{"type": "command", "command": hook.COMMAND, "timeout": 10}],
        }
    ]
    assert "PostToolUse" not in hook.uninstall(settings).get("hooks", {})


@pytest.mark.parametrize(
    "failure",
    [urllib.error.URLError(ConnectionRefusedError(111, "refused")), TimeoutError("timed out")],
    ids=["refused", "timeout"],
)
def test_a_prompt_waits_for_one_unanswered_call_only(
    failure: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The dashboard down: the plan report fails, and the notice is not asked for too (each
    call waits out its timeout, and the prompt waits for the hook)."""
    calls: list[tuple[str, str]] = []

    def unanswered(method: str, session_id: str, suffix: str = "", body: Any = None) -> Any:
        calls.append((method, suffix))
        raise failure

    monkeypatch.setattr(hook, "request", unanswered)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    event = {"hook_event_name": "UserPromptSubmit", "session_id": "s9", "cwd": str(tmp_path)}
    assert hook.handle(json.dumps(event)) == ""
    assert calls == [("PUT", "/plan")]


def test_a_refused_plan_report_still_asks_for_the_notice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, str]] = []

    def refusing(method: str, session_id: str, suffix: str = "", body: Any = None) -> Any:
        calls.append((method, suffix))
        if method == "PUT":
            raise urllib.error.HTTPError("http://x", 422, "refused", Message(), None)
        return {"session_id": "s9", "known": True, "open_signal": None, "budget_signals": []}

    monkeypatch.setattr(hook, "request", refusing)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    event = {"hook_event_name": "UserPromptSubmit", "session_id": "s9", "cwd": str(tmp_path)}
    hook.handle(json.dumps(event))
    assert calls == [("PUT", "/plan"), ("GET", "")]
