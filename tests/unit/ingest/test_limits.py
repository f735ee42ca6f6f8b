"""Token buckets per tenant and the in-flight byte budget (a fake clock: pure code)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.errors import TooManyRequests, Unavailable
from ingest.limits import InflightBudget, SharedTokenBuckets, TenantLimiter, TokenBucket
from ingest.workers import usable_cpus
from tokentide.tenancy import Tenant


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=4.0)
    assert [bucket.take(1, now=0.0) for _ in range(4)] == [0.0] * 4
    assert bucket.take(1, now=0.0) == pytest.approx(0.5)  # one token comes back in 1/rate s
    assert bucket.take(1, now=0.5) == 0.0
    assert bucket.take(2, now=0.5) == pytest.approx(1.0)


def test_bucket_never_exceeds_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    bucket.take(0, now=0.0)
    assert bucket.take(5, now=3600.0) == 0.0
    assert bucket.take(1, now=3600.0) > 0


def test_request_rate_is_per_tenant_with_retry_after() -> None:
    clock = Clock()
    limiter = TenantLimiter(requests_per_s=1.0, bytes_per_s=None, burst_s=2.0, clock=clock)
    a, b = Tenant("team-a"), Tenant("team-b")
    limiter.admit_request(a)
    limiter.admit_request(a)
    with pytest.raises(TooManyRequests) as info:
        limiter.admit_request(a)
    assert info.value.retry_after == 1
    assert info.value.status == 429
    limiter.admit_request(b)  # another tenant has its own bucket
    clock.now += 1.0
    limiter.admit_request(a)


def test_a_tenants_own_rate_wins_over_the_default() -> None:
    limiter = TenantLimiter(requests_per_s=1000.0, bytes_per_s=None, burst_s=1.0, clock=Clock())
    strict = Tenant("strict", requests_per_s=1.0)
    limiter.admit_request(strict)
    with pytest.raises(TooManyRequests):
        limiter.admit_request(strict)


def test_byte_rate_counts_bytes() -> None:
    limiter = TenantLimiter(requests_per_s=None, bytes_per_s=1000.0, burst_s=1.0, clock=Clock())
    tenant = Tenant("t")
    limiter.admit_bytes(tenant, 600)
    with pytest.raises(TooManyRequests) as info:
        limiter.admit_bytes(tenant, 600)
    assert info.value.retry_after == 1


def test_no_rate_means_no_limit() -> None:
    limiter = TenantLimiter(requests_per_s=None, bytes_per_s=None, clock=Clock())
    for _ in range(10_000):
        limiter.admit_request(Tenant("t"))
        limiter.admit_bytes(Tenant("t"), 10**9)


def test_a_request_bigger_than_the_burst_passes_once_then_is_paid_back() -> None:
    clock = Clock()
    limiter = TenantLimiter(requests_per_s=None, bytes_per_s=100.0, burst_s=1.0, clock=clock)
    tenant = Tenant("t")
    limiter.admit_bytes(tenant, 1000)  # a full bucket lets it through, ten seconds' worth of debt
    with pytest.raises(TooManyRequests) as info:
        limiter.admit_bytes(tenant, 1)
    assert info.value.retry_after == 10
    clock.now += 9.0
    with pytest.raises(TooManyRequests):
        limiter.admit_bytes(tenant, 1)
    clock.now += 1.0
    limiter.admit_bytes(tenant, 1)


def test_inflight_budget_refuses_past_its_cap_and_recovers() -> None:
    budget = InflightBudget(max_bytes=100, retry_after_s=3)
    budget.acquire(60)
    budget.acquire(40)
    with pytest.raises(Unavailable) as info:
        budget.acquire(1)
    assert info.value.retry_after == 3
    assert info.value.status == 503
    budget.release(40)
    budget.acquire(30)
    assert budget.used == 90
    budget.release(1000)
    assert budget.used == 0


def test_shared_buckets_are_one_bucket_for_every_process_mapping_the_file(tmp_path: Path) -> None:
    clock = Clock()
    path = str(tmp_path / "buckets")
    # Two workers' limiters on the same file (as two processes would map it).
    first = SharedTokenBuckets(path, requests_per_s=5.0, bytes_per_s=None, clock=clock)
    second = SharedTokenBuckets(path, requests_per_s=5.0, bytes_per_s=None, clock=clock)
    tenant = Tenant("default")
    for i in range(10):  # the burst: 2 s at 5/s, shared
        (first if i % 2 else second).admit_request(tenant)
    with pytest.raises(TooManyRequests):
        first.admit_request(tenant)
    with pytest.raises(TooManyRequests):
        second.admit_request(tenant)
    clock.now += 0.2  # one token back, for whichever asks first
    second.admit_request(tenant)
    with pytest.raises(TooManyRequests):
        first.admit_request(tenant)


def test_shared_buckets_start_anew_when_the_rate_changes(tmp_path: Path) -> None:
    clock = Clock()
    path = str(tmp_path / "buckets")
    SharedTokenBuckets(path, requests_per_s=1.0, bytes_per_s=None, clock=clock).admit_request(
        Tenant("default")
    )
    faster = SharedTokenBuckets(path, requests_per_s=100.0, bytes_per_s=None, clock=clock)
    for _ in range(200):
        faster.admit_request(Tenant("default"))


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
