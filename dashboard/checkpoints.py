"""Checkpoints (issue 8): a session's summary, and optionally its transcript, saved before its
context window is compacted, and what ``tokentide hook`` asks before each prompt.

Routes, tenant-scoped like the rest of the API:

- ``GET /api/v1/sessions/{id}/checkpoints`` and ``GET .../checkpoints/latest``: read access
  (a read key, a web session, the admin token). People and tools read checkpoints; they do not
  write them.
- ``GET /api/v1/hook/sessions/{id}`` (the context position and the open signal, for the
  ``UserPromptSubmit`` hook), ``POST /api/v1/hook/sessions/{id}/checkpoints`` (``PreCompact``)
  and ``GET /api/v1/hook/sessions/{id}/checkpoints/latest`` (``SessionStart``): the agent's own
  ``ingest`` key, and outside open mode the session's proof, ``X-Tokentide-Session-Proof``:
  HMAC-SHA256 under a secret of the developer's machine of the session id
  (``tokentide.hook.session_proof``). The first hook call of a session binds it to that proof
  (``agent_session_bindings``, migration 0012); any other proof is 403 from then on, so the
  tenant's fleet-wide ingest key alone can neither write into nor read from a session that
  another developer's agent is running.

What is written is bound to what the caller can prove: a checkpoint is taken only for a session
its tenant has sent telemetry for (a row in ``sessions``; 404 otherwise), and every field is
capped (422 naming the field; a body over ``TOKENTIDE_CHECKPOINT_MAX_BODY_BYTES`` is 413 before
it is read, ``dashboard.limits``; a transcript over :data:`TRANSCRIPT_MAX_RAW_BYTES`
uncompressed is 413).

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
import hashlib
import hmac
import json
import re
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, LiteralString

import psycopg
from fastapi import FastAPI, Header, HTTPException, Path, Query
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field

from dashboard.budget_routes import BudgetSignalOut, open_budget_signals
from dashboard.queries import GET_SESSION, session_out
from dashboard.timestamps import Timestamp

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]

#: Signals that stand until the session compacts (the hook tells the developer about them).
LEVEL_KINDS = ("context_warning", "checkpoint_requested", "context_critical")
#: The header carrying the session's proof on the hook routes.
PROOF_HEADER = "X-Tokentide-Session-Proof"
_PROOF = re.compile(r"[0-9a-f]{64}")
#: Caps of what an agent may store (``tokentide.hook`` cuts what it sends to the same sizes).
MAX_TODOS = 100
TODO_TEXT_MAX = 1000
NOTE_MAX = 2000
SESSION_ID_MAX = 256
#: Largest transcript snapshot accepted, uncompressed (the hook sends at most a 4 MiB tail).
TRANSCRIPT_MAX_RAW_BYTES = 16 * 1024 * 1024

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
_BOUND: LiteralString = """
    SELECT proof_sha256 FROM agent_session_bindings WHERE tenant_id = %s AND session_id = %s
"""
_BIND: LiteralString = """
    INSERT INTO agent_session_bindings (tenant_id, session_id, proof_sha256) VALUES (%s, %s, %s)
    ON CONFLICT (tenant_id, session_id) DO NOTHING RETURNING proof_sha256
