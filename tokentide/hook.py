"""``tokentide hook``: the Claude Code side of checkpoints (issue 8).

Claude Code runs ``tokentide hook`` for three hook events, with the event as JSON on stdin
(``session_id``, ``transcript_path``, ``cwd``, ``hook_event_name``, and ``trigger`` for
PreCompact, ``source`` for SessionStart):

- ``PreCompact``: save a checkpoint (the pipeline's summary of the session, the todo list when
  the transcript shows one, and the transcript's tail, gzip-compressed) before compaction.
- ``UserPromptSubmit``: when a context signal is open (warning, checkpoint requested, critical),
  print a one-line notice; Claude Code adds what a UserPromptSubmit hook prints to the context.
- ``SessionStart`` with source ``compact`` or ``resume``: print the latest checkpoint's summary,
  so that the work goes on where it stopped.

It never gets in the agent's way: stdlib only (it starts in a few tens of milliseconds), one
HTTP request with a short timeout (``TOKENTIDE_HOOK_TIMEOUT_S``, 2 s), and on any failure it
logs to ``~/.local/state/tokentide/hook.log`` and exits 0 printing nothing.

Configuration, from the environment or ``~/.config/tokentide/hook.json`` (``url``, ``key``):
``TOKENTIDE_URL`` (the dashboard service, default ``http://127.0.0.1:8000``) and
``TOKENTIDE_KEY`` (the tenant's ``ingest`` key the agent already exports with; unset in open
mode). ``tokentide hook install`` writes the hook entries into a project's
``.claude/settings.json`` (or the user's ``~/.claude/settings.json`` with ``--user``);
``tokentide hook uninstall`` removes exactly those entries.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

#: The hook events installed, and for each the matcher Claude Code filters on.
EVENTS = {"PreCompact": "", "UserPromptSubmit": "", "SessionStart": "compact|resume"}
#: What marks an installed entry as ours (``uninstall`` removes those and nothing else).
COMMAND = "tokentide hook"
#: Largest transcript tail sent with a checkpoint, before compression.
TRANSCRIPT_TAIL_BYTES = 4 * 1024 * 1024
NOTICE_LEVELS = {
    "context_warning": "warning",
    "checkpoint_requested": "checkpoint requested",
    "context_critical": "critical",
}


def config() -> dict[str, str]:
    path = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "tokentide" / "hook.json"
    stored: dict[str, str] = {}
    if path.is_file():
        stored = {k: str(v) for k, v in json.loads(path.read_text()).items()}
    return {
        "url": os.environ.get("TOKENTIDE_URL") or stored.get("url") or "http://127.0.0.1:8000",
        "key": os.environ.get("TOKENTIDE_KEY") or stored.get("key") or "",
        "timeout": os.environ.get("TOKENTIDE_HOOK_TIMEOUT_S") or stored.get("timeout") or "2",
    }


def request(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call to the dashboard's hook API; None on 404."""
    conf = config()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(conf["url"].rstrip("/") + path, data=data, method=method)  # noqa: S310 (an http(s) URL the user configured)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if conf["key"]:
        req.add_header("Authorization", f"Bearer {conf['key']}")
    try:
        with urllib.request.urlopen(req, timeout=float(conf["timeout"])) as response:  # noqa: S310
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def session_path(session_id: str, suffix: str = "") -> str:
    return f"/api/v1/hook/sessions/{urllib.parse.quote(session_id, safe='')}{suffix}"


# --- the three events ---------------------------------------------------------------------


def pre_compact(event: dict[str, Any]) -> str:
    tail, truncated = transcript_tail(event.get("transcript_path"))
    body: dict[str, Any] = {"trigger": f"pre_compact_{event.get('trigger') or 'auto'}"}
    if tail:
        body["transcript_gzip_b64"] = base64.b64encode(gzip.compress(tail)).decode()
        body["transcript_truncated"] = truncated
        todos = latest_todos(tail)
        if todos is not None:
            body["todos"] = todos
    request("POST", session_path(event["session_id"], "/checkpoints"), body)
    return ""  # PreCompact output is not shown to the model


def user_prompt_submit(event: dict[str, Any]) -> str:
    state = request("GET", session_path(event["session_id"]))
    return notice(state) if state else ""


def session_start(event: dict[str, Any]) -> str:
    if event.get("source") not in ("compact", "resume"):
        return ""
    checkpoint = request("GET", session_path(event["session_id"], "/checkpoints/latest"))
    return resume_text(checkpoint) if checkpoint else ""


HANDLERS = {"PreCompact": pre_compact, "UserPromptSubmit": user_prompt_submit, "SessionStart": session_start}


# --- pure helpers ---------------------------------------------------------------------------


def notice(state: dict[str, Any]) -> str:
    """The line for the model and the developer when a context signal is open, else ''."""
    level = NOTICE_LEVELS.get(state.get("open_signal") or "")
    if not level or state.get("ratio") is None:
        return ""
    parts = [
        f"tokentide: context {round(100 * state['ratio'])}% full "
        f"({state['tokens']:,} of {state['limit']:,} tokens, {level})"
    ]
    if state.get("predicted_requests_left") is not None:
        parts.append(f"about {max(0, round(state['predicted_requests_left']))} requests left")
    if state.get("latest_checkpoint_at"):
        parts.append(f"a checkpoint was saved at {state['latest_checkpoint_at']}")
    else:
        parts.append("no checkpoint saved yet")
    return "; ".join(parts) + ". Consider wrapping up the current step or compacting."


