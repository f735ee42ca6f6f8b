"""Context predictions, compaction sightings, signals once per crossing, minute rollup increments."""

from __future__ import annotations

import pytest

from streams import context as ctx
from streams import rollups
from streams.normalise.base import SessionRecords
from streams.signals import evaluate
from streams.state import StoredSession, apply
from tokentide.records import ContextState, Event, EventKind, SignalKind, Tokens
from tokentide.tenancy import SignalThresholds

S = 1_000_000_000
T0 = 1_795_485_000 * S


def usage(
    n: int, context_tokens: int, *, at: int | None = None, main: bool = True, model: str = "m"
) -> Event:
    return Event(
        tenant="t",
        session_id="s",
        event_id=f"u{n}",
        agent="claude_code",
        name="api_request",
        kind=EventKind.USAGE,
        time_ns=T0 + (at if at is not None else n * 10) * S,
        model=model,
        main_context=main,
        tokens=Tokens(input=context_tokens, output=100),
        cost_nanos=1000,
    )


def compaction(n: int, at: int, after: int | None = None) -> Event:
    return Event(
        tenant="t",
        session_id="s",
        event_id=f"c{n}",
        agent="claude_code",
        name="compaction",
        kind=EventKind.COMPACTION,
        time_ns=T0 + at * S,
        context_after=after,
    )


def run(events: list[Event], thresholds: SignalThresholds | None = None) -> tuple[list[str], ContextState]:
    stored, kinds = None, []
    for event in events:
        records = SessionRecords(session_id="s", agent="claude_code", events=[event])
        applied = apply(stored, records, tenant="t", dedup_window=1000, thresholds=thresholds)
        stored = applied.stored
        kinds += [s.kind.value for s in applied.signals]
    assert stored is not None
    return kinds, stored.state.context


def test_growth_and_predictions_follow_the_requests() -> None:
    _, context = run([usage(i, 20_000 + 10_000 * i) for i in range(5)])
    assert context.tokens == 60_000
    assert context.growth == pytest.approx(10_000)
    assert context.interval_s == pytest.approx(10)
    assert context.requests_left == pytest.approx(14.0)  # (200k - 60k) / 10k
    assert context.minutes_left == pytest.approx(14 * 10 / 60, abs=0.01)


def test_side_requests_do_not_move_the_context() -> None:
    _, context = run([usage(0, 50_000), usage(1, 120_000, main=False), usage(2, 60_000)])
    assert context.tokens == 60_000
    assert context.growth == pytest.approx(10_000)


def test_each_signal_fires_once_per_crossing() -> None:
    # Steady growth of 4k per request: no early (predicted) checkpoint before 90%.
    steps = list(range(100_000, 200_001, 4_000))
    kinds, _ = run([usage(i, tokens) for i, tokens in enumerate(steps)])
    assert kinds.count("context_warning") == 1
    assert kinds.count("checkpoint_requested") == 1
    assert kinds.count("context_critical") == 1
    assert (
        kinds.index("context_warning") < kinds.index("checkpoint_requested") < kinds.index("context_critical")
    )


def test_checkpoint_is_requested_early_when_exhaustion_is_predicted() -> None:
    # Below 90% but growing 40k per request: less than 3 requests of room left.
    kinds, context = run([usage(0, 40_000), usage(1, 80_000), usage(2, 120_000)])
    assert context.ratio < 0.9
    assert context.requests_left is not None
    assert context.requests_left <= 3
    assert "checkpoint_requested" in kinds


def test_a_drop_is_a_compaction_and_rearms_the_signals() -> None:
    steps = [100_000, 130_000, 165_000, 40_000, 100_000, 165_000]
    kinds, context = run([usage(i, tokens) for i, tokens in enumerate(steps)])
    assert kinds.count("compaction_observed") == 1
    assert kinds.count("context_warning") == 2  # once before, once after the compaction
    assert context.compactions == 1


def test_the_event_and_the_drop_of_one_compaction_count_once() -> None:
    events = [usage(0, 150_000, at=0), compaction(0, at=5, after=30_000), usage(1, 35_000, at=10)]
    kinds, context = run(events)
    assert context.compactions == 1
    assert kinds.count("compaction_observed") == 1
    assert context.tokens == 35_000


def test_hovering_at_a_threshold_raises_one_warning() -> None:
    steps = [160_000, 158_000, 161_000, 157_000, 162_000, 159_000]
    kinds, _ = run([usage(i, tokens) for i, tokens in enumerate(steps)])
    assert kinds.count("context_warning") == 1


def test_thresholds_are_configurable() -> None:
    kinds, _ = run([usage(0, 120_000)], SignalThresholds(warning=0.5, checkpoint=0.99, critical=0.995))
    assert kinds == ["context_warning"]


