"""Long synthetic Claude Code sessions as real OTLP export bodies, with their expected outcome.

:func:`generate` turns a :class:`Scenario` into the exports Claude Code 2.1.197 would send
(``ExportLogsServiceRequest`` / ``ExportMetricsServiceRequest`` protobuf bytes, in the shape
of the real capture ``tests/fixtures/claude-code/stub-text-protobuf``: the same resource,
scopes, record bodies, attribute names and types) and into what those exports must add up
to. The expectations are computed here, from what was generated, never by the code under
test:

- **totals**: tokens by type, cost (nano-USD: the sum over requests of
  ``round(cost_usd * 1e9)``), API requests, prompts, tool calls and failures, lines
  added/removed, commits, active time, compactions, events;
- **signals**: which context signal fires at which request (or compaction), replayed from
  the documented rules (docstrings of ``streams/context.py``, ``streams/signals.py`` and
  ``streams/state.py``; re-implemented here, not imported) over the exports *in the order
  they are delivered* (:meth:`Generated.signals_for`), so re-sent and shuffled deliveries
  have exact expectations too.

What is modelled (reference: ``agent-telemetry.md`` sections 2, 6 and 7):

- Turns: a ``user_prompt`` then 1-6 main-thread ``api_request`` events (``query_source``
  ``repl_main_thread``, Opus, 200k window), each followed by its ``assistant_response``
  (same timestamp, as captured) and 0-3 ``tool_result`` events (``success`` as the string
  ``"true"``/``"false"``); successful edits add lines of code, some shell calls commit.
- The main context (``input + cache_read + cache_creation``) grows by ``growth`` +/-
  ``growth_jitter`` per main request (never shrinks inside a cycle); once it passes
  ``compact_at`` of the window the agent compacts: an Opus ``api_request`` with
  ``query_source=compact``, then a ``compaction`` event (``trigger=auto``, ``pre_tokens``,
  ``post_tokens``, ``success``); the next main request starts from ``post_tokens``.
- Side requests (share ``side_share``): Haiku ``generate_session_title`` calls with a
  context of their own; they count in the totals and must not move the context.
- Metrics (Sum, monotonic, ``asDouble``): ``claude_code.token.usage`` (``type`` input /
  output / cacheRead / cacheCreation), ``claude_code.cost.usage``,
  ``claude_code.lines_of_code.count`` (added/removed), ``claude_code.commit.count``,
  ``claude_code.active_time.total`` (user/cli) and ``claude_code.session.count``. Delta: a
  point per series recorded in the interval, ``start_time`` = its first recording in the
  interval. Cumulative: every series of the running process in every export, ``start_time``
  = its first recording since the process started.
- Agent restarts (``restarts``): the process flushes both signals, exits and a new one
  resumes the session: every cumulative series gets a new ``start_time_unix_nano``, and
  ``event.sequence`` starts again from 0.
- Drop resets (``drop_resets``, cumulative only): a counter falls back to what it counted
  since the previous export while its ``start_time`` stays (anthropics/claude-code#72500).
  Applied only to series whose new value is below the last exported one, since any other
  "reset" is indistinguishable from growth.

Times are whole milliseconds (as the agent sends them) and strictly increasing, except that an
``assistant_response`` shares its request's timestamp, as in the captures.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
    NumberDataPoint,
)

MS = 1_000_000
SECOND = 1_000 * MS
#: 2026-11-24T01:50:37Z, the day of the captures.
T0 = 1_795_485_037_000 * MS
VERSION = "2.1.197"
OPUS = "claude-opus-4-8"
HAIKU = "claude-haiku-4-5-20251001"
#: Claude's window (agent-telemetry.md section 6); ``[1m]`` variants have 1M.
WINDOW = 200_000
LONG_WINDOW = 1_000_000
#: ``query_source`` of the main conversation (interactive).
MAIN_SOURCE = "repl_main_thread"
TITLE_SOURCE = "generate_session_title"
COMPACT_SOURCE = "compact"
RESOURCE = {
    "host.arch": "amd64",
    "os.type": "linux",
    "os.version": "6.18.44-fc-v669",
    "service.name": "claude-code",
    "service.version": VERSION,
}
EVENTS_SCOPE = "com.anthropic.claude_code.events"
METRICS_SCOPE = "com.anthropic.claude_code"
TOOLS = ("Read", "Edit", "Write", "Bash", "Grep", "Glob")
EDIT_TOOLS = frozenset({"Edit", "Write"})

# --- the documented rules the expectations follow (not imported from streams) -----------------

#: Signal thresholds (signals.py / tenancy.SignalThresholds defaults).
WARNING, CHECKPOINT, CRITICAL, HYSTERESIS, CHECKPOINT_REQUESTS_LEFT = 0.80, 0.90, 0.95, 0.05, 3.0
#: context.py: smoothing of growth, compaction drop, minimum ratio for a drop, dedup window.
SMOOTHING, COMPACTION_DROP, COMPACTION_MIN_RATIO = 0.3, 0.4, 0.2
COMPACTION_DEDUP_NS = 120 * SECOND

CONTEXT_WARNING = "context_warning"
CHECKPOINT_REQUESTED = "checkpoint_requested"
CONTEXT_CRITICAL = "context_critical"
COMPACTION_OBSERVED = "compaction_observed"
SIGNAL_KINDS = (CONTEXT_WARNING, CHECKPOINT_REQUESTED, CONTEXT_CRITICAL, COMPACTION_OBSERVED)


class Temporality(enum.IntEnum):
    """OTLP ``AggregationTemporality`` of the exported sums."""

    DELTA = 1
    CUMULATIVE = 2


class AmbiguousScenario(ValueError):
    """The scenario hits a case the documented rules leave open; pick other parameters."""


@dataclass(frozen=True, slots=True)
class Price:
    """Integer nano-USD per token."""

    input: int
    output: int
    cache_read: int
    cache_creation: int


#: Opus $5/$25 per MTok, cache write x1.25, read x0.1; Haiku $1/$5 (agent-telemetry.md section 6).
PRICES = {OPUS: Price(5_000, 25_000, 500, 6_250), HAIKU: Price(1_000, 5_000, 100, 1_250)}


@dataclass(frozen=True)
class Scenario:
    """One synthetic session. Every random choice comes from ``seed``."""

    seed: int = 1
    #: API requests of the conversation: main-thread and side requests (compaction calls extra).
    requests: int = 300
    #: Context of the first main request (system prompt, tools, first prompt).
    start_context: int = 20_000
    #: Context growth per main request, uniformly +/- ``growth_jitter`` (kept >= 1).
    growth: int = 2_000
    growth_jitter: int = 800
    #: The agent compacts once its context passes this ratio of the window.
    compact_at: float = 0.965
    #: ``post_tokens`` of a compaction, uniformly +/- ``post_jitter``.
    post_compaction: int = 24_000
    post_jitter: int = 4_000
    #: Whether a compaction also sends its own ``api_request`` (``query_source=compact``).
    compact_requests: bool = True
    #: Share of the requests that are Haiku ``generate_session_title`` calls.
    side_share: float = 0.05
    tool_failure_rate: float = 0.1
    temporality: Temporality = Temporality.DELTA
    #: A logs export after every ``logs_every`` requests, a metrics export every ``metrics_every``.
    logs_every: int = 5
    metrics_every: int = 10
    #: Agent restarts (flush, exit, resume): new start times, ``event.sequence`` from 0.
    restarts: int = 0
    #: Cumulative counters that fall back without a new start time.
    drop_resets: int = 0
    #: Seconds between requests, uniformly.
    interval_s: tuple[float, float] = (4.0, 30.0)
    start_ns: int = T0
    #: Metric model names carry ``[1m]`` (the long-context variant): a 1M window.
    long_context: bool = False
    session_id: str | None = None

    def __post_init__(self) -> None:
        if self.requests < 1 or self.logs_every < 1 or self.metrics_every < 1:
            raise ValueError("requests, logs_every and metrics_every must be at least 1")
        if self.drop_resets and self.temporality is not Temporality.CUMULATIVE:
            raise ValueError("drop resets exist only in cumulative temporality")
        if not 0 < self.compact_at < 1 or not 0 <= self.side_share < 1:
            raise ValueError("compact_at must be in (0, 1) and side_share in [0, 1)")
        if self.growth_jitter >= self.growth:
            raise ValueError("growth_jitter must be below growth: the context never shrinks")

    @property
    def window(self) -> int:
        return LONG_WINDOW if self.long_context else WINDOW


@dataclass(frozen=True, slots=True)
class Request:
    """One ``api_request`` as generated."""

    index: int
    time_ns: int
    model: str
    query_source: str
    input: int
    output: int
    cache_read: int
    cache_creation: int
    cost_usd: float
    #: Whether it belongs to the main conversation (moves the context).
    main: bool

    @property
    def context(self) -> int:
        return self.input + self.cache_read + self.cache_creation

    @property
    def cost_nanos(self) -> int:
        return round(self.cost_usd * 1e9)


@dataclass(frozen=True, slots=True)
class Compaction:
    index: int
    time_ns: int
    pre_tokens: int
    post_tokens: int


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What the expectation replay needs of one log record."""

    time_ns: int
    name: str
    #: For main-thread requests: the context; for compactions: ``post_tokens``.
    tokens: int | None = None
    #: ``request <i>`` / ``compaction <j>`` for the records a signal can be pinned to.
    label: str | None = None
    #: For automatic compactions: ``pre_tokens``, where the agent compacts by itself.
    auto_compact_at: int | None = None


