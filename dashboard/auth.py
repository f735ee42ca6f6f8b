"""Who is asking, and what they may see: every route of the dashboard falls in one access class
(:func:`access_of`), decided by its path before the route runs (deny by default: anything under
``/api/`` that is not listed is a read route).

- :attr:`Access.READ` (``/api/v1/...``, the API and its event stream): a tenant's ``read`` key
  (``Authorization: Bearer``), a web UI session (the ``tt_session`` cookie, ``dashboard.web_sessions``),
  or the admin token (``TOKENTIDE_DASHBOARD_ADMIN_TOKEN``, Bearer only), which reads the tenant
  named with ``?tenant=`` (default: the open-mode tenant). ``ingest`` keys are refused: the key
  on a developer's machine cannot read the team's sessions.
- :attr:`Access.METRICS` (``/metrics/usage``): the same, plus the scrape token
  (``TOKENTIDE_METRICS_TOKEN``). A read key or a session sees its own tenant's series; the
  admin and scrape tokens see every tenant's (or the one ``?tenant=`` names).
- :attr:`Access.HOOK` (``/api/v1/hook/...``, what ``tokentide hook`` calls): the tenant's
  ``ingest`` key only; each route then requires the session's proof (``dashboard.checkpoints``).
- :attr:`Access.PUBLIC`: health, the operational ``/metrics`` (no tenant data in it), the web
  pages' HTML and scripts (data comes from the API), the OpenAPI description, login and logout.
- Open mode (``TOKENTIDE_OPEN_MODE=1``): everyone is tenant ``default``, unauthenticated.

``?tenant=`` naming another tenant than a key's or a session's own is 403. Keys are checked
against ``api_keys`` (SHA-256 of the secret, as ingest does) and a verdict is remembered for
``cache_s`` seconds, so a revoked key stops working within that time; web sessions are checked
on every request (no cache).
"""

from __future__ import annotations

import enum
import hmac
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, LiteralString

import psycopg
from psycopg_pool import AsyncConnectionPool

from dashboard.web_sessions import WebSessions
from tokentide.admin import MalformedKey, parse_key, secret_digest
from tokentide.settings import OPEN_MODE_TENANT


class Access(enum.Enum):
    PUBLIC = "public"
    READ = "read"
    METRICS = "metrics"
    HOOK = "hook"


#: /api/ routes anyone may call: login checks the key it is given; logout ends the session of
#: the cookie it is sent, if any.
PUBLIC_API = frozenset({"/api/v1/login", "/api/v1/logout"})
HOOK_PREFIX = "/api/v1/hook/"
USAGE_METRICS = "/metrics/usage"


def access_of(path: str) -> Access:
    """The access class of a request path (before routing: an unknown /api/ path is READ)."""
    if path.startswith(HOOK_PREFIX):
        return Access.HOOK
    if path in PUBLIC_API:
        return Access.PUBLIC
    if path.startswith("/api/"):
        return Access.READ
    if path == USAGE_METRICS or path.startswith(USAGE_METRICS + "/"):
        return Access.METRICS
    return Access.PUBLIC


