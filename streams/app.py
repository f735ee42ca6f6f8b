"""The Faust application: wires :class:`streams.processor.Processor` to topics and a table.

Per batch of raw messages (:class:`RawHandler`): each session changed in it is written to the
table once and its records go out as one message per kind (events, points, signals, rollups,
its last state on the compacted ``session.state``). Raw offsets are applied once and in order
whatever faust delivers (:mod:`streams.ledger`, decision 13); redeliveries become replays
(:mod:`streams.state`), and commits faust stops making are repaired from the broker's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import faust
import mode
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.streams import _current_event
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, EventT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from streams.ledger import OffsetGate, decode_offset, encode_offset, ledger_key
from streams.normalise import default_registry
from streams.processor import Output, OutputMerger, Processor, UndecodableMessage, header_map
from streams.state import StoredSession
from tokentide.settings import StreamsSettings
from tokentide.topics import Signal

log = logging.getLogger(__name__)

#: How often the stage looks for partitions whose commits faust stopped (RawHandler.repair_commits).
COMMIT_REPAIR_INTERVAL_S = 5.0


class StreamsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "tokentide_streams_messages",
            "Raw messages processed, by signal.",
            ["signal"],
            registry=registry,
        )
        self.undecodable = Counter(
            "tokentide_streams_undecodable_messages",
            "Raw messages skipped as undecodable.",
            registry=registry,
        )
        self.events = Counter("tokentide_streams_events", "Normalised events emitted.", registry=registry)
        self.points = Counter(
            "tokentide_streams_points", "Normalised metric points emitted.", registry=registry
        )
        self.signals = Counter(
            "tokentide_streams_signals",
            "Context signals emitted (each once per crossing).",
            registry=registry,
        )
        self.commit_repairs = Counter(
            "tokentide_streams_commit_repairs",
            "Offset commits made because faust's own had stalled behind the applied offsets.",
            registry=registry,
        )
        self.skipped = Counter(
            "tokentide_streams_skipped_offsets",
            "Raw offsets the consumer skipped, read directly and applied in order (faust#596).",
            registry=registry,
        )


def create_app(settings: StreamsSettings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the Faust app for ``settings``; run it with ``faust.Worker(app).execute_from_commandline()``."""
    metrics = StreamsMetrics(registry if registry is not None else CollectorRegistry())
    topics = settings.topics
    app = faust.App(
        settings.streams_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=settings.kafka_max_message_bytes,
        consumer_max_fetch_size=settings.kafka_max_message_bytes,
        web_host=settings.host,
        web_port=settings.streams_port,
        web_in_thread=False,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        table_standby_replicas=0,
    )
    raw = app.topic(
        topics.raw(Signal.LOGS),
        topics.raw(Signal.METRICS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    def out_topic(name: str, **kwargs: Any) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            **kwargs,
        )

    outputs = OutputTopics(
        events=out_topic(topics.events),
        points=out_topic(topics.points),
        state=out_topic(topics.session_state, compacting=True),
        signals=out_topic(topics.session_signals),
        rollups=out_topic(topics.rollups),
    )
    # bytes keys and values: faust picks its raw codec; the value is a StoredSession as JSON.
    sessions = app.Table("sessions", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    processor = Processor(
        default_registry(),
        settings.dedup_window,
        settings.signal_thresholds,
        settings.tenant_signal_thresholds,
    )
    handler = RawHandler(
        app=app,
        processor=processor,
        table=sessions,
        store=SessionStore(sessions, settings.state_cache_sessions),
        outputs=outputs,
        reader=SkippedReader(settings.kafka_bootstrap, settings.kafka_max_message_bytes),
        metrics=metrics,
    )
    app.on_partitions_revoked.connect(handler.on_partitions_moved)
    app.on_partitions_assigned.connect(handler.on_partitions_moved)

    @app.timer(COMMIT_REPAIR_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def repair_commits() -> None:
        try:
            # Bounded: a call stuck in a rebalance must not stop the timer for good.
            await asyncio.wait_for(handler.repair_commits(), COMMIT_REPAIR_INTERVAL_S * 2)
        except Exception as exc:  # noqa: BLE001 (a rebalance or broker hiccup: the next tick retries)
            log.warning("commit repair skipped: %s: %s", type(exc).__name__, exc)
            await handler.reader.reset_admin()

    @app.agent(raw)
    async def process_raw(stream: faust.StreamT[bytes]) -> None:
        batches = cast(faust.Stream[bytes], stream).take_events  # not declared by StreamT
        async for events in batches(settings.batch_max_messages, settings.batch_linger_s):
            await handler.handle_batch(events)

    @app.service
    class CloseSkippedReader(mode.Service):
        async def on_stop(self) -> None:
            await handler.reader.close()

    _add_pages(app, metrics)
    return app


@dataclass(frozen=True)
class OutputTopics:
    events: faust.TopicT
    points: faust.TopicT
    state: faust.TopicT
    signals: faust.TopicT
    rollups: faust.TopicT


class SkippedReader:
    """Reads raw offsets the faust consumer skipped (:mod:`streams.ledger`), where partitions
    begin, and what the group committed, with a consumer (no group, no commits, one partition at
    a time) and an admin client of its own."""

    def __init__(self, bootstrap: str, max_fetch_bytes: int, patience_s: float = 30.0) -> None:
        self._bootstrap = bootstrap
        self._max_fetch_bytes = max_fetch_bytes
        self._patience_s = patience_s
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=self._max_fetch_bytes,
                fetch_max_bytes=self._max_fetch_bytes,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def first_offset(self, tp: TP) -> int:
        """The oldest offset ``tp`` still holds. (Asked of faust's consumer instead, the question
        waits in its thread's queue behind a fetch: 1.5 s per partition.)"""
        consumer = await self._ensure()
        ktp = TopicPartition(tp.topic, tp.partition)
        return (await consumer.beginning_offsets([ktp])).get(ktp) or 0

    async def read(self, tp: TP, offsets: range) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
        """The records of ``tp`` in ``offsets``, in order, from the first that still exists."""
        consumer = await self._ensure()
        ktp = TopicPartition(tp.topic, tp.partition)
        consumer.assign([ktp])
        consumer.seek(ktp, offsets.start)
        deadline = time.monotonic() + self._patience_s
        position = offsets.start
        while position < offsets.stop:
            batches = await consumer.getmany(ktp, timeout_ms=500, max_records=500)
            records = batches.get(ktp, [])
            if records:
                deadline = time.monotonic() + self._patience_s
            elif time.monotonic() > deadline:
                raise RuntimeError(
                    f"{tp.topic}[{tp.partition}]: offsets {position}..{offsets.stop - 1} unreadable"
                )
            for record in records:
                if record.offset >= offsets.stop:
                    return
                position = record.offset + 1
                yield record

    async def committed(self, group: str, tps: Sequence[TP]) -> dict[TP, int | None]:
        """The offsets ``group`` has committed on the broker for ``tps`` (None: none yet)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
            await admin.start()
            self._admin = admin
        offsets = await self._admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
        )
        found = {TP(k.topic, k.partition): v.offset for k, v in offsets.items()}
        return {tp: (found[tp] if found.get(tp, -1) >= 0 else None) for tp in tps}

    async def reset_admin(self) -> None:
        """Drop the admin client (after a failed or stuck call); the next call makes a new one."""
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), 5)

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


class RawHandler:
    """Applies each raw message once and in offset order, whatever the consumer delivers, a
    batch of messages at a time.

    Per batch: each message is decoded, normalised and applied to its sessions' states in
    memory, in order; then each changed session is written to the table once, each partition's
    ledger after its sessions (:mod:`streams.ledger`), and each session's records of the batch
    go out as one message per kind (events, points, signals, rollups, its last state).
    """

    def __init__(
        self,
        *,
        app: faust.App,
        processor: Processor,
        table: Any,
        store: SessionStore,
        outputs: OutputTopics,
        reader: SkippedReader,
        metrics: StreamsMetrics,
    ) -> None:
        self.app = app
        self.processor = processor
        self.table = table
        self.store = store
        self.outputs = outputs
        self.reader = reader
        self.metrics = metrics
        self.gate = OffsetGate()
        self.merger = OutputMerger()
        self._ledgers: dict[TP, tuple[int, EventT[bytes]]] = {}  # due for writing at the batch's end
        self._moves = 0
        #: Partitions whose faust-committed offset was behind the cursor at the last look, and
        #: that offset (None: nothing committed yet).
        self._behind: dict[TP, int | None] = {}

    async def repair_commits(self) -> None:
        """Commit what faust will not. After a rebalance faust can lose a commit for good: a
        commit refused while the group rebalances is still recorded as done in its own books
        (``Consumer._commit_offsets`` updates ``_committed_offset`` whatever the answer), and a
        hole in its acks stops later ones (faust#606); the group's lag then never drains and
        every restart replays from there. Everything below the gate's cursor was applied, so
        when the *broker's* committed offset of a partition stayed behind the cursor for a whole
        interval, the cursor is committed (producer flushed first). Committing too far could not
        lose anything either: what is applied is decided by the ledger, not by committed offsets."""
        consumer = cast(FaustConsumer, self.app.consumer)
        assignment = consumer.assignment()
        cursors = {TP(*key): cursor for key, cursor in self.gate.cursors().items()}
        mine = [tp for tp in cursors if tp in assignment]
        if not mine:
            self._behind.clear()
            return
        committed = await self.reader.committed(self.app.conf.id, mine)
        due: dict[TP, int] = {}
        for tp in mine:
            broker = committed.get(tp)
            if broker is not None and broker >= cursors[tp]:
                self._behind.pop(tp, None)
                continue
            if tp in self._behind and self._behind[tp] == broker:
                due[tp] = cursors[tp]
            self._behind[tp] = broker
        if not due:
            return
        log.info(
            "committing %s: faust's commits stalled behind the applied offsets",
            {f"{tp.topic}[{tp.partition}]": offset for tp, offset in due.items()},
        )
        self.metrics.commit_repairs.inc(len(due))
        await self.app.producer.flush()
        if await consumer._commit(due):
            consumer._committed_offset.update(due)
            for tp in due:
                self._behind.pop(tp, None)

    def on_partitions_moved(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.store.forget()  # another worker may now update these sessions
        self.gate.reset()  # and these ledgers
        self._behind.clear()
        self._ledgers.clear()
        self._moves += 1  # a batch under way stores nothing (its messages come again)

    async def handle_batch(self, events: Sequence[EventT[bytes]]) -> None:
        moves = self._moves
        try:
            for event in events:
                if self._moves != moves:
                    break
                with current_event_set(event):
                    await self._handle(event, event.message, cast(bytes, event.value))
            if self._moves != moves:
                # Partitions moved during the batch: what it changed was forgotten. Storing the
                # rest could put a ledger ahead of its states; the gate makes them come again.
                log.info("partitions moved during a batch of %d messages: not stored", len(events))
                self.merger.drain()
                return
            self.store.flush()
            for tp, (ledger, event) in self._ledgers.items():
                with current_event_set(event):  # after the partition's sessions: never ahead
                    self.table[ledger_key(tp.topic, tp.partition)] = encode_offset(ledger)
        except Exception:
            self.store.forget()  # states may have been changed in memory but not stored
            self.merger.drain()
            raise
        finally:
            self._ledgers.clear()
        await self._send(self.merger.drain())

    async def _handle(self, event: EventT[bytes], message: Any, value: bytes) -> None:
        tp: TP = message.tp
        first = not self.gate.started(tp)
        if first:
            ledger = decode_offset(self.table.get(ledger_key(tp.topic, tp.partition)))
            self.gate.start(tp, ledger, await self._first_offset(tp))
        missing = self.gate.missing(tp, message.offset)
        if missing:
            await self._apply_skipped(event, tp, missing, first=first)
        self._apply(event, message, value)

    async def _first_offset(self, tp: TP) -> int:
        return await self.reader.first_offset(tp)

    async def _apply_skipped(self, event: EventT[bytes], tp: TP, missing: range, *, first: bool) -> None:
        self.metrics.skipped.inc(len(missing))
        started = time.monotonic()
        oldest = await self._first_offset(tp)
        if oldest > missing.start:
            log.error(
                "%s[%d]: offsets %d..%d were deleted (retention) before this stage applied them",
                tp.topic,
                tp.partition,
                missing.start,
                oldest - 1,
            )
            self.gate.move_to(tp, oldest)
        async for record in self.reader.read(tp, self.gate.missing(tp, missing.stop)):
            self._apply(event, record, record.value or b"")
        # faust records the same jump as a gap in its acks when it noticed one; when it did not
        # (the first message after an assignment), its commits would stop at the hole.
        consumer = cast(FaustConsumer, self.app.consumer)
        await consumer._add_gap(tp, missing.start, missing.stop - 1)
        # At the first message of an assignment this is mostly the ledger's lag (replays of what
        # the previous owner applied after its last ledger write); later it is the consumer
        # skipping ahead (faust#596).
        log.log(
            logging.INFO if first else logging.WARNING,
            "%s[%d]: offsets %d..%d read directly in %.2fs: the consumer %s",
            tp.topic,
            tp.partition,
            missing.start,
            missing.stop - 1,
            time.monotonic() - started,
            "resumed past the ledger" if first else "skipped them (faust#596)",
        )

    def _apply(self, event: EventT[bytes], message: Any, value: bytes) -> None:
        """Apply one raw message (``event``'s own, or one of its partition read directly)."""
        headers = header_map(_headers(message.headers))
        try:
            outputs = self.processor.process(
                topic=message.topic,
                offset=message.offset,
                headers=headers,
                value=value,
                get_state=self.store.get,
                put_state=lambda key, stored: self.store.put(key, stored, event),
            )
        except UndecodableMessage as exc:
            self.metrics.undecodable.inc()
            log.warning("skipped %s@%d: %s", message.topic, message.offset, exc)
            outputs = []
        else:
            self.metrics.messages.labels(headers.get("tt-signal", "?")).inc()
        for out in outputs:
            self.merger.add(out)
        tp = TP(message.topic, message.partition)
        ledger = self.gate.processed(tp, message.offset)
        if ledger is not None:
            self._ledgers[tp] = (ledger, event)

    async def _send(self, outputs: list[Output]) -> None:
        metrics, topics = self.metrics, self.outputs
        for out in outputs:
            if out.events is not None:
                metrics.events.inc(len(out.events.events))
                await topics.events.send(key=out.key, value=out.events.to_bytes())
            if out.points is not None:
                metrics.points.inc(len(out.points.points))
                await topics.points.send(key=out.key, value=out.points.to_bytes())
            if out.signals is not None:
                metrics.signals.inc(len(out.signals.signals))
                await topics.signals.send(key=out.key, value=out.signals.to_bytes())
            if out.rollups is not None:
                await topics.rollups.send(key=out.key, value=out.rollups.to_bytes())
            await topics.state.send(key=out.key, value=out.state.to_bytes())


def _add_pages(app: faust.App, metrics: StreamsMetrics) -> None:
    """/healthz, /readyz (partitions assigned and tables recovered) and /metrics."""

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: View, request: Request) -> Response:
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        # TableManager has .recovery; faust's TableManagerT interface does not declare it.
        recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
        ready = assigned and recovered
        return self.json(
            {"status": "ready" if ready else "starting", "assigned": assigned, "recovered": recovered},
            status=200 if ready else 503,
        )

    @app.page("/metrics")
    async def prometheus_metrics(self: View, request: Request) -> Response:
        # aiohttp takes the charset separately; the exposition format is UTF-8 anyway.
        content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return self.bytes(generate_latest(metrics.registry), content_type=content_type)


class SessionStore:
    """The ``sessions`` table, with the decoded states of recent sessions kept in memory so
    that a message need not decode its session's state again, and the states a batch changed
    held back until the batch ends: then each is written once (one RocksDB write and one
    changelog record per session per batch, not per message). The table stays the truth.

    Table reads and writes go to the partition of faust's *current event* (RocksDB keeps one
    database per partition, the changelog record goes to the event's partition), so each is
    made with the current event set to a message of the session's own partition.

    The cache is bounded (least recently used out) and must be forgotten whenever partitions
    move, since another worker may then update these sessions, and after a failed batch,
    whose sessions may have been changed in memory without being stored.
    """

    def __init__(self, table: Any, max_cached: int) -> None:
        self._table = table
        self._max = max_cached
        self._cache: OrderedDict[bytes, StoredSession] = OrderedDict()
        self._dirty: dict[bytes, tuple[StoredSession, EventT[bytes]]] = {}

    def get(self, key: bytes) -> StoredSession | None:
        dirty = self._dirty.get(key)
        if dirty is not None:
            return dirty[0]
        stored = self._cache.get(key)
        if stored is not None:
            self._cache.move_to_end(key)
            return stored
        value = self._table.get(key)
        if value is None:
            return None
        stored = StoredSession.from_bytes(value)
        self._remember(key, stored)
        return stored

    def put(self, key: bytes, stored: StoredSession, event: EventT[bytes]) -> None:
        """Hold ``stored`` until :meth:`flush`; ``event`` is a message of the session's partition."""
        self._dirty[key] = (stored, event)
        self._remember(key, stored)

    def flush(self) -> None:
        for key, (stored, event) in self._dirty.items():
            with current_event_set(event):
                self._table[key] = stored.to_bytes()
        self._dirty.clear()

    def forget(self) -> None:
        self._cache.clear()
        self._dirty.clear()

    def _remember(self, key: bytes, stored: StoredSession) -> None:
        if not self._max:
            return
        self._cache[key] = stored
        self._cache.move_to_end(key)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)


@contextmanager
def current_event_set(event: EventT[bytes]) -> Iterator[None]:
    """Make ``event`` faust's current event (table reads and writes pick their partition by it)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return list(raw.items())
    return list(raw)
