"""Execution plans and working context of sessions (issue 17), pure: what the hook may send,
what is stored of it under the tenant's privacy mode, and the rows -> API shapes.

``tokentide hook`` reports a session's plan (Claude Code's todo list: items, their status,
which one is in progress) with the session's working directory and git repository/branch,
whenever one of them changed (``PUT /api/v1/hook/sessions/{id}/plan``,
``dashboard.context_routes``). The context goes to ``session_context`` (migration 0017), and
the plan to ``session_plans`` (0018) as a new version only when it differs from the latest.

Privacy (decision 38): item texts follow the tenant's privacy mode as prompts do at ingest
(``ingest.redact``): ``off`` keeps them, ``hash`` replaces each by the same keyed hash ingest
uses (``TOKENTIDE_REDACTION_KEY``: equal texts stay equal, the text is gone), ``drop`` stores
none. Statuses and counts are always kept. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, LiteralString

from pydantic import BaseModel, ConfigDict, Field

from dashboard.timestamps import Timestamp

#: Caps of a reported plan (the checkpoints' caps, ``dashboard.checkpoints``; the hook cuts to them).
MAX_ITEMS = 100
ITEM_TEXT_MAX = 1000
CWD_MAX = 4096
GIT_TEXT_MAX = 1000
BRANCH_MAX = 255
PROJECT_MAX = 200
#: Largest body of a plan report: 100 items of two 1000-character texts, JSON-escaped (413 above).
PLAN_MAX_BODY_BYTES = 2 * 1024 * 1024

Status = Literal["pending", "in_progress", "completed"]
TextMode = Literal["kept", "hashed", "dropped"]
#: The tenant's privacy mode (``tenants.redaction``; unset: ``hash``, ingest's default) -> text mode.
TEXT_MODES: dict[str, TextMode] = {"off": "kept", "hash": "hashed", "drop": "dropped"}


class PlanItemIn(BaseModel):
    """One plan item as the hook sends it (a TodoWrite item, or a task: ``tokentide.hook_tasks``);
    other keys are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    content: str = Field(min_length=1, max_length=ITEM_TEXT_MAX)
    status: Status
    active_form: str | None = Field(default=None, alias="activeForm", max_length=ITEM_TEXT_MAX)


class PlanIn(BaseModel):
    """``PUT /api/v1/hook/sessions/{id}/plan``: the session's plan and where it works.

    ``todos`` null: no plan known (only the context is recorded); ``[]``: the plan is empty.
    A context field left out (null) keeps what was recorded before."""

    model_config = ConfigDict(extra="forbid")

    todos: list[PlanItemIn] | None = Field(default=None, max_length=MAX_ITEMS)
    cwd: str | None = Field(default=None, min_length=1, max_length=CWD_MAX)
    #: The origin remote's URL (credentials are removed before storing) or the repository's name.
    git_repository: str | None = Field(default=None, min_length=1, max_length=GIT_TEXT_MAX)
    git_branch: str | None = Field(default=None, min_length=1, max_length=BRANCH_MAX)
    #: The project the hook derived (default: from ``git_repository``, else ``cwd``).
    project: str | None = Field(default=None, min_length=1, max_length=PROJECT_MAX)


class PlanItemOut(BaseModel):
    #: The item's text: as written (privacy ``off``), a keyed hash ``redacted:…`` (``hash``),
    #: or null (``drop``).
    content: str | None
    active_form: str | None
    status: str


class PlanOut(BaseModel):
    """A session's plan (its latest version, or one version of its history)."""

    version: int
    updated_at: Timestamp
    items: list[PlanItemOut]
    total: int
    #: Items completed (``3 of 7 done``).
    done: int
    #: How many items are in progress, and the first of them (null when none is).
    in_progress: int
    current: PlanItemOut | None
    #: What the tenant's privacy mode left of the texts: ``kept``, ``hashed`` or ``dropped``.
    text_mode: str


class WorkspaceOut(BaseModel):
    """Where the session works, as the hook reported it."""

    cwd: str | None
    git_repository: str | None
    git_branch: str | None


