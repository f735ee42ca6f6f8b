"""Pure: find the session of every record in an OTLP request, and split by session.

Kafka is keyed by tenant/session so that one worker owns each session's state. Agents send
one session per request (Claude Code is one process per session), so the usual answer is
"one part, the request as it came"; a request that mixes sessions (a collector in front of
several agents) is split into one request per session, each record kept exactly once with
its resource and scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from tokentide.identity import SESSION_ATTRIBUTES
from tokentide.topics import Signal

SESSION_KEYS = SESSION_ATTRIBUTES

# (resource list, scope list, record list) field names per signal; metrics nest their
# records (data points) one level deeper, inside each Metric.
_LAYOUT = {
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
}
_POINT_KINDS = ("sum", "gauge", "histogram", "exponential_histogram", "summary")


@dataclass(frozen=True, slots=True)
class Part:
    """The records of one session (``session_id`` None: records without any session)."""

    session_id: str | None
    request: Message
    records: int


def session_of(attributes: Iterable[KeyValue]) -> str | None:
    for kv in attributes:
        if kv.key in SESSION_KEYS:
            value = kv.value.string_value
            if value:
                return value
    return None


def split_by_session(signal: Signal, request: Message) -> list[Part]:
    """Split ``request`` into one part per session; a one-session request is returned whole."""
    counts: dict[str | None, int] = {}
    for session_id in _record_sessions(signal, request):
        counts[session_id] = counts.get(session_id, 0) + 1
    if len(counts) <= 1:
        session_id, count = next(iter(counts.items()), (None, 0))
        return [Part(session_id, request, count)]
    parts: dict[str | None, Message] = {}
    resources_field, scopes_field, records_field = _LAYOUT[signal]
    for resource_item in getattr(request, resources_field):
        resource_sid = session_of(resource_item.resource.attributes)
        for scope_item in getattr(resource_item, scopes_field):
            grouped: dict[str | None, list[Message]] = {}
            for record in getattr(scope_item, records_field):
                if signal is Signal.METRICS:
                    for sid, metric in _split_metric(record, resource_sid):
                        grouped.setdefault(sid, []).append(metric)
                else:
                    sid = session_of(record.attributes) or resource_sid
                    grouped.setdefault(sid, []).append(record)
            for sid, records in grouped.items():
                part = parts.setdefault(sid, type(request)())
                out_resource = getattr(part, resources_field).add()
                out_resource.resource.CopyFrom(resource_item.resource)
                out_resource.schema_url = resource_item.schema_url
                out_scope = getattr(out_resource, scopes_field).add()
                out_scope.scope.CopyFrom(scope_item.scope)
                out_scope.schema_url = scope_item.schema_url
                getattr(out_scope, records_field).extend(records)
    return [Part(sid, part, counts.get(sid, 0)) for sid, part in parts.items()]


def _record_sessions(signal: Signal, request: Message) -> Iterator[str | None]:
    """The session of every record (metrics: every data point), in order."""
    resources_field, scopes_field, records_field = _LAYOUT[signal]
    for resource_item in getattr(request, resources_field):
        resource_sid = session_of(resource_item.resource.attributes)
        for scope_item in getattr(resource_item, scopes_field):
            for record in getattr(scope_item, records_field):
                if signal is Signal.METRICS:
                    for point in _points(record):
                        yield session_of(point.attributes) or resource_sid
                else:
                    yield session_of(record.attributes) or resource_sid


def _points(metric: Metric) -> list[Any]:
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points) if kind in _POINT_KINDS else []


def _split_metric(metric: Metric, resource_sid: str | None) -> list[tuple[str | None, Metric]]:
    kind = metric.WhichOneof("data")
    if kind not in _POINT_KINDS:
        return [(resource_sid, metric)]
    by_session: dict[str | None, Metric] = {}
    for point in getattr(metric, kind).data_points:
        sid = session_of(point.attributes) or resource_sid
        out = by_session.get(sid)
        if out is None:
            out = Metric()
            out.CopyFrom(metric)
            getattr(out, kind).ClearField("data_points")
            by_session[sid] = out
        getattr(out, kind).data_points.add().CopyFrom(point)
    return list(by_session.items())