@dataclass(frozen=True, slots=True)
class Export:
    """One OTLP/HTTP export as the agent sends it."""

    signal: str  # "logs" | "metrics"
    body: bytes
    time_ns: int
    #: Indices into :attr:`Generated.events` of the records a logs export carries.
    events: tuple[int, ...] = ()
    #: A metrics export naming a ``[1m]`` model (the session's window becomes 1M).
    long_context: bool = False

    @property
    def path(self) -> str:
        return f"/v1/{self.signal}"


@dataclass(frozen=True, slots=True)
class Totals:
    input: int
    output: int
    cache_read: int
    cache_creation: int
    cost_nanos: int
    api_requests: int
    prompts: int
    tool_calls: int
    tool_failures: int
    lines_added: int
    lines_removed: int
    commits: int
    active_time_s: float
    compactions: int
    events: int
    models: frozenset[str]
    #: The agent's own cost metric, summed as doubles (what a metrics-only reader gets).
    metric_cost_usd: float


@dataclass(frozen=True, slots=True)
class ExpectedSignal:
    kind: str
    #: The n-th time this kind fires (1-based): the crossing number.
    crossing: int
    #: ``request <i>`` or ``compaction <j>``: where it fires.
    at: str
    time_ns: int
    #: Context tokens and window when it fires.
    tokens: int
    window: int


