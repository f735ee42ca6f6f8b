"""Pure: the values tokentide refuses, declared once for ingest and the stream stage.

A token count, a cost or a timestamp can be well-formed OTLP and still be nonsense: a
negative or fractional token count, ``cost_usd = 1e300`` (which no integer nano-dollar sum
survives), an event dated next year. Ingest refuses such records as OTLP partial success
where it can see them (by the attribute and metric names below), so the agent is told; the
stream stage refuses the same values again at normalisation (a message may come from an
older ingest, or from a name ingest does not know) and dead-letters the record. Either way
the record is never half-counted.

Each refusal is an :class:`OutOfRange` with a short, stable ``reason`` (a metrics label and
a dead-letter field) and a message for people.
"""

from __future__ import annotations

import math
from typing import Any

#: A token count above this in one request (or one counter) is refused: no model comes close.
MAX_TOKENS = 10**12
#: A cost above this many USD for one request (or one counter) is refused.
MAX_COST_USD = 1e6
#: A record dated more than this after it was received is refused.
MAX_FUTURE_NS = 86_400 * 10**9

#: Attributes of log records that carry one request's token counts, every agent's names
#: (the normalisers read exactly these; a unit test keeps the two in step).
TOKEN_ATTRIBUTES = frozenset(
    {
        # Claude Code api_request
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "cache_creation_5m_tokens",
        "cache_creation_1h_tokens",
        # Gemini CLI api_response, Codex CLI sse_event
        "input_token_count",
        "output_token_count",
        "cached_content_token_count",
        "thoughts_token_count",
        "cached_token_count",
        "cache_write_token_count",
        "reasoning_token_count",
        # OpenTelemetry GenAI semantic conventions (current and older names)
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "gen_ai.usage.reasoning.output_tokens",
    }
)
#: Attributes of log records that carry one request's cost in USD.
COST_ATTRIBUTES = frozenset({"cost_usd"})
#: ... and in micro-USD (an integer).
COST_MICROS_ATTRIBUTES = frozenset({"cost_usd_micros"})
#: Metrics whose points count tokens (sums; histograms by their sum).
TOKEN_METRICS = frozenset(
    {
        "claude_code.token.usage",
        "gemini_cli.token.usage",
        "gen_ai.client.token.usage",
        "codex.turn.token_usage",
    }
)
#: Metrics whose points count USD.
COST_METRICS = frozenset({"claude_code.cost.usage"})


class OutOfRange(ValueError):
    """A value tokentide refuses; ``reason`` is a short stable label, ``str()`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _number(value: Any, name: str) -> float | int | None:
    """``value`` as a number: ints, floats and decimal strings (agents send all three)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OutOfRange("not_a_number", f"{name} is a boolean ({value}), not a number")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise OutOfRange("not_a_number", f"{name} {value[:40]!r} is not a number") from None
    raise OutOfRange("not_a_number", f"{name} is a {type(value).__name__}, not a number")


def token_count(value: Any, name: str = "token count") -> int | None:
    """A token count: a non-negative integer up to :data:`MAX_TOKENS`; None when absent.

    Integral floats (``12.0``, how Claude Code's metrics send every count) are accepted as
    the integer they are; ``3.5``, ``-1``, ``NaN`` and ``1e13`` raise :class:`OutOfRange`.
    """
    number = _number(value, name)
    if number is None:
        return None
    if isinstance(number, float):
        if not math.isfinite(number):
            raise OutOfRange("tokens_not_finite", f"{name} is {number}")
        if not number.is_integer():
            raise OutOfRange("tokens_not_integer", f"{name} {number} is not a whole number")
        number = int(number)
    if number < 0:
        raise OutOfRange("tokens_negative", f"{name} {number} is negative")
    if number > MAX_TOKENS:
        raise OutOfRange("tokens_too_large", f"{name} {number} is above {MAX_TOKENS:.0e}")
    return number


def cost_usd(value: Any, name: str = "cost_usd") -> float | None:
    """A cost in USD: finite, non-negative, at most :data:`MAX_COST_USD`; None when absent."""
    number = _number(value, name)
    if number is None:
        return None
    cost = float(number)
    if not math.isfinite(cost):
        raise OutOfRange("cost_not_finite", f"{name} is {number}")
    if cost < 0:
        raise OutOfRange("cost_negative", f"{name} {number} is negative")
    if cost > MAX_COST_USD:
        raise OutOfRange("cost_too_large", f"{name} {number} is above {MAX_COST_USD:,.0f} USD")
    return cost


def cost_micros(value: Any, name: str = "cost_usd_micros") -> int | None:
    """A cost in integer micro-USD, bounded as :func:`cost_usd`; None when absent."""
    number = _number(value, name)
    if number is None:
        return None
    if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
        raise OutOfRange("cost_not_integer", f"{name} {number} is not a whole number")
    micros = int(number)
    cost_usd(micros / 1e6, name)
    return micros


def event_time(time_ns: int, received_ns: int) -> int:
    """``time_ns`` unless it lies more than :data:`MAX_FUTURE_NS` after ``received_ns``."""
    if time_ns > received_ns + MAX_FUTURE_NS:
        ahead_h = (time_ns - received_ns) / 3.6e12
        raise OutOfRange("time_in_future", f"timestamp {time_ns} is {ahead_h:,.0f} h after it was received")
    return time_ns


def metric_value(metric: str, value: float) -> None:
    """Refuse a point of a token or cost metric whose value is out of range.

    NaN is OpenTelemetry's staleness marker and passes (it counts nothing); points of other
    metrics pass whatever their value.
    """
    if math.isnan(value):
        return
    if metric in TOKEN_METRICS:
        token_count(value, f"{metric} value")
    elif metric in COST_METRICS:
        cost_usd(value, f"{metric} value")


def record_attribute(key: str, value: Any) -> None:
    """Refuse a log record attribute that carries tokens or a cost out of range."""
    if key in TOKEN_ATTRIBUTES:
        token_count(value, key)
    elif key in COST_ATTRIBUTES:
        cost_usd(value, key)
    elif key in COST_MICROS_ATTRIBUTES:
        cost_micros(value, key)


__all__ = [
    "COST_ATTRIBUTES",
    "COST_METRICS",
    "MAX_COST_USD",
    "MAX_FUTURE_NS",
    "MAX_TOKENS",
    "TOKEN_ATTRIBUTES",
    "TOKEN_METRICS",
    "OutOfRange",
    "cost_micros",
    "cost_usd",
    "event_time",
    "metric_value",
    "record_attribute",
    "token_count",
]
