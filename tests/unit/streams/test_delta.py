"""Cumulative and delta sums -> per-point deltas (``streams.delta``).

Expected totals come from a reference model of what the counter really counted (its segments
between resets), written here independently of the code under test.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.delta import (
    DEFAULT_LIMITS,
    Limits,
    SeriesTracker,
    Skip,
    delta_of,
    expire,
    series_key,
    to_deltas,
)
from tokentide.records import Point

T0 = 1_795_485_058_104_000_000  # the session's first-seen time
S = 1_000_000_000
MINUTE = 60 * S


def pt(
    value: float,
    *,
    t: int,
    start: int = T0 + S,
    series: str = "commits",
    temporality: int = 2,
    monotonic: bool = True,
) -> Point:
    return Point(
        tenant="acme",
        session_id="sess-1",
        agent="claude-code",
        name="claude_code.commit.count",
        series_id=series,
        time_ns=t,
        start_time_ns=start,
        value=value,
        temporality=temporality,
        monotonic=monotonic,
    )


def deltas(
    tracker: SeriesTracker,
    points: list[Point],
    *,
    limits: Limits = DEFAULT_LIMITS,
    skipped: Counter[Skip] | None = None,
) -> list[float]:
    """The deltas alone, for a session first seen at ``T0``."""
    return [d for _, d in to_deltas(tracker, points, T0, limits=limits, skipped=skipped)]


# --- temporality --------------------------------------------------------------------------------


def test_delta_points_pass_through_unchanged_once() -> None:
    tracker = SeriesTracker()
    points = [pt(v, t=T0 + i * MINUTE, temporality=1) for i, v in enumerate([3.0, 0.0, 2.5, 3.0])]

    out = to_deltas(tracker, points, T0)

    assert [(p, d) for p, d in out] == [(p, p.value) for p in points]
    assert tracker.series == {}  # no cumulative state
    skipped: Counter[Skip] = Counter()
    assert to_deltas(tracker, points, T0, skipped=skipped) == []  # the export re-sent
    assert skipped == Counter({Skip.DUPLICATE: 4})


def test_a_late_delta_export_that_never_arrived_still_counts() -> None:
    tracker = SeriesTracker()
    first, second, third = (pt(v, t=T0 + i * MINUTE, temporality=1) for i, v in enumerate([1.0, 2.0, 4.0]))
    assert deltas(tracker, [first, third]) == [1.0, 4.0]
    assert deltas(tracker, [second]) == [2.0]  # retried after a newer export got through
    assert deltas(tracker, [second, third]) == []


def test_delta_memory_is_bounded() -> None:
    """The window of recent delta points holds the last ``recent_deltas`` identities: a
    long session's state does not grow, and only what fell out of the window counts again."""
    tracker = SeriesTracker()
    limits = Limits(recent_deltas=3)
    points = [pt(1.0, t=T0 + n * MINUTE, series=f"s{n}", temporality=1) for n in range(10)]
    for point in points:
        assert deltas(tracker, [point], limits=limits) == [1.0]
    assert len(tracker.recent_deltas) == 3
    size = len(tracker.to_bytes())
    assert deltas(tracker, points[7:], limits=limits) == []  # still remembered: re-sends
    assert deltas(tracker, points[:1], limits=limits) == [1.0]  # forgotten: the price of a bound
    assert len(tracker.to_bytes()) == size
    restored = SeriesTracker.from_bytes(tracker.to_bytes())
    assert deltas(restored, points[8:], limits=limits) == []  # the window survives serialisation


def test_gauges_and_unknown_temporalities_yield_nothing_and_are_counted() -> None:
    tracker = SeriesTracker()
    skipped: Counter[Skip] = Counter()

    out = to_deltas(
        tracker, [pt(7, t=T0 + MINUTE, temporality=0), pt(7, t=T0, temporality=5)], T0, skipped=skipped
    )

    assert out == []
    assert skipped == {Skip.GAUGE: 1, Skip.UNKNOWN_TEMPORALITY: 1}
    assert delta_of(tracker, pt(1, t=T0, temporality=0), T0) is Skip.GAUGE
    assert tracker.series == {}


