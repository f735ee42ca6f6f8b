"""Pure processing of one raw message: decode, normalise, apply to session state.

The runtime (:mod:`streams.worker`) only wires this to Kafka and the state store. Here
nothing touches Kafka: state is read and written through two callables, once per session
per message. What cannot be counted is returned, never raised past the message:

- a message that is not the OTLP request its headers announce: :class:`Rejected` of kind
  ``message`` (reason ``undecodable``);
- a record out of range or refused by its normaliser: :class:`Rejected` of that record
  (:mod:`streams.normalise.base`), the message's other records still count.

An exception while *applying* records to a session's state is different: the state object
may be half-changed, so :class:`ApplyFailed` is raised and the runtime rebuilds the batch
without that message (and dead-letters it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from streams.normalise import Registry
from streams.normalise.base import Normalised, Rejected
from streams.state import StoredSession, apply
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
    replace,
)
from tokentide.settings import OPEN_MODE_TENANT
from tokentide.tenancy import SignalThresholds
from tokentide.topics import (
    HEADER_RECEIVED_AT,
    HEADER_SESSION,
    HEADER_SIGNAL,
    HEADER_TENANT,
    Signal,
    session_key,
)


class ApplyFailed(Exception):
    """Applying a message to a session raised: its state may be half-changed (see module)."""

    def __init__(self, session_id: str, cause: BaseException) -> None:
        super().__init__(f"session {session_id}: {type(cause).__name__}: {cause}")
        self.session_id = session_id
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Output:
    """What one message produced for one session, keyed ``tenant/session``."""

    key: bytes
    events: EventBatch | None
    points: PointBatch | None
    state: SessionState
    signals: SignalBatch | None = None
    rollups: RollupBatch | None = None


@dataclass(slots=True)
class Processed:
    """One message's outputs (one per session) and what it rejected."""

    tenant: str
    outputs: list[Output] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


GetState = Callable[[bytes], StoredSession | None]
PutState = Callable[[bytes, StoredSession], None]


def header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (headers or ())}


def undecodable(reason: str, session_id: str | None) -> Rejected:
    return Rejected(
        reason="undecodable",
        error="DecodeError",
        message=reason,
        kind="message",
        session_id=session_id,
        record={},
    )


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

    def normalise(self, headers: dict[str, str], value: bytes) -> tuple[str, Normalised]:
        """Decode a raw message and normalise it; returns (tenant, what it said by session).

        The session is the one ingest keyed the message by (its ``tt-session`` header); only
        messages without the header are split by the records' own attributes.
        """
        tenant = headers.get(HEADER_TENANT) or OPEN_MODE_TENANT
        received = headers.get(HEADER_RECEIVED_AT, "")
        received_ns = int(received) if received.isdigit() else time.time_ns()
        session = headers.get(HEADER_SESSION) or None
        signal = headers.get(HEADER_SIGNAL)
        try:
            if signal == Signal.LOGS:
                logs = ExportLogsServiceRequest()
                logs.ParseFromString(value)
                return tenant, self.registry.logs(logs, tenant, received_ns, session)
            if signal == Signal.METRICS:
                metrics = ExportMetricsServiceRequest()
                metrics.ParseFromString(value)
                return tenant, self.registry.metrics(metrics, tenant, received_ns, session)
        except DecodeError as exc:
            return tenant, Normalised(rejected=[undecodable(f"not an OTLP {signal} request: {exc}", session)])
        return tenant, Normalised(rejected=[undecodable(f"unsupported signal header {signal!r}", session)])

    def process(
        self,
        *,
        headers: dict[str, str],
        value: bytes,
        get_state: GetState,
        put_state: PutState,
    ) -> Processed:
        """Apply one raw message; return the records and new state of each session in it.

        The caller applies each raw message once (the runtime's per-partition positions);
        a re-sent export (the same records in a new message) changes nothing here. Raises
        :class:`ApplyFailed` when applying raised (nothing else).
        """
        tenant, normalised = self.normalise(headers, value)
        thresholds = self.tenant_thresholds.get(tenant, self.thresholds)
        processed = Processed(tenant, rejected=normalised.rejected)
        for session_id, records in normalised.sessions.items():
            key = session_key(tenant, session_id).encode()
            try:
                applied = apply(
                    get_state(key),
                    records,
                    tenant=tenant,
                    dedup_window=self.dedup_window,
                    thresholds=thresholds,
                )
            except Exception as exc:
                raise ApplyFailed(session_id, exc) from exc
            put_state(key, applied.stored)
            processed.outputs.append(
                Output(
                    key=key,
                    events=EventBatch(events=records.events) if records.events else None,
                    points=PointBatch(points=records.points) if records.points else None,
                    state=applied.stored.state,
                    signals=SignalBatch(signals=applied.signals) if applied.signals else None,
                    rollups=RollupBatch(rollups=applied.rollups) if applied.rollups else None,
                )
            )
        return processed


@dataclass(slots=True)
class _Merged:
    events: list[Event]
    points: list[Point]
    signals: list[SessionSignal]
    #: Increments of one (model, minute) are summed: each is what one message added.
    rollups: dict[tuple[str, int], Rollup]
    state: SessionState


class OutputMerger:
    """The outputs of a batch of raw messages, one per session key: records concatenated in
    arrival order, the rollup increments of each (model, minute) summed, the session's last
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
                key = (rollup.model, rollup.minute_ns)
                known = merged.rollups.get(key)
                merged.rollups[key] = rollup if known is None else _sum(known, rollup)
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

    def clear(self) -> None:
        self._by_key.clear()


def _sum(a: Rollup, b: Rollup) -> Rollup:
    tokens = replace(a.tokens)
    tokens.add(b.tokens)
    return replace(
        a,
        tokens=tokens,
        cost_nanos=a.cost_nanos + b.cost_nanos,
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        user_id=a.user_id or b.user_id,
    )
