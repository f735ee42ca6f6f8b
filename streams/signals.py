"""Pure: context signals, exactly once per threshold crossing, with hysteresis.

A signal fires when its condition becomes true and is re-armed only once the context has
fallen back below the threshold by ``hysteresis`` (typically after a compaction), so a
context hovering around 80% raises one warning, not one per request:

- ``context_warning``: ratio >= ``warning`` (default 80%);
- ``checkpoint_requested``: ratio >= ``checkpoint`` (90%), or the prediction says the window
  is full within ``checkpoint_requests_left`` requests (3);
- ``context_critical``: ratio >= ``critical`` (95%);
- ``compaction_observed``: every compaction counted by :mod:`streams.context`.

Each signal's id is (tenant, session, kind, crossing number): re-emitting it is harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from streams.otlp import stable_id
from tokentide.records import ContextState, SessionSignal, SignalKind
from tokentide.tenancy import SignalThresholds


@dataclass(frozen=True, slots=True)
class _Level:
    kind: SignalKind
    threshold: float


def _levels(thresholds: SignalThresholds) -> Iterator[_Level]:
    yield _Level(SignalKind.CONTEXT_WARNING, thresholds.warning)
    yield _Level(SignalKind.CHECKPOINT_REQUESTED, thresholds.checkpoint)
    yield _Level(SignalKind.CONTEXT_CRITICAL, thresholds.critical)


def _reached(level: _Level, context: ContextState, thresholds: SignalThresholds, margin: float) -> bool:
    """Whether ``level`` holds (``margin`` > 0 asks whether it still holds, for re-arming)."""
    if context.ratio >= level.threshold - margin:
        return True
    if level.kind is SignalKind.CHECKPOINT_REQUESTED and context.requests_left is not None:
        extra = 2.0 if margin else 0.0
        return context.requests_left <= thresholds.checkpoint_requests_left + extra
    return False


def evaluate(
    context: ContextState,
    active: dict[str, int],
    *,
    tenant: str,
    session_id: str,
    time_ns: int,
    thresholds: SignalThresholds,
    compaction: bool = False,
) -> list[SessionSignal]:
    """The signals the new ``context`` raises; updates ``active`` in place.

    ``active`` maps each kind to its crossing count, negative while the signal is raised
    (``-n``: raised for the n-th time) and positive once re-armed.
    """
    out: list[SessionSignal] = []
    if compaction:
        count = abs(active.get(SignalKind.COMPACTION_OBSERVED, 0)) + 1
        active[SignalKind.COMPACTION_OBSERVED] = count
        out.append(
            _signal(
                SignalKind.COMPACTION_OBSERVED,
                count,
                context,
                tenant=tenant,
                session_id=session_id,
                time_ns=time_ns,
            )
        )
    for level in _levels(thresholds):
        state = active.get(level.kind, 0)
        raised = state < 0
        if not raised and _reached(level, context, thresholds, margin=0.0):
            count = state + 1
            active[level.kind] = -count
            out.append(
                _signal(level.kind, count, context, tenant=tenant, session_id=session_id, time_ns=time_ns)
            )
        elif raised and not _reached(level, context, thresholds, margin=thresholds.hysteresis):
            active[level.kind] = -state
    return out


def _signal(
    kind: SignalKind, count: int, context: ContextState, *, tenant: str, session_id: str, time_ns: int
) -> SessionSignal:
    return SessionSignal(
        tenant=tenant,
        session_id=session_id,
        signal_id=stable_id(tenant, session_id, kind.value, count),
        kind=kind,
        time_ns=time_ns,
        ratio=round(context.ratio, 4),
        tokens=context.tokens,
        window=context.window,
        requests_left=context.requests_left,
        minutes_left=context.minutes_left,
        message=describe(kind, context),
    )


def describe(kind: SignalKind, context: ContextState) -> str:
    """One line for people (and for the agent's own context, via the checkpoint hook)."""
    if kind is SignalKind.COMPACTION_OBSERVED:
        return f"context compacted: now {context.ratio:.0%} of {context.window:,} tokens"
    text = f"context {context.ratio:.0%} full ({context.tokens:,} of {context.window:,} tokens)"
    if context.requests_left is not None:
        text += f", about {context.requests_left:.0f} requests"
        if context.minutes_left is not None:
            text += f" / {context.minutes_left:.0f} min"
        text += " left"
    return text