# --- the first point of a series (initial_value: auto) ------------------------------------------


@pytest.mark.parametrize(
    ("start", "time", "expected"),
    [
        pytest.param(T0 + 5 * S, T0 + MINUTE, 4.0, id="started-while-watching"),
        pytest.param(T0, T0 + MINUTE, 4.0, id="started-as-tracking-began"),
        pytest.param(T0 - S, T0 + MINUTE, Skip.BASELINE, id="started-before-tracking"),
        pytest.param(0, T0 + MINUTE, Skip.BASELINE, id="no-start-time"),
        pytest.param(T0 + MINUTE, T0 + MINUTE, Skip.BASELINE, id="time-equals-start"),
        pytest.param(T0 + 2 * MINUTE, T0 + MINUTE, Skip.BASELINE, id="ends-before-it-starts"),
    ],
)
def test_first_point_counts_in_full_only_when_the_series_began_while_watching(
    start: int, time: int, expected: float | Skip
) -> None:
    tracker = SeriesTracker()

    assert delta_of(tracker, pt(4, t=time, start=start), T0) == expected
    # Counted or not, the point is the baseline of the next one.
    assert delta_of(tracker, pt(6, t=time + MINUTE, start=start), T0) == 2.0


def test_series_that_began_before_tracking_counts_only_its_increments() -> None:
    points = [pt(v, t=T0 + i * MINUTE, start=T0 - MINUTE) for i, v in enumerate([10.0, 12.0, 12.0, 15.0])]

    assert deltas(SeriesTracker(), points) == [2.0, 0.0, 3.0]


def test_steady_cumulative_series_yields_its_increments() -> None:
    points = [pt(v, t=T0 + (i + 1) * MINUTE) for i, v in enumerate([3.0, 5.0, 5.0, 9.5])]

    assert deltas(SeriesTracker(), points) == [3.0, 2.0, 0.0, 4.5]


# --- resets ----------------------------------------------------------------------------------------


def test_new_start_time_is_a_new_series_whose_first_value_counts_in_full() -> None:
    first, second = T0 + S, T0 + 3 * MINUTE
    points = [
        pt(5, t=T0 + MINUTE, start=first),
        pt(8, t=T0 + 2 * MINUTE, start=first),
        pt(2, t=T0 + 4 * MINUTE, start=second),  # the agent restarted the counter
        pt(3, t=T0 + 5 * MINUTE, start=second),
    ]
    tracker = SeriesTracker()

    assert deltas(tracker, points) == [5.0, 3.0, 2.0, 1.0]
    assert set(tracker.series) == {f"commits@{first}", f"commits@{second}"}


def test_monotonic_value_drop_is_a_reset_whose_new_value_counts() -> None:
    points = [pt(v, t=T0 + (i + 1) * MINUTE) for i, v in enumerate([5.0, 8.0, 2.0, 4.0, 0.0, 1.0])]

    assert deltas(SeriesTracker(), points) == [5.0, 3.0, 2.0, 2.0, 0.0, 1.0]


def test_twenty_two_commits_through_hundreds_of_value_resets() -> None:
    """A commit counter that goes 0, 1, 2, 0, 1, ... reset 300 times still sums to 22."""
    commits_per_run = [1 if run % 15 == 7 else 0 for run in range(300)]  # 20 runs with a commit
    commits_per_run[7] += 2  # one run with three
    points: list[Point] = []
    t = T0 + MINUTE
    for commits in commits_per_run:
        for value in [0, *range(1, commits + 1), commits]:  # restart at 0, count, export again
            points.append(pt(value, t=t))
            t += MINUTE

    assert sum(commits_per_run) == 22
    assert sum(deltas(SeriesTracker(), points)) == 22