"""


class Todo(BaseModel):
    """One item of the agent's todo list (Claude Code's TodoWrite input; other keys dropped)."""

    model_config = ConfigDict(populate_by_name=True)

    content: str = Field(default="", max_length=TODO_TEXT_MAX)
    status: str = Field(default="pending", pattern=r"^[a-z_]{1,20}$")
    active_form: str | None = Field(default=None, alias="activeForm", max_length=TODO_TEXT_MAX)


class CheckpointIn(BaseModel):
    trigger: str = Field(default="api", pattern=r"^[a-z_]{1,40}$")
    #: The agent's todo list when the hook knows it.
    todos: list[Todo] | None = Field(default=None, max_length=MAX_TODOS)
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    #: The transcript's tail, gzip-compressed then base64-encoded (the body's own cap,
    #: ``TOKENTIDE_CHECKPOINT_MAX_BODY_BYTES``, bounds it first).
    transcript_gzip_b64: str | None = Field(default=None, max_length=64 * 1024 * 1024)
    #: The hook cut the transcript to its tail.
    transcript_truncated: bool = False


class CheckpointOut(BaseModel):
    checkpoint_id: str
    session_id: str
    created_at: Timestamp
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
    latest_checkpoint_at: Timestamp | None = None
    #: Open budget signals of the session's tenant, team, user or project (issue 17).
    budget_signals: list[BudgetSignalOut] = []


def summary_of(session: dict[str, Any] | None, last_prompts: list[str], body: CheckpointIn) -> dict[str, Any]:
    """The checkpoint's summary: the session as the API shows it, the last prompts' event ids,
    and what the hook sent."""
    summary: dict[str, Any] = {"last_prompt_event_ids": last_prompts}
    if session is not None:
        summary["session"] = session
    if body.todos is not None:
        summary["todos"] = [t.model_dump(by_alias=True, exclude_none=True) for t in body.todos]
    if body.note:
        summary["note"] = body.note
    return summary


def gunzip(compressed: bytes, limit: int) -> bytes:
    """One gzip member, at most ``limit`` bytes once decompressed (413 beyond: a gzip bomb is
    stopped after ``limit`` bytes of work); 422 when it is not one whole gzip member."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        raw = inflater.decompress(compressed, limit + 1)
    except zlib.error as exc:
        raise HTTPException(status_code=422, detail=f"transcript_gzip_b64 is not gzip: {exc}") from exc
    if len(raw) > limit:
        raise HTTPException(
            status_code=413, detail=f"the transcript is over {limit} bytes uncompressed: send its tail"
        )
    if not inflater.eof or inflater.unused_data:
        raise HTTPException(status_code=422, detail="transcript_gzip_b64 is not one complete gzip stream")
    return raw


def transcript(
    body: CheckpointIn, privacy: str | None, max_bytes: int, raw_limit: int = TRANSCRIPT_MAX_RAW_BYTES
) -> tuple[bytes | None, int | None, bool]:
    """(gzip bytes to store, uncompressed size, truncated) of the snapshot, or Nones when the
    tenant's privacy mode keeps it out; 422 when it is not gzip+base64, 413 when it is over
    ``raw_limit`` bytes uncompressed."""
    if body.transcript_gzip_b64 is None or (privacy or "hash") != "off":
        return None, None, False
    try:
        compressed = base64.b64decode(body.transcript_gzip_b64, validate=True)
    except binascii.Error as exc:
        raise HTTPException(status_code=422, detail=f"transcript_gzip_b64 is not base64: {exc}") from exc
    raw = gunzip(compressed, raw_limit)
    truncated = body.transcript_truncated
    if len(compressed) > max_bytes:  # keep the tail: the latest turns matter most
        raw = raw[-max_bytes * 4 :]
        compressed = gzip.compress(raw)
        truncated = True
    return compressed, len(raw), truncated


def checkpoint_out(session_id: str, row: dict[str, Any]) -> CheckpointOut:
    return CheckpointOut(session_id=session_id, **row)


def proof_digest(proof: str | None) -> bytes:
    """What is stored of a session proof (its SHA-256); 401 when it is missing or malformed."""
    if proof is None:
        raise HTTPException(
            status_code=401,
            detail=f"missing {PROOF_HEADER}: the hook routes need the session's proof "
            "(tokentide hook sends it)",
        )
    if _PROOF.fullmatch(proof) is None:
        raise HTTPException(status_code=401, detail=f"malformed {PROOF_HEADER}: expected 64 hex digits")
    return hashlib.sha256(bytes.fromhex(proof)).digest()


async def prove(
    conn: psycopg.AsyncConnection[dict[str, Any]], tenant: str, session_id: str, proof: str | None
) -> None:
    """Bind ``session_id`` to ``proof`` on its first hook call; later calls must bring the same
    proof (403 otherwise: another agent's session)."""
    digest = proof_digest(proof)
    row = await (await conn.execute(_BOUND, (tenant, session_id))).fetchone()
    if row is None:
        row = await (await conn.execute(_BIND, (tenant, session_id, digest))).fetchone()
    if row is None:  # bound by a concurrent first call meanwhile
        row = await (await conn.execute(_BOUND, (tenant, session_id))).fetchone()
    if row is None or not hmac.compare_digest(bytes(row["proof_sha256"]), digest):
        raise HTTPException(
            status_code=403,
            detail=f"session {session_id!r} belongs to another agent (its hook proves another secret)",
        )


