"""Per-tenant rate limits shared by every ingest replica: leases of one bucket per tenant.

The deployment has one token bucket per tenant and kind (requests/s, bytes/s), in PostgreSQL
(migration 0013, ``tokentide_rate_exchange``). A replica never asks it per request. It holds a
*lease* per (tenant, kind) it serves: an allowance of tokens in memory that requests spend with
no I/O. A background task *exchanges* every ``interval_s`` (one database call for all of the
replica's leases): each lease gives back what it holds beyond its need and is topped up to it
from the bucket, never beyond what the bucket holds. A lease's need (its *target*) is twice what
it was asked for during the last interval, at least one interval at the tenant's full rate, at
most the burst.

What holds, whatever the number of replicas: every token spent was granted from the one bucket,
so over any window of T seconds a tenant is admitted at most ``burst + rate * T`` plus the
leases the replicas held when the window began (at most one target each; none for a tenant
idle for ``idle_s``, whose leases are given back). Requests larger than the burst still pass
once (a full lease lets them through) and leave a debt, charged to the shared bucket at the
next exchange, as the per-process :class:`ingest.limits.TokenBucket` did.

What a request pays: a dictionary lookup and a comparison. It waits for an exchange in two
cases only, and then for the next one, shared by every request waiting (coalesced, at most one
per 50 ms, bounded by ``wait_s``): its tenant has no lease on this replica yet (the first
request after ``idle_s`` of silence), or the lease ran out while the bucket had tokens to spare
at the last exchange (demand grew faster than the lease). A lease that ran out while the bucket
was short means the tenant is at its rate everywhere: 429 at once.

Database unreachable (an exchange failed): leases already granted are spent, and past them
each replica limits on its own at ``rate / replicas`` (the replicas the last exchange saw, 1 if
none ever succeeded), so ingest keeps taking data (Kafka, not PostgreSQL, is its dependency) and
the overall rate stays about the configured one. The exchange is retried every interval; the
first success ends it. A request whose exchange is merely slow (over ``wait_s``) is refused
with 429, retried by the exporter: never admitted on a guess while the database still answers.

Pure apart from asyncio and the injectable clock: the database sits behind :class:`LeaseStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.errors import TooManyRequests
from ingest.limits import Clock, TokenBucket
from tokentide.tenancy import Tenant

log = logging.getLogger(__name__)

REQUESTS = "requests"
BYTES = "bytes"
#: Below this, a grant short of what was asked counts as the full amount (float noise).
_EPSILON = 1e-9
#: Longest an exchange may take before it counts as failed (the database is then unreachable).
_EXCHANGE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """One bucket's part of an exchange: give back ``returned`` (negative: a debt), take up to
    ``wanted``. ``rate`` and ``burst`` are the tenant's policy as this replica knows it."""

    tenant: str
    kind: str
    rate: float
    burst: float
    returned: float
    wanted: float


@dataclass(frozen=True, slots=True)
class Grant:
    granted: float
    #: What the shared bucket holds after this grant (negative while a debt is paid back).
    remaining: float


@dataclass(frozen=True, slots=True)
class Exchanged:
    grants: dict[tuple[str, str], Grant]
    #: Replicas that exchanged in the last few seconds, this one included.
    replicas: int


class LeaseStoreUnavailable(Exception):
    """The shared buckets cannot be reached now (nothing was applied); retried next interval."""

    retriable = True


class LeaseStore(Protocol):
    """The shared buckets (``ingest.lease_store.PostgresLeaseStore``; a fake in unit tests)."""

    async def exchange(self, replica: str, requests: Sequence[LeaseRequest]) -> Exchanged:
        """Apply every request atomically, or raise ``LeaseStoreUnavailable`` having applied none."""
        ...

    async def close(self) -> None:
        """Release the connection; safe to call twice."""


class LeaseMetrics(Protocol):
    def exchanged(self, seconds: float, ok: bool) -> None: ...

    def waited(self) -> None: ...

    def state(self, degraded: bool, replicas: int, leases: int) -> None: ...


class _NoMetrics:
    def exchanged(self, seconds: float, ok: bool) -> None:
        return None

    def waited(self) -> None:
        return None

    def state(self, degraded: bool, replicas: int, leases: int) -> None:
        return None


