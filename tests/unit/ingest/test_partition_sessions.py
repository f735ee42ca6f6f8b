"""Splitting an OTLP request by session: whole when it has one, exact parts when it mixes them.

The session of every record is the one of :func:`tokentide.identity.session_of` (preference
order, never wire order; records without one go to their synthetic session).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.partition import split_by_session
from tests.support.captures import FIXTURES
from tokentide import identity
from tokentide.topics import Signal

OTHER = "11111111-2222-3333-4444-555555555555"
TENANT = "acme"
CODEX_METRICS = FIXTURES / "codex" / "offline-protobuf" / "0002_v1_metrics.pb"


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
    (part,) = split_by_session(cap.signal, TENANT, request)
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
    parts = {part.session_id: part for part in split_by_session(Signal.LOGS, TENANT, merged)}
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

    parts = {part.session_id: part for part in split_by_session(Signal.LOGS, TENANT, request)}

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

    parts = {part.session_id: part for part in split_by_session(Signal.METRICS, TENANT, request)}

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


def _string(attributes: Any, key: str) -> str | None:
    return next((kv.value.string_value for kv in attributes if kv.key == key), None)


def test_records_without_session_go_to_their_synthetic_session(
    captures_of: Callable[[str], list[Any]],
) -> None:
    (traces,) = [c for c in captures_of("stub-tool-traces-protobuf") if c.signal is Signal.TRACES]
    request = traces.request
    spans = request.resource_spans[0].scope_spans[0].spans
    for span in spans:
        _drop_session(span.attributes)
    (user,) = {_string(span.attributes, "user.id") for span in spans}
    service = _string(request.resource_spans[0].resource.attributes, "service.name")
    assert (user, service) != (None, None)

    (part,) = split_by_session(Signal.TRACES, TENANT, request)

    assert part.request is request  # still one session: published whole
    assert (part.session_id, part.records) == (identity.synthetic_session(TENANT, service, user), len(spans))
    assert part.session_id.startswith(identity.SYNTHETIC_PREFIX)
    (other_tenant,) = split_by_session(Signal.TRACES, "globex", request)
    assert other_tenant.session_id != part.session_id  # synthetic sessions are per tenant


def test_records_with_and_without_session(captures_of: Callable[[str], list[Any]]) -> None:
    logs = _logs_of(captures_of, "stub-text-protobuf")
    request = logs.request
    records = request.resource_logs[0].scope_logs[0].log_records
    session_id = _session(records[0])
    user = _string(records[0].attributes, "user.id")
    _drop_session(records[0].attributes)
    synthetic = identity.synthetic_session(TENANT, "claude-code", user)
    parts = {part.session_id: part.records for part in split_by_session(Signal.LOGS, TENANT, request)}
    assert parts == {synthetic: 1, session_id: len(records) - 1}


def test_codex_metrics_without_any_session_are_one_synthetic_part() -> None:
    request = ExportMetricsServiceRequest.FromString(CODEX_METRICS.read_bytes())
    (resource_metrics,) = request.resource_metrics
    resource = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
    points = [
        point
        for sm in resource_metrics.scope_metrics
        for metric in sm.metrics
        for point in getattr(metric, metric.WhichOneof("data")).data_points
    ]
    assert points
    assert not any(kv.key in identity.RECORD_KEYS for p in points for kv in p.attributes)

    (part,) = split_by_session(Signal.METRICS, TENANT, request)

    assert part.request is request
    assert part.records == len(points)
    assert part.session_id == identity.synthetic_session(
        TENANT, resource.get("service.name"), resource.get("host.name")
    )


def _attributes(pairs: list[tuple[str, str]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]


#: A record naming its session twice, the GenAI convention's attribute first on the wire.
BOTH_WIRE_ORDER = [("gen_ai.conversation.id", "conv-1"), ("session.id", "sess-1"), ("user.id", "u")]


def test_session_is_chosen_by_preference_not_wire_order() -> None:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(_attributes([("service.name", "my-agent")]))
    records = resource_logs.scope_logs.add().log_records
    records.add(time_unix_nano=1).attributes.extend(_attributes(BOTH_WIRE_ORDER))
    records.add(time_unix_nano=2).attributes.extend(_attributes([("session.id", "sess-1")]))
    expected = identity.session_of(
        TENANT, dict(BOTH_WIRE_ORDER), {"service.name": "my-agent"}
    )  # the shared rule, read from plain dicts
    assert expected == "sess-1"

    (part,) = split_by_session(Signal.LOGS, TENANT, request)

    assert (part.session_id, part.records) == (expected, 2)
    assert part.request is request  # one session, not two: published whole


def test_spans_and_points_follow_the_same_rule() -> None:
    traces = ExportTraceServiceRequest()
    span = traces.resource_spans.add().scope_spans.add().spans.add(name="s")
    span.attributes.extend(_attributes(BOTH_WIRE_ORDER))
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="m")
    point = metric.sum.data_points.add(as_int=1)
    point.attributes.extend(_attributes(BOTH_WIRE_ORDER))
    ((span_part,), (point_part,)) = (
        split_by_session(Signal.TRACES, TENANT, traces),
        split_by_session(Signal.METRICS, TENANT, metrics),
    )
    assert span_part.session_id == point_part.session_id == "sess-1"


def test_record_identity_before_resource_identity() -> None:
    # Gemini CLI puts session.id on the resource; a record's own identity still wins.
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(_attributes([("session.id", "resource-1")]))
    records = resource_logs.scope_logs.add().log_records
    records.add(time_unix_nano=1).attributes.extend(_attributes([("conversation.id", "record-1")]))
    records.add(time_unix_nano=2)
    parts = {part.session_id: part for part in split_by_session(Signal.LOGS, TENANT, request)}
    assert {sid: p.records for sid, p in parts.items()} == {"record-1": 1, "resource-1": 1}
    for sid, time_ns in [("record-1", 1), ("resource-1", 2)]:
        (resource_part,) = parts[sid].request.resource_logs
        assert resource_part.resource == resource_logs.resource
        assert [r.time_unix_nano for r in resource_part.scope_logs[0].log_records] == [time_ns]


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
    parts = {part.session_id: part.records for part in split_by_session(Signal.LOGS, TENANT, request)}
    assert parts == {"gemini-1": 2, "codex-1": 2}


def test_request_without_records_has_no_part() -> None:
    assert split_by_session(Signal.METRICS, TENANT, ExportMetricsServiceRequest()) == []
    pointless = ExportMetricsServiceRequest()
    pointless.resource_metrics.add().scope_metrics.add().metrics.add(name="m").sum.SetInParent()
    assert split_by_session(Signal.METRICS, TENANT, pointless) == []


_KEYS = st.sampled_from([*identity.SESSION_ATTRIBUTES, "user.id", "service.name", "host.name", "other"])
_VALUES = st.one_of(st.sampled_from(["", "a", "b"]), st.integers(-1, 1))
_ATTRIBUTES = st.lists(st.tuples(_KEYS, _VALUES), max_size=8)


def _key_values(pairs: list[tuple[str, str | int]]) -> list[KeyValue]:
    return [
        KeyValue(key=k, value=AnyValue(string_value=v) if isinstance(v, str) else AnyValue(int_value=v))
        for k, v in pairs
    ]


@given(record=_ATTRIBUTES, resource=_ATTRIBUTES)
def test_the_session_is_exactly_the_shared_rule(
    record: list[tuple[str, str | int]], resource: list[tuple[str, str | int]]
) -> None:
    """Whatever the attributes and their order (repeated keys, empty and non-string values),
    the part's session is identity.session_of over identity.strings of record and resource."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(_key_values(resource))
    resource_logs.scope_logs.add().log_records.add().attributes.extend(_key_values(record))
    expected = identity.session_of(
        TENANT,
        identity.strings(resource_logs.scope_logs[0].log_records[0].attributes, identity.RECORD_KEYS),
        identity.strings(resource_logs.resource.attributes, identity.RESOURCE_KEYS),
    )
    (part,) = split_by_session(Signal.LOGS, TENANT, request)
    assert part.session_id == expected


