"""The canonical records that flow between stages, declared once.

Every agent's telemetry is normalised into these shapes (see ``docs/`` and ARCHITECTURE.md,
"Canonical model") before any state or storage sees it. Times are integer nanoseconds since
the Unix epoch (UTC), as in OTLP; money is integer nano-USD so that sums are exact.

The inter-stage contract (decision 33): msgspec Structs, MessagePack on the wire. Building one
validates nothing (the code that builds it is trusted); decoding one validates its types and
ignores fields it does not know, so a newer producer's additions never break an older
consumer (a rolling upgrade, ``helm rollback``). Each message type carries its schema name
(``schema``: ``events.2``, ...); a change an older consumer could not read takes a new name.
Values written before (schema 1: pydantic JSON, ``{...}``) are still read. A batch names its
session once; its records leave the fields it names out on the wire (``tenant``,
``session_id``, ``agent``) and get them back when decoded.
Fields whose values a newer version may add to (``Event.kind``, ``Point.measure``,
``SessionSignal.kind``) are ``str`` on the wire: in memory a producer puts the enum member in
them, a consumer compares with ``==``.
"""

from __future__ import annotations

import base64
import enum
import operator
from typing import Any, ClassVar, Self, TypeVar

import msgspec

NANOS_PER_USD = 1_000_000_000


#: Default context window when the model table has nothing better.
DEFAULT_CONTEXT_WINDOW = 200_000
#: Window of long-context variants (``[1m]`` suffix on Claude Code's metric model names).
LONG_CONTEXT_WINDOW = 1_000_000


def _enc_hook(obj: Any) -> Any:
    """Custom types in a record (streams.dedup.DigestWindow) say how they are written."""
    to_wire = getattr(obj, "to_wire", None)
    if to_wire is None:
        raise NotImplementedError(f"{type(obj).__name__} cannot be encoded")
    return to_wire()


def _dec_hook(kind: type, obj: Any) -> Any:
    from_wire = getattr(kind, "from_wire", None)
    if from_wire is None:
        raise NotImplementedError(f"{kind.__name__} cannot be decoded")
    return from_wire(obj)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODERS: dict[type, tuple[msgspec.msgpack.Decoder[Any], msgspec.json.Decoder[Any]]] = {}

#: What decoding refuses: not MessagePack or JSON, or not the record's schema and types.
DecodeError = msgspec.DecodeError


