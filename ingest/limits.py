"""Admission control: per-tenant token buckets and a process-wide in-flight byte budget.

Pure apart from reading the clock (injectable). Exceeding a tenant's rate is 429 with the
time until enough tokens are back; exceeding the in-flight budget is 503: the process is
protecting its memory, and another replica (or this one, a moment later) can take the data.

Two :class:`Limiter` implementations: :class:`LocalLimiter` (buckets of this machine only: open
mode; with several worker processes their buckets live in shared memory,
:class:`SharedTokenBuckets`) and :class:`ingest.leases.SharedLimiter` (one bucket per tenant for
every replica, leased through PostgreSQL: closed mode).
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ingest.errors import TooManyRequests, Unavailable
from tokentide.tenancy import Tenant

Clock = Callable[[], float]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float | None = None  # None: never used, the bucket starts full

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens; 0.0 if granted, else the seconds until they would be.

        A request larger than the burst passes once the bucket is full and leaves it in
        debt (negative), which later requests wait out: big requests are slowed, not starved.
        """
        if self.updated is None:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(amount, self.burst)
        if needed <= self.tokens:
            self.tokens -= amount
            return 0.0
        return (needed - self.tokens) / self.rate if self.rate > 0 else math.inf


class TenantLimiter:
    """Requests/s and bytes/s per tenant; a tenant's own limits override the defaults.

    ``None`` (or 0) as a rate disables that limit. Bursts allow ``burst_s`` seconds' worth.
    """

    def __init__(
        self,
        requests_per_s: float | None,
        bytes_per_s: float | None,
        burst_s: float = 2.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._defaults = (requests_per_s, bytes_per_s)
        self._burst_s = burst_s
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _bucket(self, tenant: str, kind: str, rate: float | None) -> TokenBucket | None:
        if not rate:
            return None
        bucket = self._buckets.get((tenant, kind))
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[(tenant, kind)] = TokenBucket(rate, max(1.0, rate * self._burst_s))
        return bucket

    def admit_request(self, tenant: Tenant) -> None:
        rate = tenant.requests_per_s if tenant.requests_per_s is not None else self._defaults[0]
        self._take(tenant.name, "requests", rate, 1.0, "requests")

    def admit_bytes(self, tenant: Tenant, size: int) -> None:
        rate = tenant.bytes_per_s if tenant.bytes_per_s is not None else self._defaults[1]
        self._take(tenant.name, "bytes", rate, float(size), "bytes")

    def _take(self, tenant: str, kind: str, rate: float | None, amount: float, unit: str) -> None:
        if not rate:
            return
        wait = self._wait(tenant, kind, rate, amount)
        if wait > 0:
            raise TooManyRequests(
                f"tenant {tenant!r} is over its rate of {rate:g} {unit}/s",
                retry_after=max(1, math.ceil(min(wait, 3600.0))),
            )

    def _wait(self, tenant: str, kind: str, rate: float, amount: float) -> float:
        bucket = self._bucket(tenant, kind, rate)
        return 0.0 if bucket is None else bucket.take(amount, self._clock())


class SharedTokenBuckets(TenantLimiter):
    """:class:`TenantLimiter` whose buckets several processes of one machine share: the
    worker processes of one open-mode ingest (open mode has one tenant, so one bucket per kind).

    The buckets live in a small file mapped into every process, each take done under an
    exclusive ``flock`` of that file: the kernel releases the lock of a process that dies
    holding it, so a killed worker cannot wedge the others. ``time.monotonic`` is the same
    clock in every process of the machine.
    """

    _SLOT = struct.Struct("ddd")  # tokens, updated (0: never used), rate it was made for
    _KINDS = ("requests", "bytes")

    def __init__(
        self,
        path: str,
        requests_per_s: float | None,
        bytes_per_s: float | None,
        burst_s: float = 2.0,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(requests_per_s, bytes_per_s, burst_s, clock)
        size = self._SLOT.size * len(self._KINDS)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    def _wait(self, tenant: str, kind: str, rate: float, amount: float) -> float:
        offset = self._SLOT.size * self._KINDS.index(kind)
        burst = max(1.0, rate * self._burst_s)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            tokens, updated, made_for = self._SLOT.unpack_from(self._map, offset)
            bucket = TokenBucket(rate, burst)
            if updated and made_for == rate:
                bucket.tokens, bucket.updated = tokens, updated
            wait = bucket.take(amount, self._clock())
            self._SLOT.pack_into(self._map, offset, bucket.tokens, bucket.updated or 0.0, rate)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return wait


class Limiter(Protocol):
    """Per-tenant requests/s and bytes/s; each ``admit_*`` raises ``TooManyRequests`` (429)."""

    async def admit_request(self, tenant: Tenant) -> None: ...

    async def admit_bytes(self, tenant: Tenant, size: int) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Safe to call twice."""


class LocalLimiter:
    """:class:`TenantLimiter` behind the :class:`Limiter` interface: this process's own buckets."""

    def __init__(self, limiter: TenantLimiter) -> None:
        self._limiter = limiter

    async def admit_request(self, tenant: Tenant) -> None:
        self._limiter.admit_request(tenant)

    async def admit_bytes(self, tenant: Tenant, size: int) -> None:
        self._limiter.admit_bytes(tenant, size)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class InflightBudget:
    """Bytes held by requests in progress, capped process-wide (with several worker processes,
    each has its share: :mod:`ingest.workers`)."""

    def __init__(self, max_bytes: int, retry_after_s: int) -> None:
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self.used = 0

    def acquire(self, size: int) -> None:
        """Reserve ``size`` bytes or raise 503; every successful call needs a :meth:`release`."""
        if self.used + size > self.max_bytes:
            raise Unavailable("ingest is at its in-flight memory limit; retry shortly", self.retry_after_s)
        self.used += size

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)
