"""The webhooks and their delivery log in PostgreSQL (migration 0009).

The log is also the notifier's queue: a delivery is recorded (``pending``) when its signal is
consumed, claimed by one notifier at a time for each attempt (``FOR UPDATE SKIP LOCKED`` plus a
lease: a claimed row is not due again before the lease ends, so a notifier that dies mid-attempt
leaves it to another one), and settled after the attempt (``delivered``, ``failed`` with the
time of the next attempt, or ``dead``). ``(webhook_id, signal_id)`` is the key: recording a
redelivered signal again changes nothing, and a delivered row is never claimed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from notify.core import Outcome, Status, build_payload, wants
from tokentide.records import SessionSignal

Pool = AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]

WEBHOOKS_OF: LiteralString = """
    SELECT tenant_id, webhook_id, kinds FROM webhooks WHERE enabled AND tenant_id = ANY (%s)
"""
RECORD: LiteralString = """
    INSERT INTO webhook_deliveries
        (tenant_id, webhook_id, signal_id, session_id, kind, payload, next_attempt_at)
    VALUES (%s, %s, %s, %s, %s, %s, now())
    ON CONFLICT (webhook_id, signal_id) DO NOTHING
"""
#: Due deliveries of enabled webhooks, oldest due first; each gets one more attempt counted
#: and is hidden from other claims for the lease.
CLAIM: LiteralString = """
    WITH due AS (
        SELECT d.webhook_id, d.signal_id
          FROM webhook_deliveries d JOIN webhooks w USING (webhook_id)
         WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= now() AND w.enabled
         ORDER BY d.next_attempt_at
         LIMIT %(limit)s
           FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook_deliveries d
       SET attempts = d.attempts + 1,
           next_attempt_at = now() + make_interval(secs => %(lease)s),
           updated_at = now()
      FROM due, webhooks w
     WHERE d.webhook_id = due.webhook_id AND d.signal_id = due.signal_id
       AND w.webhook_id = d.webhook_id
    RETURNING d.tenant_id, d.webhook_id, d.signal_id, d.kind, d.payload, d.attempts, w.url, w.secret
"""
SETTLE: LiteralString = """
    UPDATE webhook_deliveries
       SET status = %(status)s,
           last_http_status = %(http_status)s,
           last_error = %(error)s,
           next_attempt_at = CASE WHEN %(retry_in_s)s::float8 IS NULL THEN NULL
                                  ELSE now() + make_interval(secs => %(retry_in_s)s::float8) END,
           delivered_at = CASE WHEN %(status)s = 'delivered' THEN now() END,
           updated_at = now()
     WHERE webhook_id = %(webhook_id)s AND signal_id = %(signal_id)s
       AND status IN ('pending', 'failed')
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt (``attempt`` counts it)."""

    tenant: str
    webhook_id: str
    signal_id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    url: str
    secret: str = field(repr=False)

    @property
    def delivery_id(self) -> str:
        return f"{self.webhook_id}:{self.signal_id}"


class DeliveryStore:
    """The notifier's database access; every method may raise ``psycopg.Error`` or
    ``psycopg_pool.PoolTimeout`` while the database is unavailable."""

    def __init__(self, dsn: str, *, max_size: int = 4, timeout_s: float = 10.0) -> None:
        self._pool: Pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=timeout_s,
            kwargs={"row_factory": dict_row, "autocommit": True, "application_name": "tokentide-notify"},
            open=False,
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        """Safe to call twice."""
        await self._pool.close()

    @property
    def pool(self) -> Pool:
        """The store's pool (the budget evaluation, ``notify.budgets``, shares it)."""
        return self._pool

    async def ping(self) -> None:
        async with self._pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")

    async def record(self, signals: Sequence[SessionSignal]) -> int:
        """Record one delivery per signal and matching enabled webhook of its tenant, in one
        transaction; returns how many are new (a redelivered signal adds none)."""
        if not signals:
            return 0
        tenants = sorted({s.tenant for s in signals})
        recorded = 0
        async with self._pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(WEBHOOKS_OF, (tenants,))).fetchall()
            hooks: dict[str, list[tuple[str, list[str] | None]]] = {}
            for row in rows:
                hooks.setdefault(row["tenant_id"], []).append((row["webhook_id"], row["kinds"]))
            for signal in signals:
                matching = [w for w, kinds in hooks.get(signal.tenant, ()) if wants(kinds, signal.kind)]
                if not matching:
                    continue
                payload = Jsonb(build_payload(signal))
                for webhook_id in matching:
                    cursor = await conn.execute(
                        RECORD,
                        (
                            signal.tenant,
                            webhook_id,
                            signal.signal_id,
                            signal.session_id,
                            str(signal.kind),
                            payload,
                        ),
                    )
                    recorded += max(cursor.rowcount, 0)
        return recorded

    async def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(CLAIM, {"limit": limit, "lease": lease_s})).fetchall()
        return [
            Claimed(
                r["tenant_id"],
                r["webhook_id"],
                r["signal_id"],
                r["kind"],
                r["payload"],
                r["attempts"],
                r["url"],
                r["secret"],
            )
            for r in rows
        ]

    async def settle(
        self, claimed: Claimed, result: Outcome, http_status: int | None, error: str | None
    ) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                SETTLE,
                {
                    "status": result.status,
                    "http_status": http_status,
                    "error": error,
                    "retry_in_s": result.retry_in_s,
                    "webhook_id": claimed.webhook_id,
                    "signal_id": claimed.signal_id,
                },
            )


__all__ = ["Claimed", "DeliveryStore", "Status"]
