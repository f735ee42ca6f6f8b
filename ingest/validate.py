"""Pure: remove the records of a request that OTLP says are invalid, and count them.

What is refused (the rest of the request is still accepted, answered with
``partial_success``; the client must not retry):

- log records and spans whose ``trace_id`` is set but not 16 bytes, or ``span_id`` set but
  not 8 bytes (spans: both are required);
- metric data points of a metric without a name, and number data points without a value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from tokentide.topics import Signal


@dataclass(frozen=True, slots=True)
class Refused:
    count: int = 0
    reason: str = ""


def _bad_ids(record: Any, required: bool) -> str | None:
    trace_id, span_id = record.trace_id, record.span_id
    if (trace_id or required) and len(trace_id) != 16:
        return f"trace_id must be 16 bytes, got {len(trace_id)}"
    if (span_id or required) and len(span_id) != 8:
        return f"span_id must be 8 bytes, got {len(span_id)}"
    return None


def _filter(container: Any, field: str, reason_of: Any) -> tuple[int, str]:
    records = getattr(container, field)
    reasons = [reason_of(r) for r in records]
    if not any(reasons):
        return 0, ""
    kept = [r for r, why in zip(records, reasons, strict=True) if not why]
    first = next(why for why in reasons if why)
    del records[:]
    records.extend(kept)
    return sum(1 for why in reasons if why), first


def drop_invalid(signal: Signal, request: Message) -> Refused:
    """Remove invalid records from ``request`` in place; say how many and why (the first reason)."""
    total, first = 0, ""
    for count, reason in _invalid(signal, request):
        total += count
        first = first or reason
    return Refused(total, first)


def _invalid(signal: Signal, request: Any) -> Any:
    walk = {Signal.LOGS: _invalid_logs, Signal.TRACES: _invalid_spans, Signal.METRICS: _invalid_points}[
        signal
    ]
    return walk(request)


def _invalid_logs(request: Any) -> Any:
    for resource in request.resource_logs:
        for scope in resource.scope_logs:
            yield _filter(scope, "log_records", lambda r: _bad_ids(r, required=False))


def _invalid_spans(request: Any) -> Any:
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            yield _filter(scope, "spans", lambda r: _bad_ids(r, required=True))


def _no_value(point: Any) -> str | None:
    return None if point.WhichOneof("value") else "number data point without a value"


def _invalid_points(request: Any) -> Any:
    for resource in request.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                if not metric.name:
                    yield _filter(data, "data_points", lambda _: "metric without a name")
                elif kind in ("sum", "gauge"):
                    yield _filter(data, "data_points", _no_value)
