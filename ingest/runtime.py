"""Everything an ingest process shares between its transports (HTTP and gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from ingest.auth import Authenticator, KeyStore, OpenModeAuthenticator
from ingest.lease_store import PostgresLeaseStore
from ingest.leases import SharedLimiter
from ingest.limits import InflightBudget, Limiter, LocalLimiter, SharedTokenBuckets, TenantLimiter
from ingest.metrics import IngestMetrics
from ingest.producer import RawPublisher
from ingest.redact import Redactor
from ingest.service import Ingestor
from ingest.workers import KILL_AFTER_S, SHARED_BUCKETS_ENV, Readiness
from tokentide.settings import IngestSettings

log = logging.getLogger("tokentide.ingest.runtime")

#: How often a worker's in-flight gauge is sampled.
INFLIGHT_SAMPLE_S = 0.5
#: A worker started while another one serves (one replacing a worker that died) waits at most
#: this long to be ready before it listens (:meth:`Runtime.start`), and at most the shutdown
#: grace plus half the supervisor's extra time: a SIGTERM meanwhile takes effect only once it
#: listens, and the supervisor kills a worker still there ``KILL_AFTER_S`` past the grace.
REPLACEMENT_READY_WAIT_S = 30.0
_BEFORE_KILL_S = KILL_AFTER_S / 2
_READY_POLL_S = 0.02


@dataclass
class Runtime:
    settings: IngestSettings
    metrics: IngestMetrics
    publisher: RawPublisher
    authenticator: Authenticator
    limiter: Limiter
    budget: InflightBudget
    ingestor: Ingestor
    _sampler: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(
        cls,
        settings: IngestSettings,
        registry: CollectorRegistry | None = None,
        authenticator: Authenticator | None = None,
    ) -> Runtime:
        metrics = IngestMetrics(registry if registry is not None else CollectorRegistry())
        publisher = RawPublisher(settings, metrics)
        if authenticator is None:
            authenticator = _authenticator(settings)
        budget = InflightBudget(settings.max_inflight_bytes, settings.retry_after_s)
        if not _multiprocess():  # read at scrape time; with several workers, sampled (start)
            metrics.inflight_bytes.set_function(lambda: budget.used)
        redactor = Redactor(settings.redaction_key.get_secret_value().encode())
        return cls(
            settings=settings,
            metrics=metrics,
            publisher=publisher,
            authenticator=authenticator,
            limiter=_limiter(settings, metrics),
            budget=budget,
            ingestor=Ingestor(settings.topics, publisher, redactor, metrics),
        )

    @property
    def ready(self) -> bool:
        return self.publisher.ready and self.authenticator.ready

    async def start(self) -> None:
        """Start everything; returns before Kafka is connected, except in a replacement worker.

        The servers listen once this returns. A worker started while another worker is ready
        (it replaces one that died) first waits until it is ready itself, up to
        :data:`REPLACEMENT_READY_WAIT_S` (less with a short shutdown grace): a worker listening
        while its producer still connects answers 503 to its share of the connections, which
        the worker already serving would have taken. At the first start no worker serves yet:
        each listens at once (``/readyz`` keeps traffic away until all are ready), and so does
        a single process, whose ``/healthz`` must answer while Kafka is down.
        """
        await self.authenticator.start()
        await self.limiter.start()
        await self.publisher.start()
        if _multiprocess():
            if Readiness.configured() and Readiness().others_ready():
                await self._wait_ready(
                    min(REPLACEMENT_READY_WAIT_S, self.settings.shutdown_grace_s + _BEFORE_KILL_S)
                )
            self._sampler = asyncio.create_task(self._sample_inflight(), name="inflight-gauge")

    async def _wait_ready(self, timeout_s: float) -> None:
        log.info("ingest worker (pid %d) waits until it is ready before it listens", os.getpid())
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.ready:
            if asyncio.get_running_loop().time() >= deadline:
                log.warning(
                    "ingest worker (pid %d) not ready after %.0f s (Kafka %s, keys %s): listening anyway",
                    os.getpid(),
                    timeout_s,
                    "connected" if self.publisher.ready else "not connected",
                    "loaded" if self.authenticator.ready else "not loaded",
                )
                return
            await asyncio.sleep(_READY_POLL_S)

    async def _sample_inflight(self) -> None:
        """One of several workers, twice a second: its in-flight gauge (another worker may
        answer the scrape, so no callback at scrape time, and setting it per request costs
        a shared-memory write each time, 2% of a worker's CPU) and its readiness."""
        readiness = Readiness() if Readiness.configured() else None
        while True:
            self.metrics.inflight_bytes.set(self.budget.used)
            if readiness is not None:
                readiness.report(self.ready)
            await asyncio.sleep(INFLIGHT_SAMPLE_S)

    @property
    def all_ready(self) -> bool:
        """Ready, and so is every other worker of this ingest (ingest/workers.py)."""
        if not self.ready:
            return False
        return Readiness().all_ready() if _multiprocess() and Readiness.configured() else True

    async def stop(self) -> None:
        """Flush what Kafka still holds and release everything; safe to call twice."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await self.publisher.stop()
        await self.limiter.stop()
        await self.authenticator.stop()


def _multiprocess() -> bool:
    """One of several worker processes: prometheus_client's multiprocess mode (ingest/workers.py)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def _authenticator(settings: IngestSettings) -> Authenticator:
    if settings.open_mode:
        return OpenModeAuthenticator(settings.redaction)
    return KeyStore(
        settings.database_url.get_secret_value(),
        refresh_s=settings.key_refresh_s,
        default_redaction=settings.redaction,
    )


def _limiter(settings: IngestSettings, metrics: IngestMetrics) -> Limiter:
    """Open mode: this process's buckets. Otherwise one bucket per tenant for every replica."""
    if settings.open_mode:
        shared = os.environ.get(SHARED_BUCKETS_ENV)
        if shared:  # one of several worker processes: the machine's buckets
            return LocalLimiter(SharedTokenBuckets(shared, settings.requests_per_s, settings.bytes_per_s))
        return LocalLimiter(TenantLimiter(settings.requests_per_s, settings.bytes_per_s))
    return SharedLimiter(
        PostgresLeaseStore(settings.database_url.get_secret_value()),
        replica=f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}",
        requests_per_s=settings.requests_per_s,
        bytes_per_s=settings.bytes_per_s,
        interval_s=settings.limit_exchange_s,
        metrics=metrics,
    )
