"""The canonical records that flow between stages, declared once.

Every agent's telemetry is normalised into these shapes (see ``docs/`` and ARCHITECTURE.md,
"Canonical model") before any state or storage sees it. Times are integer nanoseconds since
the Unix epoch (UTC), as in OTLP; money is integer nano-USD so that sums are exact.

Serialisation is JSON through pydantic (``to_bytes`` / ``from_bytes``); a unit test
round-trips every record type.
"""

from __future__ import annotations

import enum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

NANOS_PER_USD = 1_000_000_000


#: Default context window when the model table has nothing better.
DEFAULT_CONTEXT_WINDOW = 200_000
#: Window of long-context variants (``[1m]`` suffix on Claude Code's metric model names).
LONG_CONTEXT_WINDOW = 1_000_000


class Record(BaseModel):
    """Base of every record: strict fields, JSON bytes on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=False)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)


class Tokens(Record):
    """Token counts in Anthropic's definitions (ARCHITECTURE.md, "Token types").

    ``input`` excludes cache reads and writes; ``output`` includes reasoning; ``reasoning``
    is a breakdown of ``output``, never added to it. ``cache_creation_1h`` is likewise the
    part of ``cache_creation`` written with a one-hour lifetime (billed at its own rate), where
    the agent says; the rest of ``cache_creation`` is five-minute (default) writes. Rollups do
    not break cache writes down by lifetime (their ``cache_creation_1h`` stays 0).
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0
    cache_creation_1h: int = 0

    def add(self, other: Tokens) -> None:
        self.input += other.input
        self.output += other.output
        self.cache_read += other.cache_read
        self.cache_creation += other.cache_creation
        self.reasoning += other.reasoning
        self.cache_creation_1h += other.cache_creation_1h

    @property
    def context(self) -> int:
        """Tokens a request put in the context window: everything sent, output excluded."""
        return self.input + self.cache_read + self.cache_creation


class EventKind(enum.StrEnum):
    """What an event means for accounting, whatever the agent calls it."""

    USAGE = "usage"  # one model API request's token usage (Claude api_request, Gemini api_response, ...)
    API_ERROR = "api_error"  # a model API request that failed (after the agent's retries)
    RETRIES_EXHAUSTED = "retries_exhausted"
    PROMPT = "prompt"  # the user submitted a prompt
    TOOL_RESULT = "tool_result"  # a tool ran (``success`` says how it went)
    TOOL_DECISION = "tool_decision"  # a tool use was accepted or rejected
    COMPACTION = "compaction"  # the agent compacted the conversation
    #: The agent's own word on its context window (tokentide's Claude Code status line):
    #: counts nothing, sets the session's window.
    CONTEXT_WINDOW = "context_window"
    OTHER = "other"


class Measure(enum.StrEnum):
    """What a metric point counts, whatever the agent calls the metric (sums only)."""

    TOKENS_INPUT = "tokens.input"
    TOKENS_OUTPUT = "tokens.output"
    TOKENS_CACHE_READ = "tokens.cache_read"
    TOKENS_CACHE_CREATION = "tokens.cache_creation"
    TOKENS_REASONING = "tokens.reasoning"
    COST_USD = "cost_usd"
    LINES_ADDED = "lines_added"
    LINES_REMOVED = "lines_removed"
    COMMITS = "commits"
    PULL_REQUESTS = "pull_requests"
    ACTIVE_TIME_S = "active_time_s"