def resume_text(checkpoint: dict[str, Any]) -> str:
    """The latest checkpoint as context for the resumed conversation."""
    summary = checkpoint.get("summary") or {}
    session = summary.get("session") or {}
    lines = [
        f"tokentide checkpoint {checkpoint['checkpoint_id']} saved {checkpoint['created_at']} "
        f"({checkpoint['trigger']}) before this conversation was {('compacted')}:"
    ]
    if session:
        context = session.get("context") or {}
        cost = session.get("cost_usd", 0)
        lines.append(
            f"- so far: {session.get('api_requests', 0)} model requests, "
            f"{'cost unknown' if cost is None else f'${cost:.4f}'}, "
            f"models {', '.join(session.get('models') or []) or '-'}; "
            f"context was {round(100 * (context.get('ratio') or 0))}% of {context.get('limit', 0):,} tokens"
        )
    lines.extend(
        f"- todo [{todo.get('status', '?')}]: {todo.get('content') or todo.get('activeForm') or todo}"
        for todo in summary.get("todos") or []
    )
    if summary.get("note"):
        lines.append(f"- note: {summary['note']}")
    return "\n".join(lines)


def transcript_tail(path: str | None) -> tuple[bytes, bool]:
    """The transcript's last ``TRANSCRIPT_TAIL_BYTES`` (from a line start), and whether cut."""
    if not path:
        return b"", False
    file = Path(path)
    if not file.is_file():
        return b"", False
    size = file.stat().st_size
    with file.open("rb") as f:
        if size <= TRANSCRIPT_TAIL_BYTES:
            return f.read(), False
        f.seek(size - TRANSCRIPT_TAIL_BYTES)
        data = f.read()
    return data[data.find(b"\n") + 1 :], True


def latest_todos(transcript: bytes) -> list[dict[str, Any]] | None:
    """The last TodoWrite tool input in a Claude Code transcript (JSONL), if any."""
    for line in reversed(transcript.splitlines()):
        if b"TodoWrite" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        content = ((entry.get("message") or {}).get("content")) or []
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("name") == "TodoWrite":
                todos = (block.get("input") or {}).get("todos")
                if isinstance(todos, list):
                    return [t for t in todos if isinstance(t, dict)]
    return None


# --- install / uninstall --------------------------------------------------------------------


def settings_path(args: argparse.Namespace) -> Path:
    if args.user:
        return Path.home() / ".claude" / "settings.json"
    return Path(args.project).resolve() / ".claude" / "settings.json"


def install(settings: dict[str, Any], command: str = COMMAND) -> dict[str, Any]:
    """``settings`` with our hook entries added once (an existing one is left as it is)."""
    hooks = settings.setdefault("hooks", {})
    for event, matcher in EVENTS.items():
        entries = hooks.setdefault(event, [])
        if not any(_ours(h) for entry in entries for h in entry.get("hooks", [])):
            entries.append(
                {"matcher": matcher, "hooks": [{"type": "command", "command": command, "timeout": 10}]}
            )
    return settings


def uninstall(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without our hook entries (everything else as it was)."""
    hooks = settings.get("hooks") or {}
    for event in list(hooks):
        kept = []
        for entry in hooks[event]:
            others = [h for h in entry.get("hooks", []) if not _ours(h)]
            if others:
                kept.append({**entry, "hooks": others})
            elif not entry.get("hooks"):
                kept.append(entry)
        if kept:
            hooks[event] = kept
        else:
            del hooks[event]
    if "hooks" in settings and not settings["hooks"]:
        del settings["hooks"]
    return settings


def _ours(hook: dict[str, Any]) -> bool:
    return isinstance(hook.get("command"), str) and hook["command"].split(" #")[0].endswith(COMMAND)


def _edit(args: argparse.Namespace, change: Any) -> int:
    path = settings_path(args)
    settings = json.loads(path.read_text()) if path.is_file() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(change(settings), indent=2) + "\n")
    sys.stdout.write(f"{'installed in' if change is not uninstall else 'removed from'} {path}\n")
    return 0


# --- entry point ----------------------------------------------------------------------------


def log(message: str) -> None:
    state = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "tokentide"
    try:
        state.mkdir(parents=True, exist_ok=True)
        with (state / "hook.log").open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
    except OSError:
        pass


def handle(stdin: str) -> str:
    event = json.loads(stdin)
    handler = HANDLERS.get(event.get("hook_event_name", ""))
    return handler(event) if handler and event.get("session_id") else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tokentide hook", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action")
    for name, text in (("install", "add the hook entries"), ("uninstall", "remove exactly the hook entries")):
        action = sub.add_parser(name, help=f"{text} in Claude Code's settings")
        where = action.add_mutually_exclusive_group()
        where.add_argument(
            "--project", default=".", help="the project whose .claude/settings.json (default: .)"
        )
        where.add_argument("--user", action="store_true", help="~/.claude/settings.json instead")
    args = parser.parse_args(argv)
    if args.action == "install":
        return _edit(args, install)
    if args.action == "uninstall":
        return _edit(args, uninstall)
    try:
        output = handle(sys.stdin.read())
    except Exception as exc:  # noqa: BLE001 (never in the agent's way: log, print nothing, exit 0)
        log(f"{type(exc).__name__}: {exc}")
        return 0
    if output:
        sys.stdout.write(output + "\n")
    return 0