class PlanPutOut(BaseModel):
    session_id: str
    #: Whether a new plan version was written (false: no plan sent, or the same as the latest).
    changed: bool
    project: str | None
    plan: PlanOut | None


def stored_items(items: list[PlanItemIn], mode: TextMode, digest: Any) -> list[dict[str, Any]]:
    """The items as stored under ``mode``; ``digest`` is the keyed hash of a text
    (``ingest.redact.Redactor.digest``), used for ``hashed``."""

    def text(value: str | None) -> str | None:
        if value is None or mode == "dropped":
            return None
        return str(digest(value.encode())) if mode == "hashed" else value

    return [
        {"content": text(i.content), "active_form": text(i.active_form), "status": i.status} for i in items
    ]


def plan_digest(items: list[dict[str, Any]]) -> bytes:
    """SHA-256 of the stored items (same items, same order: same digest)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, separators=(",", ":")).encode()).digest()


def counts(items: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(total, done, in progress) of stored items."""
    return (
        len(items),
        sum(1 for i in items if i["status"] == "completed"),
        sum(1 for i in items if i["status"] == "in_progress"),
    )


def plan_out(row: dict[str, Any]) -> PlanOut:
    """A ``session_plans`` row (:data:`PLAN_COLUMNS`) as the API shows it."""
    items = [PlanItemOut(**i) for i in row["items"]]
    return PlanOut(
        version=row["version"],
        updated_at=row["at"],
        items=items,
        total=row["total"],
        done=row["done"],
        in_progress=row["in_progress"],
        current=next((i for i in items if i.status == "in_progress"), None),
        text_mode=row["text_mode"],
    )


def plan_line(plan: PlanOut) -> str:
    """The timeline's line for a plan version: ``plan v2: 3 of 7 done · in progress: …``."""
    line = f"plan v{plan.version}: {plan.done} of {plan.total} done"
    current = plan.current
    if current is not None:
        text = current.active_form or current.content
        line += f" · in progress: {text[:200]}" if text else " · 1 in progress"
    return line


PLAN_COLUMNS: LiteralString = "session_id, version, at, items, total, done, in_progress, text_mode"
#: The latest plan of each of the given sessions.
LATEST_PLANS: LiteralString = (
    "SELECT DISTINCT ON (session_id) "  # noqa: S608 (LiteralString parts; values are parameters)
    + PLAN_COLUMNS
    + """ FROM session_plans
     WHERE tenant_id = %(tenant)s AND session_id = ANY(%(sessions)s)
     ORDER BY session_id, version DESC"""
)
#: A session's plan versions, newest first (the timeline's plan entries).
PLAN_HISTORY: LiteralString = (
    "SELECT "  # noqa: S608
    + PLAN_COLUMNS
    + """ FROM session_plans
     WHERE tenant_id = %(tenant)s AND session_id = %(session)s
     ORDER BY version DESC LIMIT %(limit)s"""
)
LATEST_DIGEST: LiteralString = """
    SELECT version, digest FROM session_plans WHERE tenant_id = %s AND session_id = %s
     ORDER BY version DESC LIMIT 1
"""
INSERT_PLAN: LiteralString = (
    """INSERT INTO session_plans (tenant_id, session_id, version, digest, items, total, done,
                               in_progress, text_mode)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING """  # noqa: S608
    + PLAN_COLUMNS
)
#: Records the context; a field sent as null keeps its value. Locks the session's row, so
#: that concurrent reports of one session write their plan versions one after the other.
UPSERT_CONTEXT: LiteralString = """
    INSERT INTO session_context AS c (tenant_id, session_id, cwd, git_repository, git_branch, project)
    VALUES (%(tenant)s, %(session)s, %(cwd)s, %(git_repository)s, %(git_branch)s, %(project)s)
    ON CONFLICT (tenant_id, session_id) DO UPDATE SET
        cwd = COALESCE(EXCLUDED.cwd, c.cwd),
        git_repository = COALESCE(EXCLUDED.git_repository, c.git_repository),
        git_branch = COALESCE(EXCLUDED.git_branch, c.git_branch),
        project = COALESCE(EXCLUDED.project, c.project),
        updated_at = now()
    RETURNING project
"""
