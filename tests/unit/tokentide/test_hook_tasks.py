"""Claude Code's task tools as a plan (``tokentide.hook_tasks``, the hook's use of it): the
stored list read bounded, the transcript replayed, on inputs captured from the real CLI 2.1.332
(``tests/fixtures/claude-code-hooks/task-tools/README.md``)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tokentide import hook, hook_tasks

CAPTURE = Path(__file__).resolve().parents[2] / "fixtures" / "claude-code-hooks" / "task-tools"
#: What the capture's model did, stated independently of the code: three tasks kept (the fourth
#: deleted), the first completed, the second in progress, the third pending.
PLAN = [
    {"content": "Map the modules", "status": "completed", "activeForm": "Mapping the modules"},
    {"content": "Extract the parser", "status": "in_progress", "activeForm": "Extracting the parser"},
    {"content": "Run the tests", "status": "pending", "activeForm": "Running the tests"},
]


def captured_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURE / "hook-inputs.jsonl").read_text().splitlines() if line]


def test_the_capture_is_what_the_readme_says() -> None:
    calls = [
        (e["tool_name"], e["tool_input"]) for e in captured_events() if e["hook_event_name"] == "PostToolUse"
    ]
    assert [name for name, _ in calls] == ["TaskCreate"] * 4 + ["TaskUpdate"] * 4 + ["TaskList"]
    assert {
        e["tool_response"]["task"]["id"] for e in captured_events() if e.get("tool_name") == "TaskCreate"
    } == {
        "1",
        "2",
        "3",
        "4",
    }
    assert sorted(p.name for p in (CAPTURE / "tasks").iterdir()) == [
        ".highwatermark",
        "1.json",
        "2.json",
        "3.json",
    ]


def test_the_stored_list_is_the_plan_ordered_by_id() -> None:
    tasks = hook_tasks.stored_tasks(CAPTURE / "tasks")
    assert tasks is not None
    assert [t["id"] for t in tasks] == ["1", "2", "3"]
    assert hook_tasks.plan_items(tasks) == PLAN


def test_the_transcript_replayed_gives_the_same_plan() -> None:
    assert hook_tasks.replay((CAPTURE / "transcript-tool-calls.jsonl").read_bytes()) == PLAN


def test_the_hook_inputs_replayed_give_the_same_plan_and_drop_the_deleted_task() -> None:
    tasks: list[dict[str, Any]] = []
    seen = []
    for e in captured_events():
        if e["hook_event_name"] == "PostToolUse":
            assert hook_tasks.apply_call(tasks, e["tool_name"], e["tool_input"], e["tool_response"])
            seen.append(len(tasks))
    assert seen == [1, 2, 3, 4, 4, 4, 4, 3, 3]  # created one by one, "deleted" removes the fourth
    assert hook_tasks.plan_items(tasks) == PLAN


def test_a_call_without_a_successful_result_changes_nothing() -> None:
    tasks = [{"id": "1", "subject": "a", "status": "pending"}]
    assert not hook_tasks.apply_call(
        tasks, "TaskUpdate", {"taskId": "1", "status": "completed"}, {"success": False}
    )
    assert not hook_tasks.apply_call(
        tasks, "TaskUpdate", {"taskId": "1", "status": "completed"}, "Error: no task"
    )
    assert not hook_tasks.apply_call(tasks, "TaskCreate", {"subject": "b"}, {"task": {"subject": "b"}})
    assert not hook_tasks.apply_call(tasks, "TaskGet", {"taskId": "1"}, {"task": None})
    assert tasks == [{"id": "1", "subject": "a", "status": "pending"}]
    # An update of an unknown task (created before the transcript's tail) succeeds, changes nothing.
    assert hook_tasks.apply_call(
        tasks, "TaskUpdate", {"taskId": "7", "status": "completed"}, {"success": True}
    )
    assert tasks == [{"id": "1", "subject": "a", "status": "pending"}]


def test_task_list_results_set_statuses_and_drop_unlisted_tasks() -> None:
    tasks = [
        {"id": "1", "subject": "a", "status": "pending", "activeForm": "doing a"},
        {"id": "2", "subject": "b", "status": "pending"},
    ]
    listed = {
        "tasks": [
            {"id": "1", "subject": "a2", "status": "completed", "blockedBy": []},
            {"id": "5", "subject": "e", "status": "pending", "blockedBy": ["1"]},
        ]
    }
    assert hook_tasks.apply_call(tasks, "TaskList", {}, listed)
    assert tasks == [
        {"id": "1", "subject": "a2", "status": "completed", "activeForm": "doing a"},
        {"id": "5", "subject": "e", "status": "pending"},
    ]


def test_plan_items_leave_out_other_statuses_and_cut_texts() -> None:
    tasks = [
        {"id": "1", "subject": "x" * 1500, "status": "in_progress", "activeForm": "y" * 1500},
        {"id": "2", "subject": "blocked", "status": "blocked"},
        {"id": "3", "subject": "", "status": "pending"},
        {"id": "4", "status": "pending"},
        {"id": "5", "subject": "kept", "status": "pending", "activeForm": ""},
    ]
    assert hook_tasks.plan_items(tasks) == [
        {"content": "x" * 1000, "status": "in_progress", "activeForm": "y" * 1000},
        {"content": "kept", "status": "pending"},
    ]
    many = [{"id": str(i), "subject": f"t{i}", "status": "pending"} for i in range(150)]
    assert len(hook_tasks.plan_items(many)) == hook_tasks.MAX_ITEMS == 100


def entry(kind: str, block: dict[str, Any], result: object = None) -> str:
    out: dict[str, Any] = {"type": kind, "message": {"role": kind, "content": [block]}}
    if result is not None:
        out["toolUseResult"] = result
    return json.dumps(out)


def create(n: int, subject: str) -> list[str]:
    return [
        entry(
            "assistant",
            {
                "type": "tool_use",
                "id": f"c{n}",
                "name": "TaskCreate",
                "input": {"subject": subject, "description": ""},
            },
        ),
        entry(
            "user",
            {"type": "tool_result", "tool_use_id": f"c{n}", "content": "ok"},
            {"task": {"id": str(n), "subject": subject}},
        ),
    ]


def todo_write(todos: list[dict[str, Any]]) -> str:
    return entry(
        "assistant", {"type": "tool_use", "id": "tw", "name": "TodoWrite", "input": {"todos": todos}}
    )


def test_the_last_of_todo_write_and_the_task_tools_is_the_plan() -> None:
    todos = [{"content": "old", "status": "pending"}]
    tasks_then_todos = "\n".join([*create(1, "t1"), todo_write(todos)]).encode()
    assert hook_tasks.replay(tasks_then_todos) == todos
    todos_then_tasks = "\n".join(
        [todo_write(todos), *create(1, "t1"), "not json {", *create(2, "t2")]
    ).encode()
    assert hook_tasks.replay(todos_then_tasks) == [
        {"content": "t1", "status": "pending"},
        {"content": "t2", "status": "pending"},
    ]
    assert hook_tasks.replay(b'{"type": "user", "message": {"content": "hello"}}') is None


def test_copies_of_requests_are_not_replayed() -> None:
    blob = json.dumps(
        {
            "type": "api-request-blob",
            "message": {
                "role": "user",
                "content": [{"type": "tool_use", "id": "c9", "name": "TaskCreate", "input": {}}],
            },
        }
    )
    result = json.dumps(
        {
            "type": "user",
            "message": {"content": [{"type": "tool_result", "tool_use_id": "c9"}]},
            "toolUseResult": {"task": {"id": "9", "subject": "ghost"}},
        }
    )
    assert hook_tasks.replay(f"{blob}\n{result}".encode()) is None


def test_the_pending_call_is_applied_once() -> None:
    transcript = "\n".join(create(1, "t1")).encode()
    update = ("u1", "TaskUpdate", {"taskId": "1", "status": "in_progress"}, {"success": True, "taskId": "1"})
    assert hook_tasks.replay(transcript, update) == [{"content": "t1", "status": "in_progress"}]
    # The transcript has the call's result already: not applied a second time.
    again = ("c1", "TaskCreate", {"subject": "t1"}, {"task": {"id": "1", "subject": "t1"}})
    assert hook_tasks.replay(transcript, again) == [{"content": "t1", "status": "pending"}]
    assert hook_tasks.replay(
        b"", ("c1", "TaskCreate", {"subject": "t"}, {"task": {"id": "1", "subject": "t"}})
    ) == [{"content": "t", "status": "pending"}]


def test_the_list_directory_follows_claude_codes_settings() -> None:
    assert hook_tasks.task_list_dir("s-1", {"HOME": "/home/dev"}) == Path("/home/dev/.claude/tasks/s-1")
    env = {"HOME": "/home/dev", "CLAUDE_CONFIG_DIR": "/cfg", "CLAUDE_CODE_TASK_LIST_ID": "team-list"}
    assert hook_tasks.task_list_dir("s-1", env) == Path("/cfg/tasks/team-list")
    for bad in ("../etc", "a/b", ".hidden", "", "x" * 201):
        assert hook_tasks.task_list_dir(bad, {"HOME": "/home/dev"}) is None


def test_the_stored_list_is_read_bounded_and_defensively(tmp_path: Path) -> None:
    assert hook_tasks.stored_tasks(tmp_path / "missing") is None
    assert hook_tasks.stored_tasks(tmp_path) == []  # the list exists and is empty
    (tmp_path / "file").write_text("x")
    assert hook_tasks.stored_tasks(tmp_path / "file") is None
    (tmp_path / "file").unlink()
    for n in (10, 2):
        (tmp_path / f"{n}.json").write_text(
            json.dumps({"id": str(n), "subject": f"t{n}", "status": "pending", "description": "d"})
        )
    (tmp_path / "3.json").write_text("{not json")
    (tmp_path / "4.json").write_text(json.dumps({"id": "4", "subject": "x" * hook_tasks.TASK_FILE_MAX_BYTES}))
    (tmp_path / "5.json").write_text(json.dumps(["not", "a", "task"]))
    (tmp_path / "6.json").mkdir()
    outside = tmp_path.parent / "outside.json"
    outside.write_text(json.dumps({"id": "7", "subject": "outside", "status": "pending"}))
    os.symlink(outside, tmp_path / "7.json")
    (tmp_path / ".highwatermark").write_text("10")
    assert hook_tasks.stored_tasks(tmp_path) == [
        {"id": "2", "subject": "t2", "status": "pending"},
        {"id": "10", "subject": "t10", "status": "pending"},
    ]


def test_at_most_max_task_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hook_tasks, "MAX_TASK_FILES", 3)
    for n in range(5):
        (tmp_path / f"{n}.json").write_text(json.dumps({"id": str(n), "subject": "t", "status": "pending"}))
    tasks = hook_tasks.stored_tasks(tmp_path)
    assert tasks is not None
    assert len(tasks) == 3


# --- the hook ---------------------------------------------------------------------------------


@pytest.fixture
def sent(
    hook_calls: list[tuple[str, str, str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[tuple[str, str, str, Any]]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("CLAUDE_CODE_TASK_LIST_ID", raising=False)
    return hook_calls


def last_post_tool_use(session: str, transcript: Path | None) -> dict[str, Any]:
    [event] = [
        e
        for e in captured_events()
        if e.get("tool_name") == "TaskUpdate" and e["tool_input"].get("status") == "in_progress"
    ]
    return {**event, "session_id": session, "transcript_path": str(transcript) if transcript else None}


def test_post_tool_use_on_a_task_tool_reports_the_stored_list(
    sent: list[tuple[str, str, str, Any]], tmp_path: Path
) -> None:
    shutil.copytree(CAPTURE / "tasks", tmp_path / "home" / ".claude" / "tasks" / "s1")
    event = last_post_tool_use("s1", None)
    assert hook.handle(json.dumps(event)) == ""
    assert hook.handle(json.dumps(event)) == ""  # unchanged: sent once
    assert [(m, s, x, b["todos"]) for m, s, x, b in sent] == [("PUT", "s1", "/plan", PLAN)]


def test_post_tool_use_without_a_stored_list_replays_the_transcript_and_the_call(
    sent: list[tuple[str, str, str, Any]], tmp_path: Path
) -> None:
    # The transcript as it stood when the hook ran: up to the call before this one.
    lines = (CAPTURE / "transcript-tool-calls.jsonl").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"toolu_stub6"' in line)
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("\n".join(lines[:cut]) + "\n")
    hook.handle(json.dumps(last_post_tool_use("s2", transcript)))
    [(_, _, _, body)] = sent
    assert body["todos"] == [
        PLAN[0],
        PLAN[1],
        dict(PLAN[2]),
        {"content": "Scratch", "status": "pending"},  # deleted only later
    ]


def test_user_prompt_submit_reports_the_stored_list(
    sent: list[tuple[str, str, str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "cfg"
    shutil.copytree(CAPTURE / "tasks", config / "tasks" / "shared-list")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    monkeypatch.setenv("CLAUDE_CODE_TASK_LIST_ID", "shared-list")
    event = {"hook_event_name": "UserPromptSubmit", "session_id": "s3", "cwd": "/home/dev/api"}
    hook.handle(json.dumps(event))
    assert [(m, x) for m, _, x, _ in sent] == [("PUT", "/plan"), ("GET", "")]
    assert sent[0][3]["todos"] == PLAN


def test_pre_compact_saves_the_task_list_with_the_checkpoint(
    sent: list[tuple[str, str, str, Any]], tmp_path: Path
) -> None:
    transcript = tmp_path / "t.jsonl"
    transcript.write_bytes((CAPTURE / "transcript-tool-calls.jsonl").read_bytes())
    hook.handle(
        json.dumps({"hook_event_name": "PreCompact", "session_id": "s4", "transcript_path": str(transcript)})
    )
    [(method, _, suffix, body)] = sent
    assert (method, suffix, body["todos"]) == ("POST", "/checkpoints", PLAN)


def test_install_gives_an_earlier_install_the_task_tools_and_uninstall_removes_it() -> None:
    ours = {"type": "command", "command": hook.COMMAND, "timeout": 10}
    theirs = {"type": "command", "command": "other-tool", "timeout": 5}
    earlier = {
        "hooks": {
            "PostToolUse": [
                {"matcher": "TodoWrite", "hooks": [dict(ours)]},
                {"matcher": "Bash", "hooks": [dict(theirs)]},
            ]
        }
    }
    settings = hook.install(json.loads(json.dumps(earlier)))
    assert settings["hooks"]["PostToolUse"] == [
        {"matcher": "TodoWrite|TaskCreate|TaskUpdate", "hooks": [ours]},
        {"matcher": "Bash", "hooks": [theirs]},
    ]
    assert hook.uninstall(json.loads(json.dumps(earlier)))["hooks"] == {
        "PostToolUse": [{"matcher": "Bash", "hooks": [theirs]}]
    }
    assert hook.uninstall(settings)["hooks"] == {"PostToolUse": [{"matcher": "Bash", "hooks": [theirs]}]}


def test_plan_reports_of_a_session_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    order: list[str] = []

    def second(session: str) -> None:
        with hook.plan_lock(session):
            order.append(f"second {session}")

    with hook.plan_lock("s1"):
        waiting = threading.Thread(target=second, args=("s1",))
        other = threading.Thread(target=second, args=("s2",))
        waiting.start()
        other.start()
        other.join(5)  # another session's report does not wait
        time.sleep(0.2)
        order.append("first s1")
    waiting.join(5)
    assert order == ["second s2", "first s1", "second s1"]
