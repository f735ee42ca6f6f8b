"""Pure per-session accounting: apply one message's records to a session's stored state.

The rules written in code (ARCHITECTURE.md, "One source of truth per quantity"):

- Tokens, cost and API request counts come from per-request usage events (Claude Code
  ``api_request``, Gemini ``api_response``, Codex token ``sse_event``). The agents' token and
  cost *metrics* describe the same requests: they are kept apart (``metric_totals``, deltas of
  each series) and used only by a session that never sent a usage event
  (``totals_source="metrics"``), so nothing is counted twice.
- Lines of code, commits, pull requests and active time exist only as metrics: their deltas
  are summed.
- Cost: each request's is the agent's own figure, else the price table's; a request neither
  prices has an *unknown* cost, never 0: it adds nothing to ``cost_nanos`` (the sum of what is
  known, as its rollups are) and is counted in ``unpriced_requests``; ``cost_source`` says
  whether the costs came from the agent, the table, nowhere (``unknown``) or several
  (``mixed``). A metrics-only session's cost is its cost metric (``agent``) or its token
  metrics priced per model.
- An event is applied once: a re-sent export changes nothing (:mod:`streams.dedup`: a
  bounded window of the digests of the last events applied). A raw message is
  applied once by the runtime (:mod:`streams.worker`: state, outputs and input positions in
  one Kafka transaction), so nothing here knows offsets.
- Context: the session's main conversation only (``main_context``); the window is 1M once the
  long-context variant was seen, else 200k. Predictions, compactions: :mod:`streams.context`;
  signals: :mod:`streams.signals`; per-minute rollup increments: :mod:`streams.rollups`
  (their sum always equals the totals). Windows come
  from the model table (:mod:`streams.pricing`: LiteLLM's ``max_input_tokens``, e.g. Gemini
  1M, GPT-5 272k, Claude 5.x 1M, with Claude 4.x at 200k by ``streams/prices.local.json``),
  1M once a session showed Claude's ``[1m]`` variant, 200k for models the table does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from streams import context as ctx
from streams import rollups
from streams.dedup import DigestWindow, digest
from streams.delta import SeriesTracker, to_deltas
from streams.normalise.base import SessionRecords
from streams.pricing import context_window, cost_nanos
from streams.signals import evaluate
from tokentide.records import (
    DEFAULT_CONTEXT_WINDOW,
    LONG_CONTEXT_WINDOW,
    NANOS_PER_USD,
    EventKind,
    Measure,
    Record,
    Rollup,
    SessionSignal,
    SessionState,
    SourceUsage,
    Tokens,
    replace,
)
from tokentide.tenancy import SignalThresholds

#: Resource attribute prefixes set by SDKs and agents; whatever else a resource carries was
#: added by the deployment (``OTEL_RESOURCE_ATTRIBUTES``): team, cost centre, environment...
STANDARD_RESOURCE_PREFIXES = (
    "service.",
    "telemetry.",
    "os.",
    "host.",
    "process.",
    "container.",
    "k8s.",
    "cloud.",
    "device.",
    "wsl.",
    "session.",
    "webengine.",
)
MAX_TEAM_ATTRIBUTES = 20
#: Standard attributes kept all the same: the user sets them to say what the session belongs to
#: (``service.namespace`` is one of a session's projects, ``dashboard.projects``).
KEPT_STANDARD_ATTRIBUTES = frozenset({"service.namespace"})


def seen_key(event_id: str) -> bytes:
    """The digest by which an event is remembered in :attr:`StoredSession.recent`."""
    return digest(event_id)


#: Token measures by canonical token type, for the metrics fallback.
TOKEN_MEASURES = {
    "input": Measure.TOKENS_INPUT,
    "output": Measure.TOKENS_OUTPUT,
    "cache_read": Measure.TOKENS_CACHE_READ,
    "cache_creation": Measure.TOKENS_CACHE_CREATION,
    "reasoning": Measure.TOKENS_REASONING,
}
TOKEN_TYPES: dict[str, str] = {measure: name for name, measure in TOKEN_MEASURES.items()}


class StoredSession(Record, kw_only=True, tag="stored_session.2", tag_field="schema"):
    """What the streams stage keeps per session (its Faust table value)."""

    state: SessionState
    #: Digests of the last ``dedup_window`` events applied (streams.dedup).
    recent: DigestWindow = msgspec.field(default_factory=DigestWindow)
    #: Event time of the request that set the current context position.
    context_time_ns: int = 0
    last_compaction_ns: int = 0
    #: Signal kind -> crossing count, negative while raised (see streams.signals).
    signals: dict[str, int] = msgspec.field(default_factory=dict)
    #: What the rollup increments emitted so far add up to, in bucket order (streams.rollups):
    #: always the totals after the last applied message.
    rolled: list[int] = msgspec.field(default_factory=lambda: [0] * rollups.WIDTH)
    #: Totals of usage events (the source of tokens and cost whenever there is any).
    usage_tokens: Tokens = msgspec.field(default_factory=Tokens)
    usage_cost_nanos: int = 0
    #: What the usage events' costs came from (``SessionState.cost_source``) and how many had
    #: none; kept apart from the state like the totals, which metrics may hold for a while.
    usage_cost_source: str | None = None
    usage_unpriced: int = 0
    #: Metric series (cumulative-to-delta state) and the sums of their deltas per measure.
    series: SeriesTracker = msgspec.field(default_factory=SeriesTracker)
    tracking_since_ns: int = 0
    metric_totals: dict[str, float] = msgspec.field(default_factory=dict)
    #: Token metric deltas per model ("" for points without one) and token type, to price a
    #: metrics-only session by the price table when the agent sends no cost metric (Gemini
    #: CLI, Codex CLI).
    metric_model_tokens: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    #: The session showed a long-context model variant (``[1m]``): its window is 1M.
    long_context: bool = False
    #: The window the agent itself reported (Claude Code's status line), which wins.
    agent_window: int | None = None


@dataclass(slots=True)
class Applied:
    """The outcome of one message for one session."""

    stored: StoredSession
    signals: list[SessionSignal] = field(default_factory=list)
    rollups: list[Rollup] = field(default_factory=list)


def team_attributes(resource: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in resource.items():
        standard = key.startswith(STANDARD_RESOURCE_PREFIXES) and key not in KEPT_STANDARD_ATTRIBUTES
        if standard or value is None or isinstance(value, (list, dict)):
            continue
        out[key] = str(value)[:200]
        if len(out) >= MAX_TEAM_ATTRIBUTES:
            break
    return out


def apply(
    stored: StoredSession | None,
    records: SessionRecords,
    *,
    tenant: str,
    dedup_window: int,
    thresholds: SignalThresholds | None = None,
) -> Applied:
    """The session's state after ``records`` (one raw message's records of this session).

    ``stored`` is updated in place (None: a new session). The returned rollups are the
    increments this message adds to each (minute, model); their sum over all messages equals
    the session's totals (streams.rollups).
    """
    thresholds = thresholds or SignalThresholds()
    times = [e.time_ns for e in records.events] + [p.time_ns for p in records.points]
    first, last = (min(times), max(times)) if times else (0, 0)
    if stored is None:
        stored = StoredSession(
            state=SessionState(
                tenant=tenant,
                session_id=records.session_id,
                agent=records.agent,
                service_name=records.service_name,
                user_id=records.user_id,
                started_at_ns=first,
                last_seen_at_ns=last,
            )
        )
    state = stored.state
    if times:
        state.started_at_ns = min(state.started_at_ns, first) if state.started_at_ns else first
        state.last_seen_at_ns = max(state.last_seen_at_ns, last)
    state.user_id = state.user_id or records.user_id
    state.service_name = state.service_name or records.service_name
    for key, value in team_attributes(records.resource).items():
        if key in state.attributes or len(state.attributes) < MAX_TEAM_ATTRIBUTES:
            state.attributes[key] = value
    if records.long_context and not stored.long_context:
        stored.long_context = True
        _set_window(stored, state.context.model)

    signals: list[SessionSignal] = []
    event_buckets: rollups.Buckets = {}
    if not stored.tracking_since_ns:
        starts = [p.start_time_ns for p in records.points if p.start_time_ns]
        stored.tracking_since_ns = min([*starts, first]) if starts or first else 0
    for event in sorted(records.events, key=lambda e: e.time_ns):
        # The agent's word on its window counts nothing and may come again: it takes no
        # place in the dedup window the session's events need.
        if event.kind != EventKind.CONTEXT_WINDOW and not _first_time(stored, event, dedup_window):
            continue
        signals += _count(stored, event, thresholds)
        rollups.add_event(event_buckets, event)

    # Tracking began with the earliest record seen so far: a first export that arrives late
    # (an exporter retry) moves it back, so its cumulative series still count in full.
    stored.tracking_since_ns = min(stored.tracking_since_ns, state.started_at_ns or stored.tracking_since_ns)
    metric_buckets: rollups.Buckets = {}
    for point, delta in to_deltas(stored.series, records.points, stored.tracking_since_ns):
        if point.measure is not None:
            stored.metric_totals[point.measure] = stored.metric_totals.get(point.measure, 0.0) + delta
            token_type = TOKEN_TYPES.get(point.measure)
            if token_type is not None:
                # Under "" when the point names no model: counted, and unpriceable.
                by_type = stored.metric_model_tokens.setdefault(point.model or "", {})
                by_type[token_type] = by_type.get(token_type, 0.0) + delta
            _metric_rollup(metric_buckets, point.measure, point.time_ns, point.model, delta)
    _totals(stored)
    buckets = event_buckets if state.totals_source == "events" else _priced(metric_buckets, stored)
    rollups.settle(
        buckets,
        stored.rolled,
        rollups.totals_vector(state.tokens, state.cost_nanos, state.api_requests, state.api_errors),
        fallback=(
            last or state.last_seen_at_ns,
            state.context.model or (state.models[-1] if state.models else ""),
        ),
    )
    state.version += 1
    increments = rollups.records(
        buckets,
        tenant=tenant,
        session_id=state.session_id,
        user_id=state.user_id,
        agent=state.agent,
    )
    return Applied(stored, signals, increments)


def _first_time(stored: StoredSession, event: Any, dedup_window: int) -> bool:
    """Whether ``event`` is new to the session (and remember it)."""
    key = seen_key(event.event_id)
    if key in stored.recent:
        return False
    stored.recent.add(key, dedup_window)
    return True


#: Bucket position of each token measure (streams.rollups order).
_TOKEN_POSITIONS: dict[str, int] = {
    Measure.TOKENS_INPUT: 0,
    Measure.TOKENS_OUTPUT: 1,
    Measure.TOKENS_CACHE_READ: 2,
    Measure.TOKENS_CACHE_CREATION: 3,
    Measure.TOKENS_REASONING: 4,
}
_COST_POSITION = 5


def _metric_rollup(
    buckets: rollups.Buckets, measure: str, time_ns: int, model: str | None, delta: float
) -> None:
    """Note a token or cost metric delta for the rollups of a metrics-only session (rounded
    per point; :func:`streams.rollups.settle` puts the rounding remainder right)."""
    if measure == Measure.COST_USD:
        rollups.add_amounts(buckets, time_ns, model, [(_COST_POSITION, round(delta * NANOS_PER_USD))])
        return
    position = _TOKEN_POSITIONS.get(measure)
    if position is not None:
        rollups.add_amounts(buckets, time_ns, model, [(position, round(delta))])


def _priced(buckets: rollups.Buckets, stored: StoredSession) -> rollups.Buckets:
    """A metrics-only session's buckets, priced by the table per model when the agent sends
    no cost metric (as its totals are, :func:`_totals`)."""
    if Measure.COST_USD in stored.metric_totals:
        return buckets
    for (_, model), bucket in buckets.items():
        tokens = Tokens(
            input=bucket[0],
            output=bucket[1],
            cache_read=bucket[2],
            cache_creation=bucket[3],
            reasoning=bucket[4],
        )
        bucket[_COST_POSITION] = (
            (cost_nanos(model, tokens, context_tokens=0) or 0) if model != "unknown" else 0
        )
    return buckets


def _set_window(stored: StoredSession, model: str | None) -> None:
    """The session's window, from the best source known (ContextState's ``window_source``):
    the agent's own report, the long-context variant, the model table, the default."""
    context = stored.state.context
    table = context_window(model)
    if stored.agent_window:
        context.window, context.window_source = stored.agent_window, "agent"
    elif stored.long_context:
        context.window, context.window_source = LONG_CONTEXT_WINDOW, "long_context"
    elif table:
        context.window, context.window_source = table, "model_table"
    else:
        context.window, context.window_source = DEFAULT_CONTEXT_WINDOW, "default"
    ctx.predict(context)


