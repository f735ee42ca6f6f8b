"""The normaliser interface, the registry, and the walk over an OTLP request.

One normaliser per agent turns that agent's records into canonical :class:`Event` and
:class:`Point` records. The registry picks a normaliser per resource (first match wins);
records of clients nobody knows are still kept, by the generic normaliser.

A record that cannot be normalised (a value out of range, :mod:`tokentide.bounds`, or any
exception of a normaliser) is :class:`Rejected` on its own: the other records of the
request still count, and the stream stage dead-letters the rejected one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from streams.otlp import as_str, attributes
from tokentide import bounds, identity
from tokentide.records import Event, Point

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a group of records came from: tenant, resource and scope."""

    tenant: str
    received_ns: int
    resource: dict[str, Any]
    scope_name: str
    #: The session of the whole message, as ingest keyed it (its ``tt-session`` header);
    #: None only for messages written before ingest set it.
    session: str | None = None

    @property
    def service_name(self) -> str | None:
        return as_str(self.resource.get("service.name"))

    def session_of(self, attrs: dict[str, Any]) -> str:
        """The record's session: the message's (ingest decided it, :mod:`tokentide.identity`),
        or for an old message without one the same rule applied here."""
        if self.session:
            return self.session
        return identity.session_of(self.tenant, attrs, self.resource)


