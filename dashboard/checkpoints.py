"""Checkpoints (issue 8): a session's summary, and optionally its transcript, saved before its
context window is compacted, and what ``tokentide hook`` asks before each prompt.

Routes, tenant-scoped like the rest of the API:

- ``POST /api/v1/sessions/{id}/checkpoints``, ``GET .../checkpoints``, ``GET .../checkpoints/latest``
  (read keys);
- ``GET /api/v1/hook/sessions/{id}`` (the context position and the open signal, for the
  ``UserPromptSubmit`` hook) and ``POST``/``GET`` under ``/api/v1/hook/sessions/{id}/checkpoints``:
  the same, for the agent's own ``ingest`` key (``dashboard.auth`` lets it in there only).

The summary is built here from what the pipeline knows (totals, context, models, the last
prompts' event ids) plus what the hook sends (the todo list when known). A transcript snapshot
arrives gzip-compressed and base64-encoded; it is kept only when the tenant's privacy mode is
``off`` (prompts and responses are what ``hash``/``drop`` keep out of the database) and at most
``TOKENTIDE_CHECKPOINT_TRANSCRIPT_MAX_BYTES`` compressed.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from fastapi import FastAPI, HTTPException, Query
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from dashboard.queries import GET_SESSION, session_out

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]

#: Signals that stand until the session compacts (the hook tells the developer about them).
LEVEL_KINDS = ("context_warning", "checkpoint_requested", "context_critical")

_LAST_PROMPTS: LiteralString = """
    SELECT event_id FROM events
     WHERE tenant_id = %s AND session_id = %s AND kind = 'prompt'
     ORDER BY ts DESC LIMIT 5
"""
_TENANT_PRIVACY: LiteralString = "SELECT redaction FROM tenants WHERE tenant_id = %s"
_INSERT: LiteralString = """
    INSERT INTO checkpoints (tenant_id, session_id, checkpoint_id, trigger, summary,
                             transcript_gzip, transcript_bytes, transcript_truncated)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    RETURNING checkpoint_id, created_at, trigger, summary, transcript_bytes, transcript_truncated,
              transcript_gzip IS NOT NULL AS has_transcript
"""
_SELECT: LiteralString = """
    SELECT checkpoint_id, created_at, trigger, summary, transcript_bytes, transcript_truncated,
           transcript_gzip IS NOT NULL AS has_transcript
      FROM checkpoints WHERE tenant_id = %s AND session_id = %s
     ORDER BY created_at DESC, checkpoint_id LIMIT %s
"""
_OPEN_SIGNAL: LiteralString = """
    SELECT s.kind, s.ts, s.message FROM signals s
     WHERE s.tenant_id = %(tenant)s AND s.session_id = %(session)s AND s.kind = ANY(%(kinds)s)
       AND NOT EXISTS (
           SELECT 1 FROM signals c
            WHERE c.tenant_id = s.tenant_id AND c.session_id = s.session_id
              AND c.kind = 'compaction_observed' AND c.ts >= s.ts)
     ORDER BY s.ts DESC LIMIT 1
"""


class CheckpointIn(BaseModel):
    trigger: str = Field(default="api", pattern=r"^[a-z_]{1,40}$")
    #: The agent's todo list when the hook knows it.
    todos: list[dict[str, Any]] | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, max_length=2000)
    #: The transcript's tail, gzip-compressed then base64-encoded.
    transcript_gzip_b64: str | None = Field(default=None, max_length=16 * 1024 * 1024)
    #: The hook cut the transcript to its tail.
    transcript_truncated: bool = False


class CheckpointOut(BaseModel):
    checkpoint_id: str
    session_id: str
    created_at: datetime
    trigger: str
    summary: dict[str, Any]
    #: Uncompressed size of the stored transcript snapshot; null when none was kept.
    transcript_bytes: int | None
    transcript_truncated: bool
    has_transcript: bool


class HookState(BaseModel):
    """What the ``UserPromptSubmit`` hook needs: where the context stands and what signal is open."""

    session_id: str
    known: bool
    ratio: float | None = None
    tokens: int | None = None
    limit: int | None = None
    predicted_requests_left: float | None = None
    predicted_minutes_left: float | None = None
    open_signal: str | None = None
    latest_checkpoint_at: datetime | None = None


def summary_of(session: dict[str, Any] | None, last_prompts: list[str], body: CheckpointIn) -> dict[str, Any]:
    """The checkpoint's summary: the session as the API shows it (if the pipeline knows it
    yet), the last prompts' event ids, and what the hook sent."""
    summary: dict[str, Any] = {"last_prompt_event_ids": last_prompts}
    if session is not None:
        summary["session"] = session
    if body.todos is not None:
        summary["todos"] = body.todos
    if body.note:
        summary["note"] = body.note
    return summary