def test_evaluate_gives_stable_signal_ids() -> None:
    context = ContextState(tokens=170_000, window=200_000)
    first = evaluate(context, {}, tenant="t", session_id="s", time_ns=T0, thresholds=SignalThresholds())
    again = evaluate(context, {}, tenant="t", session_id="s", time_ns=T0 + S, thresholds=SignalThresholds())
    assert [s.signal_id for s in first] == [s.signal_id for s in again]
    assert first[0].kind is SignalKind.CONTEXT_WARNING
    assert "85% full" in first[0].message


def _increments(batches: list[list[Event]]) -> tuple[dict[tuple[str, int], list[int]], StoredSession]:
    """Each message's rollup increments, summed per (model, minute), and the final state."""
    stored: StoredSession | None = None
    summed: dict[tuple[str, int], list[int]] = {}
    for events in batches:
        applied = apply(
            stored, SessionRecords("s", "claude_code", events=events), tenant="t", dedup_window=10
        )
        stored = applied.stored
        for r in applied.rollups:
            assert r.increment
            row = summed.setdefault((r.model, r.minute_ns), [0, 0, 0])
            row[0] += r.tokens.input
            row[1] += r.requests
            row[2] += r.cost_nanos
    assert stored is not None
    return summed, stored


def test_rollups_are_the_increments_of_each_minute() -> None:
    minute = T0 - T0 % rollups.MINUTE_NS
    summed, stored = _increments(
        [[usage(0, 1000, at=0)], [usage(1, 2000, at=30), usage(2, 4000, at=70, model="n")]]
    )
    assert summed == {("m", minute): [3000, 2, 2000], ("n", minute + rollups.MINUTE_NS): [4000, 1, 1000]}
    assert stored.rolled == rollups.totals_vector(
        stored.state.tokens, stored.state.cost_nanos, stored.state.api_requests, stored.state.api_errors
    )


def test_rollups_of_late_and_far_future_events_land_in_their_own_minutes() -> None:
    """Timestamps that jump (a day ahead, then hours back) still sum to the totals: nothing
    is pruned, every minute gets exactly what its events added."""
    day = 24 * 3600
    summed, stored = _increments(
        [
            [usage(0, 1000, at=0)],
            [usage(1, 1000, at=day)],
            [usage(2, 1000, at=60)],
            [usage(3, 1000, at=-3 * 3600)],
        ]
    )
    assert len(summed) == 4
    assert sum(row[0] for row in summed.values()) == stored.state.tokens.input == 4000
    assert sum(row[1] for row in summed.values()) == stored.state.api_requests == 4


def test_a_re_sent_export_raises_no_signal_and_no_rollup_again() -> None:
    records = SessionRecords(session_id="s", agent="claude_code", events=[usage(0, 170_000)])
    first = apply(None, records, tenant="t", dedup_window=10)
    assert [s.kind for s in first.signals] == [SignalKind.CONTEXT_WARNING]
    again = apply(first.stored, records, tenant="t", dedup_window=10)
    assert again.signals == []
    assert again.rollups == []
    assert again.stored.state.api_requests == 1


def test_observe_request_reports_drops_only_from_a_full_enough_context() -> None:
    context = ContextState(tokens=10_000, window=200_000)
    assert not ctx.observe_request(context, 2_000, T0 + S, T0)  # 5% -> 1%: no compaction
    context = ContextState(tokens=100_000, window=200_000)
    assert ctx.observe_request(context, 30_000, T0 + S, T0)


@pytest.mark.parametrize(
    ("model", "window"),
    [
        # LiteLLM 1.110.2's max_input_tokens (streams/prices.json):
        ("gemini-2.5-pro", 1_048_576),  # gemini/gemini-2.5-pro
        ("gpt-5", 272_000),  # its input limit (400k counts the output too)
        ("gpt-6.1-sol", 922_000),
        ("claude-opus-5-5", 1_000_000),  # Claude Code's default model (issue 14)
        # streams/prices.local.json wins: LiteLLM says 1_000_000, Claude Code runs it at 200k
        ("claude-opus-4-8", 200_000),
        ("claude-haiku-4-5-20251001", 200_000),
        ("a-model-nobody-knows", 200_000),  # DEFAULT_CONTEXT_WINDOW
    ],
)
def test_the_window_comes_from_the_model_table(model: str, window: int) -> None:
    _, context = run([usage(0, 50_000, model=model)])
    assert context.window == window


def test_a_long_context_variant_wins_over_the_table() -> None:
    records = SessionRecords(
        session_id="s", agent="claude_code", events=[usage(0, 50_000)], long_context=True
    )
    applied = apply(None, records, tenant="t", dedup_window=10)
    more = SessionRecords(
        session_id="s", agent="claude_code", events=[usage(1, 60_000, model="claude-opus-4-8")]
    )
    applied = apply(applied.stored, more, tenant="t", dedup_window=10)
    assert applied.stored.state.context.window == 1_000_000
