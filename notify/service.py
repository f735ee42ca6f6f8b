"""The notifier's I/O edge: ``session.signals`` in, signed webhook POSTs out.

The delivery contract: a batch of signal messages is recorded in the delivery log (one
``pending`` row per signal and matching webhook, :meth:`notify.store.DeliveryStore.record`)
in one transaction, and only then are its Kafka offsets committed. A crash before the commit
re-delivers the batch, and recording it again adds nothing (key ``(webhook_id, signal_id)``);
after the commit, the rows are the truth: the delivery loop takes due rows from the database
(new ones, retries whose back-off ended, rows a dead notifier had claimed), so a restart
resumes every pending retry. A webhook is POSTed a signal until one attempt succeeds, at most
``notify_max_attempts`` times; a delivered row is never attempted again. (A notifier killed
between a successful POST and recording it repeats that POST once its claim's lease ends:
receivers can drop repeats by ``X-Tokentide-Delivery``.)

Kafka (consumption) and HTTP (delivery) run as two tasks, so a slow endpoint never holds the
consumer back; while the database is unavailable the consumer keeps its batch, pauses its
partitions (still polling, so it keeps its group membership) and retries with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import httpx
import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Histogram
from psycopg_pool import PoolTimeout

from notify.budgets import evaluate_all
from notify.core import Backoff, Outcome, Status, delivery_headers, encode_body, outcome
from notify.store import Claimed, DeliveryStore
from tokentide.records import DecodeError, SessionSignal, SignalBatch
from tokentide.settings import NotifySettings

log = logging.getLogger(__name__)

#: What "the database is unavailable" looks like: retry later, never a reason to stop. An
#: undefined table is a database not migrated yet (``tokentide migrate`` runs beside us).
DATABASE_ERRORS = (psycopg.OperationalError, PoolTimeout, psycopg.errors.UndefinedTable)


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.signals = Counter(
            "tokentide_notify_signals", "Signals consumed from session.signals.", registry=registry
        )
        self.recorded = Counter(
            "tokentide_notify_deliveries_recorded",
            "Deliveries recorded (one per signal and matching webhook; redelivered signals excluded).",
            registry=registry,
        )
        self.deliveries = Counter(
            "tokentide_notify_deliveries",
            "Delivery attempts by the status they left: delivered, failed (a retry is due later) "
            "or dead (attempts exhausted or refused for good).",
            ["status"],
            registry=registry,
        )
        self.attempts = Counter(
            "tokentide_notify_attempts",
            "Webhook POSTs, by result: the HTTP status class (2xx, 3xx, 4xx, 5xx) or error (no answer).",
            ["result"],
            registry=registry,
        )
        self.latency = Histogram(
            "tokentide_notify_attempt_seconds",
            "Time of one webhook POST, until its answer or its failure.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.undecodable = Counter(
            "tokentide_notify_undecodable_messages",
            "session.signals messages skipped as undecodable.",
            registry=registry,
        )
        self.rejected = Counter(
            "tokentide_notify_rejected_signals",
            "Signals the database refused to record (logged with the reason; never delivered).",
            registry=registry,
        )
        self.database_retries = Counter(
            "tokentide_notify_database_retries",
            "Database operations retried because the database was unavailable.",
            registry=registry,
        )
        self.budget_signals = Counter(
            "tokentide_notify_budget_signals",
            "Budget signals raised (budget_warning, budget_exceeded; once per budget and period).",
            registry=registry,
        )
        self.budget_rounds = Counter(
            "tokentide_notify_budget_rounds",
            "Budget evaluation rounds, by result: ok or error (a database error; logged).",
            ["result"],
            registry=registry,
        )
        for status in (Status.DELIVERED, Status.FAILED, Status.DEAD):
            self.deliveries.labels(status)


def decode(records: Iterable[ConsumerRecord[bytes, bytes]], metrics: NotifyMetrics) -> list[SessionSignal]:
    signals: list[SessionSignal] = []
    for record in records:
        try:
            signals.extend(SignalBatch.from_bytes(record.value or b"").signals)
        except DecodeError:
            metrics.undecodable.inc()
            log.warning("undecodable %s@%d:%d skipped", record.topic, record.partition, record.offset)
    return signals


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s stopped: %r", task.get_name(), exc, exc_info=exc)


class Notifier:
    """Consumes ``session.signals`` (group ``notify_group_id``) and delivers to webhooks."""

    def __init__(
        self,
        settings: NotifySettings,
        metrics: NotifyMetrics,
        store: DeliveryStore | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._store = store or DeliveryStore(
            settings.database_url.get_secret_value(), max_size=max(2, min(settings.notify_concurrency, 8))
        )
        self._backoff = Backoff(
            max_attempts=settings.notify_max_attempts,
            base_s=settings.notify_backoff_base_s,
            factor=settings.notify_backoff_factor,
            max_s=settings.notify_backoff_max_s,
        )
        #: A claimed delivery is due again after this, should its notifier die mid-attempt.
        self._lease_s = settings.notify_timeout_s * 2 + 30
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._client: httpx.AsyncClient | None = None
        self.kafka_ready = False
        self._committed: dict[TopicPartition, int] = {}

    @property
    def store(self) -> DeliveryStore:
        return self._store

    async def start(self) -> None:
        await self._store.open()
        self._client = httpx.AsyncClient(
            timeout=self._settings.notify_timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self._settings.notify_concurrency),
        )
        self._tasks = [
            asyncio.create_task(self._consume(), name="notify-consume"),
            asyncio.create_task(self._deliver_forever(), name="notify-deliver"),
            asyncio.create_task(self._budgets_forever(), name="notify-budgets"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_failure)

    @property
    def alive(self) -> bool:
        """False once a loop has died (an unexpected error, logged): /healthz then answers 503."""
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    async def stop(self) -> None:
        """Stop consuming and delivering (attempts in flight are abandoned; their rows are due
        again after the lease); safe to call twice."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        self.kafka_ready = False
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        await self._store.close()

    # --- Kafka -> the delivery log ------------------------------------------------------------

    async def _connect(self) -> AIOKafkaConsumer:
        settings = self._settings
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                settings.topics.session_signals,
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.notify_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # The stream stage writes signals in Kafka transactions: an aborted one's
                # signals must never become webhooks.
                isolation_level="read_committed",
                max_partition_fetch_bytes=settings.kafka_max_message_bytes,
            )
            try:
                await consumer.start()
            except asyncio.CancelledError:
                await consumer.stop()
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                await consumer.stop()
                log.warning("Kafka not reachable (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info(
                "notify consuming %s as group %s", settings.topics.session_signals, settings.notify_group_id
            )
            return consumer

    async def _consume(self) -> None:
        self._consumer = consumer = await self._connect()
        self.kafka_ready = True
        while True:
            fetched = await consumer.getmany(
                timeout_ms=500, max_records=self._settings.notify_batch_max_messages
            )
            recorded = 0
            if fetched:
                signals = decode((r for rs in fetched.values() for r in rs), self._metrics)
                self._metrics.signals.inc(len(signals))
                recorded = await self._record_until_done(consumer, signals)
                self._metrics.recorded.inc(recorded)
            # The consumer's position, not the last record + 1: it also steps over the markers
            # that end the stream stage's transactions (read_committed), so the group's lag
            # reaches 0. Everything below it was recorded above.
            await self._commit_positions(consumer)
            if recorded:
                self._wake.set()

    async def _record_until_done(self, consumer: AIOKafkaConsumer, signals: list[SessionSignal]) -> int:
        delay = 0.2
        paused = False
        while True:
            try:
                recorded = await self._record(signals)
            except DATABASE_ERRORS as exc:
                self._metrics.database_retries.inc()
                if not paused:
                    log.warning("database unavailable (%s): consumption paused, retrying", exc)
                    paused = True
                await self._wait_paused(consumer, delay)
                delay = min(delay * 2, 30.0)
                continue
            if paused:
                consumer.resume(*consumer.paused())
                log.info("database available again: consumption resumed")
            return recorded

    async def _record(self, signals: list[SessionSignal]) -> int:
        """Record the batch; if the database refuses it for a reason other than being
        unavailable (a value it cannot store), record the signals one by one and count (and
        log) those it refuses, so that one bad signal does not hold back the rest."""
        try:
            return await self._store.record(signals)
        except DATABASE_ERRORS:
            raise
        except psycopg.Error:
            if len(signals) == 1:
                raise
        recorded = 0
        for signal in signals:
            try:
                recorded += await self._store.record([signal])
            except DATABASE_ERRORS:
                raise
            except psycopg.Error as exc:
                self._metrics.rejected.inc()
                log.error("signal %s of tenant %r not recorded: %s", signal.signal_id, signal.tenant, exc)
        return recorded

    @staticmethod
    async def _wait_paused(consumer: AIOKafkaConsumer, seconds: float) -> None:
        """Wait with every assigned partition paused, polling so the group keeps this member."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            consumer.pause(*consumer.assignment())
            fetched = await consumer.getmany(timeout_ms=max(int(left * 1000), 1))
            for tp, records in fetched.items():
                if records:  # assigned by a rebalance after the pause: take them later
                    consumer.seek(tp, records[0].offset)
                    consumer.pause(tp)

    async def _commit_positions(self, consumer: AIOKafkaConsumer) -> None:
        positions = {}
        for tp in consumer.assignment():
            position = await consumer.position(tp)
            if self._committed.get(tp) != position:
                positions[tp] = position
        if positions and await self._commit(consumer, positions):
            self._committed.update(positions)

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # Rebalanced while recording: the new owner records the same signals again, a no-op.
            log.warning("offset commit refused after a rebalance: %s", exc)
            return False
        return True

    # --- the delivery log -> HTTP -------------------------------------------------------------

    async def _deliver_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                claimed = await self._store.claim(self._settings.notify_concurrency, self._lease_s)
            except DATABASE_ERRORS as exc:
                self._metrics.database_retries.inc()
                log.warning("cannot claim deliveries, database unavailable: %s", exc)
                await asyncio.sleep(self._settings.notify_poll_s)
                continue
            if claimed:
                results = await asyncio.gather(*(self._attempt(c) for c in claimed), return_exceptions=True)
                for claim, result in zip(claimed, results, strict=True):
                    if isinstance(result, Exception):  # its row is due again after the lease
                        log.error("attempt on %s failed unexpectedly: %r", claim.delivery_id, result)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.notify_poll_s)

    async def _attempt(self, claimed: Claimed) -> None:
        client = self._client
        if client is None:  # pragma: no cover - start() creates it before the loop runs
            return
        body = encode_body(claimed.payload)
        headers = delivery_headers(claimed.secret, body, time.time(), claimed.delivery_id)
        started = time.perf_counter()
        http_status: int | None = None
        error: str | None = None
        try:
            response = await client.post(claimed.url, content=body, headers=headers)
            http_status = response.status_code
            if not 200 <= http_status < 300:
                error = f"HTTP {http_status}: {response.text[:200]}"
            self._metrics.attempts.labels(f"{http_status // 100}xx").inc()
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            self._metrics.attempts.labels("error").inc()
        self._metrics.latency.observe(time.perf_counter() - started)
        result = outcome(claimed.attempt, http_status, self._backoff)
        await self._settle(claimed, result, http_status, error)
        self._metrics.deliveries.labels(result.status).inc()
        if result.status == Status.DEAD:
            log.warning(
                "webhook %s: delivery of signal %s dead after %d attempt(s): %s",
                claimed.webhook_id,
                claimed.signal_id,
                claimed.attempt,
                error,
            )

    async def _settle(
        self, claimed: Claimed, result: Outcome, http_status: int | None, error: str | None
    ) -> None:
        """Record the attempt; while the database is unavailable, retry until the claim's lease
        is nearly over (past it, the row is due again and the attempt is simply repeated)."""
        deadline = time.monotonic() + self._lease_s - 5
        delay = 0.2
        while True:
            try:
                await self._store.settle(claimed, result, http_status, error)
            except DATABASE_ERRORS as exc:
                self._metrics.database_retries.inc()
                if time.monotonic() + delay > deadline:
                    log.warning("could not record the attempt on %s: %s", claimed.delivery_id, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            return

    # --- budgets -> the delivery log (issue 17, notify.budgets) ------------------------------

    async def _budgets_forever(self) -> None:
        """Evaluate every budget each ``notify_budget_interval_s``; a database error (unavailable,
        or a statement refused) skips a round (logged, counted), never stops the loop."""
        while True:
            try:
                raised, recorded, failed = await evaluate_all(self._store.pool, self._settings.team_attribute)
            except DATABASE_ERRORS as exc:
                self._metrics.budget_rounds.labels("error").inc()
                log.warning("budget evaluation skipped, database unavailable: %s", exc)
            except psycopg.Error as exc:  # a refused statement: the round is lost, not the loop
                self._metrics.budget_rounds.labels("error").inc()
                log.error("budget evaluation failed: %s", exc)
            except Exception:  # a bug must not switch budgets off for good, silently
                self._metrics.budget_rounds.labels("error").inc()
                log.exception("budget evaluation failed")
            else:
                self._metrics.budget_rounds.labels("partial" if failed else "ok").inc()
                self._metrics.budget_signals.inc(raised)
                self._metrics.recorded.inc(recorded)
                if recorded:
                    self._wake.set()
            await asyncio.sleep(self._settings.notify_budget_interval_s)
