"""Who is asking: the dashboard API and web UI are scoped to the caller's tenant.

- A tenant's ``read`` API key (``tokentide admin key create --tenant T --scope read``), sent as
  ``Authorization: Bearer <key>`` or, for the web UI (whose ``EventSource`` cannot send headers),
  as the ``tt_key`` cookie that ``POST /api/v1/login`` sets (HttpOnly, SameSite=Strict).
  ``ingest`` keys are refused: the key on a developer's machine cannot read the team's sessions.
- On the agent-side routes (``/api/v1/hook/``: one session's context position, its
  checkpoints), the agent's own ``ingest`` key is accepted too.
- The admin token (``TOKENTIDE_DASHBOARD_ADMIN_TOKEN``) reads any tenant, named with
  ``?tenant=`` (default: the open-mode tenant).
- Open mode (``TOKENTIDE_OPEN_MODE=1``): everyone is tenant ``default``, unauthenticated.

Keys are checked against the ``api_keys`` table (SHA-256 of the secret, as ingest does); a
verdict is remembered for ``cache_s`` seconds, so a revoked key stops working within that time.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool

from tokentide.admin import MalformedKey, parse_key, secret_digest
from tokentide.settings import OPEN_MODE_TENANT

COOKIE = "tt_key"

_tenant: ContextVar[str] = ContextVar("dashboard_tenant")


def current_tenant() -> str:
    """The tenant of the request being answered (set by the authentication middleware)."""
    return _tenant.get()


def set_current_tenant(tenant: str) -> None:
    _tenant.set(tenant)


class Unauthorized(Exception):
    """No valid credentials: 401, with what is wrong (never the secret)."""


class Forbidden(Exception):
    """Valid credentials that may not do this: 403."""


@dataclass(frozen=True, slots=True)
class _Verdict:
    tenant: str | None  # None: refused
    reason: str
    until: float


_SELECT_KEY: LiteralString = """
    SELECT k.tenant_id, k.scope, k.secret_sha256, k.revoked_at IS NOT NULL AS revoked,
           t.disabled_at IS NOT NULL AS disabled
      FROM api_keys k JOIN tenants t USING (tenant_id)
     WHERE k.key_id = %s
"""


class Authenticator:
    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
        *,
        open_mode: bool,
        admin_token: str | None,
        cache_s: float = 10.0,
        cache_max: int = 10_000,
    ) -> None:
        self._pool = pool
        self.open_mode = open_mode
        self._admin_token = admin_token
        self._cache_s = cache_s
        self._cache_max = cache_max
        self._verdicts: OrderedDict[str, _Verdict] = OrderedDict()

    async def tenant(
        self,
        authorization: str | None,
        cookie: str | None,
        tenant_param: str | None,
        *,
        allow_ingest: bool = False,
    ) -> str:
        """The tenant these credentials may read; raises :class:`Unauthorized`/:class:`Forbidden`.

        ``allow_ingest``: the agent-side routes (``/api/v1/hook/``), where the agent's own ingest
        key may read one session's context position and save its checkpoints.
        """
        if self.open_mode:
            if tenant_param not in (None, OPEN_MODE_TENANT):
                raise Forbidden(f"open mode serves tenant {OPEN_MODE_TENANT!r} only")
            return OPEN_MODE_TENANT
        token = bearer(authorization) or cookie
        if not token:
            raise Unauthorized("missing credentials: send 'Authorization: Bearer <read key>' or log in")
        if self._admin_token and hmac.compare_digest(token.encode(), self._admin_token.encode()):
            return tenant_param or OPEN_MODE_TENANT
        tenant = await self._key_tenant(token, allow_ingest=allow_ingest)
        if tenant_param not in (None, tenant):
            raise Forbidden(f"this key reads tenant {tenant!r} only")
        return tenant

    async def _key_tenant(self, token: str, *, allow_ingest: bool) -> str:
        now = time.monotonic()
        cache_key = f"{int(allow_ingest)}{token}"
        cached = self._verdicts.get(cache_key)
        if cached is None or cached.until < now:
            cached = await self._check(token, now, allow_ingest=allow_ingest)
            self._verdicts[cache_key] = cached
            self._verdicts.move_to_end(cache_key)
            while len(self._verdicts) > self._cache_max:
                self._verdicts.popitem(last=False)
        if cached.tenant is None:
            raise Unauthorized(cached.reason)
        return cached.tenant

    async def _check(self, token: str, now: float, *, allow_ingest: bool) -> _Verdict:
        until = now + self._cache_s
        try:
            key = parse_key(token)
        except MalformedKey:
            return _Verdict(None, "malformed key: expected tt_<12 hex digits>_<secret>", until)
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_SELECT_KEY, (key.key_id,))).fetchone()
        if row is None or (row["scope"] != "read" and not allow_ingest):
            return _Verdict(None, f"no read key {key.key_id} (ingest keys cannot read)", until)
        if not hmac.compare_digest(bytes(row["secret_sha256"]), secret_digest(key.secret)):
            return _Verdict(None, f"wrong secret for key {key.key_id}", until)
        if row["revoked"]:
            return _Verdict(None, f"key {key.key_id} is revoked", until)
        if row["disabled"]:
            return _Verdict(None, f"tenant {row['tenant_id']!r} is disabled", until)
        return _Verdict(str(row["tenant_id"]), "", until)


def bearer(authorization: str | None) -> str | None:
    """The credentials of a ``Bearer`` Authorization header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None
