"""The fallback normaliser: any OTLP client's records kept as generic events and points."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from streams.normalise.base import Origin
from streams.otlp import any_value, as_str, attributes, stable_id
from tokentide.records import Event, Point


class GenericNormaliser:
    """Matches every origin; the agent is the resource's ``service.name``."""

    agent = "unknown"

    def matches(self, origin: Origin) -> bool:
        return True

    def agent_of(self, origin: Origin) -> str:
        return origin.service_name or self.agent

    def event(self, origin: Origin, record: LogRecord) -> Event:
        attrs = attributes(record.attributes)
        body = any_value(record.body)
        name = as_str(attrs.get("event.name")) or record.event_name or "log"
        time_ns = record.time_unix_nano or record.observed_time_unix_nano or origin.received_ns
        session_id = origin.session_of(attrs)
        if body is not None:
            attrs["body"] = body
        return Event(
            tenant=origin.tenant,
            session_id=session_id,
            # Content-addressed: a re-sent record gets the same id.
            event_id=stable_id(session_id, record.SerializeToString(deterministic=True)),
            agent=self.agent_of(origin),
            name=name,
            time_ns=time_ns,
            user_id=as_str(attrs.get("user.id")),
            attributes=attrs,
        )

    def long_context(self, origin: Origin, metric: Metric) -> bool:
        return False

    def points(self, origin: Origin, metric: Metric) -> list[Point]:
        kind = metric.WhichOneof("data")
        # (data point, its attributes, value, extra attributes kept with the point)
        raw: list[tuple[Any, dict[str, Any], float, dict[str, Any]]]
        monotonic = kind == "sum" and metric.sum.is_monotonic
        if kind in ("sum", "gauge"):
            data = getattr(metric, kind)
            temporality = data.aggregation_temporality if kind == "sum" else 0
            raw = [
                (
                    p,
                    attributes(p.attributes),
                    p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int),
                    {},
                )
                for p in data.data_points
            ]
        elif kind in ("histogram", "exponential_histogram"):
            data = getattr(metric, kind)
            temporality = data.aggregation_temporality
            raw = [
                (p, attributes(p.attributes), p.sum, {"histogram.count": p.count}) for p in data.data_points
            ]
        else:
            return []  # summaries are not produced by any agent we know
        agent = self.agent_of(origin)
        service = origin.service_name
        return [
            Point(
                tenant=origin.tenant,
                session_id=origin.session_of(attrs),
                agent=agent,
                name=metric.name,
                series_id=stable_id(service, metric.name, sorted(attrs.items())),
                time_ns=point.time_unix_nano or origin.received_ns,
                start_time_ns=point.start_time_unix_nano,
                value=value,
                temporality=temporality,
                monotonic=monotonic,
                unit=metric.unit,
                attributes={**attrs, **extra},
            )
            for point, attrs, value, extra in raw
        ]