class Record(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every record: plain fields in memory, MessagePack bytes on the wire."""

    def to_bytes(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        """Decode a value written by this version or an earlier one (schema 1: JSON)."""
        decoders = _DECODERS.get(cls)
        if decoders is None:
            decoders = _DECODERS[cls] = (
                msgspec.msgpack.Decoder(cls, dec_hook=_dec_hook),
                msgspec.json.Decoder(cls, dec_hook=_dec_hook),
            )
        if isinstance(data, str):
            data = data.encode()
        if data[:1] in (b"{", b" ", b"\n"):
            record: Self = decoders[1].decode(data)
        else:
            record = decoders[0].decode(data)
        return record


def encode(record: Record, schema: int = 2) -> bytes:
    """``record`` as schema ``schema`` writes it (``TOKENTIDE_WIRE_SCHEMA``): 2, MessagePack
    (this contract), or 1, the previous version's JSON (an upgrade that must stay reversible)."""
    return record.to_bytes() if schema == 2 else to_schema_1(record)


def to_schema_1(record: Record) -> bytes:
    """``record`` exactly as the previous version (pydantic JSON) wrote it: every field, the
    batches' records in full, no schema names. A consumer of that version reads it."""
    return msgspec.json.encode(_schema_1(record))


#: Fields added since schema 1, by record type: left out of what :func:`to_schema_1` writes
#: (that version's records refuse fields they do not know). Every field added later goes
#: here too; the test of schema 1 fails until it does.
ADDED_SINCE_SCHEMA_1: dict[str, frozenset[str]] = {
    "SourceUsage": frozenset({"unpriced_requests"}),
    "EventBatch": frozenset({"copy"}),
    "PointBatch": frozenset({"copy"}),
}


def _schema_1(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        leave_out = ADDED_SINCE_SCHEMA_1.get(type(value).__name__, frozenset())
        if isinstance(value, _Batch):
            leave_out = leave_out | set(value.SESSION_FIELDS)
        return {
            name: _schema_1(getattr(value, name)) for name in value.__struct_fields__ if name not in leave_out
        }
    if isinstance(value, list | tuple):
        return [_schema_1(v) for v in value]
    if isinstance(value, dict):
        return {k: _schema_1(v) for k, v in value.items()}
    to_wire = getattr(value, "to_wire", None)
    if to_wire is not None:  # a digest window: base64 in schema 1
        return base64.b64encode(to_wire()).decode()
    return value


def to_builtins(record: Record) -> Any:
    """A record as JSON-ready builtins (dicts, lists, strings, numbers)."""
    return msgspec.to_builtins(record, enc_hook=_enc_hook)


_R = TypeVar("_R", bound=msgspec.Struct)


def replace(record: _R, **changes: Any) -> _R:
    """A shallow copy of ``record`` with ``changes``."""
    return msgspec.structs.replace(record, **changes)


class Tokens(Record, kw_only=True):
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


class Event(Record, kw_only=True):
    """One agent event (an OTLP log record), normalised.

    ``event_id`` is the natural key: the same event re-sent by the agent or redelivered by
    Kafka has the same id, so every write of it is idempotent.
    """

    #: Named once by the batch on the wire (:class:`EventBatch`).
    tenant: str = ""
    session_id: str = ""
    agent: str = ""
    event_id: str
    #: The agent's own event name (``api_request``, ``gemini_cli.api_response``, ...).
    name: str
    #: An :class:`EventKind` (a plain string once decoded; a newer producer's kind stays as it is).
    kind: str = EventKind.OTHER
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
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)


class Point(Record, kw_only=True):
    """One metric data point, normalised (sums and gauges; histograms keep sum and count)."""

    #: Named once by the batch on the wire (:class:`PointBatch`).
    tenant: str = ""
    session_id: str = ""
    agent: str = ""
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
    #: A :class:`Measure` (a plain string once decoded).
    measure: str | None = None
    model: str | None = None
    unit: str = ""
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)


class _Batch(Record, kw_only=True, omit_defaults=True):
    """A batch of one session's records: the fields in ``SESSION_FIELDS`` once, in the batch."""

    SESSION_FIELDS: ClassVar[tuple[str, ...]] = ("tenant", "session_id", "agent")
    ITEMS: ClassVar[str]

    def __post_init__(self) -> None:
        # Built or decoded without its session (schema 1 had none): its first record's.
        items: list[Any] = getattr(self, self.ITEMS)
        if items:
            for name in self.SESSION_FIELDS:
                if not getattr(self, name):
                    setattr(self, name, getattr(items[0], name))

    def to_bytes(self) -> bytes:
        # The records leave out what the batch says (written as "", the default: omitted),
        # and are given it back once written. Every batch names tenant and session; all but
        # the signals' the agent too (SESSION_FIELDS, in that order).
        fields = self.SESSION_FIELDS
        get = operator.attrgetter(*fields)
        header = get(self)
        same: list[Any] = [item for item in getattr(self, self.ITEMS) if get(item) == header]
        agent = len(fields) == 3
        for item in same:
            item.tenant = item.session_id = ""
            if agent:
                item.agent = ""
        try:
            return _ENCODER.encode(self)
        finally:
            tenant, session_id = header[0], header[1]
            for item in same:
                item.tenant, item.session_id = tenant, session_id
                if agent:
                    item.agent = header[2]

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        batch = super().from_bytes(data)
        tenant, session_id = getattr(batch, "tenant"), getattr(batch, "session_id")  # noqa: B009
        agent = getattr(batch, "agent", "")
        for item in getattr(batch, cls.ITEMS):
            if not item.tenant:
                item.tenant = tenant
            if not item.session_id:
                item.session_id = session_id
            if agent and not item.agent:
                item.agent = agent
        return batch


class CopyRow(msgspec.Struct, array_like=True, omit_defaults=True):
    """One record's row of a PostgreSQL table as COPY text (a line, ``\\n`` included), built once
    by the stream stage (``sinks.postgres.rows``) so that the sink only forwards it (decision 44).

    ``time_ns`` is the record's time (the sink's daily partitions and retention); for a metric
    point, ``series`` is its series' catalog row when it is the earliest point of its series in
    the message.
    """

    time_ns: int
    text: str
    series: str | None = None