def test_twenty_two_commits_from_interleaved_counters_with_their_own_start_times() -> None:
    """Writers sharing one series id but not a start time: keyed apart, they sum to 22.

    Read as one series (as ``increase()`` does), every switch between the writers is a reset,
    which is how 22 commits became thousands (anthropics/claude-code#72500).
    """
    main_start = T0 + S
    points: list[Point] = []
    t = T0 + MINUTE
    main = 0
    for run in range(300):
        main += run % 15 == 14  # 20 commits on the main counter
        points.append(pt(main, t=t, start=main_start))
        sub = 1 if run in {100, 200} else 0  # each short-lived counter: its own start time
        points.append(pt(sub, t=t + S, start=t))
        t += MINUTE

    assert sum(deltas(SeriesTracker(), points)) == 22
    naive, last = 0.0, 0.0
    for p in points:  # one series per series_id, a drop read as a reset
        naive += p.value if p.value < last else p.value - last
        last = p.value
    assert naive > 1_000


# --- duplicates, order, interleaving -----------------------------------------------------------


def test_duplicates_and_out_of_order_points_are_dropped_not_read_as_resets() -> None:
    skipped: Counter[Skip] = Counter()
    points = [
        pt(3, t=T0 + MINUTE),
        pt(5, t=T0 + 2 * MINUTE),
        pt(5, t=T0 + 2 * MINUTE),  # re-sent export
        pt(4, t=T0 + 90 * S),  # late: lower but older, not a reset
        pt(7, t=T0 + 3 * MINUTE),
    ]

    out = deltas(SeriesTracker(), points, skipped=skipped)

    assert out == [3.0, 2.0, 2.0]
    assert skipped == {Skip.OUT_OF_ORDER: 2}


def test_interleaved_series_are_independent() -> None:
    a = [pt(v, t=T0 + (i + 1) * MINUTE, series="a") for i, v in enumerate([1.0, 4.0, 6.0])]
    b = [pt(v, t=T0 + (i + 1) * MINUTE + S, series="b") for i, v in enumerate([10.0, 10.0, 2.0])]
    points = [p for pair in zip(a, b, strict=True) for p in pair]

    out = to_deltas(SeriesTracker(), points, T0)

    assert [(p.series_id, d) for p, d in out] == [
        ("a", 1.0),
        ("b", 10.0),
        ("a", 3.0),
        ("b", 0.0),
        ("a", 2.0),
        ("b", 2.0),
    ]


def test_the_same_points_fed_twice_yield_nothing_the_second_time() -> None:
    tracker = SeriesTracker()
    points = [
        pt(v, t=T0 + (i + 1) * MINUTE, series=s)
        for s in ("a", "b")
        for i, v in enumerate([1.0, 3.0, 0.0, 2.0])
    ]
    first = deltas(tracker, points)
    state = tracker.to_bytes()

    assert sum(first) == 2 * 5.0
    assert deltas(tracker, points) == []
    assert tracker.to_bytes() == state


def test_non_monotonic_sums_yield_signed_differences() -> None:
    points = [pt(v, t=T0 + (i + 1) * MINUTE, monotonic=False) for i, v in enumerate([5.0, 3.0, 4.0, -1.0])]

    assert deltas(SeriesTracker(), points) == [5.0, -2.0, 1.0, -5.0]


def test_nan_and_infinity_are_ignored_without_touching_state() -> None:
    tracker = SeriesTracker()
    skipped: Counter[Skip] = Counter()
    points = [pt(2, t=T0 + MINUTE), pt(math.nan, t=T0 + 2 * MINUTE), pt(math.inf, t=T0 + 3 * MINUTE)]

    assert deltas(tracker, points, skipped=skipped) == [2.0]
    assert skipped == {Skip.NOT_FINITE: 2}
    assert deltas(tracker, [pt(5, t=T0 + 4 * MINUTE)]) == [3.0]


# --- bounds -------------------------------------------------------------------------------------


