"""Claude Code's task list as a plan, for ``tokentide hook`` (issue 17). Stdlib only.

Claude Code 2.1.332 (the pinned CLI, ``scripts/install-claude-code.sh``) offers by default the
task tools ``TaskCreate``, ``TaskUpdate``, ``TaskList`` and ``TaskGet`` rather than
``TodoWrite`` (which it offers only with ``CLAUDE_CODE_ENABLE_TASKS=false
CLAUDE_CODE_ENABLE_TODO_TOOLS=true``). What they take and return, as the PostToolUse hook
input has them (``tool_input`` / ``tool_response``; captured from the real CLI in
``tests/fixtures/claude-code-hooks/task-tools/``):

- ``TaskCreate`` takes ``subject``, ``description``, optional ``activeForm`` and ``metadata``,
  and returns ``{"task": {"id": "1", "subject": ..., "description": ...}}``: ids are strings
  of increasing integers per list ("1", "2", ...); a new task is ``pending``.
- ``TaskUpdate`` takes ``taskId`` and any of ``subject``, ``description``, ``activeForm``,
  ``status`` (``pending``, ``in_progress``, ``completed``, or ``deleted``, which removes the
  task), ``addBlocks``, ``addBlockedBy``, ``owner``, ``metadata``; it returns ``success``,
  ``taskId``, ``updatedFields`` and, when the status changed, ``statusChange`` ``{from, to}``.
- ``TaskList`` (no input) returns ``{"tasks": [{id, subject, status, blockedBy, owner?}]}``;
  ``TaskGet`` one task. Neither changes the list.

Claude Code keeps the list itself in ``$CLAUDE_CONFIG_DIR`` (default ``~/.claude``)
``/tasks/<list id>/<id>.json``, one file per task (``id``, ``subject``, ``description``,
``activeForm``, ``status``, ``blocks``, ``blockedBy``), a deleted task's file removed, next to
``.lock`` and ``.highwatermark``. The list id is ``CLAUDE_CODE_TASK_LIST_ID`` when set (a list
shared by sessions), else the session id (an agent team's members use the team's list, which is
not looked up here: the transcript is replayed for them). The transcript has the tool calls too: the assistant
entry's ``tool_use`` block (``id``, ``name``, ``input``) and the user entry's ``tool_result``
with ``toolUseResult`` (the same object as the hook's ``tool_response``).

So the plan is the stored list when its directory exists (the authoritative state, read
bounded: at most :data:`MAX_TASK_FILES` files of :data:`TASK_FILE_MAX_BYTES` each, symlinks and
unreadable or malformed files skipped), else the transcript's task tool calls replayed in
order. A task becomes a plan item ``{content: subject, activeForm, status}``; ``deleted`` tasks
are dropped, and a task of any other status is left out (as the dashboard accepts only
``pending``, ``in_progress``, ``completed``). Descriptions, owners and dependencies are not
reported.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

#: The tools that change Claude Code's plan (the PostToolUse matcher names them).
TASK_TOOLS = frozenset({"TaskCreate", "TaskUpdate"})
STATUSES = frozenset({"pending", "in_progress", "completed"})
#: Bounds of reading the stored list (a plan reports 100 items at most).
MAX_TASK_FILES = 1000
TASK_FILE_MAX_BYTES = 64 * 1024
MAX_ITEMS, TEXT_MAX = 100, 1000
#: A list id Claude Code names a directory with (anything else is not looked up).
_LIST_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")

Task = dict[str, Any]
#: A tool call with its result: (``tool_use_id``, tool name, input, response).
Call = tuple[str, str, object, object]


def task_list_dir(session_id: str, environ: dict[str, str] | None = None) -> Path | None:
    """Where Claude Code keeps the session's task list, or None for a list id that is not a
    plain file name."""
    env = os.environ if environ is None else environ
    list_id = env.get("CLAUDE_CODE_TASK_LIST_ID") or session_id
    if not _LIST_ID.fullmatch(list_id):
        return None
    config = env.get("CLAUDE_CONFIG_DIR") or str(Path(env.get("HOME") or Path.home()) / ".claude")
    return Path(config) / "tasks" / list_id


def stored_tasks(directory: Path) -> list[Task] | None:
    """The tasks of a stored list, ordered by id; None when the directory does not exist."""
    try:
        entries = os.scandir(directory)
    except OSError:
        return None
    tasks: list[Task] = []
    with entries:
        seen = 0
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            seen += 1
            if seen > MAX_TASK_FILES:
                break
            task = _read_task(entry)
            if task is not None:
                tasks.append(task)
    return sorted(tasks, key=lambda t: _order(t["id"]))


def _read_task(entry: os.DirEntry[str]) -> Task | None:
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        with open(entry.path, "rb") as f:
            data = f.read(TASK_FILE_MAX_BYTES + 1)
        if len(data) > TASK_FILE_MAX_BYTES:
            return None
        task = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(task, dict) or not isinstance(task.get("id"), str):
        return None
    return {k: task[k] for k in ("id", "subject", "activeForm", "status") if k in task}


def _order(task_id: str) -> tuple[int, int, str]:
    return (0, int(task_id), "") if task_id.isdigit() and len(task_id) < 19 else (1, 0, task_id)


def apply_call(tasks: list[Task], name: str, tool_input: object, response: object) -> bool:
    """One task tool call and its result applied to ``tasks`` (in place); whether it was a
    successful call of the list (one without a successful result changes nothing)."""
    apply = _APPLY.get(name)
    args = tool_input if isinstance(tool_input, dict) else {}
    result = response if isinstance(response, dict) else {}
    return apply(tasks, args, result) if apply else False


def _create(tasks: list[Task], args: dict[str, Any], result: dict[str, Any]) -> bool:
    created = result.get("task")
    if not isinstance(created, dict) or not isinstance(created.get("id"), str):
        return False
    task: Task = {"id": created["id"], "status": "pending"}
    subject = created.get("subject", args.get("subject"))
    if isinstance(subject, str):
        task["subject"] = subject
    if isinstance(args.get("activeForm"), str):
        task["activeForm"] = args["activeForm"]
    tasks[:] = [t for t in tasks if t["id"] != task["id"]] + [task]
    return True


def _update(tasks: list[Task], args: dict[str, Any], result: dict[str, Any]) -> bool:
    task_id = args.get("taskId")
    if result.get("success") is not True or not isinstance(task_id, str):
        return False
    if args.get("status") == "deleted":
        tasks[:] = [t for t in tasks if t["id"] != task_id]
        return True
    changes = {k: args[k] for k in ("subject", "activeForm", "status") if isinstance(args.get(k), str)}
    for t in tasks:
        if t["id"] == task_id:
            t.update(changes)
    return True


def _list(tasks: list[Task], args: dict[str, Any], result: dict[str, Any]) -> bool:
    """``TaskList``'s result: its statuses and subjects, without the tasks it does not list."""
    listed = result.get("tasks")
    if not isinstance(listed, list):
        return False
    known = {t["id"]: t for t in tasks}
    fresh = []
    for item in listed:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            t = dict(known.get(item["id"], {"id": item["id"]}))
            t.update({k: item[k] for k in ("subject", "status") if isinstance(item.get(k), str)})
            fresh.append(t)
    tasks[:] = fresh
    return True


