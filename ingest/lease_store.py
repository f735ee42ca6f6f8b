"""The shared rate-limit buckets in PostgreSQL: one ``tokentide_rate_exchange`` call per exchange.

The I/O edge of :mod:`ingest.leases`. One connection per replica (not the key store's: a slow
key reload must not delay an exchange), opened on first use and again after any failure; every
call is bounded by ``timeout_s``. Failures are :class:`~ingest.leases.LeaseStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import LiteralString

import psycopg
from psycopg.rows import TupleRow

from ingest.leases import Exchanged, Grant, LeaseRequest, LeaseStoreUnavailable

_EXCHANGE: LiteralString = (
    "SELECT bucket_tenant, bucket_kind, granted, remaining, replicas"
    " FROM tokentide_rate_exchange(%s, %s::text[], %s::text[], %s::float8[], %s::float8[],"
    " %s::float8[], %s::float8[])"
)


class PostgresLeaseStore:
    def __init__(self, dsn: str, *, timeout_s: float = 2.0) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._lock = asyncio.Lock()

    async def exchange(self, replica: str, requests: Sequence[LeaseRequest]) -> Exchanged:
        params = (
            replica,
            [r.tenant for r in requests],
            [r.kind for r in requests],
            [r.rate for r in requests],
            [r.burst for r in requests],
            [r.returned for r in requests],
            [r.wanted for r in requests],
        )
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if self._conn is None:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._dsn, autocommit=True, application_name="tokentide-ingest-limits"
                        )
                    cursor = await self._conn.execute(_EXCHANGE, params)
                    rows = await cursor.fetchall()
            except (psycopg.Error, TimeoutError) as exc:
                await self._disconnect()
                raise LeaseStoreUnavailable(str(exc) or type(exc).__name__) from exc
            except BaseException:  # cancelled mid-call: the connection's state is unknown
                await self._disconnect()
                raise
        replicas = int(rows[0][4]) if rows else 1
        grants = {(str(t), str(k)): Grant(float(g), float(left)) for t, k, g, left, _ in rows}
        return Exchanged(grants, replicas)

    async def close(self) -> None:
        await self._disconnect()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
