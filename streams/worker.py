"""The stream stage's runtime: a consumer loop on aiokafka around :class:`Processor`.

Each raw message is applied exactly once, together with its outputs (decision 18):

- A *task* is one input partition number ``p``: partition ``p`` of every raw topic (ingest
  keys by session, so a session's logs and metrics share ``p``), its sessions' state, and
  partition ``p`` of the state changelog. The group's range assignor hands out both raw
  topics' partition ``p`` together.
- Per task, a transactional producer (id ``<app id>-<p>``). Per batch, a task's share is
  applied in memory, then *one* transaction carries the changed states and the task's next
  raw offsets to the changelog, the outputs (events, points, signals, rollup increments,
  session states, dead letters) to their topics, and the raw offsets to the consumer group
  (``send_offsets_to_transaction``). Consumers downstream read ``read_committed``: a worker
  killed anywhere leaves either all of a batch's effects or none of them.
- On assignment a task starts its producer first (which fences an earlier owner and aborts
  its open transaction), then restores its state from the changelog into the local store
  (:mod:`streams.store`, from where the local store stands), then seeks the raw partitions
  to the positions the changelog holds. Positions are the truth: a message below its
  partition's position is never applied again, whatever the consumer delivers.
- A record or message that cannot be counted is dead-lettered in the same transaction
  (``streams.dead-letters``) and the stage goes on. A failed transaction is aborted and the
  task restored again (its messages come again); a fenced task waits for the rebalance
  that gives its partitions to their new owner.

Nothing here touches a private attribute of aiokafka. The Kafka edge is three protocols
(:mod:`streams.kafka`), so the loop is unit-tested deterministically against fakes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced

from sinks.postgres.rows import with_rows
from streams.kafka import ChangelogReader, Consumer, TransactionalProducer, gather_sends
from streams.metrics import StreamsMetrics
from streams.normalise.base import Rejected
from streams.processor import ApplyFailed, Output, OutputMerger, Processor, header_map
from streams.state import StoredSession
from streams.store import POSITIONS_KEY, StateStore, decode_positions, encode_positions
from tokentide.records import encode
from tokentide.settings import StreamsSettings
from tokentide.topics import HEADER_SESSION, HEADER_SIGNAL, Signal, Topics, session_key

log = logging.getLogger(__name__)

#: The raw topics the stage consumes (traces are not consumed by the stream stage).
RAW_SIGNALS = (Signal.LOGS, Signal.METRICS)
#: Changelog records restored per local write.
RESTORE_CHUNK = 1000


class PausePoints:
    """Test only: stop (forever) at a named point of the N-th batch, so that a fault test can
    kill -9 the worker exactly there. ``spec`` is ``<point>`` or ``<point>:<N>``."""

    def __init__(self, spec: str | None, marker_dir: Path | None = None) -> None:
        point, _, nth = (spec or "").partition(":")
        self.point = point or None
        self.nth = int(nth) if nth else 1
        self.marker_dir = marker_dir
        self.reached: dict[str, int] = {}
        self.paused = asyncio.Event()

    async def reach(self, point: str) -> None:
        if self.point != point:
            return
        self.reached[point] = count = self.reached.get(point, 0) + 1
        if count != self.nth:
            return
        log.warning("test pause at %s (batch %d): waiting to be killed", point, count)
        if self.marker_dir is not None:
            self.marker_dir.mkdir(parents=True, exist_ok=True)
            (self.marker_dir / "paused-at").write_text(point)
        self.paused.set()
        await asyncio.Event().wait()


@dataclass
class Task:
    """One input partition number and everything the worker holds for it."""

    partition: int
    tps: tuple[TopicPartition, ...]
    store: StateStore | None = None
    producer: TransactionalProducer | None = None
    #: Raw topic -> next offset to apply (every offset below it is applied and committed).
    positions: dict[str, int] = field(default_factory=dict)
    #: Decoded committed states of recent sessions, least recently used first.
    cache: OrderedDict[bytes, StoredSession] = field(default_factory=OrderedDict)
    ready: bool = False
    fenced: bool = False
    #: When a failed restore or transaction may be retried (monotonic seconds).
    retry_at: float = 0.0
    failures: int = 0
    #: Per raw partition: when it last advanced or was caught up (monotonic seconds).
    progress_at: dict[TopicPartition, float] = field(default_factory=dict)


@dataclass
class _Batch:
    """One task's share of a batch, applied in memory, not yet committed."""

    task: Task
    dirty: dict[bytes, StoredSession] = field(default_factory=dict)
    merger: OutputMerger = field(default_factory=OutputMerger)
    letters: list[tuple[bytes | None, bytes, str, str]] = field(
        default_factory=list
    )  # key, value, topic, reason
    positions: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)  # per signal


