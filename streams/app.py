"""The Faust application: wires :class:`streams.processor.Processor` to topics and a table.

Per raw message: one table read and one table write per session in it, one batch of events
and one of points out, and the session's new state out (compacted ``session.state``).
Delivery is at-least-once; :mod:`streams.state` makes redeliveries harmless.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from streams.normalise import default_registry
from streams.processor import Processor, UndecodableMessage, header_map
from streams.state import StoredSession
from tokentide.settings import StreamsSettings
from tokentide.topics import Signal

log = logging.getLogger(__name__)


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

    events_topic = out_topic(topics.events)
    points_topic = out_topic(topics.points)
    state_topic = out_topic(topics.session_state, compacting=True)
    signals_topic = out_topic(topics.session_signals)
    rollups_topic = out_topic(topics.rollups)
    # bytes keys and values: faust picks its raw codec; the value is a StoredSession as JSON.
    sessions = app.Table("sessions", key_type=bytes, value_type=bytes, partitions=settings.partitions)
    processor = Processor(
        default_registry(),
        settings.dedup_window,
        settings.signal_thresholds,
        settings.tenant_signal_thresholds,
    )

    store = SessionStore(sessions, settings.state_cache_sessions)

    def forget_cached_states(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        store.forget()  # partitions move: another worker may update their sessions

    app.on_partitions_revoked.connect(forget_cached_states)
    app.on_partitions_assigned.connect(forget_cached_states)

    @app.agent(raw)
    async def process_raw(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            headers = header_map(_headers(message.headers))
            try:
                outputs = processor.process(
                    topic=message.topic,
                    offset=message.offset,
                    headers=headers,
                    value=event.value,
                    get_state=store.get,
                    put_state=store.put,
                )
            except UndecodableMessage as exc:
                metrics.undecodable.inc()
                log.warning("skipped %s@%d: %s", message.topic, message.offset, exc)
                continue
            except Exception:
                store.forget()  # a state may have been changed in memory but not stored
                raise
            metrics.messages.labels(headers.get("tt-signal", "?")).inc()
            for out in outputs:
                if out.events is not None:
                    metrics.events.inc(len(out.events.events))
                    await events_topic.send(key=out.key, value=out.events.to_bytes())
                if out.points is not None:
                    metrics.points.inc(len(out.points.points))
                    await points_topic.send(key=out.key, value=out.points.to_bytes())
                if out.signals is not None:
                    metrics.signals.inc(len(out.signals.signals))
                    await signals_topic.send(key=out.key, value=out.signals.to_bytes())
                if out.rollups is not None:
                    await rollups_topic.send(key=out.key, value=out.rollups.to_bytes())
                await state_topic.send(key=out.key, value=out.state.to_bytes())

    _add_pages(app, metrics)
    return app


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
    that a message need not decode its session's state again. The table stays the truth:
    every update is written there (and to its changelog).

    The cache is bounded (least recently used out) and must be forgotten whenever partitions
    move, since another worker may then update these sessions, and after a failed message,
    whose session may have been changed in memory without being stored.
    """

    def __init__(self, table: Any, max_cached: int) -> None:
        self._table = table
        self._max = max_cached
        self._cache: OrderedDict[bytes, StoredSession] = OrderedDict()

    def get(self, key: bytes) -> StoredSession | None:
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

    def put(self, key: bytes, stored: StoredSession) -> None:
        self._table[key] = stored.to_bytes()
        self._remember(key, stored)

    def forget(self) -> None:
        self._cache.clear()

    def _remember(self, key: bytes, stored: StoredSession) -> None:
        if not self._max:
            return
        self._cache[key] = stored
        self._cache.move_to_end(key)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        return list(raw.items())
    return list(raw)