def _count(stored: StoredSession, event: Any, thresholds: SignalThresholds) -> list[SessionSignal]:
    """Count one new event into the state; returns the signals it raised."""
    state = stored.state
    if event.kind == EventKind.CONTEXT_WINDOW:
        # tokentide's own report of what the agent says: not one of the agent's events.
        if event.context_window and event.time_ns >= stored.context_time_ns:
            stored.agent_window = event.context_window
            _set_window(stored, state.context.model)
            return evaluate(
                state.context,
                stored.signals,
                tenant=state.tenant,
                session_id=state.session_id,
                time_ns=event.time_ns,
                thresholds=thresholds,
            )
        return []
    state.events += 1
    if event.model and event.model not in state.models:
        state.models.append(event.model)
    kind = event.kind
    if kind == EventKind.API_ERROR:
        state.api_errors += 1
    elif kind == EventKind.RETRIES_EXHAUSTED:
        state.retries_exhausted += 1
    elif kind == EventKind.PROMPT:
        state.prompts += 1
    elif kind == EventKind.TOOL_RESULT:
        state.tool_calls += 1
        state.tool_failures += event.success is False
    elif kind == EventKind.COMPACTION:
        return _compaction(stored, event, thresholds)
    elif kind == EventKind.USAGE and event.tokens is not None:
        return _usage(stored, event.tokens, event.cost_nanos, event, thresholds)
    return []


