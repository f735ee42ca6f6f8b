"""What an OTLP request holds, as comparable fingerprints, from JSON (plain ``json``) or Kafka.

Used to prove that what ingest wrote to Kafka holds exactly the records the agent sent,
independently of ingest's own decoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tokentide.topics import Signal

#: Attributes naming a session: Claude Code and Gemini CLI ``session.id``, Codex ``conversation.id``.
SESSION_KEYS = ("session.id", "conversation.id")
REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
}


def _session(*attribute_lists: list[dict[str, Any]]) -> str | None:
    for attributes in attribute_lists:
        for attribute in attributes:
            value = attribute.get("value", {}).get("stringValue")
            if attribute["key"] in SESSION_KEYS and value:
                return str(value)
    return None


def json_records(signal: Signal, document: dict[str, Any]) -> Iterator[tuple[object, str | None]]:
    """(fingerprint, session) of every record: log time, span id (hex), metric point."""
    resources, scopes, records = {
        Signal.LOGS: ("resourceLogs", "scopeLogs", "logRecords"),
        Signal.TRACES: ("resourceSpans", "scopeSpans", "spans"),
        Signal.METRICS: ("resourceMetrics", "scopeMetrics", "metrics"),
    }[signal]
    for resource in document.get(resources, []):
        resource_attributes = resource.get("resource", {}).get("attributes", [])
        for scope in resource.get(scopes, []):
            for record in scope.get(records, []):
                if signal is Signal.METRICS:
                    for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                        for point in record.get(kind, {}).get("dataPoints", []):
                            session = _session(point.get("attributes", []), resource_attributes)
                            yield (record["name"], int(point.get("timeUnixNano", 0))), session
                else:
                    session = _session(record.get("attributes", []), resource_attributes)
                    fingerprint = (
                        int(record.get("timeUnixNano", 0))
                        if signal is Signal.LOGS
                        else record["spanId"].lower()
                    )
                    yield fingerprint, session


def kafka_records(signal: Signal, value: bytes) -> list[object]:
    """The same fingerprints, from a raw Kafka message (a serialized request)."""
    request: Any = REQUEST_TYPES[signal].FromString(value)
    if signal is Signal.LOGS:
        return [
            r.time_unix_nano for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records
        ]
    if signal is Signal.TRACES:
        return [s.span_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return [
        (metric.name, point.time_unix_nano)
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.WhichOneof("data")
        for point in getattr(metric, metric.WhichOneof("data")).data_points
    ]


def expected_keys(signal: Signal, document: dict[str, Any], tenant: str = "default") -> set[str]:
    """One Kafka message per session of the request, keyed ``tenant[/session]``."""
    sessions = {session for _, session in json_records(signal, document)}
    return {f"{tenant}/{s}" if s else tenant for s in sessions}