class Event(Record):
    """One agent event (an OTLP log record), normalised.

    ``event_id`` is the natural key: the same event re-sent by the agent or redelivered by
    Kafka has the same id, so every write of it is idempotent.
    """

    tenant: str
    session_id: str
    event_id: str
    agent: str
    #: The agent's own event name (``api_request``, ``gemini_cli.api_response``, ...).
    name: str
    kind: EventKind = EventKind.OTHER
    time_ns: int
    sequence: int | None = None
    user_id: str | None = None
    model: str | None = None
    #: Long-context variant seen on the model name (``1m`` for ``claude-opus-4-8[1m]``).
    model_variant: str | None = None
    query_source: str | None = None
    #: Who the request worked for, where the agent says (Claude Code's ``agent.name``,
    #: ``skill.name``, ``mcp_server.name``): the session's usage by source (SessionState).
    agent_name: str | None = None
    skill: str | None = None
    mcp_server: str | None = None
    #: For usage: whether the request belongs to the session's own conversation (its context
    #: window), not to title generation, compaction, routing or a subagent.
    main_context: bool | None = None
    #: For tool results and the like: whether it succeeded.
    success: bool | None = None
    #: For compactions: the context size after it, when the agent says.
    context_after: int | None = None
    #: For compactions: the context size before it, and ``auto`` or ``manual``.
    context_before: int | None = None
    trigger: str | None = None
    #: For the agent's report of its window (:attr:`EventKind.CONTEXT_WINDOW`): its size.
    context_window: int | None = None
    request_id: str | None = None
    duration_ms: float | None = None
    #: Set for events that report one model API request's usage (Claude Code ``api_request``).
    tokens: Tokens | None = None
    cost_nanos: int | None = None
    #: ``agent`` when the agent reported the cost itself, ``price_table`` when computed;
    #: None with ``cost_nanos`` when the cost is unknown (no agent figure, no price).
    cost_source: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class Point(Record):
    """One metric data point, normalised (sums and gauges; histograms keep sum and count)."""

    tenant: str
    session_id: str
    agent: str
    name: str
    #: Stable id of the series: metric name + data point attributes + resource identity.
    series_id: str
    time_ns: int
    start_time_ns: int
    value: float
    #: OTLP ``AggregationTemporality``: 1 delta, 2 cumulative, 0 for gauges.
    temporality: int
    #: Whether the sum is monotonic (a counter); a drop in a monotonic cumulative is a reset.
    monotonic: bool = False
    #: What the point counts in canonical terms, when the normaliser knows (else None).
    measure: Measure | None = None
    model: str | None = None
    unit: str = ""
    attributes: dict[str, Any] = Field(default_factory=dict)


class EventBatch(Record):
    """Events of one session from one raw message (one Kafka message on ``events``)."""

    events: list[Event]


class PointBatch(Record):
    """Points of one session from one raw message (one Kafka message on ``points``)."""

    points: list[Point]


class ContextState(Record):
    """Context-window position of a session's main conversation after its last request.

    Predictions (``None`` until two main requests were seen): ``growth`` is the smoothed
    growth of the context per request; ``requests_left`` how many more requests of that
    growth fit before the agent compacts (``auto_compact_at``, once learned, else the window);
    ``minutes_left`` that many requests at the smoothed pace between requests.

    ``window_source`` says where the window comes from, best first: ``agent`` (the agent said
    so: Claude Code's status line), ``long_context`` (a ``[1m]`` model variant was seen),
    ``model_table`` (streams/prices.json), ``default`` (200k: nothing else known).
    """

    tokens: int = 0
    window: int = DEFAULT_CONTEXT_WINDOW
    window_source: str = "default"
    #: Where the agent compacts by itself: the context of its last automatic compaction.
    auto_compact_at: int | None = None
    model: str | None = None
    growth: float | None = None
    interval_s: float | None = None
    requests_left: float | None = None
    minutes_left: float | None = None
    compactions: int = 0

    @property
    def ratio(self) -> float:
        return self.tokens / self.window if self.window else 0.0


class SignalKind(enum.StrEnum):
    CONTEXT_WARNING = "context_warning"
    CHECKPOINT_REQUESTED = "checkpoint_requested"
    CONTEXT_CRITICAL = "context_critical"
    COMPACTION_OBSERVED = "compaction_observed"


