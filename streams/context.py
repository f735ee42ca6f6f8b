"""Pure: a session's context window over time, what comes next, and compactions.

Fed with each main-conversation request's context size (``input + cache_read +
cache_creation``) in event-time order:

- growth per request and the interval between requests are exponentially smoothed
  (weight ``SMOOTHING`` for the newest observation), so one unusual request moves the
  prediction without taking it over;
- ``requests_left = (window - tokens) / growth``; ``minutes_left`` is that many requests at
  the smoothed interval;
- a compaction is seen either from the agent's ``compaction`` event, or from a sharp drop of
  the context (by at least ``COMPACTION_DROP`` of a context that filled at least
  ``COMPACTION_MIN_RATIO`` of the window). Both sightings of one compaction (the event and
  the drop, in either order, within ``COMPACTION_DEDUP_NS``) count once.
"""

from __future__ import annotations

from tokentide.records import ContextState

SMOOTHING = 0.3
COMPACTION_DROP = 0.4
COMPACTION_MIN_RATIO = 0.2
COMPACTION_DEDUP_NS = 120 * 1_000_000_000


def _smooth(previous: float | None, value: float) -> float:
    return value if previous is None else previous + SMOOTHING * (value - previous)


def observe_request(context: ContextState, tokens: int, time_ns: int, last_time_ns: int) -> bool:
    """Record a main request of ``tokens`` context at ``time_ns`` (the previous one was at
    ``last_time_ns``, 0 if none). Returns whether the request shows a compaction (a drop)."""
    previous = context.tokens
    dropped = (
        last_time_ns > 0
        and previous >= COMPACTION_MIN_RATIO * context.window
        and tokens <= previous * (1 - COMPACTION_DROP)
    )
    if last_time_ns > 0 and not dropped:
        if tokens >= previous:
            context.growth = _smooth(context.growth, float(tokens - previous))
        if time_ns > last_time_ns:
            context.interval_s = _smooth(context.interval_s, (time_ns - last_time_ns) / 1e9)
    context.tokens = tokens
    predict(context)
    return dropped


def predict(context: ContextState) -> None:
    """Refresh ``requests_left`` and ``minutes_left`` from the smoothed growth and pace, up to
    where the agent compacts by itself when that is known (else the window)."""
    if not context.growth or context.growth <= 0:
        context.requests_left = context.minutes_left = None
        return
    limit = min(context.auto_compact_at or context.window, context.window)
    context.requests_left = round(max(0.0, (limit - context.tokens) / context.growth), 2)
    context.minutes_left = (
        round(context.requests_left * context.interval_s / 60, 2) if context.interval_s else None
    )


def count_compaction(context: ContextState, time_ns: int, last_compaction_ns: int) -> bool:
    """Count a compaction seen at ``time_ns`` unless the same one was counted already."""
    if last_compaction_ns and abs(time_ns - last_compaction_ns) <= COMPACTION_DEDUP_NS:
        return False
    context.compactions += 1
    return True
