"""Pure: remove the records of a request that tokentide refuses, and count them by reason.

What is refused (the rest of the request is still accepted, answered with
``partial_success``; the client must not retry):

- log records and spans whose ``trace_id`` is set but not 16 bytes, or ``span_id`` set but
  not 8 bytes (spans: both are required);
- metric data points of a metric without a name, and number data points without a value;
- the values of :mod:`tokentide.bounds`, which the stream stage refuses too:

  - log records with a token count or cost attribute out of range (keys in
    :data:`~tokentide.bounds.TOKEN_ATTRIBUTES`, :data:`~tokentide.bounds.COST_ATTRIBUTES`,
    :data:`~tokentide.bounds.COST_MICROS_ATTRIBUTES`; int, double or string values);
  - data points of a token or cost metric (:data:`~tokentide.bounds.TOKEN_METRICS`,
    :data:`~tokentide.bounds.COST_METRICS`) whose value (sums and gauges: the number;
    histograms: the sum) is out of range;
  - log records and data points (of any metric) dated more than
    :data:`~tokentide.bounds.MAX_FUTURE_NS` after the request was received. A log record's
    date is ``time_unix_nano``, else (0) ``observed_time_unix_nano``, as the stream stage
    reads it.

A record is refused whole or kept whole, never changed. Each refusal has a short stable
label (the ``reason`` of a :class:`~tokentide.bounds.OutOfRange`, or one of
:data:`FORMAT_REASONS`) for metrics, and a text for the client's ``error_message``.

Cost: one pass over the records, no second parse and no dict of attributes: of a log
record's attributes only the values whose key is in the bounded sets are read (a set lookup
per key); a point of a metric that is not bounded costs a time comparison. A container with
nothing to refuse is left untouched; one that loses records is rebuilt from the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from tokentide import bounds
from tokentide.bounds import OutOfRange
from tokentide.topics import Signal

#: Labels of the refusals of malformed OTLP (those of out-of-range values are bounds' own).
FORMAT_REASONS = ("bad_trace_id", "bad_span_id", "metric_without_name", "point_without_value")
#: Log record attributes whose values are bounded.
BOUNDED_ATTRIBUTES = bounds.TOKEN_ATTRIBUTES | bounds.COST_ATTRIBUTES | bounds.COST_MICROS_ATTRIBUTES
#: Metrics whose point values are bounded.
BOUNDED_METRICS = bounds.TOKEN_METRICS | bounds.COST_METRICS
_NOUNS = {
    Signal.LOGS: ("log record", "log records"),
    Signal.METRICS: ("data point", "data points"),
    Signal.TRACES: ("span", "spans"),
}

#: Why one record is refused: (label, text); None when it is kept.
Refusal = tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class Refused:
    """What :func:`drop_invalid` removed: ``count`` records, ``reasons`` by label.

    ``message`` is the client's ``error_message``: how many and the first reason, e.g.
    ``"2 log records refused: input_tokens -5 is negative"``; empty when nothing was refused.
    """

    count: int = 0
    message: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


def drop_invalid(signal: Signal, request: Message, received_ns: int) -> Refused:
    """Remove refused records from ``request`` in place; say how many and why.

    ``received_ns`` is when the request was received (the ``tt-received-at`` it is published
    with): records dated more than a day after it are refused.
    """
    reasons: Counter[str] = Counter()
    first = ""
    for refusals in _walk(signal, request, received_ns):
        for label, text in refusals:
            reasons[label] += 1
            first = first or text
    return refused_summary(signal, reasons, first)


def refused_summary(signal: Signal, reasons: Counter[str], first: str) -> Refused:
    """The :class:`Refused` of ``reasons`` (label: count), ``first`` the first refusal's text."""
    count = sum(reasons.values())
    if not count:
        return Refused()
    one, many = _NOUNS[signal]
    return Refused(count, f"{count} {one if count == 1 else many} refused: {first}", dict(reasons))