@dataclass(frozen=True)
class Generated:
    scenario: Scenario
    session_id: str
    exports: list[Export]
    requests: list[Request]
    compactions: list[Compaction]
    events: list[EventInfo]
    totals: Totals
    #: Signals of the exports delivered in order, once each.
    signals: list[ExpectedSignal]
    #: How many times a cumulative series' value fell without a new start time.
    drops: int = 0
    labels: dict[int, str] = field(default_factory=dict)

    def label(self, time_ns: int) -> str:
        """``request <i>`` / ``compaction <j>`` of a signal's time (``?<time>`` if none)."""
        return self.labels.get(time_ns, f"?{time_ns}")

    def signals_for(self, order: Iterable[int]) -> list[ExpectedSignal]:
        """The signals of the exports delivered in ``order`` (indices into :attr:`exports`;
        repeats are re-sent exports), in the order they fire."""
        return _replay(self, order)

    def fires(self, signals: Iterable[ExpectedSignal] | None = None) -> dict[str, list[str]]:
        """Where each kind fires: kind -> ``at`` labels, in firing order."""
        out: dict[str, list[str]] = {kind: [] for kind in SIGNAL_KINDS}
        for signal in self.signals if signals is None else signals:
            out[signal.kind].append(signal.at)
        return out


# --- orders of delivery -----------------------------------------------------------------------


def in_order(generated: Generated) -> list[int]:
    return list(range(len(generated.exports)))


def twice(generated: Generated) -> list[int]:
    """Every export posted twice in a row (the agent re-sending after a lost response)."""
    return [i for i in range(len(generated.exports)) for _ in range(2)]