def _totals(stored: StoredSession) -> None:
    """Totals from their one source: usage events, or (never both) the session's metrics."""
    state, metric = stored.state, stored.metric_totals
    state.lines_added = round(metric.get(Measure.LINES_ADDED, 0.0))
    state.lines_removed = round(metric.get(Measure.LINES_REMOVED, 0.0))
    state.commits = round(metric.get(Measure.COMMITS, 0.0))
    state.pull_requests = round(metric.get(Measure.PULL_REQUESTS, 0.0))
    state.active_time_s = round(metric.get(Measure.ACTIVE_TIME_S, 0.0), 3)
    if state.api_requests or not any(m in metric for m in TOKEN_MEASURES.values()):
        state.tokens = replace(stored.usage_tokens)
        state.cost_nanos = stored.usage_cost_nanos
        state.cost_source = stored.usage_cost_source
        state.unpriced_requests = stored.usage_unpriced
        state.totals_source = "events"
        return
    state.tokens = Tokens(**{name: round(metric.get(m, 0.0)) for name, m in TOKEN_MEASURES.items()})
    state.totals_source = "metrics"
    state.unpriced_requests = 0  # metrics count tokens, not requests
    if Measure.COST_USD in metric:
        state.cost_nanos = round(metric[Measure.COST_USD] * NANOS_PER_USD)
        state.cost_source = "agent"
        return
    state.cost_nanos, state.cost_source = _priced_metric_tokens(stored.metric_model_tokens)