def transcript(
    body: CheckpointIn, privacy: str | None, max_bytes: int
) -> tuple[bytes | None, int | None, bool]:
    """(gzip bytes to store, uncompressed size, truncated) of the snapshot, or Nones when the
    tenant's privacy mode keeps it out; 422 when it is not gzip+base64."""
    if body.transcript_gzip_b64 is None or (privacy or "hash") != "off":
        return None, None, False
    try:
        compressed = base64.b64decode(body.transcript_gzip_b64, validate=True)
        raw = gzip.decompress(compressed)
    except (binascii.Error, OSError, EOFError) as exc:
        raise HTTPException(status_code=422, detail=f"transcript_gzip_b64 is not gzip+base64: {exc}") from exc
    truncated = body.transcript_truncated
    if len(compressed) > max_bytes:  # keep the tail: the latest turns matter most
        raw = raw[-max_bytes * 4 :]
        compressed = gzip.compress(raw)
        truncated = True
    return compressed, len(raw), truncated


def checkpoint_out(session_id: str, row: dict[str, Any]) -> CheckpointOut:
    return CheckpointOut(session_id=session_id, **row)


def add_checkpoint_routes(
    app: FastAPI, pool: Pool, tenant: Callable[[], str], transcript_max_bytes: int
) -> None:
    async def create(session_id: str, body: CheckpointIn) -> CheckpointOut:
        async with pool.connection() as conn:
            row = await (await conn.execute(GET_SESSION, (tenant(), session_id))).fetchone()
            session = session_out(row, datetime.now().astimezone()).model_dump(mode="json") if row else None
            prompts = [
                r["event_id"]
                for r in await (await conn.execute(_LAST_PROMPTS, (tenant(), session_id))).fetchall()
            ]
            privacy = await (await conn.execute(_TENANT_PRIVACY, (tenant(),))).fetchone()
            stored, size, truncated = transcript(
                body, privacy["redaction"] if privacy else None, transcript_max_bytes
            )
            saved = await (
                await conn.execute(
                    _INSERT,
                    (
                        tenant(),
                        session_id,
                        uuid.uuid4().hex,
                        body.trigger,
                        Jsonb(summary_of(session, prompts, body)),
                        stored,
                        size,
                        truncated,
                    ),
                )
            ).fetchone()
        if saved is None:  # INSERT ... RETURNING always returns its row
            raise RuntimeError("checkpoint not saved")
        return checkpoint_out(session_id, saved)

    async def listing(session_id: str, limit: int) -> list[CheckpointOut]:
        async with pool.connection() as conn:
            rows = await (await conn.execute(_SELECT, (tenant(), session_id, limit))).fetchall()
        return [checkpoint_out(session_id, r) for r in rows]

    async def latest(session_id: str) -> CheckpointOut:
        found = await listing(session_id, 1)
        if not found:
            raise HTTPException(status_code=404, detail=f"no checkpoint of session {session_id!r}")
        return found[0]

    for prefix in ("/api/v1/sessions", "/api/v1/hook/sessions"):
        app.post(f"{prefix}/{{session_id}}/checkpoints", status_code=201, summary="Save a checkpoint")(create)

        @app.get(f"{prefix}/{{session_id}}/checkpoints", summary="A session's checkpoints, newest first")
        async def list_checkpoints(
            session_id: str, limit: int = Query(default=20, ge=1, le=200)
        ) -> list[CheckpointOut]:
            return await listing(session_id, limit)

        app.get(f"{prefix}/{{session_id}}/checkpoints/latest", summary="The latest checkpoint")(latest)

    @app.get("/api/v1/hook/sessions/{session_id}")
    async def hook_state(session_id: str) -> HookState:
        """Where the session's context stands, for ``tokentide hook`` (UserPromptSubmit)."""
        async with pool.connection() as conn:
            row = await (await conn.execute(GET_SESSION, (tenant(), session_id))).fetchone()
            if row is None:
                return HookState(session_id=session_id, known=False)
            params = {"tenant": tenant(), "session": session_id, "kinds": list(LEVEL_KINDS)}
            signal = await (await conn.execute(_OPEN_SIGNAL, params)).fetchone()
            newest = await (await conn.execute(_SELECT, (tenant(), session_id, 1))).fetchone()
        context = session_out(row, datetime.now().astimezone()).context
        return HookState(
            session_id=session_id,
            known=True,
            ratio=context.ratio,
            tokens=context.tokens,
            limit=context.limit,
            predicted_requests_left=context.predicted_requests_left,
            predicted_minutes_left=context.predicted_minutes_left,
            open_signal=signal["kind"] if signal else None,
            latest_checkpoint_at=newest["created_at"] if newest else None,
        )


def render_transcript(stored: bytes) -> list[dict[str, Any]]:
    """The stored snapshot's JSON lines (Claude Code transcripts are JSONL), for tests and tools."""
    lines = gzip.decompress(stored).decode(errors="replace").splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the tail may start mid-line
    return out
