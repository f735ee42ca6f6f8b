"""Everything an ingest process shares between its transports (HTTP and gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
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
from ingest.workers import SHARED_BUCKETS_ENV, Readiness
from tokentide.settings import IngestSettings

#: How often a worker's in-flight gauge is sampled.
INFLIGHT_SAMPLE_S = 0.5


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
        await self.authenticator.start()
        await self.limiter.start()
        await self.publisher.start()
        if _multiprocess():
            self._sampler = asyncio.create_task(self._sample_inflight(), name="inflight-gauge")

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