def _priced_metric_tokens(by_model: dict[str, dict[str, float]]) -> tuple[int, str | None]:
    """The price table's cost of token metrics, per model, and its ``cost_source``
    (``price_table``, ``unknown`` for models the table lacks, ``mixed``).

    Metrics carry sums, not requests: tiers by prompt size cannot apply, so the base rates do.
    """
    total, source = 0, None
    for model, by_type in by_model.items():
        tokens = Tokens(**{name: round(value) for name, value in by_type.items()})
        cost = cost_nanos(model, tokens, context_tokens=0)
        total += cost or 0
        source = mixed_source(source, "unknown" if cost is None else "price_table")
    return total, source


def mixed_source(current: str | None, new: str) -> str:
    """The ``cost_source`` of costs from ``current`` (None: none yet) and one more from ``new``."""
    return new if current in (None, new) else "mixed"


#: Sources kept per session (SessionState.by_source); later ones are summed as one "other".
MAX_SOURCES = 64


def source_of(event: Any) -> tuple[str, str | None, str | None, str | None]:
    """(query_source, agent_name, skill, mcp_server) of a usage event: ``main`` for the
    session's own conversation, ``subagent`` for a subagent's (the agent names it), else
    ``auxiliary`` (title generation, compaction's summary, routing)."""
    raw = (event.query_source or "").lower()
    if event.agent_name or raw == "subagent" or raw.startswith("agent"):
        kind = "subagent"
    elif event.main_context is not False:
        kind = "main"
    else:
        kind = "auxiliary"
    return kind, event.agent_name, event.skill, event.mcp_server