def test_size_bound_evicts_the_least_recently_updated_and_never_recounts_it() -> None:
    tracker = SeriesTracker()
    limits = Limits(max_series=2, max_staleness_ns=0)
    t1, t2 = T0 + MINUTE, T0 + 2 * MINUTE
    deltas(tracker, [pt(1, t=t1, series="a"), pt(1, t=t1, series="b")], limits=limits)
    deltas(tracker, [pt(2, t=t2, series="a")], limits=limits)  # b is now least recently updated

    # c started after everything forgotten so far, so its first value counts.
    assert deltas(tracker, [pt(1, t=t2, start=t1 + S, series="c")], limits=limits) == [1.0]
    assert list(tracker.series) == [f"a@{T0 + S}", f"c@{t1 + S}"]
    assert tracker.forgotten_ns == t1

    skipped: Counter[Skip] = Counter()
    # b again: a re-sent old point is forgotten, a newer one is only a baseline.
    assert deltas(tracker, [pt(1, t=t1, series="b")], limits=limits, skipped=skipped) == []
    assert deltas(tracker, [pt(4, t=T0 + 3 * MINUTE, series="b")], limits=limits, skipped=skipped) == []
    assert skipped == {Skip.FORGOTTEN: 1, Skip.BASELINE: 1}
    assert deltas(tracker, [pt(6, t=T0 + 4 * MINUTE, series="b")], limits=limits) == [2.0]
    assert len(tracker.series) == 2


def test_series_not_updated_for_max_staleness_expire_and_are_not_recounted() -> None:
    tracker = SeriesTracker()
    limits = Limits(max_staleness_ns=10 * MINUTE)
    old = pt(3, t=T0 + MINUTE, series="old")
    deltas(tracker, [old, pt(1, t=T0 + MINUTE, series="live")], limits=limits)
    deltas(tracker, [pt(2, t=T0 + 5 * MINUTE, series="live")], limits=limits)
    assert len(tracker.series) == 2

    deltas(tracker, [pt(3, t=T0 + 12 * MINUTE, series="live")], limits=limits)

    assert list(tracker.series) == [f"live@{T0 + S}"]
    assert tracker.forgotten_ns == old.time_ns
    assert deltas(tracker, [old], limits=limits) == []  # a redelivery of the expired series
    # A series that started after what was forgotten still counts in full.
    assert deltas(tracker, [pt(2, t=T0 + 13 * MINUTE, start=T0 + 12 * MINUTE, series="new")]) == [2.0]
    assert expire(tracker, Limits(max_staleness_ns=0)) == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_series"):
        Limits(max_series=0)
    with pytest.raises(ValueError, match="max_staleness_ns"):
        Limits(max_staleness_ns=-1)


def test_state_is_compact_and_keeps_its_eviction_order() -> None:
    tracker = SeriesTracker()
    ids = [f"{i:032x}" for i in range(30)]  # series ids are 32-hex blake2b digests
    for rnd in range(3):
        points = [pt(rnd + i, t=T0 + (rnd + 1) * MINUTE + i, series=sid) for i, sid in enumerate(ids)]
        deltas(tracker, list(reversed(points)))
    data = tracker.to_bytes()

    restored = SeriesTracker.from_bytes(data)

    assert restored == tracker
    assert list(restored.series) == list(tracker.series)
    assert msgspec.msgpack.decode(data)["series"][series_key(pt(0, t=T0, series=ids[-1]))] == [
        T0 + 3 * MINUTE + 29,
        31.0,
    ]
    assert len(data) / len(ids) < 90  # bytes per series
    limits = Limits(max_series=len(ids))
    deltas(restored, [pt(1, t=T0 + 4 * MINUTE, series="new")], limits=limits)
    assert series_key(pt(0, t=T0, series=ids[-1])) not in restored.series  # least recent went first


# --- property: the emitted deltas add up to what the counters counted ---------------------------