def _filter(records: Any, refusal_of: Callable[[Any], Refusal]) -> list[tuple[str, str]]:
    """Remove from the repeated field ``records`` those ``refusal_of`` refuses; their refusals."""
    verdicts = [refusal_of(r) for r in records]
    refused = [v for v in verdicts if v is not None]
    if refused:
        kept = [r for r, v in zip(records, verdicts, strict=True) if v is None]
        del records[:]
        records.extend(kept)
    return refused


def _walk(signal: Signal, request: Any, received_ns: int) -> Iterator[list[tuple[str, str]]]:
    latest = received_ns + bounds.MAX_FUTURE_NS
    if signal is Signal.LOGS:
        for resource in request.resource_logs:
            for scope in resource.scope_logs:
                yield _filter(scope.log_records, lambda r: _log_refusal(r, received_ns, latest))
    elif signal is Signal.TRACES:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                yield _filter(scope.spans, lambda r: _bad_ids(r, required=True))
    else:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    yield _metric_refusals(metric, received_ns, latest)


def _bad_ids(record: Any, required: bool) -> Refusal:
    trace_id, span_id = record.trace_id, record.span_id
    if (trace_id or required) and len(trace_id) != 16:
        return "bad_trace_id", f"trace_id must be 16 bytes, got {len(trace_id)}"
    if (span_id or required) and len(span_id) != 8:
        return "bad_span_id", f"span_id must be 8 bytes, got {len(span_id)}"
    return None


def _too_late(time_ns: int, received_ns: int, latest: int) -> Refusal:
    if time_ns <= latest:  # the common case, decided without a call (latest: bounds' own limit)
        return None
    try:
        bounds.event_time(time_ns, received_ns)
    except OutOfRange as refused:
        return refused.reason, str(refused)
    return None


def _log_refusal(record: Any, received_ns: int, latest: int) -> Refusal:
    """One log record: its ids, its date, then each bounded attribute (int, double, string;
    other kinds are passed as they are and refused as ``not_a_number``; unset is absent)."""
    trace_id, span_id = record.trace_id, record.span_id
    if (trace_id and len(trace_id) != 16) or (span_id and len(span_id) != 8):
        return _bad_ids(record, required=False)
    refusal = _too_late(record.time_unix_nano or record.observed_time_unix_nano, received_ns, latest)
    if refusal is not None:
        return refusal
    for kv in record.attributes:
        key = kv.key
        if key in BOUNDED_ATTRIBUTES:
            value = kv.value
            kind = value.WhichOneof("value")
            try:
                bounds.record_attribute(key, None if kind is None else getattr(value, kind))
            except OutOfRange as refused:
                return refused.reason, str(refused)
    return None


def _point_refusal(point: Any, number: bool, bounded: str | None, received_ns: int, latest: int) -> Refusal:
    """One data point: a number point needs a value; the value of a point of the bounded
    metric ``bounded`` (a number, or a histogram's sum: 0 when unset, as the stream stage
    reads it) must be in range; any point must not be dated too far ahead."""
    value: float | None = None
    if number:
        which = point.WhichOneof("value")
        if which is None:
            return "point_without_value", "number data point without a value"
        value = getattr(point, which)  # an int stays an int: bounds compares it exactly
    elif bounded is not None:
        value = point.sum
    if bounded is not None and value is not None:
        try:
            bounds.metric_value(bounded, value)
        except OutOfRange as refused:
            return refused.reason, str(refused)
    return _too_late(point.time_unix_nano, received_ns, latest)


def _metric_refusals(metric: Any, received_ns: int, latest: int) -> list[tuple[str, str]]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    points = getattr(metric, kind).data_points
    if not metric.name:
        return _filter(points, lambda _: ("metric_without_name", "metric without a name"))
    number = kind in ("sum", "gauge")
    # Summaries are not read by the stream stage (no agent sends them): only their time counts.
    bounded = metric.name if metric.name in BOUNDED_METRICS and kind != "summary" else None
    if bounded is None and (
        all(p.time_unix_nano <= latest and p.WhichOneof("value") for p in points)
        if number
        else all(p.time_unix_nano <= latest for p in points)
    ):
        return []  # the common case (most metrics are not bounded), in one cheap pass
    return _filter(points, lambda p: _point_refusal(p, number, bounded, received_ns, latest))
