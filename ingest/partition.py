"""Pure: find the session of every record in an OTLP request, and split by session.

Kafka is keyed by ``tenant/<session>`` so that one worker owns each session's state. The
session of a log record, span or metric data point is decided by the one rule of
:mod:`tokentide.identity` (the record's attributes, then its resource's, in preference
order; else the synthetic session of its tenant, service and user), the same rule the stream
stage applies, so a record is keyed by the session it is stored under. Every record has a
session: records that name none go to their synthetic session.

Agents send one session per request (Claude Code is one process per session), so the usual
answer is "one part, the request as it came" (the same object, unchanged); a request that
mixes sessions (a collector in front of several agents, or records with and without a
session) is split into one request per session, each record kept exactly once with its
resource and scope, in its original order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from ingest.errors import PayloadTooLarge
from tokentide import identity
from tokentide.topics import Signal

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
    """The records of one session: ``request`` holds exactly ``records`` of them."""

    session_id: str
    request: Message
    records: int


class Sessions:
    """:func:`tokentide.identity.session_of` for the records under one resource.

    The resource's part of the rule is read once; records that carry no identity attribute
    of their own (every Codex metric point, most spans) share one answer, computed once.
    """

    __slots__ = ("_bare", "_resource", "_tenant")

    def __init__(self, tenant: str, resource: Any) -> None:
        self._tenant = tenant
        self._resource = identity.strings(resource.attributes, identity.RESOURCE_KEYS)
        self._bare: str | None = None

    def of(self, attributes: Any) -> str:
        return self.of_strings(identity.strings(attributes, identity.RECORD_KEYS))

    def of_strings(self, own: dict[str, str]) -> str:
        """The session of a record whose identity attributes are ``own`` (``identity.strings``)."""
        if own:
            return identity.session_of(self._tenant, own, self._resource)
        if self._bare is None:
            self._bare = identity.session_of(self._tenant, own, self._resource)
        return self._bare


#: (resource index, scope index, session) of one record (metrics: one data point).
Located = tuple[int, int, str]


def split_by_session(
    signal: Signal,
    tenant: str,
    request: Message,
    max_bytes: int | None = None,
    located: list[Located] | None = None,
) -> list[Part]:
    """Split ``request`` of ``tenant`` into one part per session, in order of first appearance.

    A one-session request is returned whole (``part.request is request``); a request without
    any record (log record, span, data point) gives no part.

    Splitting copies each resource and scope once per session under it: a small request with
    one large resource and many sessions would become many times its size. With ``max_bytes``,
    a split whose parts would hold more than that in total is refused (``PayloadTooLarge``,
    413) before anything is copied.
    """
    if located is None:  # else the caller found them already (ingest.onepass)
        located = list(_record_sessions(signal, tenant, request))
    order = [session_id for _, _, session_id in located]
    counts: dict[str, int] = {}
    for session_id in order:
        counts[session_id] = counts.get(session_id, 0) + 1
    if len(counts) <= 1:
        return [Part(session_id, request, count) for session_id, count in counts.items()]
    if max_bytes is not None:
        size = _split_size(signal, request, located)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"the request holds {len(counts)} sessions; split into one message per session it "
                f"would be {size} bytes, over the limit of {max_bytes} (send each session's records "
                "with its own resource, or fewer sessions per request)"
            )
    # Split, walking the records in the same order as above: each takes the next session.
    next_session = iter(order).__next__
    parts: dict[str, Message] = {}
    resources_field, scopes_field, records_field = _LAYOUT[signal]
    for resource_item in getattr(request, resources_field):
        for scope_item in getattr(resource_item, scopes_field):
            grouped: dict[str, list[Message]] = {}
            for record in getattr(scope_item, records_field):
                if signal is Signal.METRICS:
                    for sid, metric in _split_metric(record, next_session):
                        grouped.setdefault(sid, []).append(metric)
                else:
                    grouped.setdefault(next_session(), []).append(record)
            for sid, records in grouped.items():
                part = parts.setdefault(sid, type(request)())
                out_resource = getattr(part, resources_field).add()
                out_resource.resource.CopyFrom(resource_item.resource)
                out_resource.schema_url = resource_item.schema_url
                out_scope = getattr(out_resource, scopes_field).add()
                out_scope.scope.CopyFrom(scope_item.scope)
                out_scope.schema_url = scope_item.schema_url
                getattr(out_scope, records_field).extend(records)
    return [Part(sid, parts[sid], count) for sid, count in counts.items()]


def _record_sessions(signal: Signal, tenant: str, request: Message) -> Iterator[Located]:
    """(resource index, scope index, session) of every record (metrics: every data point), in order."""
    resources_field, scopes_field, records_field = _LAYOUT[signal]
    for r, resource_item in enumerate(getattr(request, resources_field)):
        sessions = Sessions(tenant, resource_item.resource)
        for s, scope_item in enumerate(getattr(resource_item, scopes_field)):
            for record in getattr(scope_item, records_field):
                if signal is Signal.METRICS:
                    kind = record.WhichOneof("data")
                    if kind in _POINT_KINDS:
                        for point in getattr(record, kind).data_points:
                            yield r, s, sessions.of(point.attributes)
                else:
                    yield r, s, sessions.of(record.attributes)


def _split_size(signal: Signal, request: Message, located: list[Located]) -> int:
    """Bytes the parts of a split would hold: the request, plus one more copy of each resource
    and scope per extra session under it (metrics: of each metric's own fields too, bounded by
    its scope's). An upper estimate, computed without copying anything."""
    resources_field, scopes_field, _ = _LAYOUT[signal]
    per_resource: dict[int, set[str]] = {}
    per_scope: dict[tuple[int, int], set[str]] = {}
    for r, s, session_id in located:
        per_resource.setdefault(r, set()).add(session_id)
        per_scope.setdefault((r, s), set()).add(session_id)
    resources = getattr(request, resources_field)
    size: int = request.ByteSize()
    for r, sessions in per_resource.items():
        extra = len(sessions) - 1
        if extra:
            size += extra * (resources[r].resource.ByteSize() + len(resources[r].schema_url) + 8)
    for (r, s), sessions in per_scope.items():
        extra = len(sessions) - 1
        if extra:
            scope = getattr(resources[r], scopes_field)[s]
            header = scope.scope.ByteSize() + len(scope.schema_url) + 8
            if signal is Signal.METRICS:
                header += sum(_metric_header_size(m) for m in scope.metrics)
            size += extra * header
    return size


def _metric_header_size(metric: Metric) -> int:
    """A metric's bytes other than its data points (copied with every session's part)."""
    kind = metric.WhichOneof("data")
    points = getattr(metric, kind).data_points if kind in _POINT_KINDS else ()
    points_size = 0
    for point in points:
        size: int = point.ByteSize()
        points_size += 1 + _varint_size(size) + size  # tag, length, point
    total: int = metric.ByteSize()
    return total - points_size


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _split_metric(metric: Metric, next_session: Callable[[], str]) -> list[tuple[str, Metric]]:
    """``metric`` once per session of its points (``next_session()`` for each, in order),
    each copy holding that session's points. A metric without points holds no record: it
    is dropped here.
    """
    kind = metric.WhichOneof("data")
    if kind not in _POINT_KINDS:
        return []
    # The metric without its points, copied once per session (copying the whole metric per
    # session and clearing its points would cost sessions x points).
    template = Metric()
    template.CopyFrom(metric)
    getattr(template, kind).ClearField("data_points")
    by_session: dict[str, Metric] = {}
    for point in getattr(metric, kind).data_points:
        sid = next_session()
        out = by_session.get(sid)
        if out is None:
            out = by_session[sid] = Metric()
            out.CopyFrom(template)
        getattr(out, kind).data_points.add().CopyFrom(point)
    return list(by_session.items())