Via = Literal["open", "read_key", "web_session", "admin_token", "metrics_token", "ingest_key"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request."""

    via: Via
    #: The tenant whose data the request sees; None: every tenant (the admin or scrape token on
    #: ``/metrics/usage`` without ``?tenant=``).
    tenant: str | None
    key_id: str | None = None
    #: The API key or web session id presented, to check it again during a long event stream.
    credential: str | None = field(default=None, repr=False)


_caller: ContextVar[Caller] = ContextVar("dashboard_caller")


def current_caller() -> Caller:
    """The caller of the request being answered (set by the authentication middleware)."""
    return _caller.get()


def set_current_caller(caller: Caller) -> None:
    _caller.set(caller)


def current_tenant() -> str:
    """The one tenant the request being answered reads (every route but ``/metrics/usage``
    has one: :func:`authenticate` never gives them a caller without it)."""
    tenant = _caller.get().tenant
    if tenant is None:
        raise RuntimeError("this request reads every tenant")
    return tenant


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

KeyScope = Literal["read", "ingest"]
_SCOPE_REFUSAL = {
    "read": "ingest keys cannot read",
    "ingest": "the hook routes take the agent's ingest key",
}


class Authenticator:
    def __init__(
        self,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
        *,
        open_mode: bool,
        admin_token: str | None,
        metrics_token: str | None = None,
        sessions: WebSessions | None = None,
        cache_s: float = 10.0,
        cache_max: int = 10_000,
    ) -> None:
        self._pool = pool
        self.open_mode = open_mode
        self._admin_token = admin_token
        self._metrics_token = metrics_token
        self.sessions = sessions
        self._cache_s = cache_s
        self._cache_max = cache_max
        self._verdicts: OrderedDict[str, _Verdict] = OrderedDict()

    def is_admin_token(self, token: str) -> bool:
        return self._admin_token is not None and _same(token, self._admin_token)

    async def authenticate(
        self, access: Access, authorization: str | None, cookie: str | None, tenant_param: str | None
    ) -> Caller:
        """The caller of a request to a route of ``access`` (not PUBLIC); raises
        :class:`Unauthorized` or :class:`Forbidden`."""
        if self.open_mode:
            if tenant_param not in (None, OPEN_MODE_TENANT):
                raise Forbidden(f"open mode serves tenant {OPEN_MODE_TENANT!r} only")
            return Caller("open", OPEN_MODE_TENANT)
        token = bearer(authorization)
        if access is Access.HOOK:
            if not token:
                raise Unauthorized("missing credentials: send 'Authorization: Bearer <ingest key>'")
            tenant, key_id = await self.key(token, "ingest")
            return Caller("ingest_key", _own(tenant, tenant_param), key_id, token)
        if token:
            if self.is_admin_token(token):
                everyone = access is Access.METRICS
                return Caller("admin_token", tenant_param or (None if everyone else OPEN_MODE_TENANT))
            if access is Access.METRICS and self._metrics_token and _same(token, self._metrics_token):
                return Caller("metrics_token", tenant_param)
            tenant, key_id = await self.key(token, "read")
            return Caller("read_key", _own(tenant, tenant_param), key_id, token)
        if cookie and self.sessions is not None:
            session = await self.sessions.valid(cookie)
            if session is None:
                raise Unauthorized("signed out or session expired: sign in again with a read key")
            return Caller("web_session", _own(session.tenant, tenant_param), session.key_id, cookie)
        raise Unauthorized("missing credentials: send 'Authorization: Bearer <read key>' or sign in")

    async def still_valid(self, caller: Caller) -> bool:
        """Whether the credentials ``caller`` came with still hold (a long event stream checks
        now and then: signing out, an idle or expired session, a revoked key end it)."""
        if caller.credential is None:
            return True  # open mode, the admin and scrape tokens: settings, not rows
        try:
            if caller.via == "web_session":
                return self.sessions is not None and await self.sessions.valid(caller.credential) is not None
            await self.key(caller.credential, "read" if caller.via == "read_key" else "ingest")
        except Unauthorized:
            return False
        except psycopg.Error:
            return True  # the database is down: the stream's own reads fail and say so
        return True

    async def key(self, token: str, scope: KeyScope) -> tuple[str, str]:
        """(tenant, key id) of an API key of ``scope``; raises :class:`Unauthorized`."""
        now = time.monotonic()
        cache_key = f"{scope[0]}{token}"
        cached = self._verdicts.get(cache_key)
        if cached is None or cached.until < now:
            cached = await self._check(token, now, scope)
            self._verdicts[cache_key] = cached
            self._verdicts.move_to_end(cache_key)
            while len(self._verdicts) > self._cache_max:
                self._verdicts.popitem(last=False)
        if cached.tenant is None:
            raise Unauthorized(cached.reason)
        return cached.tenant, parse_key(token).key_id

    async def _check(self, token: str, now: float, scope: KeyScope) -> _Verdict:
        until = now + self._cache_s
        try:
            key = parse_key(token)
        except MalformedKey:
            return _Verdict(None, "malformed key: expected tt_<12 hex digits>_<secret>", until)
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_SELECT_KEY, (key.key_id,))).fetchone()
        if row is None or row["scope"] != scope:
            return _Verdict(None, f"no {scope} key {key.key_id} ({_SCOPE_REFUSAL[scope]})", until)
        if not hmac.compare_digest(bytes(row["secret_sha256"]), secret_digest(key.secret)):
            return _Verdict(None, f"wrong secret for key {key.key_id}", until)
        if row["revoked"]:
            return _Verdict(None, f"key {key.key_id} is revoked", until)
        if row["disabled"]:
            return _Verdict(None, f"tenant {row['tenant_id']!r} is disabled", until)
        return _Verdict(str(row["tenant_id"]), "", until)


def _own(tenant: str, tenant_param: str | None) -> str:
    if tenant_param not in (None, tenant):
        raise Forbidden(f"these credentials read tenant {tenant!r} only")
    return tenant


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer(authorization: str | None) -> str | None:
    """The credentials of a ``Bearer`` Authorization header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None
