"""The normaliser interface, the registry, and the walk over an OTLP request.

One normaliser per agent turns that agent's records into canonical :class:`Event` and
:class:`Point` records. The registry picks a normaliser per resource (first match wins);
records of clients nobody knows are still kept, by the generic normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from streams.otlp import as_str, attributes, stable_id
from tokentide.identity import SESSION_ATTRIBUTES
from tokentide.records import Event, Point

SESSION_KEYS = SESSION_ATTRIBUTES


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a group of records came from: tenant, resource and scope."""

    tenant: str
    received_ns: int
    resource: dict[str, Any]
    scope_name: str

    @property
    def service_name(self) -> str | None:
        return as_str(self.resource.get("service.name"))

    def session_of(self, attrs: dict[str, Any]) -> str:
        """The record's session, else the resource's, else a synthetic one.

        Records without any session identity are kept under one synthetic session per
        (tenant, service, user), never dropped.
        """
        for source in (attrs, self.resource):
            for key in SESSION_KEYS:
                value = source.get(key)
                if isinstance(value, str) and value:
                    return value
        user = attrs.get("user.id") or self.resource.get("host.name") or ""
        return "synthetic-" + stable_id(self.tenant, self.service_name, user)[:20]


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
        self, request: ExportLogsServiceRequest, tenant: str, received_ns: int
    ) -> dict[str, SessionRecords]:
        out: dict[str, SessionRecords] = {}
        for resource_logs in request.resource_logs:
            resource = attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                origin = Origin(tenant, received_ns, resource, scope_logs.scope.name)
                normaliser = self.pick(origin)
                for record in scope_logs.log_records:
                    event = normaliser.event(origin, record)
                    group = _group(out, event.session_id, normaliser.agent, origin)
                    group.events.append(event)
                    group.long_context = group.long_context or event.model_variant == "1m"
                    group.user_id = group.user_id or event.user_id
        return out

    def metrics(
        self, request: ExportMetricsServiceRequest, tenant: str, received_ns: int
    ) -> dict[str, SessionRecords]:
        out: dict[str, SessionRecords] = {}
        for resource_metrics in request.resource_metrics:
            resource = attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                origin = Origin(tenant, received_ns, resource, scope_metrics.scope.name)
                normaliser = self.pick(origin)
                for metric in scope_metrics.metrics:
                    long_context = normaliser.long_context(origin, metric)
                    for point in normaliser.points(origin, metric):
                        group = _group(out, point.session_id, normaliser.agent, origin)
                        group.points.append(point)
                        group.long_context = group.long_context or long_context
                        group.user_id = group.user_id or as_str(point.attributes.get("user.id"))
        return out


def _group(out: dict[str, SessionRecords], session_id: str, agent: str, origin: Origin) -> SessionRecords:
    group = out.get(session_id)
    if group is None:
        group = out[session_id] = SessionRecords(
            session_id, agent, origin.service_name, resource=origin.resource
        )
    return group
