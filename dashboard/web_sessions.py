"""The web UI's sign-in: server-side sessions behind an HttpOnly cookie (migration 0012).

``POST /api/v1/login`` takes a tenant's ``read`` key (never the admin token, never an ingest
key) and answers with a cookie holding a fresh random session id; the database keeps only its
SHA-256, with the key it was made from. A session is valid while

- it was not revoked (``POST /api/v1/logout`` revokes it at once, on every replica);
- it was used within ``idle_s`` (each request moves ``last_seen_at``, at most once per
  :data:`TOUCH_S`-ish interval, so a busy browser does not write on every request);
- it is younger than ``max_s`` (``expires_at``, fixed at sign-in);
- its read key is not revoked and its tenant not disabled (checked on every request: there is
  no cache, so revoking the key ends its sessions at once).

The cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
sends it), ``Path=/``, ``Max-Age`` the absolute lifetime, and ``Secure`` when the browser
talks HTTPS (:func:`cookie_secure`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]

COOKIE = "tt_session"
#: Session ids: a prefix (recognisable in a leak report) and 256 random bits.
PREFIX = "tts_"
#: ``last_seen_at`` is moved when it is older than this (or a quarter of the idle limit).
TOUCH_S = 60.0

_CREATE: LiteralString = """
    INSERT INTO web_sessions (session_sha256, tenant_id, key_id, expires_at)
    VALUES (%(sha)s, %(tenant)s, %(key_id)s, now() + make_interval(secs => %(max_s)s))
    RETURNING expires_at
"""
_VALID: LiteralString = """
    SELECT w.tenant_id, w.key_id, w.expires_at,
           w.last_seen_at < now() - make_interval(secs => %(touch_s)s) AS stale
      FROM web_sessions w
      JOIN api_keys k ON k.key_id = w.key_id
      JOIN tenants t ON t.tenant_id = w.tenant_id
     WHERE w.session_sha256 = %(sha)s
       AND w.revoked_at IS NULL
       AND w.expires_at > now()
       AND w.last_seen_at > now() - make_interval(secs => %(idle_s)s)
       AND k.revoked_at IS NULL AND k.scope = 'read'
       AND t.disabled_at IS NULL
"""
_TOUCH: LiteralString = "UPDATE web_sessions SET last_seen_at = now() WHERE session_sha256 = %(sha)s"
_REVOKE: LiteralString = """
    UPDATE web_sessions SET revoked_at = coalesce(revoked_at, now()) WHERE session_sha256 = %(sha)s
"""
#: Sessions that can never be valid again, dropped at each sign-in (sign-ins are rare; the
#: table holds at most a week of them).
_PRUNE: LiteralString = """
    DELETE FROM web_sessions
     WHERE expires_at < now() OR revoked_at IS NOT NULL
        OR last_seen_at < now() - make_interval(secs => %(idle_s)s)
"""


@dataclass(frozen=True, slots=True)
class WebSession:
    tenant: str
    key_id: str
    expires_at: datetime
    #: SHA-256 of the cookie's session id (what the database knows it by).
    digest: bytes


def new_session_id() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def cookie_secure(scheme: str, forwarded_proto: str | None, *, trust_forwarded_proto: bool) -> bool:
    """Whether the session cookie gets ``Secure``: the request came over HTTPS, or (only when
    the operator said a proxy in front sets it) that proxy's ``X-Forwarded-Proto`` says the
    browser used HTTPS. A proxy's header may list several hops: the first is the browser's."""
    if scheme == "https":
        return True
    if trust_forwarded_proto and forwarded_proto:
        return forwarded_proto.split(",")[0].strip().lower() == "https"
    return False


class WebSessions:
    """The ``web_sessions`` table: create, check, revoke."""

    def __init__(self, pool: Pool, *, idle_s: float, max_s: float) -> None:
        self._pool = pool
        self.idle_s = idle_s
        self.max_s = max_s
        self._touch_s = min(TOUCH_S, idle_s / 4)

    async def create(self, tenant: str, key_id: str) -> tuple[str, datetime]:
        """A new session for ``key_id`` (a read key of ``tenant``): (session id, expiry)."""
        session_id = new_session_id()
        params = {"sha": session_digest(session_id), "tenant": tenant, "key_id": key_id, "max_s": self.max_s}
        async with self._pool.connection() as conn:
            await conn.execute(_PRUNE, {"idle_s": self.idle_s})
            row = await (await conn.execute(_CREATE, params)).fetchone()
        if row is None:  # INSERT ... RETURNING always returns its row
            raise RuntimeError("web session not created")
        return session_id, row["expires_at"]

    async def valid(self, session_id: str) -> WebSession | None:
        """The session if it is valid now (and its idle clock moved), else None."""
        if not session_id.startswith(PREFIX) or len(session_id) > 100:
            return None
        digest = session_digest(session_id)
        params = {"sha": digest, "idle_s": self.idle_s, "touch_s": self._touch_s}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_VALID, params)).fetchone()
            if row is None:
                return None
            if row["stale"]:
                await conn.execute(_TOUCH, params)
        return WebSession(str(row["tenant_id"]), str(row["key_id"]), row["expires_at"], digest)

    async def revoke(self, session_id: str) -> None:
        """End the session (idempotent; an unknown id is nothing to do)."""
        async with self._pool.connection() as conn:
            await conn.execute(_REVOKE, {"sha": session_digest(session_id)})
