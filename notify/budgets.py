"""The periodic budget evaluation (issue 17): spend and forecast of every budget, and its
``budget_warning`` / ``budget_exceeded`` signals, each once per budget and period.

Every ``notify_budget_interval_s`` (60 s) the notifier evaluates each tenant's budgets as the
API does (``dashboard.budget_store.evaluate``, at the database's clock). A budget whose status
is ``warning`` or ``exceeded`` gets a row in ``budget_signals`` (key: budget, period start,
kind; a second evaluation adds nothing) and, in the same transaction and only when that row is
new, one pending delivery per enabled webhook of its tenant whose kinds include it (``NULL``
kinds: all). The delivery loop then sends them like context signals: signed, retried, logged
in ``webhook_deliveries`` (``session_id`` is '' there: a budget is no one session's).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from dashboard import budget_store
from notify.budget_payload import budget_payload
from notify.core import wants
from tokentide.budgets import KIND_OF_STATUS, signal_id

log = logging.getLogger(__name__)

_INSERT_SIGNAL: LiteralString = """
    INSERT INTO budget_signals (tenant_id, budget_id, period_start, period_end, kind, signal_id,
                                amount_usd, spend_usd, forecast_usd, at)
    VALUES (%(tenant)s, %(budget_id)s, %(period_start)s, %(period_end)s, %(kind)s, %(signal_id)s,
            %(amount_usd)s, %(spend_usd)s, %(forecast_usd)s, %(at)s)
    ON CONFLICT (budget_id, period_start, kind) DO NOTHING
    RETURNING signal_id
"""
_WEBHOOKS: LiteralString = "SELECT webhook_id, kinds FROM webhooks WHERE enabled AND tenant_id = %s"
_RECORD: LiteralString = """
    INSERT INTO webhook_deliveries
        (tenant_id, webhook_id, signal_id, session_id, kind, payload, next_attempt_at)
    VALUES (%s, %s, %s, '', %s, %s, now())
    ON CONFLICT (webhook_id, signal_id) DO NOTHING
"""


async def raise_signals(
    conn: psycopg.AsyncConnection[Any], evaluation: budget_store.Evaluation
) -> tuple[bool, int]:
    """Record the signal ``evaluation``'s status calls for (none for ``ok``) and its deliveries,
    in one transaction: (whether the signal is new, deliveries recorded)."""
    kind = KIND_OF_STATUS.get(evaluation.status)
    if kind is None:
        return False, 0
    b = evaluation.budget
    row: dict[str, Any] = {
        "tenant": b.tenant,
        "budget_id": b.budget_id,
        "scope": b.scope,
        "value": b.value,
        "period": b.period,
        "period_start": evaluation.period_start,
        "period_end": evaluation.period_end,
        "kind": kind,
        "signal_id": signal_id(b.budget_id, evaluation.period_start, kind),
        "amount_usd": b.amount_usd,
        "spend_usd": evaluation.forecast.spend_usd,
        "forecast_usd": evaluation.forecast.forecast_usd,
        "at": evaluation.as_of,
    }
    recorded = 0
    async with conn.transaction():
        new = await (await conn.execute(_INSERT_SIGNAL, {**row, "kind": str(kind)})).fetchone()
        if new is None:
            return False, 0
        payload = Jsonb(budget_payload(row))
        for hook in await (await conn.execute(_WEBHOOKS, (b.tenant,))).fetchall():
            webhook_id, kinds = (hook["webhook_id"], hook["kinds"]) if isinstance(hook, dict) else hook
            if wants(kinds, str(kind)):
                cursor = await conn.execute(
                    _RECORD, (b.tenant, webhook_id, row["signal_id"], str(kind), payload)
                )
                recorded += max(cursor.rowcount, 0)
    log.info("budget %s of tenant %r: %s (%s)", b.budget_id, b.tenant, kind, row["signal_id"])
    return True, recorded


async def evaluate_all(
    pool: AsyncConnectionPool[Any], team_key: str, now: datetime | None = None
) -> tuple[int, int, int]:
    """One round over every tenant with budgets: (signals raised, deliveries recorded, tenants
    whose evaluation a statement refused). A refused statement loses that tenant's round only
    (its signals are written in a transaction: nothing half-written); a broken connection ends
    the round (raised)."""
    raised = recorded = failed = 0
    async with pool.connection() as conn:
        now = now or await budget_store.database_now(conn)
        for tenant in await budget_store.tenants_with_budgets(conn):
            try:
                for evaluation in await budget_store.evaluate(conn, tenant, team_key, now):
                    new, deliveries = await raise_signals(conn, evaluation)
                    raised += new
                    recorded += deliveries
            except psycopg.Error as exc:
                if conn.broken or isinstance(exc, psycopg.OperationalError):
                    raise
                failed += 1
                log.error("budget evaluation of tenant %r failed: %s", tenant, exc)
    return raised, recorded, failed