_APPLY = {"TaskCreate": _create, "TaskUpdate": _update, "TaskList": _list}


def replay(transcript: bytes, pending: Call | None = None) -> list[dict[str, Any]] | None:
    """The plan a transcript (JSONL) shows, its tool calls replayed in order: the task list
    as plan items when the last plan change was a task tool call that succeeded, the last
    ``TodoWrite``'s todos when that came last, None when there is neither. ``pending`` is the
    call a PostToolUse hook reports (``tool_use_id``, name, input, response), applied last
    unless the transcript has its result already. Only ``assistant`` and ``user`` entries count
    (2.1.332 also writes ``api-request-blob`` entries, copies of the messages each request sent);
    lines that are not JSON are skipped."""
    calls: dict[str, tuple[str, object]] = {}
    answered: set[str] = set()
    tasks: list[Task] = []
    plan: list[dict[str, Any]] | None = None
    for line in transcript.splitlines():
        if b'"tool_use' not in line:  # neither a tool call nor a result
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("type", "assistant") not in ("assistant", "user"):
            continue  # e.g. "api-request-blob": a copy of a request's messages, not a new call
        message = entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                name, args = block.get("name"), block.get("input")
                listed = args.get("todos") if isinstance(args, dict) else None
                if name == "TodoWrite" and isinstance(listed, list):
                    plan = [t for t in listed if isinstance(t, dict)]
                elif name in _APPLY and isinstance(block.get("id"), str):
                    calls[block["id"]] = (str(name), args)
            elif block.get("type") == "tool_result" and block.get("tool_use_id") in calls:
                answered.add(block["tool_use_id"])
                name, args = calls.pop(block["tool_use_id"])
                if apply_call(tasks, name, args, entry.get("toolUseResult")):
                    plan = plan_items(tasks)
    if pending and pending[0] not in answered and apply_call(tasks, pending[1], pending[2], pending[3]):
        plan = plan_items(tasks)
    return plan


def plan_items(tasks: list[Task]) -> list[dict[str, Any]]:
    """Tasks as plan items (``content``, ``activeForm``, ``status``): tasks without a subject
    or of another status than the plan's three are left out, texts cut to :data:`TEXT_MAX`."""
    items = []
    for t in tasks:
        subject, status = t.get("subject"), t.get("status")
        if not isinstance(subject, str) or not subject or status not in STATUSES:
            continue
        item: dict[str, Any] = {"content": subject[:TEXT_MAX], "status": status}
        if isinstance(t.get("activeForm"), str) and t["activeForm"]:
            item["activeForm"] = t["activeForm"][:TEXT_MAX]
        items.append(item)
    return items[:MAX_ITEMS]