@dataclass(slots=True)
class _Lease:
    """What this replica holds of one tenant's bucket of one kind."""

    rate: float
    burst: float
    used_at: float
    #: Tokens this replica may still spend; negative: a debt to report at the next exchange.
    allowance: float = 0.0
    #: Tokens asked for since the last exchange, granted or not.
    demand: float = 0.0
    #: An exchange has answered for this lease (until then requests wait for one).
    synced: bool = False
    #: The last exchange granted less than asked: the bucket was empty, the tenant at its rate.
    short: bool = False


#: Per lease key: the lease and what the exchange gives back and asks for on its behalf.
_Planned = dict[tuple[str, str], tuple[_Lease, LeaseRequest]]


class SharedLimiter:
    """Requests/s and bytes/s per tenant for all replicas together (module docstring).

    ``requests_per_s`` / ``bytes_per_s`` are the defaults for a tenant without its own; ``None``
    disables that limit. Bursts allow ``burst_s`` seconds' worth (at least one request).
    :meth:`start` and :meth:`stop` run the exchange task, in the app's lifespan.
    """

    def __init__(
        self,
        store: LeaseStore,
        replica: str,
        requests_per_s: float | None,
        bytes_per_s: float | None,
        *,
        interval_s: float = 0.25,
        burst_s: float = 2.0,
        idle_s: float = 5.0,
        wait_s: float = 1.0,
        clock: Clock = time.monotonic,
        metrics: LeaseMetrics | None = None,
    ) -> None:
        self._store = store
        self.replica = replica
        self._defaults = {REQUESTS: requests_per_s, BYTES: bytes_per_s}
        self._interval_s = interval_s
        self._min_gap_s = min(0.05, interval_s / 5)
        self._burst_s = burst_s
        self._idle_s = max(idle_s, interval_s * 2)
        self._wait_s = wait_s
        self._clock = clock
        self._metrics: LeaseMetrics = metrics or _NoMetrics()
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._fallback: dict[tuple[str, str], TokenBucket] = {}
        self._replicas = 1
        self._degraded = False
        self._round: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._last_exchange = -math.inf
        self._task: asyncio.Task[None] | None = None

    # --- the request path ---------------------------------------------------------------------

    async def admit_request(self, tenant: Tenant) -> None:
        """Admit one request of ``tenant`` or raise ``TooManyRequests`` (429, ``retry_after``)."""
        rate = tenant.requests_per_s if tenant.requests_per_s is not None else self._defaults[REQUESTS]
        await self._take(tenant.name, REQUESTS, rate, 1.0)

    async def admit_bytes(self, tenant: Tenant, size: int) -> None:
        """Admit ``size`` body bytes of ``tenant`` or raise ``TooManyRequests``."""
        rate = tenant.bytes_per_s if tenant.bytes_per_s is not None else self._defaults[BYTES]
        await self._take(tenant.name, BYTES, rate, float(size))

    async def _take(self, tenant: str, kind: str, rate: float | None, amount: float) -> None:
        if not rate:
            return
        key = (tenant, kind)
        lease = self._lease(key, rate)
        lease.demand += amount
        lease.used_at = self._clock()
        needed = min(amount, lease.burst)
        if lease.allowance >= needed:
            lease.allowance -= amount
            return
        if not self._degraded and (not lease.synced or not lease.short):
            # No lease yet, or the bucket had tokens to spare: ask for them now.
            self._metrics.waited()
            await self._next_exchange()
            lease = self._lease(key, rate)
            if lease.allowance >= needed:
                lease.allowance -= amount
                return
        if self._degraded:
            self._take_locally(key, rate, lease.burst, amount)
            return
        # Over the rate, or a database slower than wait_s (refused rather than guessed: retried).
        raise TooManyRequests(
            f"tenant {tenant!r} is over its rate of {rate:g} {kind}/s",
            retry_after=max(1, math.ceil(min(needed / rate, 3600.0))),
        )

    def _lease(self, key: tuple[str, str], rate: float) -> _Lease:
        burst = max(1.0, rate * self._burst_s)
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(rate, burst, used_at=self._clock())
        elif lease.rate != rate:  # the tenant's policy changed (keys reload every few s)
            lease.rate, lease.burst = rate, burst
        return lease

    def _take_locally(self, key: tuple[str, str], rate: float, burst: float, amount: float) -> None:
        """Without the database: this replica's share of the rate, ``rate / replicas``."""
        share = rate / self._replicas
        bucket = self._fallback.get(key)
        if bucket is None or bucket.rate != share:
            bucket = self._fallback[key] = TokenBucket(share, max(1.0, burst / self._replicas))
        wait = bucket.take(amount, self._clock())
        if wait > 0:
            raise TooManyRequests(
                f"tenant {key[0]!r} is over its rate of {rate:g} {key[1]}/s",
                retry_after=max(1, math.ceil(min(wait, 3600.0))),
            )

    async def _next_exchange(self) -> None:
        """Wait (at most ``wait_s``) for the next exchange to finish; wakes the task for it."""
        if self._task is None:
            return  # not started (or stopped): no exchange will come
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
        done = self._round
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), self._wait_s)

    # --- the exchange task --------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tokentide-rate-leases")

    async def stop(self) -> None:
        """Stop exchanging, give back what the leases hold (best effort), close the store."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        leases, self._leases = self._leases, {}
        returned = [
            LeaseRequest(tenant, kind, lease.rate, lease.burst, lease.allowance, 0.0)
            for (tenant, kind), lease in leases.items()
            if lease.synced and lease.allowance
        ]
        if returned and not self._degraded:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._wait_s):
                    await self._store.exchange(self.replica, returned)
        await self._store.close()

    async def _run(self) -> None:
        while True:
            delay = self._last_exchange + self._interval_s - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            gap = self._last_exchange + self._min_gap_s - self._clock()
            if gap > 0:
                await asyncio.sleep(gap)
            self._wake.clear()
            done, self._round = self._round, None
            try:
                await self.exchange()
            finally:
                if done is not None and not done.done():
                    done.set_result(None)

    async def exchange(self) -> None:
        """One exchange of every lease that needs one; never raises (failure: degraded)."""
        self._last_exchange = self._clock()
        planned = self._plan(self._last_exchange)
        if planned:
            requests = [request for _, request in planned.values()]
            started = time.perf_counter()
            try:
                async with asyncio.timeout(_EXCHANGE_TIMEOUT_S):  # the store bounds itself; a backstop
                    result = await self._store.exchange(self.replica, requests)
            except Exception as exc:  # noqa: BLE001 (any: limits go on without the database; logged)
                self._metrics.exchanged(time.perf_counter() - started, ok=False)
                self._failed(planned, exc)
            else:
                self._metrics.exchanged(time.perf_counter() - started, ok=True)
                self._applied(planned, result)
        self._metrics.state(self._degraded, self._replicas, len(self._leases))

    def _plan(self, now: float) -> _Planned:
        """What each lease gives back and asks for; what it gives back is taken out at once, so
        that requests during the call never spend it. Idle leases are given back and dropped."""
        planned: _Planned = {}
        for key, lease in list(self._leases.items()):
            demand, lease.demand = lease.demand, 0.0
            if now - lease.used_at > self._idle_s:
                del self._leases[key]
                if not (lease.synced and lease.allowance):
                    continue
                returned, want = lease.allowance, 0.0  # a debt included
            else:
                target = min(lease.burst, max(lease.rate * self._interval_s, 2 * demand))
                if lease.allowance < 0:
                    returned, want = lease.allowance, target
                elif lease.allowance > target:
                    returned, want = lease.allowance - target, 0.0
                else:
                    returned, want = 0.0, target - lease.allowance
                if lease.synced and returned == 0 and want <= _EPSILON:
                    continue
            lease.allowance -= returned
            planned[key] = (lease, LeaseRequest(key[0], key[1], lease.rate, lease.burst, returned, want))
        return planned

    def _applied(self, planned: _Planned, result: Exchanged) -> None:
        for key, (lease, request) in planned.items():
            grant = result.grants.get(key)
            granted = grant.granted if grant is not None else 0.0
            lease.allowance += granted
            lease.short = granted + _EPSILON < request.wanted
            lease.synced = True
        self._replicas = max(1, result.replicas)
        if self._degraded:
            log.info("rate-limit leases exchanged again (%d replicas)", self._replicas)
        self._degraded = False
        self._fallback.clear()

    def _failed(self, planned: _Planned, exc: Exception) -> None:
        for lease, request in planned.values():
            lease.allowance += request.returned  # nothing was applied
        if not self._degraded:
            log.warning(
                "cannot exchange rate-limit leases (%s); limiting locally at rate / %d replicas "
                "until the database answers",
                str(exc) or type(exc).__name__,
                self._replicas,
                exc_info=not isinstance(exc, (LeaseStoreUnavailable, TimeoutError)),  # a bug
            )
        self._degraded = True