def shuffled(generated: Generated, window: int, seed: int) -> list[int]:
    """Exports shuffled within consecutive blocks of ``window`` (out-of-order delivery)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    order = in_order(generated)
    out: list[int] = []
    for start in range(0, len(order), window):
        block = order[start : start + window]
        rng.shuffle(block)
        out += block
    return out


# --- OTLP building ----------------------------------------------------------------------------


def _any(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _key_values(attributes: Iterable[tuple[str, object]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attributes]


def _iso(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns // MS / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{time_ns // MS % 1000:03d}Z"


Attrs = tuple[tuple[str, object], ...]


@dataclass(slots=True)
class _Series:
    """One metric series of the running process."""

    name: str
    unit: str
    attributes: Attrs
    #: Cumulative: first recording since the process started; delta: in the interval.
    start_ns: int
    value: float = 0.0
    #: Recorded since the last export, and when the first of it was (None: nothing).
    since_export: float = 0.0
    interval_start_ns: int | None = None
    last_exported: float | None = None


@dataclass(slots=True)
class _Replay:
    """The documented context rules, applied to what a delivery order shows."""

    window: int
    tokens: int = 0
    growth: float | None = None
    #: The context of the last automatic compaction: predictions aim there (context.py).
    auto_compact_at: int | None = None
    #: Time of the main request that set the context (0: none yet).
    time_ns: int = 0
    last_sighting_ns: int = 0
    #: kind -> crossings so far, negative while raised.
    active: dict[str, int] = field(default_factory=dict)
    out: list[ExpectedSignal] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.tokens / self.window

    def requests_left(self) -> float | None:
        if not self.growth or self.growth <= 0:
            return None
        limit = min(self.auto_compact_at or self.window, self.window)
        return max(0.0, (limit - self.tokens) / self.growth)

    def request(self, tokens: int, time_ns: int, label: str) -> None:
        """A main request: fed in event-time order only (context.py), else ignored."""
        if time_ns < self.time_ns:
            return
        previous = self.tokens
        dropped = (
            self.time_ns > 0
            and previous >= COMPACTION_MIN_RATIO * self.window
            and tokens <= previous * (1 - COMPACTION_DROP)
        )
        if self.time_ns > 0 and not dropped and tokens >= previous:
            delta = float(tokens - previous)
            self.growth = delta if self.growth is None else self.growth + SMOOTHING * (delta - self.growth)
        self.tokens = tokens
        self.time_ns = time_ns
        counted = dropped and self._sighting(time_ns)
        self.evaluate(time_ns, label, compaction=counted)

    def compaction(self, post_tokens: int, time_ns: int, label: str, auto_compact_at: int | None) -> None:
        if auto_compact_at:
            self.auto_compact_at = min(auto_compact_at, self.window)
        if time_ns >= self.time_ns:
            self.tokens = post_tokens  # the agent says where the context stands now
        if self._sighting(time_ns):
            self.evaluate(time_ns, label, compaction=True)

    def _sighting(self, time_ns: int) -> bool:
        """Whether a compaction seen at ``time_ns`` is a new one (not the other sighting)."""
        new = not (self.last_sighting_ns and abs(time_ns - self.last_sighting_ns) <= COMPACTION_DEDUP_NS)
        self.last_sighting_ns = time_ns
        return new

    def _reached(self, kind: str, threshold: float, margin: float) -> bool:
        if self.ratio >= threshold - margin:
            return True
        left = self.requests_left()
        if kind != CHECKPOINT_REQUESTED or left is None:
            return False
        if abs(left - CHECKPOINT_REQUESTS_LEFT) < 0.01:
            raise AmbiguousScenario(f"{left} requests left: on the edge of the checkpoint prediction")
        if margin and CHECKPOINT_REQUESTS_LEFT < left <= CHECKPOINT_REQUESTS_LEFT + 3:
            # The docs give the prediction no re-arming margin; stay clear of any choice.
            raise AmbiguousScenario(f"re-arming the checkpoint at {left} requests left")
        return left <= CHECKPOINT_REQUESTS_LEFT

    def evaluate(self, time_ns: int, label: str, *, compaction: bool) -> None:
        if compaction:
            self._fire(COMPACTION_OBSERVED, time_ns, label)
        for kind, threshold in (
            (CONTEXT_WARNING, WARNING),
            (CHECKPOINT_REQUESTED, CHECKPOINT),
            (CONTEXT_CRITICAL, CRITICAL),
        ):
            state = self.active.get(kind, 0)
            if state >= 0 and self._reached(kind, threshold, 0.0):
                self._fire(kind, time_ns, label)
            elif state < 0 and not self._reached(kind, threshold, HYSTERESIS):
                self.active[kind] = -state  # re-armed

    def _fire(self, kind: str, time_ns: int, label: str) -> None:
        crossing = abs(self.active.get(kind, 0)) + 1
        self.active[kind] = crossing if kind == COMPACTION_OBSERVED else -crossing
        self.out.append(ExpectedSignal(kind, crossing, label, time_ns, self.tokens, self.window))


def _replay(generated: Generated, order: Iterable[int]) -> list[ExpectedSignal]:
    replay = _Replay(window=WINDOW)
    seen: set[int] = set()
    for position in order:
        export = generated.exports[position]
        if export.long_context:
            replay.window = LONG_WINDOW
        fresh = [i for i in export.events if i not in seen]
        seen.update(fresh)
        for index in sorted(fresh, key=lambda i: generated.events[i].time_ns):
            event = generated.events[index]
            if event.tokens is None or event.label is None:
                continue
            if event.name == "api_request":
                replay.request(event.tokens, event.time_ns, event.label)
            elif event.name == "compaction":
                replay.compaction(event.tokens, event.time_ns, event.label, event.auto_compact_at)
    return replay.out


# --- the generator ----------------------------------------------------------------------------


class _Session:
    """The agent: its clock, its context, its pending records and metric series."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.rng = random.Random(scenario.seed)  # noqa: S311 - reproducible test data
        self.session_id = scenario.session_id or str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.user_id = f"{self.rng.getrandbits(256):064x}"
        self.now_ms = scenario.start_ns // MS
        self.sequence = 0
        self.prompt_id = ""
        self.exports: list[Export] = []
        self.requests: list[Request] = []
        self.compactions: list[Compaction] = []
        self.events: list[EventInfo] = []
        self.labels: dict[int, str] = {}
        self.pending_records: list[LogRecord] = []
        self.pending_events: list[int] = []
        self.series: dict[tuple[str, Attrs], _Series] = {}
        self.context = 0  # context of the last main request (0: none yet)
        self.compacted = False  # a compaction since the last main request
        self.drop_due = 0
        self.exported_in_process = False
        self.drops = 0
        self.prompts = self.tool_calls = self.tool_failures = 0
        self.lines_added = self.lines_removed = self.commits = 0
        self.active_ms = 0
        self.metric_cost = 0.0
        self.metric_model = OPUS + ("[1m]" if scenario.long_context else "")

    # clock ----------------------------------------------------------------------------------

    def tick(self, low_ms: int, high_ms: int) -> int:
        self.now_ms += self.rng.randint(low_ms, high_ms)
        return self.now_ms * MS

    # log records ----------------------------------------------------------------------------

    def emit(
        self,
        name: str,
        time_ns: int,
        attributes: dict[str, object],
        *,
        tokens: int | None = None,
        label: str | None = None,
    ) -> None:
        record = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time_ns)
        record.body.string_value = f"claude_code.{name}"
        record.attributes.extend(
            _key_values(
                [
                    ("user.id", self.user_id),
                    ("session.id", self.session_id),
                    ("terminal.type", "dumb"),
                    ("event.name", name),
                    ("event.timestamp", _iso(time_ns)),
                    ("event.sequence", self.sequence),
                    ("prompt.id", self.prompt_id),
                    *attributes.items(),
                ]
            )
        )
        self.sequence += 1
        self.pending_records.append(record)
        self.pending_events.append(len(self.events))
        auto = attributes.get("pre_tokens") if attributes.get("trigger") == "auto" else None
        self.events.append(EventInfo(time_ns, name, tokens, label, auto if isinstance(auto, int) else None))
        if label is not None:
            self.labels[time_ns] = label

    def flush_logs(self) -> None:
        if not self.pending_records:
            return
        time_ns = self.tick(50, 400)
        request = ExportLogsServiceRequest()
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.extend(_key_values(RESOURCE.items()))
        scope_logs = resource_logs.scope_logs.add()
        scope_logs.scope.name = EVENTS_SCOPE
        scope_logs.scope.version = VERSION
        scope_logs.log_records.extend(self.pending_records)
        self.exports.append(
            Export("logs", request.SerializeToString(), time_ns, events=tuple(self.pending_events))
        )
        self.pending_records, self.pending_events = [], []

    # metrics --------------------------------------------------------------------------------

    def record(self, name: str, unit: str, extra: Attrs, amount: float, time_ns: int) -> None:
        attributes: Attrs = (
            ("user.id", self.user_id),
            ("session.id", self.session_id),
            ("terminal.type", "dumb"),
            *extra,
        )
        series = self.series.get((name, attributes))
        if series is None:
            series = self.series[(name, attributes)] = _Series(name, unit, attributes, start_ns=time_ns)
        if series.interval_start_ns is None:
            series.interval_start_ns = time_ns
        series.value += amount
        series.since_export += amount

    def flush_metrics(self) -> None:
        cumulative = self.s.temporality is Temporality.CUMULATIVE
        due = [s for s in self.series.values() if cumulative or s.interval_start_ns is not None]
        if not due:
            return
        time_ns = self.tick(50, 400)
        if cumulative and self.drop_due and self.exported_in_process:
            self._drop_reset(due)
        request = ExportMetricsServiceRequest()
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.attributes.extend(_key_values(RESOURCE.items()))
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.name = METRICS_SCOPE
        scope_metrics.scope.version = VERSION
        metrics: dict[str, Metric] = {}
        for series in due:
            metric = metrics.get(series.name)
            if metric is None:
                metric = metrics[series.name] = scope_metrics.metrics.add(name=series.name, unit=series.unit)
                metric.sum.aggregation_temporality = (
                    AGGREGATION_TEMPORALITY_CUMULATIVE if cumulative else AGGREGATION_TEMPORALITY_DELTA
                )
                metric.sum.is_monotonic = True
            value = series.value if cumulative else series.since_export
            start = (
                series.start_ns
                if cumulative or series.interval_start_ns is None
                else series.interval_start_ns
            )
            point = NumberDataPoint(start_time_unix_nano=start, time_unix_nano=time_ns, as_double=value)
            point.attributes.extend(_key_values(series.attributes))
            metric.sum.data_points.append(point)
            series.last_exported = value
            series.since_export = 0.0
            series.interval_start_ns = None
        long_context = any("[1m]" in str(v) for s in due for k, v in s.attributes if k == "model")
        self.exports.append(
            Export("metrics", request.SerializeToString(), time_ns, long_context=long_context)
        )
        self.exported_in_process = True

    def _drop_reset(self, due: list[_Series]) -> None:
        """Counters restarted from zero right after the last export, start time unchanged."""
        candidates = [
            s
            for s in due
            if s.last_exported is not None and s.since_export < s.last_exported and s.name != SESSION_COUNT
        ]
        chosen = [s for s in candidates if self.rng.random() < 0.5] or candidates[:1]
        for series in chosen:
            series.value = series.since_export
        if chosen:
            self.drops += len(chosen)
            self.drop_due -= 1

    def restart(self) -> None:
        """The agent exits (flushing everything) and a new process resumes the session."""
        self.flush_logs()
        self.flush_metrics()
        self.series.clear()
        self.sequence = 0
        self.exported_in_process = False
        time_ns = self.tick(3_000, 20_000)
        self.record(SESSION_COUNT, "", (("start_type", "resume"),), 1.0, time_ns)

    # the conversation -----------------------------------------------------------------------

    def prompt(self) -> None:
        self.prompt_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        time_ns = self.tick(int(self.s.interval_s[0] * 1000), int(self.s.interval_s[1] * 1000))
        self.prompts += 1
        self.emit(
            "user_prompt",
            time_ns,
            {"prompt_length": str(self.rng.randint(5, 4000)), "prompt": "<REDACTED>"},
        )
        typing_ms = self.rng.randint(1_000, 20_000)
        self.active_ms += typing_ms
        self.record(ACTIVE_TIME, "s", (("type", "user"),), typing_ms / 1000, time_ns)

    def api_request(
        self, model: str, source: str, *, input_: int, output: int, cache_read: int, cache_creation: int
    ) -> Request:
        duration_ms = self.rng.randint(400, 60_000 if model == OPUS else 3_000)
        time_ns = self.tick(duration_ms // 4, duration_ms)
        price = PRICES[model]
        nanos = (
            input_ * price.input
            + output * price.output
            + cache_read * price.cache_read
            + cache_creation * price.cache_creation
        )
        cost_usd = nanos / 1e9
        main = source == MAIN_SOURCE
        request = Request(
            len(self.requests),
            time_ns,
            model,
            source,
            input_,
            output,
            cache_read,
            cache_creation,
            cost_usd,
            main,
        )
        self.requests.append(request)
        label = f"request {request.index}" if main else None
        attributes: dict[str, object] = {
            "model": model,
            "input_tokens": input_,
            "output_tokens": output,
            "cache_read_tokens": cache_read,
            "cache_creation_tokens": cache_creation,
            "cost_usd": cost_usd,
            "cost_usd_micros": round(cost_usd * 1e6),
            "duration_ms": duration_ms,
            "request_id": f"req_{self.rng.getrandbits(96):024x}",
            "speed": "normal",
            "query_source": source,
        }
        if model == OPUS:
            attributes["effort"] = "high"
        self.emit("api_request", time_ns, attributes, tokens=request.context if main else None, label=label)
        self.emit(
            "assistant_response",
            time_ns,
            {
                "response_length": self.rng.randint(1, 8000),
                "response": "<REDACTED>",
                "request_id": attributes["request_id"],
                "model": model,
                "query_source": source,
            },
        )
        metric_model = self.metric_model if model == OPUS else model
        metric_source = "main" if main else "auxiliary"
        base: Attrs = (("model", metric_model), ("query_source", metric_source))
        if model == OPUS:
            base += (("effort", "high"),)
        self.record(COST, "USD", base, cost_usd, time_ns)
        self.metric_cost += cost_usd
        for kind, amount in (
            ("input", input_),
            ("output", output),
            ("cacheRead", cache_read),
            ("cacheCreation", cache_creation),
        ):
            self.record(TOKENS, "tokens", (*base, ("type", kind)), float(amount), time_ns)
        self.active_ms += duration_ms
        self.record(ACTIVE_TIME, "s", (("type", "cli"),), duration_ms / 1000, time_ns)
        return request

    def main_request(self) -> None:
        s, rng = self.s, self.rng
        growth = max(1, s.growth + rng.randint(-s.growth_jitter, s.growth_jitter))
        if not self.context:
            context, cached = s.start_context, 0
        elif self.compacted:
            context, cached = self.compactions[-1].post_tokens + growth, min(12_000, self.context)
        else:
            context, cached = self.context + growth, self.context
        context = min(context, s.window - 1_000)
        cached = min(cached, context - 1)
        new = context - cached
        input_ = rng.randint(1, min(new, 400))
        self.api_request(
            OPUS,
            MAIN_SOURCE,
            input_=input_,
            output=rng.randint(20, 3_000),
            cache_read=cached,
            cache_creation=new - input_,
        )
        self.context, self.compacted = context, False
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            self.tool()
        if context >= s.compact_at * s.window:
            self.compact()

    def side_request(self) -> None:
        self.api_request(
            HAIKU,
            TITLE_SOURCE,
            input_=self.rng.randint(200, 1_500),
            output=self.rng.randint(8, 40),
            cache_read=0,
            cache_creation=0,
        )

    def tool(self) -> None:
        rng = self.rng
        name = rng.choice(TOOLS)
        success = rng.random() >= self.s.tool_failure_rate
        duration_ms = rng.randint(5, 30_000 if name == "Bash" else 500)
        time_ns = self.tick(max(1, duration_ms // 2), duration_ms + 1)
        self.tool_calls += 1
        self.tool_failures += not success
        self.emit(
            "tool_result",
            time_ns,
            {
                "tool_name": name,
                "tool_use_id": f"toolu_{rng.getrandbits(96):024x}",
                "success": "true" if success else "false",
                "duration_ms": str(duration_ms),
                "tool_input_size_bytes": str(rng.randint(20, 9_000)),
                "tool_result_size_bytes": str(rng.randint(20, 40_000)),
            },
        )
        if success and name in EDIT_TOOLS:
            added, removed = rng.randint(1, 80), rng.randint(0, 30)
            self.lines_added += added
            self.lines_removed += removed
            model = (("model", OPUS),)
            self.record(LINES, "", (("type", "added"), *model), float(added), time_ns)
            self.record(LINES, "", (("type", "removed"), *model), float(removed), time_ns)
        if success and name == "Bash" and rng.random() < 0.3:
            self.commits += 1
            self.record(COMMITS, "", (), 1.0, time_ns)

    def compact(self) -> None:
        s, rng = self.s, self.rng
        if s.compact_requests:
            summary = rng.randint(2_000, 9_000)
            self.api_request(
                OPUS,
                COMPACT_SOURCE,
                input_=rng.randint(50, 400),
                output=summary,
                cache_read=self.context,
                cache_creation=0,
            )
        post = s.post_compaction + rng.randint(-s.post_jitter, s.post_jitter)
        time_ns = self.tick(200, 3_000)
        compaction = Compaction(len(self.compactions), time_ns, self.context, post)
        self.compactions.append(compaction)
        label = f"compaction {compaction.index}"
        self.emit(
            "compaction",
            time_ns,
            {
                "trigger": "auto",
                "success": True,
                "duration_ms": rng.randint(5_000, 60_000),
                "pre_tokens": compaction.pre_tokens,
                "post_tokens": post,
                "precompute_reuse": False,
            },
            tokens=post,
            label=label,
        )
        self.compacted = True


TOKENS = "claude_code.token.usage"
COST = "claude_code.cost.usage"
LINES = "claude_code.lines_of_code.count"
COMMITS = "claude_code.commit.count"
ACTIVE_TIME = "claude_code.active_time.total"
SESSION_COUNT = "claude_code.session.count"


def generate(scenario: Scenario) -> Generated:
    """The session's exports in the order the agent sends them, and their expected outcome."""
    agent = _Session(scenario)
    rng = agent.rng
    between = range(1, scenario.requests)
    restarts = set(rng.sample(between, min(scenario.restarts, len(between))))
    drops = set(rng.sample(between, min(scenario.drop_resets, len(between))))
    agent.record(SESSION_COUNT, "", (("start_type", "fresh"),), 1.0, agent.tick(0, 0) - 90 * MS)
    turn_left = 0
    for n in range(scenario.requests):
        if n in restarts:
            agent.restart()
        if n in drops:
            agent.drop_due += 1
        if turn_left == 0:
            agent.prompt()
            turn_left = rng.randint(1, 6)
        if n and rng.random() < scenario.side_share:
            agent.side_request()
        else:
            agent.main_request()
            turn_left -= 1
        if (n + 1) % scenario.logs_every == 0:
            agent.flush_logs()
        if (n + 1) % scenario.metrics_every == 0:
            agent.flush_metrics()
    agent.flush_logs()
    agent.flush_metrics()

    requests = agent.requests
    totals = Totals(
        input=sum(r.input for r in requests),
        output=sum(r.output for r in requests),
        cache_read=sum(r.cache_read for r in requests),
        cache_creation=sum(r.cache_creation for r in requests),
        cost_nanos=sum(r.cost_nanos for r in requests),
        api_requests=len(requests),
        prompts=agent.prompts,
        tool_calls=agent.tool_calls,
        tool_failures=agent.tool_failures,
        lines_added=agent.lines_added,
        lines_removed=agent.lines_removed,
        commits=agent.commits,
        active_time_s=agent.active_ms / 1000,
        compactions=len(agent.compactions),
        events=len(agent.events),
        models=frozenset(r.model for r in requests),
        metric_cost_usd=agent.metric_cost,
    )
    generated = Generated(
        scenario=scenario,
        session_id=agent.session_id,
        exports=agent.exports,
        requests=requests,
        compactions=agent.compactions,
        events=agent.events,
        totals=totals,
        signals=[],
        drops=agent.drops,
        labels=agent.labels,
    )
    generated.signals.extend(_replay(generated, in_order(generated)))
    return generated


def describe(generated: Generated) -> dict[str, Any]:
    """A short summary for assertion messages."""
    totals = generated.totals
    return {
        "session": generated.session_id,
        "exports": len(generated.exports),
        "requests": totals.api_requests,
        "compactions": totals.compactions,
        "drops": generated.drops,
        "fires": {k: len(v) for k, v in generated.fires().items()},
    }
