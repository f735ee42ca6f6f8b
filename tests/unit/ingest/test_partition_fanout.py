"""Splitting by session must not multiply a request: one large resource shared by many sessions
would be copied once per session (a 1 MiB request could publish a GiB). The split's size is
estimated before anything is copied, and bounded by the request size limit."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from ingest.errors import PayloadTooLarge
from ingest.partition import _record_sessions, _split_size, split_by_session
from tokentide.topics import Signal

MiB = 1024 * 1024


def logs(sessions: int, resource_bytes: int = 0, resources: int = 1) -> ExportLogsServiceRequest:
    """``sessions`` log records, each of its own session, under ``resources`` resources."""
    request = ExportLogsServiceRequest()
    for r in range(resources):
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = "claude-code"
        if resource_bytes:
            resource_logs.resource.attributes.add(key="big").value.string_value = "x" * resource_bytes
        scope = resource_logs.scope_logs.add()
        scope.scope.name = "com.anthropic.claude_code.events"
        for i in range(r, sessions, resources):
            record = scope.log_records.add(time_unix_nano=1_000 + i)
            record.attributes.add(key="session.id").value.string_value = f"session-{i:04d}"
    return request


def test_a_thousand_sessions_in_one_request_are_a_thousand_parts() -> None:
    request = logs(1000)
    parts = split_by_session(Signal.LOGS, "acme", request, max_bytes=MiB)
    assert len(parts) == 1000
    assert {p.session_id for p in parts} == {f"session-{i:04d}" for i in range(1000)}
    assert all(p.records == 1 for p in parts)


def test_a_large_resource_shared_by_many_sessions_is_refused_before_copying() -> None:
    request = logs(1000, resource_bytes=100_000)  # ~100 KB, split: ~100 MB
    assert request.ByteSize() < 200_000
    with pytest.raises(PayloadTooLarge, match="1000 sessions"):
        split_by_session(Signal.LOGS, "acme", request, max_bytes=MiB)
    # One resource per session is not multiplied: the same bytes, accepted.
    separate = logs(20, resource_bytes=10_000, resources=20)
    assert len(split_by_session(Signal.LOGS, "acme", separate, max_bytes=separate.ByteSize() + 1024)) == 20


@pytest.mark.parametrize(("sessions", "resources"), [(2, 1), (50, 1), (50, 7), (300, 300)])
def test_the_estimate_is_never_below_what_the_split_holds(sessions: int, resources: int) -> None:
    request = logs(sessions, resource_bytes=3_000, resources=resources)
    estimate = _split_size(Signal.LOGS, request, list(_record_sessions(Signal.LOGS, "acme", request)))
    parts = split_by_session(Signal.LOGS, "acme", request)
    assert sum(p.request.ByteSize() for p in parts) <= estimate


def test_metrics_split_copies_each_metric_once_per_session_not_per_point() -> None:
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    metric = scope.metrics.add(name="claude_code.token.usage", unit="tokens")
    for i in range(2000):
        point = metric.sum.data_points.add(as_double=1.0, time_unix_nano=1 + i)
        point.attributes.add(key="session.id").value.string_value = f"s{i % 400}"
    parts = split_by_session(Signal.METRICS, "acme", request, max_bytes=MiB)
    assert len(parts) == 400
    for part in parts:
        [only] = part.request.resource_metrics[0].scope_metrics[0].metrics  # type: ignore[attr-defined]
        assert (only.name, only.unit, len(only.sum.data_points)) == ("claude_code.token.usage", "tokens", 5)
    estimate = _split_size(Signal.METRICS, request, list(_record_sessions(Signal.METRICS, "acme", request)))
    assert sum(p.request.ByteSize() for p in parts) <= estimate