class StreamsWorker:
    """The consumer loop. ``step`` is one round (restore what is pending, read, apply, commit);
    ``run`` repeats it until ``stop``. The rebalance listener methods are awaited by the
    consumer (aiokafka's ``ConsumerRebalanceListener`` protocol)."""

    def __init__(
        self,
        *,
        settings: StreamsSettings,
        processor: Processor,
        consumer: Consumer,
        producer_for: Callable[[int], TransactionalProducer],
        changelog: ChangelogReader,
        store_for: Callable[[int], StateStore],
        metrics: StreamsMetrics,
        pauses: PausePoints | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.consumer = consumer
        self.producer_for = producer_for
        self.changelog = changelog
        self.store_for = store_for
        self.metrics = metrics
        self.pauses = pauses or PausePoints(None)
        self.clock = clock
        topics = settings.topics
        self.topics: Topics = topics
        self.raw_topics = tuple(topics.raw(s) for s in RAW_SIGNALS)
        self.tasks: dict[int, Task] = {}
        self.joined = False
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ rebalance listener

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Called by the consumer before a rebalance: the batch in progress commits first
        (the lock), then the tasks of ``revoked`` are closed."""
        revoked = set(revoked)
        async with self._lock:
            for number in [n for n, t in self.tasks.items() if revoked.intersection(t.tps)]:
                await self._close(self.tasks.pop(number))
            self._update_task_gauges()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Called by the consumer after a rebalance: new tasks are created paused; ``step``
        restores them (producer, changelog, seek) before they are read."""
        assigned = set(assigned)
        async with self._lock:
            numbers = {tp.partition for tp in assigned if tp.topic in self.raw_topics}
            for number in sorted(numbers):
                if number in self.tasks:
                    continue
                tps = tuple(TopicPartition(topic, number) for topic in self.raw_topics)
                missing = [tp for tp in tps if tp not in assigned]
                if missing:
                    # The range assignor always assigns partition p of every raw topic together.
                    log.error("partition %d assigned without %s: not processed (assignor?)", number, missing)
                    continue
                self.tasks[number] = Task(number, tps)
            present = [tp for t in self.tasks.values() if not t.ready for tp in t.tps if tp in assigned]
            if present:
                self.consumer.pause(*present)
            self.joined = True
            self._update_task_gauges()
        log.info("assigned partitions %s", sorted(numbers))

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Repeat :meth:`step` until :meth:`stop`; an unexpected error ends the loop (and
        ``/readyz`` and ``/healthz`` say so)."""
        while not self._stopping.is_set():
            await self.step()

    def stop(self) -> None:
        self._stopping.set()

    async def step(self) -> None:
        await self._restore_pending()
        timeout_ms = max(1, int(self.settings.batch_linger_s * 1000))
        fetched = await self.consumer.getmany(
            timeout_ms=timeout_ms, max_records=self.settings.batch_max_messages
        )
        async with self._lock:
            by_task: dict[int, list[Any]] = {}
            for tp, records in fetched.items():
                task = self.tasks.get(tp.partition)
                if task is None or not task.ready or tp not in task.tps:
                    continue  # fetched before a revocation or before its restore: read again later
                by_task.setdefault(tp.partition, []).extend(records)
            if by_task:
                await asyncio.gather(
                    *(self._handle(self.tasks[n], records) for n, records in by_task.items())
                )
            self._observe_lag()

    async def close(self) -> None:
        """Close every task (producers stopped, stores closed); safe to call twice."""
        async with self._lock:
            for task in list(self.tasks.values()):
                await self._close(task)
            self.tasks.clear()
        await self.changelog.close()

    # ------------------------------------------------------------------ restore

    async def _restore_pending(self) -> None:
        now = self.clock()
        pending = [t for t in self.tasks.values() if not t.ready and not t.fenced and t.retry_at <= now]
        for task in pending:
            async with self._lock:
                if self.tasks.get(task.partition) is not task:
                    continue  # revoked meanwhile
                try:
                    await self._restore(task)
                except Exception as exc:  # noqa: BLE001 (Kafka or the local store: retried, never fatal)
                    task.failures += 1
                    task.retry_at = self.clock() + min(0.5 * 2**task.failures, 30.0)
                    log.warning(
                        "partition %d: restore failed (%s: %s), retrying",
                        task.partition,
                        type(exc).__name__,
                        exc,
                    )
                    await self._drop_producer(task)
                self._update_task_gauges()

    async def _restore(self, task: Task) -> None:
        started = time.monotonic()
        if task.producer is None:
            producer = self.producer_for(task.partition)
            await producer.start()  # fences the previous owner and aborts its open transaction
            task.producer = producer
        if task.store is None:
            task.store = self.store_for(task.partition)
        store = task.store
        first, end = await self.changelog.bounds(task.partition)
        start = store.changelog_next()
        if start > end or start < first:
            log.warning(
                "partition %d: local state at changelog offset %d, changelog holds %d..%d: rebuilt",
                task.partition,
                start,
                first,
                end,
            )
            store.wipe()
            start = first
        restored = 0
        chunk: dict[bytes, bytes | None] = {}
        async for offset, key, value in self.changelog.read(task.partition, start):
            chunk[key] = value
            restored += 1
            if len(chunk) >= RESTORE_CHUNK:
                store.write(chunk, offset + 1)
                chunk = {}
        store.write(chunk, max(end, start))
        self.metrics.restored.inc(restored)
        task.cache.clear()
        positions = decode_positions(store.get(POSITIONS_KEY))
        unseen = [tp for tp in task.tps if tp.topic not in positions]
        if unseen:  # never applied anything: from the oldest offset there is
            for tp, offset in (await self.consumer.beginning_offsets(unseen)).items():
                positions[tp.topic] = offset
        for tp in task.tps:
            self.consumer.seek(tp, positions[tp.topic])
            task.progress_at[tp] = self.clock()
        task.positions = positions
        self.consumer.resume(*task.tps)
        task.ready, task.failures = True, 0
        log.info(
            "partition %d ready: %d changelog records restored in %.2fs, positions %s",
            task.partition,
            restored,
            time.monotonic() - started,
            task.positions or "from the beginning",
        )

    # ------------------------------------------------------------------ apply and commit

    async def _handle(self, task: Task, records: list[Any]) -> None:
        started = time.monotonic()
        records = self._admitted(task, records)
        if not records:
            return
        poison: dict[tuple[str, int], str] = {}
        while True:
            batch = _Batch(task)
            try:
                for record in records:
                    self._apply(batch, record, poisoned=poison.get((record.topic, record.offset)))
                break
            except _Poisoned as exc:
                # States of this task may be half-changed in memory: forget them all and apply
                # the share again without the message (dead-lettered instead).
                poison[exc.at] = exc.reason
                task.cache.clear()
        await self._commit(task, batch)
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _admitted(self, task: Task, records: list[Any]) -> list[Any]:
        """The records not applied yet, in offset order per partition (the position guard)."""
        out = []
        positions = dict(task.positions)
        for record in sorted(records, key=lambda r: (r.topic, r.offset)):
            position = positions[record.topic]
            if record.offset < position:
                continue  # applied and committed before: a redelivery
            if record.offset > position:
                missing = record.offset - position
                self.metrics.skipped.labels(record.topic, str(record.partition)).inc(missing)
                log.error(
                    "%s[%d]: offsets %d..%d missing (deleted by retention before they were applied?)",
                    record.topic,
                    record.partition,
                    position,
                    record.offset - 1,
                )
            positions[record.topic] = record.offset + 1
            out.append(record)
        return out

    def _apply(self, batch: _Batch, record: Any, *, poisoned: str | None) -> None:
        """Apply one record; ``poisoned`` (the reason) dead-letters it instead."""
        task = batch.task
        headers = header_map(_headers(record.headers))
        signal = headers.get(HEADER_SIGNAL, "?")
        batch.positions[record.topic] = record.offset + 1
        if poisoned is not None:
            self._dead_letter_message(batch, record, headers, poisoned)
            return
        value = record.value or b""

        def get(key: bytes) -> StoredSession | None:
            return self._state(task, batch, key)

        def put(key: bytes, stored: StoredSession) -> None:
            batch.dirty[key] = stored

        try:
            processed = self.processor.process(headers=headers, value=value, get_state=get, put_state=put)
        except Exception as exc:
            # Whatever raised (applying, or anything the per-record guards did not catch, such
            # as a recursion error), states may be half-changed: redo the share without it.
            reason = "apply_error" if isinstance(exc, ApplyFailed) else "process_error"
            log.error("%s@%d: %s: %s: dead-lettered", record.topic, record.offset, type(exc).__name__, exc)
            raise _Poisoned((record.topic, record.offset), reason) from exc
        for out in processed.outputs:
            batch.merger.add(out)
        for rejected in processed.rejected:
            self._dead_letter(batch, record, processed.tenant, rejected)
        batch.messages[signal] = batch.messages.get(signal, 0) + 1

    def _state(self, task: Task, batch: _Batch, key: bytes) -> StoredSession | None:
        stored = batch.dirty.get(key)
        if stored is not None:
            return stored
        stored = task.cache.get(key)
        if stored is not None:
            task.cache.move_to_end(key)
            return stored
        if task.store is None:  # pragma: no cover - a ready task has its store
            raise RuntimeError(f"partition {task.partition} has no store")
        value = task.store.get(key)
        if value is None:
            return None
        stored = StoredSession.from_bytes(value)
        self._remember(task, key, stored)
        return stored

    def _remember(self, task: Task, key: bytes, stored: StoredSession) -> None:
        """Keep ``stored`` decoded; ``state_cache_sessions`` is shared by the worker's tasks."""
        if not self.settings.state_cache_sessions:
            return
        limit = max(1, self.settings.state_cache_sessions // max(1, len(self.tasks)))
        task.cache[key] = stored
        task.cache.move_to_end(key)
        while len(task.cache) > limit:
            task.cache.popitem(last=False)

    def _dead_letter(self, batch: _Batch, record: Any, tenant: str, rejected: Rejected) -> None:
        body = {
            "reason": rejected.reason,
            "error": rejected.error,
            "message": rejected.message,
            "kind": rejected.kind,
            "tenant": tenant,
            "session_id": rejected.session_id,
            "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset},
            "record": rejected.record,
            "resource": rejected.resource,
        }
        if rejected.kind == "message":
            body["value_base64"] = base64.b64encode(record.value or b"").decode()
        key = session_key(tenant, rejected.session_id).encode()
        batch.letters.append(
            (key, json.dumps(body, separators=(",", ":")).encode(), record.topic, rejected.reason)
        )

    def _dead_letter_message(self, batch: _Batch, record: Any, headers: dict[str, str], reason: str) -> None:
        tenant = headers.get("tt-tenant", "")
        rejected = Rejected(
            reason=reason,
            error="ApplyFailed" if reason == "apply_error" else "ProcessError",
            message="processing the message raised; see the worker's log",
            kind="message",
            session_id=headers.get(HEADER_SESSION) or None,
            record={},
        )
        self._dead_letter(batch, record, tenant, rejected)

    async def _commit(self, task: Task, batch: _Batch) -> None:
        producer = task.producer
        if producer is None:  # pragma: no cover - a ready task has its producer
            raise RuntimeError(f"partition {task.partition} has no producer")
        positions = {**task.positions, **batch.positions}
        values: dict[bytes, bytes | None] = {}
        for key, stored in batch.dirty.items():
            values[key] = encoded = encode(stored, self.settings.wire_schema)
            self.metrics.state_bytes.observe(len(encoded))
        values[POSITIONS_KEY] = encode_positions(positions)
        outputs = batch.merger.drain()
        await self.pauses.reach("before_transaction")
        try:
            await producer.begin()
            changelog = [
                await producer.send(
                    self.settings.changelog_topic, value or b"", key=key, partition=task.partition
                )
                for key, value in values.items()
            ]
            await self.pauses.reach("after_changelog")
            sent = [*changelog, *await self._send_outputs(producer, outputs, batch)]
            await self.pauses.reach("after_outputs")
            offsets = {tp: positions[tp.topic] for tp in task.tps if tp.topic in batch.positions}
            await producer.send_offsets(offsets, self.settings.streams_app_id)
            await producer.commit()
            metas = await gather_sends(sent)
        except ProducerFenced:
            self.metrics.transactions.labels("fenced").inc()
            log.warning("partition %d: fenced by a newer owner; waiting for the rebalance", task.partition)
            await self._suspend(task, fenced=True)
            return
        except Exception as exc:  # noqa: BLE001 (whatever failed, the transaction is aborted and redone)
            self.metrics.transactions.labels("aborted").inc()
            log.warning(
                "partition %d: transaction failed (%s: %s): aborted; restoring and reading again",
                task.partition,
                type(exc).__name__,
                exc,
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort(), 10)
            await self._suspend(task, fenced=False)
            return
        self.metrics.transactions.labels("committed").inc()
        await self.pauses.reach("after_commit")
        if task.store is None:  # pragma: no cover - a ready task has its store
            raise RuntimeError(f"partition {task.partition} has no store")
        task.store.write(values, metas[len(values) - 1].offset + 1)
        await self.pauses.reach("after_store")
        for key, stored in batch.dirty.items():
            self._remember(task, key, stored)
        task.positions = positions
        self._count(batch, outputs)

    async def _send_outputs(
        self, producer: TransactionalProducer, outputs: list[Output], batch: _Batch
    ) -> list[Any]:
        topics, schema = self.topics, self.settings.wire_schema
        sent = []
        for out in outputs:
            key = out.key
            # Schema 2 carries the sink's rows too, built here once (decision 44).
            if out.events is not None:
                events = with_rows(out.events) if schema == 2 else out.events
                sent.append(await producer.send(topics.events, encode(events, schema), key=key))
            if out.points is not None:
                points = with_rows(out.points) if schema == 2 else out.points
                sent.append(await producer.send(topics.points, encode(points, schema), key=key))
            if out.signals is not None:
                sent.append(await producer.send(topics.session_signals, encode(out.signals, schema), key=key))
            if out.rollups is not None:
                sent.append(await producer.send(topics.rollups, encode(out.rollups, schema), key=key))
            sent.append(await producer.send(topics.session_state, encode(out.state, schema), key=key))
        for letter_key, letter, _, _ in batch.letters:
            sent.append(await producer.send(self.settings.dead_letter_topic, letter, key=letter_key))
        return sent

    def _count(self, batch: _Batch, outputs: list[Output]) -> None:
        metrics = self.metrics
        for signal, count in batch.messages.items():
            metrics.messages.labels(signal).inc(count)
        for out in outputs:
            if out.events is not None:
                metrics.events.inc(len(out.events.events))
            if out.points is not None:
                metrics.points.inc(len(out.points.points))
            if out.signals is not None:
                metrics.signals.inc(len(out.signals.signals))
        for _, _, topic, reason in batch.letters:
            metrics.dead_letters.labels(topic, str(batch.task.partition), reason).inc()
        for topic, position in batch.positions.items():
            metrics.applied_offset.labels(topic, str(batch.task.partition)).set(position - 1)
            batch.task.progress_at[TopicPartition(topic, batch.task.partition)] = self.clock()

    # ------------------------------------------------------------------ task life cycle

    async def _suspend(self, task: Task, *, fenced: bool) -> None:
        """After a failed transaction: forget what is in memory and read the task's messages
        again once it is restored (or, fenced, once a rebalance takes it away)."""
        task.ready = False
        task.fenced = fenced
        task.cache.clear()
        task.failures += 1
        task.retry_at = self.clock() + min(0.5 * 2**task.failures, 30.0)
        self.consumer.pause(*task.tps)
        await self._drop_producer(task)
        self._update_task_gauges()

    async def _drop_producer(self, task: Task) -> None:
        producer, task.producer = task.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def _close(self, task: Task) -> None:
        task.ready = False
        await self._drop_producer(task)
        store, task.store = task.store, None
        if store is not None:
            store.close()
        for tp in task.tps:  # the partition's next owner reports them from now on
            for gauge in (self.metrics.lag, self.metrics.applied_offset):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    # ------------------------------------------------------------------ health

    def _observe_lag(self) -> None:
        now = self.clock()
        for task in self.tasks.values():
            if not task.ready:
                continue
            for tp in task.tps:
                high = self.consumer.highwater(tp)
                if high is None:
                    continue
                lag = max(high - task.positions[tp.topic], 0)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
                if lag == 0:
                    task.progress_at[tp] = now

    def stalled(self) -> list[str]:
        """Raw partitions with lag that have not advanced (nor been caught up) for
        ``stall_after_s``; the lag is read now, so a loop that hangs is seen too."""
        now = self.clock()
        out = []
        for task in self.tasks.values():
            if not task.ready:
                continue
            for tp in task.tps:
                high = self.consumer.highwater(tp)
                lag = 0 if high is None else high - task.positions.get(tp.topic, high)
                since = task.progress_at.get(tp, now)
                if lag > 0 and now - since > self.settings.stall_after_s:
                    out.append(f"{tp.topic}[{tp.partition}]")
        return out

    def not_ready(self) -> list[int]:
        return sorted(n for n, t in self.tasks.items() if not t.ready)

    def _update_task_gauges(self) -> None:
        tasks = list(self.tasks.values())
        self.metrics.tasks.labels("ready").set(sum(t.ready for t in tasks))
        self.metrics.tasks.labels("fenced").set(sum(t.fenced for t in tasks))
        self.metrics.tasks.labels("restoring").set(sum(not t.ready and not t.fenced for t in tasks))


class _Poisoned(Exception):
    def __init__(self, at: tuple[str, int], reason: str) -> None:
        super().__init__(f"{at[0]}@{at[1]}: {reason}")
        self.at = at
        self.reason = reason


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return list(raw.items())
    return list(raw)
