"""Pure processing of one raw message: decode, normalise, apply to session state.

The Faust agent (``streams.app``) only wires this to topics and a table. Here nothing
touches Kafka: state is read and written through two callables, once per session per
message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from streams.normalise import Registry, SessionRecords
from streams.state import StoredSession, already_applied, apply, replay
from tokentide.records import (
    Event,
    EventBatch,
    Point,
    PointBatch,
    Rollup,
    RollupBatch,
    SessionSignal,
    SessionState,
    SignalBatch,
)
from tokentide.settings import OPEN_MODE_TENANT
from tokentide.tenancy import SignalThresholds
from tokentide.topics import HEADER_RECEIVED_AT, HEADER_SIGNAL, HEADER_TENANT, Signal, session_key


class UndecodableMessage(Exception):
    """A raw message that is not the OTLP request its headers announce; it is skipped and counted."""


@dataclass(frozen=True, slots=True)
class Output:
    """What one message produced for one session, keyed ``tenant/session``."""

    key: bytes
    events: EventBatch | None
    points: PointBatch | None
    state: SessionState
    signals: SignalBatch | None = None
    rollups: RollupBatch | None = None


GetState = Callable[[bytes], StoredSession | None]
PutState = Callable[[bytes, StoredSession], None]


def header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (headers or ())}


class Processor:
    def __init__(
        self,
        registry: Registry,
        dedup_window: int,
        thresholds: SignalThresholds | None = None,
        tenant_thresholds: dict[str, SignalThresholds] | None = None,
    ) -> None:
        self.registry = registry
        self.dedup_window = dedup_window
        self.thresholds = thresholds or SignalThresholds()
        self.tenant_thresholds = tenant_thresholds or {}

    def normalise(self, headers: dict[str, str], value: bytes) -> tuple[str, dict[str, SessionRecords]]:
        """Decode a raw message and normalise it; returns (tenant, records by session)."""
        tenant = headers.get(HEADER_TENANT) or OPEN_MODE_TENANT
        received = headers.get(HEADER_RECEIVED_AT, "")
        received_ns = int(received) if received.isdigit() else time.time_ns()
        signal = headers.get(HEADER_SIGNAL)
        try:
            if signal == Signal.LOGS:
                logs = ExportLogsServiceRequest()
                logs.ParseFromString(value)
                return tenant, self.registry.logs(logs, tenant, received_ns)
            if signal == Signal.METRICS:
                metrics = ExportMetricsServiceRequest()
                metrics.ParseFromString(value)
                return tenant, self.registry.metrics(metrics, tenant, received_ns)
        except DecodeError as exc:
            raise UndecodableMessage(f"not an OTLP {signal} request: {exc}") from exc
        raise UndecodableMessage(f"unsupported signal header {signal!r}")

    def process(
        self,
        *,
        topic: str,
        offset: int,
        headers: dict[str, str],
        value: bytes,
        get_state: GetState,
        put_state: PutState,
    ) -> list[Output]:
        """Apply one raw message; return the records and new state of each session in it.

        Records are returned even when the message was applied before (a redelivery):
        their writes downstream are idempotent, and a crash may have lost the first ones.
        """
        tenant, by_session = self.normalise(headers, value)
        thresholds = self.tenant_thresholds.get(tenant, self.thresholds)
        outputs = []
        for session_id, records in by_session.items():
            key = session_key(tenant, session_id).encode()
            stored = get_state(key)
            if stored is not None and already_applied(stored, topic, offset):
                applied = replay(stored, topic, offset)
            else:
                applied = apply(
                    stored,
                    records,
                    tenant=tenant,
                    topic=topic,
                    offset=offset,
                    dedup_window=self.dedup_window,
                    thresholds=thresholds,
                )
                put_state(key, applied.stored)
            outputs.append(
                Output(
                    key=key,
                    events=EventBatch(events=records.events) if records.events else None,
                    points=PointBatch(points=records.points) if records.points else None,
                    state=applied.stored.state,
                    signals=SignalBatch(signals=applied.signals) if applied.signals else None,
                    rollups=RollupBatch(rollups=applied.rollups) if applied.rollups else None,
                )
            )
        return outputs


@dataclass(slots=True)
class _Merged:
    events: list[Event]
    points: list[Point]
    signals: list[SessionSignal]
    rollups: dict[tuple[str, str, str, int], Rollup]  # the last of each minute: they overwrite
    state: SessionState


class OutputMerger:
    """The outputs of a batch of raw messages, one per session key: records concatenated in
    arrival order, the last rollup of each minute (rollups overwrite), the session's last
    state. More than ``max_records`` events or points are cut into several outputs (each with
    the last state), so that no Kafka message grows without bound."""

    def __init__(self, max_records: int = 2000) -> None:
        self.max_records = max_records
        self._by_key: dict[bytes, _Merged] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, out: Output) -> None:
        merged = self._by_key.get(out.key)
        if merged is None:
            merged = self._by_key[out.key] = _Merged([], [], [], {}, out.state)
        if out.events is not None:
            merged.events.extend(out.events.events)
        if out.points is not None:
            merged.points.extend(out.points.points)
        if out.signals is not None:
            merged.signals.extend(out.signals.signals)
        if out.rollups is not None:
            for rollup in out.rollups.rollups:
                merged.rollups[rollup.tenant, rollup.session_id, rollup.model, rollup.minute_ns] = rollup
        merged.state = out.state

    def drain(self) -> list[Output]:
        """Everything added since the last drain, merged; the merger is empty afterwards."""
        outputs = []
        step = self.max_records
        for key, m in self._by_key.items():
            chunks = max(1, -(-len(m.events) // step), -(-len(m.points) // step))
            for i in range(chunks):
                events, points = m.events[i * step : (i + 1) * step], m.points[i * step : (i + 1) * step]
                last = i == chunks - 1
                outputs.append(
                    Output(
                        key=key,
                        events=EventBatch(events=events) if events else None,
                        points=PointBatch(points=points) if points else None,
                        state=m.state,
                        signals=SignalBatch(signals=m.signals) if last and m.signals else None,
                        rollups=RollupBatch(rollups=list(m.rollups.values())) if last and m.rollups else None,
                    )
                )
        self._by_key.clear()
        return outputs
