"""Per-series deltas from metric points: the cumulative-to-delta rules, pure and bounded.

Every sum point becomes the amount it adds, whatever temporality the agent exports (Claude Code
and Codex send deltas, Gemini CLI cumulatives; Claude Code switches with
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``). The rules follow the OpenTelemetry
Collector's ``cumulativetodelta`` processor (``processor/cumulativetodeltaprocessor/internal/
tracking/tracker.go``, ``MetricTracker.Convert``) where they fit and say where and why they
differ.

Rules, per point:

1. **Delta** (temporality 1): the value is the delta and passes through unchanged, once: the
   identities (series, start, end) of the session's last ``Limits.recent_deltas`` delta points
   are remembered (a bounded window of digests, :mod:`streams.dedup`), so a re-sent export
   adds nothing (:attr:`Skip.DUPLICATE`) while a late export that never arrived before still
   counts.
2. **Gauge** (0) or any other temporality: no delta exists (:attr:`Skip.GAUGE`,
   :attr:`Skip.UNKNOWN_TEMPORALITY`). NaN (OTLP's staleness marker) and infinities are ignored
   without touching state (:attr:`Skip.NOT_FINITE`), as the collector ignores NaN.
3. **Cumulative** (2): the identity of a series is ``(series_id, start_time_ns)``, as in the
   collector, whose ``MetricIdentity`` includes ``StartTimestamp``. A new start time for the
   same ``series_id`` is therefore a new series (the agent restarted the counter), and writers
   that share a ``series_id`` but not a start time never mix (reference: agent-telemetry.md
   section 7, anthropics/claude-code#72500: 22 commits read as ~6 200 through ``increase()``).
   Per identity only the last accepted ``(time_ns, value)`` is kept.

   a. *First point* of an identity, the collector's ``initial_value: auto``: it counts in full
      if and only if its start time is set, is not before the time tracking began, and
      differs from the point's time (collector: ``StartTimestamp < startTime ||
      ObservedTimestamp == StartTimestamp`` means drop). The collector's ``startTime`` (its
      process start) is the session's first-seen time here, passed by the caller. A series
      that began earlier is a baseline only (:attr:`Skip.BASELINE`): its value may already
      have been counted, or may hold counts from before we watched. A new start time that
      appears while we watch is thus a reset whose first value counts in full.
   b. *Duplicate or out of order* (``time_ns`` not after the identity's last time): dropped
      without touching state (:attr:`Skip.OUT_OF_ORDER`): never negative, never twice.
   c. *Monotonic, value grew*: ``value - last``.
   d. *Monotonic, value fell*: a reset inside one start time; the new value is the delta (the
      counter restarted from zero), as Prometheus' ``increase()`` reads it.
   e. *Non-monotonic* (UpDownCounter): ``value - last``, which may be negative.

Bounds: at most :attr:`Limits.max_series` identities per tracker, least recently updated
evicted first, and identities whose last point is more than :attr:`Limits.max_staleness_ns`
older than the newest point the tracker saw are expired (the session's own clock, so the core
needs no wall clock). Forgetting is safe: :attr:`SeriesTracker.forgotten_ns` remembers the
newest time of anything forgotten, and a point without state that is not newer than it
(:attr:`Skip.FORGOTTEN`) or whose series started before it (a baseline) never counts in full,
so a forgotten series seen again is re-baselined and never counted twice.

Where this differs from the collector, and why:

- Tracking start: the session's first-seen time, not the process start. State lives per
  session in a changelogged table and survives restarts (what collector-contrib#36551 asks
  for), so a worker restart must not re-baseline every series.
- Monotonic value drop (3d): the collector drops that point and re-baselines on it
  (``value < prevValue`` sets ``valid = false``, state still updated), losing what the new
  counter counted before its first export. Claude Code resets counters hundreds of times in
  one session (agent-telemetry.md section 7), so every dropped first value would be a lost
  commit or token count; the new value is what accrued since the reset.
- Out of order and duplicates (3b): the collector compares only values, so a late point with
  a lower value reads as a reset and the next point then counts twice. Comparing times makes
  re-sent exports and Kafka redeliveries idempotent.
- Non-monotonic sums (3e): the collector leaves them cumulative; the rollups here want a
  delta for every sum.
- First point whose time is *before* its start: the collector's ``==`` test would count it;
  a point that ends before it starts is malformed and only a baseline here.
- Bounds: the collector has only ``max_staleness`` (default 0, unbounded) on the wall clock;
  a Faust table value is serialised with every message, so it must stay small.

State format (:class:`SeriesTracker`, JSON): ``{"series": {"<series_id>@<start_time_ns>":
[time_ns, value], ...}, "now_ns": int, "forgotten_ns": int, "recent_deltas": {"data":
base64}}``, least recently updated first (JSON objects keep their order through pydantic).
With 32-hex series ids one cumulative entry is about 85 bytes, so 30 series are ~2.5 KB (the
2 000 bound, ~170 KB, only for pathological clients); the delta window is at most ~0.7 KB
(64 digests), whatever the session's age.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from streams.dedup import DigestWindow, digest
from tokentide.records import Point, Record

#: OTLP ``AggregationTemporality`` values as :class:`Point` carries them.
GAUGE = 0
DELTA = 1
CUMULATIVE = 2

NANOS_PER_SECOND = 1_000_000_000


class Skip(enum.StrEnum):
    """Why a point yields no delta (a label for the caller's reject counter)."""

    GAUGE = "gauge"  # a gauge: a level, not an amount
    UNKNOWN_TEMPORALITY = "unknown_temporality"  # neither delta nor cumulative
    NOT_FINITE = "not_finite"  # NaN (staleness marker) or infinity; state untouched
    BASELINE = "baseline"  # first point of a series that began before tracking: kept, not counted
    OUT_OF_ORDER = "out_of_order"  # not after the series' last point: duplicate, re-sent or late
    DUPLICATE = "duplicate"  # a delta point already counted (a re-sent export)
    FORGOTTEN = "forgotten"  # no state, and not after state already forgotten (evicted/expired)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one tracker (one session)."""

    #: Identities kept at most; the least recently updated is evicted first.
    max_series: int = 2_000
    #: Identities whose last point is this much older than the tracker's newest point are
    #: expired; 0 keeps them until the size bound evicts them.
    max_staleness_ns: int = 3_600 * NANOS_PER_SECOND
    #: Delta points remembered to recognise a re-sent export (Claude Code sends ~5-15 a
    #: minute, so 64 cover several minutes of re-sends).
    recent_deltas: int = 64

    def __post_init__(self) -> None:
        if self.max_series < 1:
            raise ValueError(f"max_series must be at least 1, not {self.max_series}")
        if self.max_staleness_ns < 0:
            raise ValueError(f"max_staleness_ns must not be negative, not {self.max_staleness_ns}")
        if self.recent_deltas < 1:
            raise ValueError(f"recent_deltas must be at least 1, not {self.recent_deltas}")


DEFAULT_LIMITS = Limits()


class SeriesTracker(Record, kw_only=True):
    """The cumulative series of one session: what the last point of each identity said.

    Mutated in place by :func:`delta_of` and :func:`to_deltas`; JSON through ``to_bytes`` /
    ``from_bytes``. The order of ``series`` is the eviction order and survives JSON.
    """

    #: ``"<series_id>@<start_time_ns>"`` -> ``(time_ns, value)`` of the last accepted point,
    #: least recently updated first.
    series: dict[str, tuple[int, float]] = msgspec.field(default_factory=dict)
    #: Newest ``time_ns`` of any cumulative point accepted: the clock of expiry.
    now_ns: int = 0
    #: Newest ``time_ns`` of any identity evicted or expired (0: nothing forgotten yet).
    forgotten_ns: int = 0
    #: Identities ``(series_id, start_time_ns, time_ns)`` of the last ``Limits.recent_deltas``
    #: delta points counted (streams.dedup): a re-sent export is recognised among them.
    recent_deltas: DigestWindow = msgspec.field(default_factory=DigestWindow)


def series_key(point: Point) -> str:
    """The key of ``point``'s identity in :attr:`SeriesTracker.series`."""
    return f"{point.series_id}@{point.start_time_ns}"


def delta_of(
    tracker: SeriesTracker,
    point: Point,
    session_first_seen_ns: int,
    limits: Limits = DEFAULT_LIMITS,
) -> float | Skip:
    """The amount ``point`` adds to its series, or why it adds nothing.

    ``session_first_seen_ns`` is when tracking of the session began (the collector's start
    time in rule 3a): a series that started before it is only a baseline. ``tracker`` is
    updated in place and kept within ``limits.max_series``; expiry by age is left to
    :func:`expire` (called by :func:`to_deltas` once per batch). Never raises.
    """
    temporality = point.temporality
    if temporality == DELTA:
        return _delta_point(tracker, point, limits)
    if temporality != CUMULATIVE:
        return Skip.GAUGE if temporality == GAUGE else Skip.UNKNOWN_TEMPORALITY
    value = point.value
    if not math.isfinite(value):
        return Skip.NOT_FINITE

    series = tracker.series
    key = f"{point.series_id}@{point.start_time_ns}"
    time_ns = point.time_ns
    last = series.get(key)
    delta: float | Skip
    if last is None:
        if time_ns <= tracker.forgotten_ns:
            return Skip.FORGOTTEN
        start = point.start_time_ns
        counts = 0 < start < time_ns and start >= session_first_seen_ns and start > tracker.forgotten_ns
        delta = value if counts else Skip.BASELINE
    else:
        last_time, last_value = last
        if time_ns <= last_time:
            return Skip.OUT_OF_ORDER
        delta = value if point.monotonic and value < last_value else value - last_value
        del series[key]  # re-inserted below, at the most recently updated end
    series[key] = (time_ns, value)
    tracker.now_ns = max(tracker.now_ns, time_ns)
    if last is None and len(series) > limits.max_series:
        _forget(tracker, next(iter(series)))
    return delta


def _delta_point(tracker: SeriesTracker, point: Point, limits: Limits) -> float | Skip:
    """A delta point counts once: its (series, start, end) must not be among the recent ones.

    Only exact repeats are dropped, so a late export whose first delivery failed still counts.
    """
    key = digest(point.series_id, point.start_time_ns, point.time_ns)
    if key in tracker.recent_deltas:
        return Skip.DUPLICATE
    tracker.recent_deltas.add(key, limits.recent_deltas)
    return point.value


def to_deltas(
    tracker: SeriesTracker,
    points: Iterable[Point],
    session_first_seen_ns: int,
    *,
    limits: Limits = DEFAULT_LIMITS,
    skipped: Counter[Skip] | None = None,
) -> list[tuple[Point, float]]:
    """Each point of ``points`` that adds something, with the amount it adds, in input order.

    Applies :func:`delta_of` to every point, counting the others by reason into ``skipped``
    when given, then :func:`expire`. ``tracker`` is updated in place; feeding the same
    cumulative points again yields nothing. Never raises.
    """
    out: list[tuple[Point, float]] = []
    for point in points:
        delta = delta_of(tracker, point, session_first_seen_ns, limits)
        if isinstance(delta, Skip):
            if skipped is not None:
                skipped[delta] += 1
        else:
            out.append((point, delta))
    expire(tracker, limits)
    return out


def expire(tracker: SeriesTracker, limits: Limits = DEFAULT_LIMITS) -> int:
    """Forget identities last updated ``limits.max_staleness_ns`` before ``tracker.now_ns``.

    Looks from the least recently updated end and stops at the first fresh identity, so a
    call costs about one look-up plus one per identity forgotten. Returns how many it forgot.
    """
    if not limits.max_staleness_ns:
        return 0
    series = tracker.series
    horizon = tracker.now_ns - limits.max_staleness_ns
    forgotten = 0
    while series:
        key = next(iter(series))
        if series[key][0] >= horizon:
            break
        _forget(tracker, key)
        forgotten += 1
    return forgotten


def _forget(tracker: SeriesTracker, key: str) -> None:
    time_ns, _ = tracker.series.pop(key)
    tracker.forgotten_ns = max(tracker.forgotten_ns, time_ns)
