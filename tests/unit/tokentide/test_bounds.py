"""The values tokentide refuses (tokentide.bounds), shared by ingest and the stream stage."""

from __future__ import annotations

import math

import pytest

from tokentide import bounds
from tokentide.bounds import OutOfRange


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0), (12, 12), (12.0, 12), ("34", 34), (" 5 ", 5), ("7.0", 7), (10**12, 10**12)],
)
def test_token_counts_accepted(value: object, expected: int | None) -> None:
    assert bounds.token_count(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "tokens_negative"),
        ("-3", "tokens_negative"),
        (3.5, "tokens_not_integer"),
        ("2.25", "tokens_not_integer"),
        (math.nan, "tokens_not_finite"),
        (math.inf, "tokens_not_finite"),
        (10**12 + 1, "tokens_too_large"),
        (1e300, "tokens_too_large"),
        ("lots", "not_a_number"),
        (True, "not_a_number"),
        ([1], "not_a_number"),
    ],
)
def test_token_counts_refused(value: object, reason: str) -> None:
    with pytest.raises(OutOfRange) as refused:
        bounds.token_count(value, "input_tokens")
    assert refused.value.reason == reason
    assert "input_tokens" in str(refused.value)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (0, 0.0), (0.0123, 0.0123), ("1.5", 1.5)])
def test_costs_accepted(value: object, expected: float | None) -> None:
    assert bounds.cost_usd(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1e300, "cost_too_large"),
        (1e6 + 1, "cost_too_large"),
        (-0.01, "cost_negative"),
        (math.nan, "cost_not_finite"),
        (-math.inf, "cost_not_finite"),
        ("free", "not_a_number"),
    ],
)
def test_costs_refused(value: object, reason: str) -> None:
    with pytest.raises(OutOfRange) as refused:
        bounds.cost_usd(value)
    assert refused.value.reason == reason


def test_cost_micros() -> None:
    assert bounds.cost_micros(1500) == 1500
    assert bounds.cost_micros("20") == 20
    with pytest.raises(OutOfRange, match="whole number"):
        bounds.cost_micros(1.5)
    with pytest.raises(OutOfRange) as refused:
        bounds.cost_micros(10**13)  # 10^7 USD
    assert refused.value.reason == "cost_too_large"


def test_event_time() -> None:
    received = 1_800_000_000 * 10**9
    assert bounds.event_time(received, received) == received
    assert bounds.event_time(received + bounds.MAX_FUTURE_NS, received) == received + bounds.MAX_FUTURE_NS
    assert bounds.event_time(0, received) == 0  # the past is not refused here
    with pytest.raises(OutOfRange) as refused:
        bounds.event_time(received + bounds.MAX_FUTURE_NS + 1, received)
    assert refused.value.reason == "time_in_future"


def test_metric_values() -> None:
    bounds.metric_value("claude_code.token.usage", 1234.0)
    bounds.metric_value("claude_code.token.usage", math.nan)  # staleness marker: counts nothing
    bounds.metric_value("claude_code.lines_of_code.count", -5.0)  # not a token or cost metric
    with pytest.raises(OutOfRange):
        bounds.metric_value("claude_code.token.usage", -1.0)
    with pytest.raises(OutOfRange):
        bounds.metric_value("gen_ai.client.token.usage", 0.5)
    with pytest.raises(OutOfRange):
        bounds.metric_value("claude_code.cost.usage", 1e300)


def test_record_attributes() -> None:
    bounds.record_attribute("input_tokens", 10)
    bounds.record_attribute("prompt_length", -1)  # not a token count
    with pytest.raises(OutOfRange):
        bounds.record_attribute("cache_read_tokens", -10)
    with pytest.raises(OutOfRange):
        bounds.record_attribute("cost_usd", 1e300)
    with pytest.raises(OutOfRange):
        bounds.record_attribute("cost_usd_micros", -1)