class CopyRows(msgspec.Struct, kw_only=True):
    """A batch's records as rows of one table: ``layout`` names the table's columns and their
    text forms (``sinks.postgres.rows``); a sink of another layout reads the records instead."""

    layout: int
    rows: list[CopyRow]


class EventBatch(_Batch, kw_only=True, tag="events.2", tag_field="schema"):
    """Events of one session from one raw message (one Kafka message on ``events``).

    ``copy``: the same events as rows of the ``events`` table, when the producer prepared them
    (an addition to schema 2: a consumer that does not know it ignores it)."""

    ITEMS: ClassVar[str] = "events"
    tenant: str = ""
    session_id: str = ""
    agent: str = ""
    events: list[Event]
    copy: CopyRows | None = None


class PointBatch(_Batch, kw_only=True, tag="points.2", tag_field="schema"):
    """Points of one session from one raw message (one Kafka message on ``points``); ``copy``
    as :class:`EventBatch`'s, rows of ``metric_points`` (and of ``metric_series``)."""

    ITEMS: ClassVar[str] = "points"
    tenant: str = ""
    session_id: str = ""
    agent: str = ""
    points: list[Point]
    copy: CopyRows | None = None


class ContextState(Record, kw_only=True):
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
    #: Budget signals (issue 17): raised by the notifier's budget evaluation (``notify.budgets``,
    #: ``tokentide.budgets.BudgetKind``), never by the stream stage nor on ``session.signals``.
    BUDGET_WARNING = "budget_warning"
    BUDGET_EXCEEDED = "budget_exceeded"


class SessionSignal(Record, kw_only=True):
    """A signal about a session's context: once per threshold crossing (``session.signals``).

    ``signal_id`` is its natural key (session, kind, crossing number): re-emitting it after a
    redelivery writes nothing new.
    """

    #: Named once by the batch on the wire (:class:`SignalBatch`).
    tenant: str = ""
    session_id: str = ""
    signal_id: str
    #: A :class:`SignalKind` (a plain string once decoded).
    kind: str
    time_ns: int
    ratio: float
    tokens: int
    window: int
    requests_left: float | None = None
    minutes_left: float | None = None
    message: str = ""


class Rollup(Record, kw_only=True):
    """Usage of one session and model in one minute.

    ``increment=True`` (what the stream stage emits): what the records of one raw message
    batch added to that minute; the sink adds it to the stored minute exactly once (it
    records the Kafka positions it applied in the same transaction), so late data of any
    age still lands in its minute and the minutes always sum to the session's totals.
    ``increment=False``: the minute's full value, overwriting (rollups written before
    increments existed).
    """

    #: Named once by the batch on the wire (:class:`RollupBatch`).
    tenant: str = ""
    session_id: str = ""
    user_id: str | None = None
    agent: str = ""
    model: str
    minute_ns: int
    tokens: Tokens = msgspec.field(default_factory=Tokens)
    cost_nanos: int = 0
    requests: int = 0
    errors: int = 0
    increment: bool = False


class SignalBatch(_Batch, kw_only=True, tag="signals.2", tag_field="schema"):
    SESSION_FIELDS: ClassVar[tuple[str, ...]] = ("tenant", "session_id")
    ITEMS: ClassVar[str] = "signals"
    tenant: str = ""
    session_id: str = ""
    signals: list[SessionSignal]


class RollupBatch(_Batch, kw_only=True, tag="rollups.2", tag_field="schema"):
    ITEMS: ClassVar[str] = "rollups"
    tenant: str = ""
    session_id: str = ""
    agent: str = ""
    rollups: list[Rollup]


class SourceUsage(Record, kw_only=True):
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
    tokens: Tokens = msgspec.field(default_factory=Tokens)
    cost_nanos: int = 0
    requests: int = 0
    unpriced_requests: int = 0


class SessionState(Record, kw_only=True, tag="state.2", tag_field="schema"):
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
    attributes: dict[str, str] = msgspec.field(default_factory=dict)
    started_at_ns: int
    last_seen_at_ns: int
    tokens: Tokens = msgspec.field(default_factory=Tokens)
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
    by_source: list[SourceUsage] = msgspec.field(default_factory=list)
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
    models: list[str] = msgspec.field(default_factory=list)
    context: ContextState = msgspec.field(default_factory=ContextState)
    version: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_nanos / NANOS_PER_USD
