"""Who is calling: ``Authorization: Bearer <key>`` -> tenant.

Every transport (HTTP, gRPC) asks an :class:`Authenticator`. In open mode every request
belongs to tenant ``default``; otherwise keys are checked against the database.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from typing import LiteralString, Protocol

import psycopg
from psycopg.rows import TupleRow

from ingest.errors import Forbidden, Unauthorized, Unavailable
from ingest.limits import TokenBucket
from tokentide.admin import ApiKey, MalformedKey, parse_key, secret_digest
from tokentide.settings import OPEN_MODE_TENANT
from tokentide.tenancy import Redaction, Tenant

log = logging.getLogger(__name__)

#: Optional header naming the tenant a caller means to write to; refused (403) when it is
#: not the key's tenant, so a collector forwarding for several teams cannot mix them up.
TENANT_HEADER = "x-tokentide-tenant"


class Authenticator(Protocol):
    async def start(self) -> None:
        """Load what is needed; must not fail when the database is down (log and retry)."""

    async def stop(self) -> None:
        """Release resources; safe to call twice."""

    async def authenticate(self, authorization: str | None, tenant_hint: str | None) -> Tenant:
        """The tenant of the caller, or raise ``Unauthorized`` (401) / ``Forbidden`` (403)."""
        ...

    @property
    def ready(self) -> bool:
        """Whether requests can be authenticated now."""
        ...


class OpenModeAuthenticator:
    """Single tenant, no authentication: local use only (``TOKENTIDE_OPEN_MODE=1``)."""

    def __init__(self, redaction: Redaction) -> None:
        self._tenant = Tenant(OPEN_MODE_TENANT, redaction=redaction)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def authenticate(self, authorization: str | None, tenant_hint: str | None) -> Tenant:
        return self._tenant

    @property
    def ready(self) -> bool:
        return True


def bearer_key(authorization: str | None) -> ApiKey:
    """The API key of an ``Authorization`` header value; ``Unauthorized`` saying what is wrong.

    The scheme ``Bearer`` is case-insensitive (RFC 9110). Messages never quote the header: it
    may hold a secret.
    """
    if authorization is None or not authorization.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    try:
        return parse_key(credentials.strip())
    except MalformedKey:
        raise Unauthorized(
            "malformed API key: expected tt_<12 hex digits>_<secret>, as `tokentide admin key create` prints"
        ) from None


@dataclass(frozen=True, slots=True)
class _Key:
    """What ingest holds of one API key: enough to decide without the database."""

    tenant: Tenant
    secret_sha256: bytes
    revoked: bool
    tenant_disabled: bool

    def admit(self, key: ApiKey, tenant_hint: str | None) -> Tenant:
        """The key's tenant if ``key`` is this key's and may write; else 401 or 403.

        The secret is checked first, so that only the key's holder learns that it is revoked
        or its tenant disabled.
        """
        if not hmac.compare_digest(self.secret_sha256, secret_digest(key.secret)):
            raise Unauthorized(f"wrong secret for API key {key.key_id}")
        if self.revoked:
            raise Unauthorized(f"API key {key.key_id} is revoked")
        if self.tenant_disabled:
            raise Forbidden(f"tenant {self.tenant.name!r} is disabled")
        if tenant_hint and tenant_hint != self.tenant.name:
            raise Forbidden(
                f"{TENANT_HEADER} names tenant {tenant_hint[:63]!r}, "
                f"but API key {key.key_id} belongs to tenant {self.tenant.name!r}"
            )
        return self.tenant


#: ``Retry-After`` of the 503s of authentication (store not loaded, database unavailable).
AUTH_RETRY_AFTER_S = 5
#: Pause between attempts while the database cannot be read.
_RETRY_S = 1.0
#: Bound on connecting plus one query, so that a hung database cannot hang requests.
_DB_TIMEOUT_S = 5.0
#: Direct lookups of key ids not in memory, all callers together: rate per second (burst 2 s).
_LOOKUPS_PER_S = 10.0
#: Most key ids remembered as unknown between two loads.
_UNKNOWN_MAX = 10_000
_DB_ERRORS = (psycopg.Error, TimeoutError)

#: Ingest keys only: a ``read`` key (dashboard) is unknown here.
_SELECT_KEYS: LiteralString = (
    "SELECT k.key_id, k.tenant_id, k.secret_sha256, k.revoked_at IS NOT NULL, t.disabled_at IS NOT NULL,"
    " t.requests_per_s, t.bytes_per_s, t.max_body_bytes, t.redaction"
    " FROM api_keys k JOIN tenants t USING (tenant_id) WHERE k.scope = 'ingest'"
)
_SELECT_KEY: LiteralString = _SELECT_KEYS + " AND k.key_id = %s"


class KeyStore:
    """API keys and their tenants' policies, from PostgreSQL, held in memory.

    - :meth:`start` launches a task that loads every key (with its tenant's policy) every
      ``refresh_s`` seconds, and every second while the database cannot be read. It never
      fails: until the first load, :attr:`ready` is False and :meth:`authenticate` answers
      503 (``Unavailable``, retried by exporters).
    - A key revoked, or a tenant disabled, is refused within ``refresh_s`` (the settings keep it
      at most 10 s) while the database is reachable. When it is not, the keys loaded last keep
      being used, so that ingest stays up through a PostgreSQL outage; changes made meanwhile
      apply at the next successful load.
    - A key id not in memory (a key created since the last load) is looked up in the database
      at once. Ids found unknown are remembered until the next load, and lookups are limited
      to ``_LOOKUPS_PER_S`` in all (503 beyond), so that invented keys cannot load the database.
    """

    def __init__(self, dsn: str, *, refresh_s: float, default_redaction: Redaction) -> None:
        self._dsn = dsn
        self._refresh_s = refresh_s
        self._default_redaction = default_redaction
        self._keys: dict[str, _Key] | None = None
        self._unknown: set[str] = set()
        self._lookups = TokenBucket(rate=_LOOKUPS_PER_S, burst=2 * _LOOKUPS_PER_S)
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._db_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Whether keys were loaded at least once."""
        return self._keys is not None

    async def start(self) -> None:
        """Launch the refresh task and return at once (the first load happens in the task)."""
        if self._task is None:
            self._task = asyncio.create_task(self._refresh_forever(), name="tokentide-key-refresh")

    async def stop(self) -> None:
        """Stop refreshing and close the database connection; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self._disconnect()

    async def authenticate(self, authorization: str | None, tenant_hint: str | None) -> Tenant:
        """The caller's tenant, with its own policy (``None`` limits = the service defaults).

        Raises ``Unauthorized`` (missing, malformed, unknown, wrong or revoked key),
        ``Forbidden`` (tenant disabled, or ``tenant_hint`` naming another tenant) or
        ``Unavailable`` (never loaded, or a lookup the database cannot answer now).
        """
        key = bearer_key(authorization)
        keys = self._keys
        if keys is None:
            raise Unavailable("authentication store not loaded", retry_after=AUTH_RETRY_AFTER_S)
        entry = keys.get(key.key_id)
        if entry is None:
            entry = await self._lookup(key.key_id)
        return entry.admit(key, tenant_hint)

    async def _lookup(self, key_id: str) -> _Key:
        """A key not loaded yet, read from the database; ``Unauthorized`` if it does not exist."""
        if key_id in self._unknown:
            raise Unauthorized(f"unknown API key {key_id}")
        if self._lookups.take(1.0, time.monotonic()) > 0:
            raise Unavailable(
                "too many unknown API keys to look up; retry later", retry_after=AUTH_RETRY_AFTER_S
            )
        try:
            rows = await self._query(_SELECT_KEY, (key_id,))
        except _DB_ERRORS as exc:
            raise Unavailable(
                "cannot check the API key now: database unavailable", retry_after=AUTH_RETRY_AFTER_S
            ) from exc
        if not rows:
            if len(self._unknown) < _UNKNOWN_MAX:
                self._unknown.add(key_id)
            raise Unauthorized(f"unknown API key {key_id}")
        entry = self._entry(rows[0])
        if self._keys is not None:
            # setdefault: a load that finished during the query is newer than this row.
            entry = self._keys.setdefault(key_id, entry)
        return entry

    async def _refresh_forever(self) -> None:
        failing, retry_s = False, min(_RETRY_S, self._refresh_s)
        while True:
            try:
                keys = {row[0]: self._entry(row) for row in await self._query(_SELECT_KEYS, ())}
            except Exception as exc:  # any: if this task ended, revocations would stop applying
                if not failing:
                    log.warning(
                        "cannot load API keys (%s); retrying every %gs%s",
                        str(exc) or type(exc).__name__,
                        retry_s,
                        ", using the keys loaded before" if self.ready else "",
                        exc_info=not isinstance(exc, _DB_ERRORS),  # a traceback only for a bug
                    )
                failing = True
                await asyncio.sleep(retry_s)
                continue
            if failing or self._keys is None:
                log.info("loaded %d API keys; reloading every %gs", len(keys), self._refresh_s)
            self._keys, failing = keys, False
            self._unknown.clear()  # every key that existed at this load is in ``keys`` now
            await asyncio.sleep(self._refresh_s)

    def _entry(self, row: TupleRow) -> _Key:
        _, tenant, digest, revoked, disabled, requests_per_s, bytes_per_s, max_body_bytes, redaction = row
        policy = Tenant(
            tenant,
            requests_per_s=requests_per_s,
            bytes_per_s=bytes_per_s,
            max_body_bytes=max_body_bytes,
            redaction=self._default_redaction if redaction is None else Redaction(redaction),
        )
        return _Key(policy, bytes(digest), revoked, disabled)

    async def _query(self, query: LiteralString, params: tuple[object, ...]) -> list[TupleRow]:
        """Rows of ``query`` on the store's one connection, opened (again) when needed.

        Raises ``psycopg.Error``, or ``TimeoutError`` after ``_DB_TIMEOUT_S``; the connection
        is then dropped, and the next query opens a new one.
        """
        async with self._db_lock:
            try:
                async with asyncio.timeout(_DB_TIMEOUT_S):
                    if self._conn is None:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._dsn, autocommit=True, application_name="tokentide-ingest"
                        )
                    cursor = await self._conn.execute(query, params)
                    return await cursor.fetchall()
            except BaseException:  # cancelled or failed mid-query: the connection's state is unknown
                await self._disconnect()
                raise

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
