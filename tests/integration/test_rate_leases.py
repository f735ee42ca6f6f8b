"""The shared rate-limit buckets in the real PostgreSQL (migration 0013, ``tokentide_rate_exchange``)
through ``PostgresLeaseStore``: a new bucket starts full, grants never exceed what it holds,
refills by the database's clock, gives back and charges debts, and concurrent exchanges from
many replicas never grant a token twice. Elapsed time is made by moving ``updated_at`` back,
never by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from ingest.lease_store import PostgresLeaseStore
from ingest.leases import LeaseRequest, LeaseStoreUnavailable
from tokentide.admin import Policy, create_tenant

pytestmark = pytest.mark.integration


def request(
    tenant: str = "acme", *, returned: float = 0.0, wanted: float = 0.0, kind: str = "requests"
) -> LeaseRequest:
    return LeaseRequest(tenant, kind, rate=10.0, burst=20.0, returned=returned, wanted=wanted)


@pytest.fixture
def tenants(database: str) -> str:
    with psycopg.connect(database, autocommit=True) as conn:
        for name in ("acme", "globex"):
            create_tenant(conn, name, Policy())
    return database


def tokens(dsn: str, tenant: str = "acme", kind: str = "requests") -> float:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT tokens FROM rate_buckets WHERE tenant_id = %s AND kind = %s", (tenant, kind)
        ).fetchone()
    assert row is not None
    return float(row[0])


def age(dsn: str, seconds: float) -> None:
    """Make every bucket's last update ``seconds`` older (as if that much time had passed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE rate_buckets SET updated_at = updated_at - make_interval(secs => %s)", (seconds,)
        )


class Refill:
    """Tokens a 10/s bucket can have gained since this was made (real time passes in a test)."""

    def __init__(self) -> None:
        self.began = time.monotonic()

    def __call__(self) -> float:
        return 10.0 * (time.monotonic() - self.began) + 1e-6


async def test_a_new_bucket_starts_full_and_grants_what_it_holds(tenants: str) -> None:
    store = PostgresLeaseStore(tenants)
    refill = Refill()
    try:
        first = await store.exchange(
            "r1", [request(wanted=15.0), request("globex", wanted=1.0, kind="bytes")]
        )
        assert first.grants[("acme", "requests")].granted == 15.0
        assert first.grants[("acme", "requests")].remaining == 5.0
        assert first.grants[("globex", "bytes")].granted == 1.0
        again = await store.exchange("r2", [request(wanted=15.0)])
        assert 5.0 <= again.grants[("acme", "requests")].granted <= 5.0 + refill()  # all it had
        assert again.replicas == 2
    finally:
        await store.close()


async def test_refill_by_the_database_clock_up_to_the_burst(tenants: str) -> None:
    store = PostgresLeaseStore(tenants)
    refill = Refill()
    try:
        await store.exchange("r1", [request(wanted=20.0)])
        age(tenants, 1.0)  # 10 tokens back
        got = await store.exchange("r1", [request(wanted=20.0)])
        assert 10.0 <= got.grants[("acme", "requests")].granted <= 10.0 + refill()
        age(tenants, 3600.0)
        await store.exchange("r1", [request()])
        assert tokens(tenants) == 20.0  # never above the burst
    finally:
        await store.close()


async def test_returned_tokens_and_debts(tenants: str) -> None:
    store = PostgresLeaseStore(tenants)
    refill = Refill()
    try:
        await store.exchange("r1", [request(wanted=20.0)])
        await store.exchange("r1", [request(returned=8.0)])
        assert 8.0 <= tokens(tenants) <= 8.0 + refill()
        debt = await store.exchange("r1", [request(returned=-30.0, wanted=5.0)])
        assert debt.grants[("acme", "requests")].granted == 0.0
        assert -22.0 <= tokens(tenants) <= -22.0 + refill()  # paid back by the refill, for everyone
    finally:
        await store.close()


async def test_concurrent_exchanges_never_grant_a_token_twice(tenants: str) -> None:
    """Twelve replicas asking at once for more than the bucket holds get exactly what it holds
    (plus what it refilled meanwhile), in total."""
    stores = [PostgresLeaseStore(tenants) for _ in range(12)]
    try:
        for i, store in enumerate(stores):  # connected beforehand, so the race is the exchange
            await store.exchange(f"r{i}", [request("acme"), request("globex")])
        with psycopg.connect(tenants, autocommit=True) as conn:
            conn.execute("UPDATE rate_buckets SET tokens = 20, updated_at = clock_timestamp()")
        began = time.monotonic()
        results = await asyncio.gather(
            *(
                # Opposite orders of the same buckets: the function's lock order avoids deadlocks.
                store.exchange(
                    f"r{i}", [request("globex", wanted=5.0), request("acme", wanted=5.0)][:: 1 - 2 * (i % 2)]
                )
                for i, store in enumerate(stores)
            )
        )
        refill = 10.0 * (time.monotonic() - began)
        for tenant in ("acme", "globex"):
            granted = sum(r.grants[(tenant, "requests")].granted for r in results)
            assert 20.0 <= granted <= 20.0 + refill + 1e-6, tenant
            assert tokens(tenants, tenant) >= -1e-9
    finally:
        for store in stores:
            await store.close()


async def test_a_database_that_does_not_answer_is_unavailable(tenants: str) -> None:
    store = PostgresLeaseStore("postgresql://nobody@127.0.0.1:1/none", timeout_s=2)
    with pytest.raises(LeaseStoreUnavailable):
        await store.exchange("r1", [request(wanted=1.0)])
    await store.close()


def test_tenant_roles_cannot_read_the_buckets(tenants: str) -> None:
    with psycopg.connect(tenants, autocommit=True) as conn:
        rows: list[Any] = conn.execute(
            "SELECT relname FROM pg_class WHERE relname IN ('rate_buckets', 'ingest_replicas')"
            " AND relrowsecurity"
        ).fetchall()
    assert {r[0] for r in rows} == {"rate_buckets", "ingest_replicas"}