@dataclass
class Export:
    point: Point
    segment: int  # counter lifetime between value resets, within its identity
    #: Must keep its place among its identity's exports for the total to stay knowable: the
    #: first export after a value reset (else a later, higher one could hide the drop) and
    #: the baseline of a series that began before tracking.
    pinned: bool


@dataclass
class Scenario:
    #: Each identity's exports in time order.
    identities: list[list[Export]]
    #: Increase since tracking began, from the counters' own segments.
    true_total: float


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A few series, each with a few start times (resets) holding a few value resets."""
    identities: list[list[Export]] = []
    true_total = 0.0
    for series in range(draw(st.integers(1, 3))):
        offsets = draw(st.lists(st.integers(-300, 900), min_size=1, max_size=3, unique=True))
        for offset in offsets:
            start = T0 + offset * S
            exports: list[Export] = []
            t = start
            last = 0
            for segment in range(draw(st.integers(1, 3))):
                if segment and last == 0:
                    break  # a drop from zero cannot be seen
                value = draw(st.integers(0, last - 1)) if segment else draw(st.integers(0, 5))
                if segment == 0 and start < T0:
                    true_total -= value  # the baseline: counted before tracking began
                for step in range(draw(st.integers(1, 4))):
                    value += draw(st.integers(0, 3)) if step else 0
                    t += draw(st.integers(1, 90)) * S
                    pinned = step == 0 and (segment > 0 or start < T0)
                    exports.append(Export(pt(value, t=t, start=start, series=f"s{series}"), segment, pinned))
                true_total += value
                last = value
            identities.append(exports)
    return Scenario(identities, true_total)


def deliver(scenario: Scenario, rng: random.Random, *, keep_segments: bool) -> list[Point]:
    """Interleave the identities, reorder, and re-send some exports.

    With ``keep_segments`` an export only trades places with a neighbour of its own value
    segment and pinned exports stay put: the reorderings after which the exact total is
    still knowable (a reordering across a value reset can hide the reset).
    """
    queues: list[list[Point]] = []
    for exports in scenario.identities:
        order = list(exports)
        if keep_segments:
            for i in range(len(order) - 1):
                a, b = order[i], order[i + 1]
                if a.segment == b.segment and not (a.pinned or b.pinned) and rng.random() < 0.4:
                    order[i], order[i + 1] = b, a
        else:
            rng.shuffle(order)
        queues.append([e.point for e in order])
    labels = [i for i, q in enumerate(queues) for _ in q]
    rng.shuffle(labels)
    delivered = [queues[i].pop(0) for i in labels]
    for point in list(delivered):
        if rng.random() < 0.25:
            delivered.insert(rng.randint(delivered.index(point) + 1, len(delivered)), point)
    return delivered


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), rng=st.randoms(use_true_random=False))
def test_deltas_sum_to_the_true_increase_despite_resets_duplicates_and_reordering(
    scenario: Scenario, rng: random.Random
) -> None:
    tracker = SeriesTracker()
    points = deliver(scenario, rng, keep_segments=True)

    emitted = deltas(tracker, points, limits=Limits(max_staleness_ns=0))

    assert all(d >= 0 for d in emitted)
    assert sum(emitted) == scenario.true_total
    assert deltas(tracker, points) == []  # the whole stream re-sent adds nothing


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), rng=st.randoms(use_true_random=False), max_series=st.integers(1, 4))
def test_any_order_and_any_bound_never_count_more_than_the_truth(
    scenario: Scenario, rng: random.Random, max_series: int
) -> None:
    """Arbitrary reordering or eviction can lose increments, never invent or repeat them."""
    tracker = SeriesTracker()
    points = deliver(scenario, rng, keep_segments=False)

    emitted = deltas(tracker, points, limits=Limits(max_series=max_series, max_staleness_ns=0))

    assert all(d >= 0 for d in emitted)
    assert 0 <= sum(emitted) <= scenario.true_total
    assert len(tracker.series) <= max_series
