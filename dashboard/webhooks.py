"""``GET /api/v1/webhooks/deliveries``: the caller's tenant's webhook delivery log (issue 8).

Newest first, paged with ``limit``/``offset``, optionally narrowed to one webhook, one status
or one session. What each row says: which webhook (id and URL, never its secret), which
signal, how many attempts, the status (``pending``, ``failed`` with the time of the next
attempt, ``delivered``, ``dead``) and the last HTTP status or error. Every statement starts
from the caller's tenant.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Query
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from dashboard.timestamps import Timestamp

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

DELIVERIES = """
    SELECT d.webhook_id, w.url, d.signal_id, d.session_id, d.kind, d.status, d.attempts,
           d.last_http_status, d.last_error, d.created_at, d.updated_at, d.next_attempt_at,
           d.delivered_at
      FROM webhook_deliveries d JOIN webhooks w USING (webhook_id)
     WHERE d.tenant_id = %(tenant)s
       AND (%(webhook)s::text IS NULL OR d.webhook_id = %(webhook)s)
       AND (%(status)s::text IS NULL OR d.status = %(status)s)
       AND (%(session)s::text IS NULL OR d.session_id = %(session)s)
     ORDER BY d.created_at DESC, d.webhook_id, d.signal_id
     LIMIT %(limit)s OFFSET %(offset)s
"""


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    FAILED = "failed"
    DELIVERED = "delivered"
    DEAD = "dead"


class DeliveryOut(BaseModel):
    webhook_id: str
    url: str
    signal_id: str
    session_id: str
    kind: str
    status: DeliveryStatus
    attempts: int
    last_http_status: int | None
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp
    #: When the next attempt is due (``pending`` and ``failed`` only).
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]
    limit: int
    offset: int


def delivery_out(row: dict[str, Any]) -> DeliveryOut:
    """A database row -> its API shape (no retry time once settled)."""
    settled = row["status"] in (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD)
    return DeliveryOut.model_validate(row | ({"next_attempt_at": None} if settled else {}))


def add_webhook_routes(
    app: FastAPI,
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]],
    tenant: Callable[[], str],
) -> None:
    """Register ``GET /api/v1/webhooks/deliveries`` on ``app``, scoped to ``tenant()``."""

    @app.get("/api/v1/webhooks/deliveries")
    async def list_deliveries(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        webhook: Annotated[str | None, Query(description="only this webhook's deliveries")] = None,
        status: Annotated[DeliveryStatus | None, Query(description="only deliveries in this status")] = None,
        session: Annotated[str | None, Query(description="only this session's signals")] = None,
    ) -> DeliveriesOut:
        """The caller's tenant's webhook deliveries, newest first."""
        params = {
            "tenant": tenant(),
            "webhook": webhook,
            "status": None if status is None else status.value,
            "session": session,
            "limit": limit,
            "offset": offset,
        }
        async with pool.connection() as conn:
            rows = await (await conn.execute(DELIVERIES, params)).fetchall()
        return DeliveriesOut(deliveries=[delivery_out(r) for r in rows], limit=limit, offset=offset)