class Normaliser(Protocol):
    """Turns one agent's OTLP records into canonical records. Pure: no I/O."""

    agent: str

    def matches(self, origin: Origin) -> bool:
        """Whether this normaliser understands records from ``origin``."""
        ...

    def event(self, origin: Origin, record: LogRecord) -> Event:
        """The canonical event of one log record."""
        ...

    def points(self, origin: Origin, metric: Metric) -> list[Point]:
        """The canonical points of one metric (one per data point)."""
        ...

    def long_context(self, origin: Origin, metric: Metric) -> bool:
        """Whether ``metric`` shows that its session runs with a long-context window."""
        ...


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record refused at normalisation: it counts nowhere and is dead-lettered."""

    #: A short stable label: :attr:`tokentide.bounds.OutOfRange.reason`, or ``normalise_error``.
    reason: str
    #: The exception's class and message.
    error: str
    message: str
    #: ``log_record`` or ``data_point`` (``metric``: a whole metric its normaliser refused).
    kind: str
    session_id: str | None
    #: The OTLP record as OTLP/JSON (a data point with its metric's name, unit and type).
    record: dict[str, Any]
    #: Its resource's attributes (what a re-sent copy needs besides the record).
    resource: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Normalised:
    """Everything one request said, by session, and what was refused."""

    sessions: dict[str, SessionRecords] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(slots=True)
class SessionRecords:
    """Everything one request said about one session."""

    session_id: str
    agent: str
    service_name: str | None = None
    user_id: str | None = None
    long_context: bool = False
    #: Attributes of the (first) resource the session's records came with.
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)


class Registry:
    """Normalisers in order of preference; the last one must match everything."""

    def __init__(self, normalisers: list[Normaliser]) -> None:
        if not normalisers:
            raise ValueError("a registry needs at least the generic normaliser")
        self.normalisers = normalisers

    def pick(self, origin: Origin) -> Normaliser:
        for normaliser in self.normalisers:
            if normaliser.matches(origin):
                return normaliser
        return self.normalisers[-1]

    def logs(
        self, request: ExportLogsServiceRequest, tenant: str, received_ns: int, session: str | None = None
    ) -> Normalised:
        out = Normalised()
        for resource_logs in request.resource_logs:
            resource = attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                origin = Origin(tenant, received_ns, resource, scope_logs.scope.name, session)
                normaliser = self.pick(origin)
                for record in scope_logs.log_records:
                    event = _guarded(out, origin, "log_record", record, _event, normaliser, origin, record)
                    if event is None:
                        continue
                    group = _group(out.sessions, event.session_id, normaliser.agent, origin)
                    group.events.append(event)
                    group.long_context = group.long_context or event.model_variant == "1m"
                    group.user_id = group.user_id or event.user_id
        return out

    def metrics(
        self, request: ExportMetricsServiceRequest, tenant: str, received_ns: int, session: str | None = None
    ) -> Normalised:
        out = Normalised()
        for resource_metrics in request.resource_metrics:
            resource = attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                origin = Origin(tenant, received_ns, resource, scope_metrics.scope.name, session)
                normaliser = self.pick(origin)
                for metric in scope_metrics.metrics:
                    valid = _valid_points(out, origin, metric)
                    points = _guarded(out, origin, "metric", valid, normaliser.points, origin, valid)
                    if not points:
                        continue
                    long_context = normaliser.long_context(origin, valid)
                    for point in points:
                        group = _group(out.sessions, point.session_id, normaliser.agent, origin)
                        group.points.append(point)
                        group.long_context = group.long_context or long_context
                        group.user_id = group.user_id or as_str(point.attributes.get("user.id"))
        return out


def _event(normaliser: Normaliser, origin: Origin, record: LogRecord) -> Event:
    """``record`` normalised and checked by :mod:`tokentide.bounds` (raise OutOfRange): the
    attributes that carry tokens or costs, whether the normaliser reads them or not (on the
    event's attributes, converted once), and the time."""
    event = normaliser.event(origin, record)
    attrs = event.attributes
    for key in _BOUNDED_ATTRIBUTES.intersection(attrs):
        bounds.record_attribute(key, attrs[key])
    bounds.event_time(event.time_ns, origin.received_ns)
    return event


_BOUNDED_ATTRIBUTES = bounds.TOKEN_ATTRIBUTES | bounds.COST_ATTRIBUTES | bounds.COST_MICROS_ATTRIBUTES
_POINT_KINDS = ("sum", "gauge", "histogram", "exponential_histogram")


def _guarded(
    out: Normalised, origin: Origin, kind: str, record: Message, make: Callable[..., _T], *args: Any
) -> _T | None:
    """``make(*args)``, or None after rejecting ``record`` with why ``make`` raised."""
    try:
        return make(*args)
    except Exception as exc:  # noqa: BLE001 (one bad record must never stop the others)
        reason = exc.reason if isinstance(exc, bounds.OutOfRange) else "normalise_error"
        attrs = attributes(getattr(record, "attributes", ()))
        out.rejected.append(
            Rejected(
                reason=reason,
                error=type(exc).__name__,
                message=str(exc)[:500],
                kind=kind,
                session_id=origin.session_of(attrs) if kind == "log_record" else origin.session,
                record=MessageToDict(record),
                resource=origin.resource,
            )
        )
        return None


def _valid_points(out: Normalised, origin: Origin, metric: Metric) -> Metric:
    """``metric`` without its data points out of range (each one rejected on its own)."""
    kind = metric.WhichOneof("data")
    if kind not in _POINT_KINDS:
        return metric
    data_points = getattr(metric, kind).data_points
    refused: list[int] = []
    for i, point in enumerate(data_points):
        try:
            bounds.event_time(point.time_unix_nano, origin.received_ns)
            if kind in ("sum", "gauge"):
                value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
            else:
                value = point.sum
            bounds.metric_value(metric.name, value)
        except bounds.OutOfRange as exc:
            refused.append(i)
            attrs = attributes(point.attributes)
            out.rejected.append(
                Rejected(
                    reason=exc.reason,
                    error=type(exc).__name__,
                    message=str(exc)[:500],
                    kind="data_point",
                    session_id=origin.session_of(attrs),
                    record={
                        "metric": metric.name,
                        "unit": metric.unit,
                        "type": kind,
                        "point": MessageToDict(point),
                    },
                    resource=origin.resource,
                )
            )
    if not refused:
        return metric
    kept = Metric()
    kept.CopyFrom(metric)
    kept_points = getattr(kept, kind).data_points
    del kept_points[:]
    kept_points.extend(p for i, p in enumerate(data_points) if i not in refused)
    return kept


def _group(out: dict[str, SessionRecords], session_id: str, agent: str, origin: Origin) -> SessionRecords:
    group = out.get(session_id)
    if group is None:
        group = out[session_id] = SessionRecords(
            session_id, agent, origin.service_name, resource=origin.resource
        )
    return group
