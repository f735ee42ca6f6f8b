"""A small organisation's usage, written through the real stream stage and sink code.

Used by the usage exporter's and the Grafana dashboards' integration tests. Sessions are
synthetic Claude Code sessions (:mod:`tests.support.scenarios`: real OTLP export bodies)
tagged with a ``team`` resource attribute, as ``OTEL_RESOURCE_ATTRIBUTES=team=...`` does,
then run through :class:`streams.processor.Processor` (normalise, session state, context
signals, rollups) and written by :class:`sinks.postgres.writer.PostgresWriter` (the sink's
COPY + upsert path, hourly rollups included). Kafka is left out: the sink's transport is
tested in ``test_sink_postgres.py``.

Some sessions end moments before ``now`` (active, one of them with its context critical),
others hours before; one tenant has a metrics-only session. Expected numbers come from the
scenarios' own requests (:attr:`Generated.requests`), never from the code under test.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from sinks.base import Batch
from sinks.postgres.writer import PostgresWriter
from streams.normalise import default_registry
from streams.processor import Output, Processor
from streams.state import StoredSession
from tests.support import scenarios
from tests.support.captures import cases, exports
from tokentide.topics import HEADER_RECEIVED_AT, HEADER_SIGNAL, HEADER_TENANT

SECOND_NS = 1_000_000_000


@dataclass(frozen=True)
class SeededSession:
    """One session of the data set and what it must add up to."""

    name: str
    tenant: str
    team: str | None
    generated: scenarios.Generated
    #: Only the metrics exports were sent (tokens and cost from the agent's metrics).
    metrics_only: bool = False

    @property
    def session_id(self) -> str:
        return self.generated.session_id

    @property
    def user_id(self) -> str:
        """The ``user.id`` the agent put on its events."""
        for export in self.generated.exports:
            if export.signal != "logs":
                continue
            for resource_logs in ExportLogsServiceRequest.FromString(export.body).resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        for kv in record.attributes:
                            if kv.key == "user.id":
                                return kv.value.string_value
        raise AssertionError(f"{self.name}: no user.id in its logs")

    @property
    def end_ns(self) -> int:
        return max(e.time_ns for e in self.generated.exports)

    def by_model(self) -> dict[str, dict[str, int]]:
        """model -> tokens by type, cost_nanos, requests (from the generated requests)."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.generated.requests:
            m = out[r.model]
            m["input"] += r.input
            m["output"] += r.output
            m["cache_read"] += r.cache_read
            m["cache_creation"] += r.cache_creation
            m["cost_nanos"] += r.cost_nanos
            m["requests"] += 1
        return {k: dict(v) for k, v in out.items()}


@dataclass
class Dataset:
    sessions: list[SeededSession]
    #: Real Claude Code captures (tenant ``default``, no team) were added too.
    captures: bool

    def session(self, name: str) -> SeededSession:
        return next(s for s in self.sessions if s.name == name)


def _ending_at(scenario: scenarios.Scenario, end_ns: int) -> scenarios.Generated:
    """``scenario`` shifted so that its last export is at ``end_ns`` (same seed, same shape)."""
    draft = scenarios.generate(scenario)
    duration = max(e.time_ns for e in draft.exports) - scenario.start_ns
    return scenarios.generate(dataclasses.replace(scenario, start_ns=end_ns - duration))