def _add_source(state: SessionState, event: Any, tokens: Tokens, cost_nanos: int | None) -> None:
    kind, agent_name, skill, mcp_server = source_of(event)
    for source in state.by_source:
        if (source.query_source, source.agent_name, source.skill, source.mcp_server) == (
            kind,
            agent_name,
            skill,
            mcp_server,
        ):
            break
    else:
        if len(state.by_source) < MAX_SOURCES - 1:
            source = SourceUsage(query_source=kind, agent_name=agent_name, skill=skill, mcp_server=mcp_server)
            state.by_source.append(source)
        else:
            other = [s for s in state.by_source if s.query_source == "other"]
            source = other[0] if other else SourceUsage(query_source="other")
            if not other:
                state.by_source.append(source)
    source.tokens.add(tokens)
    source.cost_nanos += cost_nanos or 0
    source.requests += 1
    source.unpriced_requests += 1 if cost_nanos is None else 0


def _usage(
    stored: StoredSession, tokens: Tokens, cost_nanos: int | None, event: Any, thresholds: SignalThresholds
) -> list[SessionSignal]:
    state = stored.state
    state.api_requests += 1
    _add_source(state, event, tokens, cost_nanos)
    stored.usage_tokens.add(tokens)
    stored.usage_cost_nanos += cost_nanos or 0
    # An unknown cost is counted as such, never as 0 (the normalisers set a source with
    # every cost they know: the agent's or the table's).
    source = "unknown" if cost_nanos is None else (event.cost_source or "agent")
    stored.usage_cost_source = mixed_source(stored.usage_cost_source, source)
    stored.usage_unpriced += cost_nanos is None
    if event.main_context is False or event.time_ns < stored.context_time_ns:
        return []
    _set_window(stored, event.model)
    dropped = ctx.observe_request(state.context, tokens.context, event.time_ns, stored.context_time_ns)
    stored.context_time_ns = event.time_ns
    state.context.model = event.model
    compaction = dropped and ctx.count_compaction(state.context, event.time_ns, stored.last_compaction_ns)
    if dropped:
        stored.last_compaction_ns = event.time_ns
    return evaluate(
        state.context,
        stored.signals,
        tenant=state.tenant,
        session_id=state.session_id,
        time_ns=event.time_ns,
        thresholds=thresholds,
        compaction=compaction,
    )


def _compaction(stored: StoredSession, event: Any, thresholds: SignalThresholds) -> list[SessionSignal]:
    state = stored.state
    time_ns = event.time_ns
    if event.trigger == "auto" and event.context_before:
        # Where the agent compacts by itself (Claude Code's effective threshold): what the
        # predictions aim at from now on.
        state.context.auto_compact_at = min(event.context_before, state.context.window)
    if event.context_after is not None and time_ns >= stored.context_time_ns:
        # The agent says where the context stands now; the next request will confirm it.
        state.context.tokens = event.context_after
    ctx.predict(state.context)
    counted = ctx.count_compaction(state.context, time_ns, stored.last_compaction_ns)
    stored.last_compaction_ns = time_ns
    if not counted:
        return []
    return evaluate(
        state.context,
        stored.signals,
        tenant=state.tenant,
        session_id=state.session_id,
        time_ns=time_ns,
        thresholds=thresholds,
        compaction=True,
    )
