"""Claude Code: events (``claude_code.<name>`` log records) and metrics.

Facts (reference/agent-telemetry.md, section 2):
- ``session.id`` sits on every record and data point, not on the resource;
- ``api_request`` carries one model request's usage: ``input_tokens`` excludes the cache,
  ``output_tokens`` includes thinking, ``cost_usd`` is the agent's own figure (the price
  table prices a request only when it is missing); newer versions split
  ``cache_creation_tokens`` by lifetime into ``cache_creation_5m_tokens`` and
  ``cache_creation_1h_tokens`` (:func:`cache_writes`);
- metric model names carry a ``[1m]`` suffix for the long-context variant, events don't;
- numbers arrive as ints, doubles or strings depending on the attribute.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from streams.normalise.base import Origin
from streams.normalise.generic import GenericNormaliser, price_from_table
from streams.otlp import any_value, as_bool, as_float, as_int, as_str, attributes, stable_id
from tokentide.bounds import cost_micros, cost_usd, token_count
from tokentide.records import NANOS_PER_USD, Event, EventKind, Measure, Point, Tokens

SERVICE_NAMES = frozenset({"claude-code", "claude-code-desktop"})
#: What ``tokentide statusline`` sends (tokentide/hook.py): the window Claude Code reports.
STATUSLINE_SCOPE = "tokentide.statusline"
STATUSLINE_EVENT = "statusline"
SCOPE_PREFIX = "com.anthropic.claude_code"
_VARIANT = re.compile(r"^(?P<model>.*?)\[(?P<variant>[^\]]+)\]$")
#: ``query_source`` values of the session's own conversation (events use the first two,
#: metrics ``main``); everything else (title generation, compaction, subagents) runs in a
#: context window of its own.
MAIN_QUERY_SOURCES = frozenset({"repl_main_thread", "sdk", "main"})


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """``claude-opus-4-8[1m]`` -> (``claude-opus-4-8``, ``1m``)."""
    if not model:
        return None, None
    match = _VARIANT.match(model)
    return (match["model"], match["variant"]) if match else (model, None)


def cache_writes(attrs: dict[str, object]) -> tuple[int, int]:
    """``(cache_creation, cache_creation_1h)`` of an ``api_request``.

    ``cache_creation_tokens`` is all cache writes, as before the split; the one-hour part is
    ``cache_creation_1h_tokens``, else what ``cache_creation_5m_tokens`` leaves of the total,
    else 0 (all writes five-minute, Claude Code's default). Without ``cache_creation_tokens``
    the total is the sum of the two parts. The part never exceeds the total the agent
    reported (the total is what the agent counts; a part above it is read as all of it).
    Counts out of range raise :class:`tokentide.bounds.OutOfRange`.
    """
    total = token_count(attrs.get("cache_creation_tokens"), "cache_creation_tokens")
    five = token_count(attrs.get("cache_creation_5m_tokens"), "cache_creation_5m_tokens")
    hour = token_count(attrs.get("cache_creation_1h_tokens"), "cache_creation_1h_tokens")
    if total is None:
        total = (five or 0) + (hour or 0)
    if hour is None:
        hour = total - five if five is not None else 0
    return total, min(max(hour, 0), total)


def usd_to_nanos(value: object) -> int | None:
    """The agent's ``cost_usd`` double to integer nano-USD (exact sums from here on); a cost
    out of range (:func:`tokentide.bounds.cost_usd`) raises OutOfRange."""
    cost = cost_usd(value)
    return None if cost is None else round(cost * NANOS_PER_USD)


class ClaudeCodeNormaliser(GenericNormaliser):
    agent = "claude_code"

    def matches(self, origin: Origin) -> bool:
        return origin.service_name in SERVICE_NAMES or origin.scope_name.startswith(SCOPE_PREFIX)

    def agent_of(self, origin: Origin) -> str:
        return self.agent

    def event(self, origin: Origin, record: LogRecord) -> Event:
        attrs = attributes(record.attributes)
        body = as_str(any_value(record.body)) or ""
        name = as_str(attrs.get("event.name")) or body.removeprefix("claude_code.") or "log"
        sequence = as_int(attrs.get("event.sequence"))
        time_ns = record.time_unix_nano or record.observed_time_unix_nano or origin.received_ns
        session_id = origin.session_of(attrs)
        model, variant = split_model(as_str(attrs.get("model")))
        event = Event(
            tenant=origin.tenant,
            session_id=session_id,
            # The agent numbers its events per session; with the timestamp this stays
            # unique even if a resumed session restarts the numbering. Without a number,
            # the record's content is the key.
            event_id=stable_id(session_id, name, sequence, time_ns)
            if sequence is not None
            else stable_id(session_id, record.SerializeToString(deterministic=True)),
            agent=self.agent,
            name=name,
            time_ns=time_ns,
            sequence=sequence,
            user_id=as_str(attrs.get("user.id")),
            model=model,
            model_variant=variant,
            query_source=as_str(attrs.get("query_source")),
            agent_name=as_str(attrs.get("agent.name")),
            skill=as_str(attrs.get("skill.name")),
            mcp_server=as_str(attrs.get("mcp_server.name")),
            request_id=as_str(attrs.get("request_id")),
            duration_ms=as_float(attrs.get("duration_ms")),
            attributes=attrs,
        )
        event.kind = EVENT_KINDS.get(name, EventKind.OTHER)
        if name in ("tool_result", "compaction"):
            event.success = as_bool(attrs.get("success"))
        if name == "compaction":
            event.context_after = as_int(attrs.get("post_tokens"))
            event.context_before = as_int(attrs.get("pre_tokens"))
            event.trigger = as_str(attrs.get("trigger"))
        if name == STATUSLINE_EVENT and origin.scope_name == STATUSLINE_SCOPE:
            event.kind = EventKind.CONTEXT_WINDOW
            event.context_window = token_count(attrs.get("context_window.size"), "context_window.size")
        if name == "api_request":
            # A subagent's requests run in a context of their own, whatever their source says.
            event.main_context = is_main_thread(event.query_source) and not event.agent_name
            cache_creation, cache_creation_1h = cache_writes(attrs)
            event.tokens = Tokens(
                input=token_count(attrs.get("input_tokens"), "input_tokens") or 0,
                output=token_count(attrs.get("output_tokens"), "output_tokens") or 0,
                cache_read=token_count(attrs.get("cache_read_tokens"), "cache_read_tokens") or 0,
                cache_creation=cache_creation,
                cache_creation_1h=cache_creation_1h,
            )
            event.cost_nanos = usd_to_nanos(attrs.get("cost_usd"))
            if event.cost_nanos is None:
                micros = cost_micros(attrs.get("cost_usd_micros"))
                event.cost_nanos = None if micros is None else micros * 1000
            if event.cost_nanos is not None:
                event.cost_source = "agent"
            else:
                price_from_table(event)
        return event

    def points(self, origin: Origin, metric: Metric) -> list[Point]:
        points = super().points(origin, metric)
        measure_of = METRIC_MEASURES.get(metric.name)
        for point in points:
            model, _variant = split_model(as_str(point.attributes.get("model")))
            point.model = model
            if measure_of is not None:
                point.measure = measure_of(point.attributes)
        return points

    def long_context(self, origin: Origin, metric: Metric) -> bool:
        kind = metric.WhichOneof("data")
        if kind not in ("sum", "gauge"):
            return False
        for point in getattr(metric, kind).data_points:
            for kv in point.attributes:
                if kv.key == "model" and split_model(kv.value.string_value)[1] == "1m":
                    return True
        return False


def _token_measure(attributes: dict[str, object]) -> Measure | None:
    return TOKEN_TYPES.get(str(attributes.get("type")))


def _lines_measure(attributes: dict[str, object]) -> Measure | None:
    kind = attributes.get("type")
    return Measure.LINES_ADDED if kind == "added" else Measure.LINES_REMOVED if kind == "removed" else None


#: ``claude_code.token.usage`` ``type`` -> canonical token type.
TOKEN_TYPES = {
    "input": Measure.TOKENS_INPUT,
    "output": Measure.TOKENS_OUTPUT,
    "cacheRead": Measure.TOKENS_CACHE_READ,
    "cacheCreation": Measure.TOKENS_CACHE_CREATION,
}
#: Claude Code metric -> what its points count.
METRIC_MEASURES: dict[str, Callable[[dict[str, object]], Measure | None]] = {
    "claude_code.token.usage": _token_measure,
    "claude_code.cost.usage": lambda _: Measure.COST_USD,
    "claude_code.lines_of_code.count": _lines_measure,
    "claude_code.commit.count": lambda _: Measure.COMMITS,
    "claude_code.pull_request.count": lambda _: Measure.PULL_REQUESTS,
    "claude_code.active_time.total": lambda _: Measure.ACTIVE_TIME_S,
}
EVENT_KINDS = {
    "api_request": EventKind.USAGE,
    "api_error": EventKind.API_ERROR,
    "api_retries_exhausted": EventKind.RETRIES_EXHAUSTED,
    "user_prompt": EventKind.PROMPT,
    "tool_result": EventKind.TOOL_RESULT,
    "tool_decision": EventKind.TOOL_DECISION,
    "compaction": EventKind.COMPACTION,
}


def is_main_thread(query_source: str | None) -> bool:
    """Whether a request belongs to the session's own context (absent source: assume so)."""
    return query_source is None or query_source in MAIN_QUERY_SOURCES
