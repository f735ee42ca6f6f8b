"""Values out of tokentide.bounds are refused at the door: whole records, counted by reason."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

from ingest.validate import BOUNDED_ATTRIBUTES, BOUNDED_METRICS, drop_invalid
from tokentide import bounds
from tokentide.topics import Signal

RECEIVED_NS = 1_800_000_000 * 10**9
DAY_NS = 86_400 * 10**9
TWO_DAYS_AHEAD = RECEIVED_NS + 2 * DAY_NS


def test_the_bounded_names_are_bounds_own() -> None:
    assert (
        bounds.TOKEN_ATTRIBUTES | bounds.COST_ATTRIBUTES | bounds.COST_MICROS_ATTRIBUTES == BOUNDED_ATTRIBUTES
    )
    assert bounds.TOKEN_METRICS | bounds.COST_METRICS == BOUNDED_METRICS


def one_record(otlp_build: SimpleNamespace, time_ns: int = RECEIVED_NS, **overrides: Any) -> Any:
    """A Claude Code logs request of one ``api_request``, with ``overrides`` as AnyValues."""
    request = otlp_build.logs([(time_ns, otlp_build.api_request(1))])
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    for key, value in overrides.items():
        (kv,) = [kv for kv in record.attributes if kv.key == key] or [record.attributes.add(key=key)]
        kv.value.CopyFrom(value)
    return request


def logs_in(request: Any) -> list[Any]:
    return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


ARRAY = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))


@pytest.mark.parametrize(
    ("key", "value", "reason", "says"),
    [
        ("input_tokens", AnyValue(int_value=-5), "tokens_negative", "input_tokens -5 is negative"),
        ("output_tokens", AnyValue(double_value=3.5), "tokens_not_integer", "output_tokens 3.5 is not"),
        ("cache_read_tokens", AnyValue(double_value=math.nan), "tokens_not_finite", "cache_read_tokens"),
        ("cache_creation_tokens", AnyValue(string_value="-3"), "tokens_negative", "-3 is negative"),
        ("gen_ai.usage.input_tokens", AnyValue(int_value=10**12 + 1), "tokens_too_large", "is above"),
        ("input_token_count", AnyValue(string_value="lots"), "not_a_number", "count 'lots' is not"),
        ("output_tokens", AnyValue(bool_value=True), "not_a_number", "output_tokens is a boolean"),
        ("input_tokens", ARRAY, "not_a_number", "input_tokens is a ArrayValue"),
        ("cost_usd", AnyValue(double_value=1e300), "cost_too_large", "cost_usd 1e+300 is above"),
        ("cost_usd", AnyValue(double_value=-0.01), "cost_negative", "cost_usd -0.01 is negative"),
        ("cost_usd", AnyValue(double_value=math.inf), "cost_not_finite", "cost_usd is inf"),
        ("cost_usd", AnyValue(string_value="free"), "not_a_number", "cost_usd 'free' is not"),
        ("cost_usd_micros", AnyValue(double_value=1.5), "cost_not_integer", "cost_usd_micros 1.5"),
        ("cost_usd_micros", AnyValue(int_value=10**13), "cost_too_large", "cost_usd_micros"),
    ],
)
def test_each_out_of_range_attribute_refuses_its_record(
    otlp_build: SimpleNamespace, key: str, value: AnyValue, reason: str, says: str
) -> None:
    request = one_record(otlp_build, **{key: value})
    refused = drop_invalid(Signal.LOGS, request, RECEIVED_NS)
    assert (refused.count, refused.reasons) == (1, {reason: 1})
    assert refused.message.startswith("1 log record refused: ")
    assert says in refused.message
    assert logs_in(request) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("input_tokens", AnyValue(string_value="34")),
        ("input_tokens", AnyValue(double_value=12.0)),  # integral doubles are the integer they are
        ("output_tokens", AnyValue(int_value=10**12)),
        ("cost_usd", AnyValue(string_value="0.0125")),
        ("cost_usd", AnyValue(int_value=0)),
        ("cost_usd_micros", AnyValue(int_value=1500)),
        ("cost_usd", AnyValue()),  # no value: absent
        ("prompt_length", AnyValue(int_value=-1)),  # not a bounded attribute
        ("duration_ms", AnyValue(double_value=math.inf)),
    ],
)
def test_values_in_range_and_other_attributes_pass(
    otlp_build: SimpleNamespace, key: str, value: AnyValue
) -> None:
    request = one_record(otlp_build, **{key: value})
    before = request.SerializeToString()
    assert drop_invalid(Signal.LOGS, request, RECEIVED_NS).count == 0
    assert request.SerializeToString() == before


@pytest.mark.parametrize(
    ("time_ns", "observed_ns", "refused"),
    [
        (RECEIVED_NS + DAY_NS, 0, False),  # exactly a day ahead: still taken
        (RECEIVED_NS + DAY_NS + 1, 0, True),
        (TWO_DAYS_AHEAD, RECEIVED_NS, True),  # time_unix_nano is the record's date
        (0, TWO_DAYS_AHEAD, True),  # no time: the observed time is (Codex sends 0)
        (RECEIVED_NS, TWO_DAYS_AHEAD, False),
        (0, 0, False),  # undated: the stream stage uses the receipt time
        (1, 0, False),  # the past is not refused
    ],
)
def test_log_records_dated_more_than_a_day_ahead(
    otlp_build: SimpleNamespace, time_ns: int, observed_ns: int, refused: bool
) -> None:
    request = one_record(otlp_build)
    record = logs_in(request)[0]
    record.time_unix_nano, record.observed_time_unix_nano = time_ns, observed_ns
    outcome = drop_invalid(Signal.LOGS, request, RECEIVED_NS)
    assert outcome.count == int(refused)
    if refused:
        assert outcome.reasons == {"time_in_future": 1}
        assert "h after it was received" in outcome.message


def test_mixed_records_keep_the_valid_ones_whole_and_in_order(otlp_build: SimpleNamespace) -> None:
    api = otlp_build.api_request
    request = otlp_build.logs(
        [
            (RECEIVED_NS + 1, api(1)),
            (RECEIVED_NS + 2, api(2, input_tokens=-5)),
            (RECEIVED_NS + 3, api(3)),
            (RECEIVED_NS + 4, api(4, cost_usd=1e300)),
            (TWO_DAYS_AHEAD, api(5)),
            (RECEIVED_NS + 6, api(6, output_tokens=3.5)),
            (RECEIVED_NS + 7, api(7, input_tokens="-5", cost_usd=1e300)),  # one record, one refusal
            (RECEIVED_NS + 8, api(8)),
        ]
    )
    originals = {r.time_unix_nano: r.SerializeToString() for r in logs_in(request)}

    refused = drop_invalid(Signal.LOGS, request, RECEIVED_NS)

    assert refused.count == 5
    assert refused.message == "5 log records refused: input_tokens -5 is negative"
    assert refused.reasons == {
        "tokens_negative": 2,
        "cost_too_large": 1,
        "time_in_future": 1,
        "tokens_not_integer": 1,
    }
    kept = logs_in(request)
    assert [r.time_unix_nano for r in kept] == [RECEIVED_NS + 1, RECEIVED_NS + 3, RECEIVED_NS + 8]
    assert all(r.SerializeToString() == originals[r.time_unix_nano] for r in kept)  # untouched


def metrics_request(*metrics: dict[str, Any]) -> ExportMetricsServiceRequest:
    """One resource and scope holding ``metrics`` (``Metric`` fields as keyword arguments)."""
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    for fields in metrics:
        scope.metrics.add(**fields)
    return request


def points_of(request: ExportMetricsServiceRequest) -> dict[str, list[Any]]:
    (scope,) = request.resource_metrics[0].scope_metrics
    return {m.name: list(getattr(m, m.WhichOneof("data")).data_points) for m in scope.metrics}


def data_of(*points: dict[str, Any]) -> dict[str, Any]:
    return {"data_points": [{"time_unix_nano": RECEIVED_NS, **p} for p in points]}


@pytest.mark.parametrize(
    ("metric", "kind", "point", "reason"),
    [
        ("claude_code.token.usage", "sum", {"as_double": -1.0}, "tokens_negative"),
        ("claude_code.token.usage", "sum", {"as_double": 0.5}, "tokens_not_integer"),
        ("claude_code.token.usage", "sum", {"as_double": math.inf}, "tokens_not_finite"),
        ("gemini_cli.token.usage", "sum", {"as_int": 10**12 + 1}, "tokens_too_large"),
        ("claude_code.cost.usage", "sum", {"as_double": 1e300}, "cost_too_large"),
        ("claude_code.cost.usage", "gauge", {"as_double": -0.5}, "cost_negative"),
        ("gen_ai.client.token.usage", "histogram", {"count": 1, "sum": -5.0}, "tokens_negative"),
        ("codex.turn.token_usage", "histogram", {"count": 2, "sum": 3.5}, "tokens_not_integer"),
        ("gen_ai.client.token.usage", "exponential_histogram", {"count": 1, "sum": -1.0}, "tokens_negative"),
        (
            "claude_code.session.count",
            "sum",
            {"as_int": 1, "time_unix_nano": TWO_DAYS_AHEAD},
            "time_in_future",
        ),
        ("anything", "histogram", {"count": 1, "time_unix_nano": TWO_DAYS_AHEAD}, "time_in_future"),
        ("anything", "summary", {"count": 1, "time_unix_nano": TWO_DAYS_AHEAD}, "time_in_future"),
    ],
)
def test_each_out_of_range_point_is_refused(
    metric: str, kind: str, point: dict[str, Any], reason: str
) -> None:
    request = metrics_request(
        {"name": metric, kind: data_of(point, {"as_int": 1} if kind in ("sum", "gauge") else {})}
    )
    refused = drop_invalid(Signal.METRICS, request, RECEIVED_NS)
    assert (refused.count, refused.reasons) == (1, {reason: 1})
    assert refused.message.startswith("1 data point refused: ")
    assert len(points_of(request)[metric]) == 1  # the other point stays


@pytest.mark.parametrize(
    ("metric", "kind", "point"),
    [
        ("claude_code.token.usage", "sum", {"as_double": 1234.0}),
        ("claude_code.token.usage", "sum", {"as_double": math.nan}),  # staleness marker
        ("claude_code.cost.usage", "sum", {"as_double": 0.25}),
        ("claude_code.lines_of_code.count", "sum", {"as_int": -5}),  # not a token or cost metric
        ("gen_ai.client.token.usage", "histogram", {"count": 3}),  # no sum: 0
        ("gen_ai.client.token.usage", "summary", {"count": 1, "sum": -5.0}),  # summaries are not read
        ("claude_code.token.usage", "sum", {"as_double": 1.0, "time_unix_nano": RECEIVED_NS + DAY_NS}),
    ],
)
def test_points_in_range_pass(metric: str, kind: str, point: dict[str, Any]) -> None:
    request = metrics_request({"name": metric, kind: data_of(point)})
    before = request.SerializeToString()
    assert drop_invalid(Signal.METRICS, request, RECEIVED_NS).count == 0
    assert request.SerializeToString() == before


def test_mixed_points_leave_exactly_the_valid_request(captures_of: Any) -> None:
    """A real capture with refused points slipped in among its own: after validation the
    request is the capture again, byte for byte."""
    (cap,) = [c for c in captures_of("stub-text-protobuf") if c.signal is Signal.METRICS]
    original = cap.request
    request = cap.request
    metrics = {m.name: m for m in request.resource_metrics[0].scope_metrics[0].metrics}
    tokens, cost = metrics["claude_code.token.usage"], metrics["claude_code.cost.usage"]
    received = original_time(original)
    interleaved = []
    for point in tokens.sum.data_points:  # each point followed by a refused copy of it
        copy = type(point)()
        copy.CopyFrom(point)
        copy.as_double = -1.0
        interleaved += [point, copy]
    del tokens.sum.data_points[:]
    tokens.sum.data_points.extend(interleaved)
    (cost_point,) = cost.sum.data_points
    cost.sum.data_points.add().CopyFrom(cost_point)
    cost.sum.data_points[-1].as_double = 1e300
    other = next(m for name, m in metrics.items() if name not in BOUNDED_METRICS)
    other_points = getattr(other, other.WhichOneof("data")).data_points
    other_points.add().CopyFrom(other_points[0])
    other_points[-1].time_unix_nano = received + 2 * DAY_NS
    bad = {"tokens_negative": len(interleaved) // 2, "cost_too_large": 1, "time_in_future": 1}

    refused = drop_invalid(Signal.METRICS, request, received)

    assert refused.reasons == bad
    assert refused.count == sum(bad.values())
    # The message names the first refusal in wire order.
    says = {
        tokens.name: "claude_code.token.usage value -1.0 is negative",
        cost.name: "claude_code.cost.usage value 1e+300 is above 1,000,000 USD",
        other.name: "is 48 h after it was received",
    }
    first = next(says[name] for name in metrics if name in says)
    assert refused.message.startswith(f"{refused.count} data points refused: ")
    assert first in refused.message
    assert request.SerializeToString() == original.SerializeToString()


def original_time(request: ExportMetricsServiceRequest) -> int:
    """The latest point time of a request: when it was (about to be) received."""
    return max(p.time_unix_nano for points in points_of(request).values() for p in points)