class SessionSignal(Record):
    """A signal about a session's context: once per threshold crossing (``session.signals``).

    ``signal_id`` is its natural key (session, kind, crossing number): re-emitting it after a
    redelivery writes nothing new.
    """

    tenant: str
    session_id: str
    signal_id: str
    kind: SignalKind
    time_ns: int
    ratio: float
    tokens: int
    window: int
    requests_left: float | None = None
    minutes_left: float | None = None
    message: str = ""


class Rollup(Record):
    """Usage of one session and model in one minute.

    ``increment=True`` (what the stream stage emits): what the records of one raw message
    batch added to that minute; the sink adds it to the stored minute exactly once (it
    records the Kafka positions it applied in the same transaction), so late data of any
    age still lands in its minute and the minutes always sum to the session's totals.
    ``increment=False``: the minute's full value, overwriting (rollups written before
    increments existed).
    """

    tenant: str
    session_id: str
    user_id: str | None = None
    agent: str
    model: str
    minute_ns: int
    tokens: Tokens = Field(default_factory=Tokens)
    cost_nanos: int = 0
    requests: int = 0
    errors: int = 0
    increment: bool = False


class SignalBatch(Record):
    signals: list[SessionSignal]


class RollupBatch(Record):
    rollups: list[Rollup]


class SourceUsage(Record):
    """A session's usage of one source: the main conversation, a subagent type, auxiliary
    requests (title generation, compaction's summary, routing), by skill and MCP server where
    the agent says. The sources of a session sum to its event totals. ``cost_nanos`` is the sum
    of the known costs; ``unpriced_requests`` counts the requests whose cost is unknown (as the
    session's own fields do), so an unpriced source's cost is unknown, never 0."""

    #: ``main``, ``subagent`` or ``auxiliary``.
    query_source: str
    agent_name: str | None = None
    skill: str | None = None
    mcp_server: str | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    cost_nanos: int = 0
    requests: int = 0
    unpriced_requests: int = 0


class SessionState(Record):
    """The summary of one session: what ``session.state`` carries and the ``sessions`` table holds.

    ``version`` grows by one with every update, so a consumer keeps the highest version and
    a redelivered older state never overwrites a newer one. Tokens and cost come from usage
    events; a session that sends only metrics gets them from its token and cost metrics
    (``totals_source`` says which, never both). ``cost_nanos`` is the sum of the costs that
    are known; ``cost_source`` and ``unpriced_requests`` say how much of it is known.
    """

    tenant: str
    session_id: str
    agent: str
    service_name: str | None = None
    user_id: str | None = None
    #: Team attributes: the resource attributes a deployment adds (``OTEL_RESOURCE_ATTRIBUTES``).
    attributes: dict[str, str] = Field(default_factory=dict)
    started_at_ns: int
    last_seen_at_ns: int
    tokens: Tokens = Field(default_factory=Tokens)
    cost_nanos: int = 0
    #: Where the cost comes from, over all the session's requests (or, for a metrics-only
    #: session, its models): ``agent`` (the agent's own figures), ``price_table``, ``unknown``
    #: (no request could be priced: the cost is not known at all, not zero), ``mixed`` (more
    #: than one of these); None before the first request.
    cost_source: str | None = None
    #: Usage requests whose cost is unknown (no agent figure, no price in the table); their
    #: tokens count, their cost is not in ``cost_nanos``.
    unpriced_requests: int = 0
    #: Usage by source (SourceUsage), in order of first use; at most 64 (any further source is
    #: summed into one ``other``). From usage events only.
    by_source: list[SourceUsage] = Field(default_factory=list)
    #: ``events`` (usage events) or ``metrics`` (token/cost metrics, when no usage event came).
    totals_source: str = "events"
    api_requests: int = 0
    api_errors: int = 0
    retries_exhausted: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    prompts: int = 0
    events: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    commits: int = 0
    pull_requests: int = 0
    active_time_s: float = 0.0
    models: list[str] = Field(default_factory=list)
    context: ContextState = Field(default_factory=ContextState)
    version: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / NANOS_PER_USD
