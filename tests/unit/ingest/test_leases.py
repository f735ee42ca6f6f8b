"""Shared rate limits (ingest/leases.py) against an in-memory model of the database's buckets.

``FakeStore`` does what ``tokentide_rate_exchange`` (migration 0013) does, on the same clock as
the limiters; tests/integration/test_rate_leases.py checks the SQL itself, and
tests/integration/test_ingest_shared_limits.py three real ingest processes on one database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from ingest.errors import TooManyRequests
from ingest.leases import (
    BYTES,
    REQUESTS,
    Exchanged,
    Grant,
    LeaseRequest,
    LeaseStoreUnavailable,
    SharedLimiter,
)
from tokentide.tenancy import Tenant


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class FakeStore:
    """The buckets of migration 0013 in memory: refill by the clock, give back, grant."""

    replicas: int = 1
    failing: bool = False
    buckets: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    calls: list[list[LeaseRequest]] = field(default_factory=list)
    granted: float = 0.0
    closed: bool = False

    async def exchange(self, replica: str, requests: Sequence[LeaseRequest]) -> Exchanged:
        if self.failing:
            raise LeaseStoreUnavailable("database down")
        self.calls.append(list(requests))
        now = time.monotonic()
        grants = {}
        for r in requests:
            bucket = self.buckets.setdefault((r.tenant, r.kind), _Bucket(r.burst, now))
            refilled = min(r.burst, bucket.tokens + r.rate * (now - bucket.at) + r.returned)
            given = max(0.0, min(r.wanted, refilled))
            bucket.tokens, bucket.at = refilled - given, now
            grants[(r.tenant, r.kind)] = Grant(given, bucket.tokens)
            self.granted += given if r.kind == REQUESTS else 0.0
        return Exchanged(grants, self.replicas)

    async def close(self) -> None:
        self.closed = True


@asynccontextmanager
async def started(store: FakeStore, **options: float) -> AsyncIterator[SharedLimiter]:
    options = {"interval_s": 5.0, **options}  # no periodic exchange during a short test
    limiter = SharedLimiter(store, "replica-1", None, None, **options)  # type: ignore[arg-type]
    await limiter.start()
    try:
        yield limiter
    finally:
        await limiter.stop()


async def test_first_request_waits_for_a_lease_then_later_ones_spend_it_locally() -> None:
    store = FakeStore()
    tenant = Tenant("acme", requests_per_s=1.0)  # burst 2
    async with started(store) as limiter:
        await limiter.admit_request(tenant)
        assert len(store.calls) == 1
        [request] = store.calls[0]
        assert (request.kind, request.returned, request.wanted, request.burst) == (REQUESTS, 0.0, 2.0, 2.0)
        await limiter.admit_request(tenant)  # the lease's second token: no database
        assert len(store.calls) == 1
        with pytest.raises(TooManyRequests) as refused:
            await limiter.admit_request(tenant)  # ran out while the bucket had spare: one more try
        assert refused.value.retry_after == 1
        assert len(store.calls) == 2
        with pytest.raises(TooManyRequests):
            await limiter.admit_request(tenant)  # the bucket was short: refused at once
        assert len(store.calls) == 2


async def test_a_tenant_without_a_rate_costs_nothing() -> None:
    store = FakeStore()
    async with started(store) as limiter:
        for _ in range(1000):
            await limiter.admit_request(Tenant("free"))
            await limiter.admit_bytes(Tenant("free"), 10**9)
    assert store.calls == []


async def test_the_services_default_applies_to_a_tenant_without_its_own() -> None:
    store = FakeStore()
    limiter = SharedLimiter(store, "r", requests_per_s=1.0, bytes_per_s=None, interval_s=5.0)
    await limiter.start()
    try:
        await limiter.admit_request(Tenant("acme"))
        await limiter.admit_request(Tenant("acme"))
        with pytest.raises(TooManyRequests):
            await limiter.admit_request(Tenant("acme"))
        await limiter.admit_request(Tenant("own", requests_per_s=100.0))
    finally:
        await limiter.stop()
    assert store.closed


async def test_a_request_larger_than_the_burst_passes_once_and_its_debt_is_charged_to_the_bucket() -> None:
    store = FakeStore()
    tenant = Tenant("big", bytes_per_s=100.0)  # burst 200 bytes
    async with started(store) as limiter:
        await limiter.admit_bytes(tenant, 1000)  # a full lease lets it through: 800 bytes of debt
        with pytest.raises(TooManyRequests):
            await limiter.admit_bytes(tenant, 1)  # the exchange it waited for charged the debt
    assert [r.returned for call in store.calls for r in call][:2] == [0.0, pytest.approx(-800.0)]
    assert store.buckets[("big", BYTES)].tokens < -500  # paid back at 100 bytes/s, for everyone


async def test_several_replicas_share_one_bucket() -> None:
    """Three replicas hammering one tenant for ~1 s are admitted no more than the burst plus
    the rate times the window (the leases start empty), and about that much."""
    store = FakeStore(replicas=3)
    rate = 200.0
    tenant = Tenant("shared", requests_per_s=rate)  # burst 400
    limiters = [SharedLimiter(store, f"r{i}", None, None, interval_s=0.02) for i in range(3)]
    admitted = refused = 0

    async def client(limiter: SharedLimiter, until: float) -> None:
        nonlocal admitted, refused
        while time.monotonic() < until:
            try:
                await limiter.admit_request(tenant)
                admitted += 1
            except TooManyRequests:
                refused += 1
            await asyncio.sleep(0)

    for limiter in limiters:
        await limiter.start()
    began = time.monotonic()
    try:
        await asyncio.gather(*(client(limiter, began + 1.0) for limiter in limiters for _ in range(4)))
    finally:
        window = time.monotonic() - began
        for limiter in limiters:
            await limiter.stop()
    assert refused > 0
    assert admitted <= store.granted
    assert admitted <= 2 * rate + rate * window + 1e-6
    assert admitted >= 2 * rate  # at least the burst (a per-process bucket would give 3x the rate)


async def test_without_the_database_each_replica_takes_its_share_of_the_rate() -> None:
    store = FakeStore(replicas=4)
    tenant = Tenant("acme", requests_per_s=40.0)  # burst 80
    async with started(store) as limiter:
        await limiter.admit_request(Tenant("other", requests_per_s=40.0))  # learns: 4 replicas
        store.failing = True
        admitted = 0
        for _ in range(100):
            try:
                await limiter.admit_request(tenant)
                admitted += 1
            except TooManyRequests:
                pass
        assert 20 <= admitted <= 21  # a burst of 80 / 4 replicas (+ what 10/s refills), not 80
        store.failing = False
        await limiter.exchange()  # the database is back: shared leases again
        await limiter.admit_request(tenant)


async def test_an_idle_lease_is_given_back() -> None:
    store = FakeStore()
    tenant = Tenant("acme", requests_per_s=10.0)
    async with started(store, idle_s=0.0, interval_s=0.05) as limiter:
        await limiter.admit_request(tenant)
        deadline = time.monotonic() + 10
        while not any(r.wanted == 0 and r.returned > 0 for call in store.calls for r in call):
            assert time.monotonic() < deadline, store.calls
            await asyncio.sleep(0.05)
    bucket = store.buckets[("acme", REQUESTS)]
    assert bucket.tokens == pytest.approx(20.0 - 1.0, abs=1.0)  # all but the request spent


async def test_stop_gives_the_leases_back() -> None:
    store = FakeStore()
    async with started(store) as limiter:
        await limiter.admit_request(Tenant("acme", requests_per_s=10.0))
    assert store.calls[-1][0].returned > 0
    assert store.closed
