"""Splitting an OTLP request by session: whole when it has one, exact parts when it mixes them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.partition import split_by_session
from tokentide.topics import Signal

OTHER = "11111111-2222-3333-4444-555555555555"


def _drop_session(attributes: Any) -> None:
    kept = [kv for kv in attributes if kv.key != "session.id"]
    del attributes[:]
    attributes.extend(kept)


def _set_session(attributes: Any, session_id: str) -> None:
    for kv in attributes:
        if kv.key == "session.id":
            kv.value.string_value = session_id


def _json_session(cap: Any) -> str:
    """The one session of a capture, read from its JSON."""
    (session_id,) = {
        kv["value"]["stringValue"]
        for record in cap.records()
        for kv in record["attributes"]
        if kv["key"] == "session.id"
    }
    return str(session_id)


def _logs_of(captures_of: Callable[[str], list[Any]], case: str) -> Any:
    (logs,) = [c for c in captures_of(case) if c.signal is Signal.LOGS]
    return logs


def test_single_session_request_is_one_part_the_same_object(capture_pb: Path, capture: Any) -> None:
    cap = capture(capture_pb)
    request = cap.request
    (part,) = split_by_session(cap.signal, request)
    assert part.request is request
    assert part.records == len(cap.records())
    assert part.session_id == _json_session(cap)


def test_two_sessions_of_logs_split_back_into_the_originals(captures_of: Callable[[str], list[Any]]) -> None:
    first, second = (
        _logs_of(captures_of, "stub-text-protobuf"),
        _logs_of(captures_of, "stub-tool-traces-json"),
    )
    merged = ExportLogsServiceRequest()
    merged.resource_logs.extend([*first.request.resource_logs, *second.request.resource_logs])
    parts = {part.session_id: part for part in split_by_session(Signal.LOGS, merged)}
    expected = {_json_session(first): first, _json_session(second): second}
    assert parts.keys() == expected.keys()
    for session_id, original in expected.items():
        assert parts[session_id].records == len(original.records())
        # Same resource, same scope, same records in the same order: the request as first sent.
        assert parts[session_id].request == original.request


def test_interleaved_records_in_one_scope_keep_resource_scope_and_order(
    captures_of: Callable[[str], list[Any]],
) -> None:
    request = _logs_of(captures_of, "stub-tool-traces-protobuf").request
    records = request.resource_logs[0].scope_logs[0].log_records
    for record in records[1::2]:
        _set_session(record.attributes, OTHER)
    originals = [r.SerializeToString() for r in records]

    parts = {part.session_id: part for part in split_by_session(Signal.LOGS, request)}

    assert len(parts) == 2
    rebuilt: list[bytes] = []
    for session_id, part in parts.items():
        (resource_logs,) = part.request.resource_logs
        assert resource_logs.resource == request.resource_logs[0].resource
        (scope_logs,) = resource_logs.scope_logs
        assert scope_logs.scope == request.resource_logs[0].scope_logs[0].scope
        assert part.records == len(scope_logs.log_records)
        mine = [r.SerializeToString() for r in scope_logs.log_records]
        expected = [r for r, o in zip(originals, records, strict=True) if _session(o) == session_id]
        assert mine == expected
        rebuilt += mine
    assert sorted(rebuilt) == sorted(originals)  # nothing lost, nothing duplicated


def _session(record: Any) -> str | None:
    return next((kv.value.string_value for kv in record.attributes if kv.key == "session.id"), None)


def _points(request: Any) -> dict[tuple[str, bytes], str | None]:
    """Every data point (metric name, serialized point) -> its session."""
    out = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    out[(metric.name, point.SerializeToString())] = _session(point)
    return out


def test_data_points_of_two_sessions_in_one_metric(captures_of: Callable[[str], list[Any]]) -> None:
    (metrics,) = [c for c in captures_of("stub-text-protobuf") if c.signal is Signal.METRICS]
    request: ExportMetricsServiceRequest = metrics.request
    main_session = _session(request.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0])
    (token_usage,) = [
        m for m in request.resource_metrics[0].scope_metrics[0].metrics if m.name.endswith("token.usage")
    ]
    moved = [
        p
        for p in token_usage.sum.data_points
        if any(kv.value.string_value in {"output", "cacheRead"} for kv in p.attributes)
    ]
    assert len(moved) == 2
    for point in moved:
        _set_session(point.attributes, OTHER)
    total = len(metrics.records())

    parts = {part.session_id: part for part in split_by_session(Signal.METRICS, request)}

    assert parts.keys() == {main_session, OTHER}
    assert parts[OTHER].records == 2
    assert parts[main_session].records == total - 2
    (other_metric,) = parts[OTHER].request.resource_metrics[0].scope_metrics[0].metrics
    assert (other_metric.name, other_metric.unit) == (token_usage.name, token_usage.unit)
    assert other_metric.sum.aggregation_temporality == token_usage.sum.aggregation_temporality
    assert other_metric.sum.is_monotonic == token_usage.sum.is_monotonic
    assert list(other_metric.sum.data_points) == moved
    assert parts[OTHER].request.resource_metrics[0].resource == request.resource_metrics[0].resource
    merged = {**_points(parts[main_session].request), **_points(parts[OTHER].request)}
    assert merged == _points(request)
    assert sum(len(_points(p.request)) for p in parts.values()) == total


def test_records_without_session_are_session_none(captures_of: Callable[[str], list[Any]]) -> None:
    (traces,) = [c for c in captures_of("stub-tool-traces-protobuf") if c.signal is Signal.TRACES]
    request = traces.request
    spans = request.resource_spans[0].scope_spans[0].spans
    for span in spans:
        _drop_session(span.attributes)
    (part,) = split_by_session(Signal.TRACES, request)
    assert (part.session_id, part.records) == (None, len(spans))


def test_records_with_and_without_session(captures_of: Callable[[str], list[Any]]) -> None:
    logs = _logs_of(captures_of, "stub-text-protobuf")
    request = logs.request
    records = request.resource_logs[0].scope_logs[0].log_records
    session_id = _session(records[0])
    _drop_session(records[0].attributes)
    parts = {part.session_id: part.records for part in split_by_session(Signal.LOGS, request)}
    assert parts == {None: 1, session_id: len(records) - 1}


def test_resource_session_applies_to_records_without_their_own() -> None:
    # Gemini CLI puts session.id on the resource; Codex names it conversation.id.
    request = ExportLogsServiceRequest()
    for session_key, session_id in [("session.id", "gemini-1"), ("conversation.id", "codex-1")]:
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.append(
            KeyValue(key=session_key, value=AnyValue(string_value=session_id))
        )
        resource_logs.scope_logs.add().log_records.add().body.string_value = "x"
        resource_logs.scope_logs[0].log_records.add().body.string_value = "y"
    parts = {part.session_id: part.records for part in split_by_session(Signal.LOGS, request)}
    assert parts == {"gemini-1": 2, "codex-1": 2}


def test_empty_request_is_one_empty_part() -> None:
    (part,) = split_by_session(Signal.METRICS, ExportMetricsServiceRequest())
    assert (part.session_id, part.records) == (None, 0)