CODEX_TRACES = FIXTURES / "codex" / "stub-text-protobuf" / "0005_v1_traces.pb"


def test_codex_spans_with_and_without_a_session_split_exactly() -> None:
    """Codex names the conversation on a few spans only: the rest go to the synthetic session
    of the same service and host, every span once, with its resource and scope, in order."""
    request = ExportTraceServiceRequest.FromString(CODEX_TRACES.read_bytes())
    expected: dict[str, list[bytes]] = {}
    for rs in request.resource_spans:
        resource = identity.strings(rs.resource.attributes, identity.RESOURCE_KEYS)
        for ss in rs.scope_spans:
            for span in ss.spans:
                own = identity.strings(span.attributes, identity.RECORD_KEYS)
                sid = identity.session_of(TENANT, own, resource)
                expected.setdefault(sid, []).append(span.SerializeToString())
    assert len(expected) == 2  # the conversation and the synthetic session

    parts = {part.session_id: part for part in split_by_session(Signal.TRACES, TENANT, request)}

    assert parts.keys() == expected.keys()
    for sid, part in parts.items():
        spans = [s for rs in part.request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert [s.SerializeToString() for s in spans] == expected[sid]
        assert part.records == len(spans)
        for rs in part.request.resource_spans:
            (original,) = [o for o in request.resource_spans if o.resource == rs.resource]
            assert {ss.scope.name for ss in rs.scope_spans} <= {ss.scope.name for ss in original.scope_spans}