SessionId = Annotated[str, Path(min_length=1, max_length=SESSION_ID_MAX)]
Proof = Annotated[str | None, Header(alias=PROOF_HEADER, description="HMAC-SHA256(secret, session id), hex")]


def add_checkpoint_routes(
    app: FastAPI,
    pool: Pool,
    tenant: Callable[[], str],
    transcript_max_bytes: int,
    *,
    open_mode: bool = False,
    team_key: str = "team",
) -> None:
    """The read routes and the hook routes above; ``open_mode`` checks no session proof (open
    mode authenticates nobody)."""

    async def check(
        conn: psycopg.AsyncConnection[dict[str, Any]], session_id: str, proof: str | None
    ) -> None:
        if not open_mode:
            await prove(conn, tenant(), session_id, proof)

    async def listing(session_id: str, limit: int) -> list[CheckpointOut]:
        async with pool.connection() as conn:
            rows = await (await conn.execute(_SELECT, (tenant(), session_id, limit))).fetchall()
        return [checkpoint_out(session_id, r) for r in rows]

    def newest(session_id: str, found: list[CheckpointOut]) -> CheckpointOut:
        if not found:
            raise HTTPException(status_code=404, detail=f"no checkpoint of session {session_id!r}")
        return found[0]

    @app.get("/api/v1/sessions/{session_id}/checkpoints", summary="A session's checkpoints, newest first")
    async def list_checkpoints(
        session_id: str, limit: int = Query(default=20, ge=1, le=200)
    ) -> list[CheckpointOut]:
        return await listing(session_id, limit)

    @app.get("/api/v1/sessions/{session_id}/checkpoints/latest", summary="The latest checkpoint")
    async def latest(session_id: str) -> CheckpointOut:
        return newest(session_id, await listing(session_id, 1))

    @app.post(
        "/api/v1/hook/sessions/{session_id}/checkpoints",
        status_code=201,
        summary="Save a checkpoint (the agent's PreCompact hook)",
        responses={
            401: {"description": "no ingest key, or no session proof"},
            403: {"description": "the session is bound to another agent's proof"},
            404: {"description": "the tenant has no telemetry of this session"},
            413: {"description": "the body or the transcript is too large"},
            422: {"description": "a field is over its cap or malformed"},
        },
    )
    async def create(session_id: SessionId, body: CheckpointIn, proof: Proof = None) -> CheckpointOut:
        async with pool.connection() as conn:
            await check(conn, session_id, proof)
            row = await (await conn.execute(GET_SESSION, (tenant(), session_id))).fetchone()
            if row is None:
                raise HTTPException(
                    status_code=404,
                    detail=f"no telemetry of session {session_id!r} yet: a checkpoint is taken only "
                    "for a session its tenant has sent telemetry for",
                )
            session = session_out(row, datetime.now().astimezone()).model_dump(mode="json")
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

    @app.get(
        "/api/v1/hook/sessions/{session_id}/checkpoints/latest",
        summary="The latest checkpoint (SessionStart)",
    )
    async def hook_latest(session_id: SessionId, proof: Proof = None) -> CheckpointOut:
        async with pool.connection() as conn:
            await check(conn, session_id, proof)
        return newest(session_id, await listing(session_id, 1))

    @app.get("/api/v1/hook/sessions/{session_id}")
    async def hook_state(session_id: SessionId, proof: Proof = None) -> HookState:
        """Where the session's context stands, for ``tokentide hook`` (UserPromptSubmit). The
        first hook call of a session: binds it to the caller's proof."""
        async with pool.connection() as conn:
            await check(conn, session_id, proof)
            row = await (await conn.execute(GET_SESSION, (tenant(), session_id))).fetchone()
            if row is None:
                return HookState(session_id=session_id, known=False)
            params = {"tenant": tenant(), "session": session_id, "kinds": list(LEVEL_KINDS)}
            signal = await (await conn.execute(_OPEN_SIGNAL, params)).fetchone()
            newest_row = await (await conn.execute(_SELECT, (tenant(), session_id, 1))).fetchone()
            budget_signals = await open_budget_signals(conn, tenant(), session_id, team_key)
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
            latest_checkpoint_at=newest_row["created_at"] if newest_row else None,
            budget_signals=budget_signals,
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