def plan(now_ns: int | None = None) -> list[SeededSession]:
    """The sessions of the data set, relative to ``now_ns`` (default: the wall clock)."""
    now = time.time_ns() if now_ns is None else now_ns
    # Durations stay well under the stream stage's 120 kept minutes of rollups.
    return [
        # A long session with a compaction, warnings before and after it; over an hour ago.
        SeededSession(
            "platform-long",
            "default",
            "platform",
            _ending_at(
                scenarios.Scenario(seed=11, requests=150, interval_s=(4.0, 20.0), side_share=0.08),
                now - 75 * 60 * SECOND_NS,
            ),
        ),
        # Active, context past every threshold and no compaction: critical stands now.
        SeededSession(
            "platform-critical",
            "default",
            "platform",
            _ending_at(
                scenarios.Scenario(
                    seed=12,
                    requests=14,
                    start_context=150_000,
                    growth=4_000,
                    growth_jitter=1_000,
                    compact_at=0.99,
                    side_share=0.2,
                    logs_every=2,
                    metrics_every=4,
                ),
                now - 90 * SECOND_NS,
            ),
        ),
        SeededSession(
            "data-active",
            "default",
            "data",
            _ending_at(scenarios.Scenario(seed=13, requests=40, side_share=0.1), now - 40 * SECOND_NS),
        ),
        # Active, raised every level signal, then compacted: none of them stands any more.
        SeededSession(
            "data-compacted",
            "default",
            "data",
            _ending_at(
                scenarios.Scenario(
                    seed=16,
                    requests=26,
                    start_context=150_000,
                    growth=4_000,
                    growth_jitter=1_000,
                    side_share=0.0,
                ),
                # The most recent session: first in the session drill-down's list.
                now - 5 * SECOND_NS,
            ),
        ),
        SeededSession(
            "acme-active",
            "acme",
            "platform",
            _ending_at(scenarios.Scenario(seed=14, requests=60, side_share=0.1), now - 60 * SECOND_NS),
        ),
        SeededSession(
            "acme-metrics-only",
            "acme",
            None,
            _ending_at(
                scenarios.Scenario(seed=15, requests=30, side_share=0.0, metrics_every=5),
                now - 30 * 60 * SECOND_NS,
            ),
            metrics_only=True,
        ),
    ]


def with_team(signal: str, body: bytes, team: str | None) -> bytes:
    """``body`` with a ``team`` resource attribute on every resource (as OTEL_RESOURCE_ATTRIBUTES)."""
    if team is None:
        return body
    attribute = KeyValue(key="team", value=AnyValue(string_value=team))
    if signal == "logs":
        logs = ExportLogsServiceRequest.FromString(body)
        for resource_logs in logs.resource_logs:
            resource_logs.resource.attributes.append(attribute)
        return logs.SerializeToString()
    metrics = ExportMetricsServiceRequest.FromString(body)
    for resource_metrics in metrics.resource_metrics:
        resource_metrics.resource.attributes.append(attribute)
    return metrics.SerializeToString()


class StreamStage:
    """:class:`Processor` over an in-memory table, each message applied once, in order."""

    def __init__(self) -> None:
        self.processor = Processor(default_registry(), dedup_window=4096)
        self.table: dict[bytes, StoredSession] = {}

    def send(self, tenant: str, signal: str, body: bytes, received_ns: int) -> list[Output]:
        headers = {HEADER_TENANT: tenant, HEADER_SIGNAL: signal, HEADER_RECEIVED_AT: str(received_ns)}
        return self.processor.process(
            headers=headers, value=body, get_state=self.table.get, put_state=self.table.__setitem__
        ).outputs


def batch_of(outputs: Iterable[Output]) -> Batch:
    """What the sink would decode from these outputs' messages."""
    batch = Batch()
    for out in outputs:
        if out.events:
            batch.events.extend(out.events.events)
        if out.points:
            batch.points.extend(out.points.points)
        if out.signals:
            batch.signals.extend(out.signals.signals)
        if out.rollups:
            batch.rollups.extend(out.rollups.rollups)
        batch.states.append(out.state)
    return batch


async def seed(dsn: str, *, captures: bool = True, now_ns: int | None = None) -> Dataset:
    """Write the data set into the (migrated) database ``dsn``; returns what was written."""
    sessions = plan(now_ns)
    stage = StreamStage()
    outputs: list[Output] = []
    for s in sessions:
        for export in s.generated.exports:
            if s.metrics_only and export.signal != "metrics":
                continue
            body = with_team(export.signal, export.body, s.team)
            outputs += stage.send(s.tenant, export.signal, body, export.time_ns)
    if captures:
        for case_dir in cases("claude-code"):
            for export in exports(case_dir):
                if export.signal == "traces" or export.content_type != "application/x-protobuf":
                    continue
                outputs += stage.send("default", export.signal, export.body, time.time_ns())
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tenant in sorted({s.tenant for s in sessions}):
            conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    writer = PostgresWriter(dsn)
    try:
        result = await writer.write(batch_of(outputs))
    finally:
        await writer.close()
    assert not result.rejected, f"the sink refused rows of the data set: {result.rejected[:3]}"
    return Dataset(sessions, captures)


def usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)
