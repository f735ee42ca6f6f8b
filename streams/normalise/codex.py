"""OpenAI Codex CLI: events (attribute ``event.name``, no body) and metrics.

Facts (reference/agent-telemetry.md, sections 4, 5 and 6):
- the session is ``conversation.id`` on log records (and spans); metrics carry no
  conversation id at all, so their points go to the synthetic session of
  :meth:`Origin.session_of` (per tenant, service and user);
- ``timeUnixNano`` is 0 on every record (the observed time is used); all int64 arrive as
  strings in JSON, several counts as string attributes; ``LogRecord.event_name`` is a
  source location, the real name is attribute ``event.name``;
- the same usage is reported twice: the token ``codex.sse_event`` record and the
  ``codex.turn.token_usage`` histogram; two ``sse_event`` records have
  ``event.kind=response.completed``, only one of them carries tokens;
- ``input_token_count`` includes ``cached_token_count``; ``output_token_count`` includes
  ``reasoning_token_count``; ``tool_token_count`` held the total in the capture (unused);
- no cost is sent.

Rules:
- One source of truth: a ``codex.sse_event`` record carrying ``input_token_count`` is the only
  USAGE event. Tokens (section 6): ``input = input_token_count - cached_token_count``,
  ``cache_read = cached_token_count``, ``cache_creation = cache_write_token_count`` (not
  subtracted from input: the reference leaves their relation unverified, 0 in the captures),
  ``output = output_token_count``, ``reasoning = reasoning_token_count``. ``main_context`` is
  None (Codex does not mark auxiliary requests; the state counts None as the conversation's).
  Cost from the price table.
- ``codex.api_request`` -> API_ERROR when it failed: an HTTP status (attribute
  ``http.response.status_code`` or ``status_code``, int or string) outside 100-399, else
  ``success=false``, else no status but an ``error.message``/``error``; otherwise OTHER (it
  has no tokens). Codex emits one per attempt, so retried failures count once each.
  ``codex.user_prompt`` -> PROMPT, ``codex.tool_result`` -> TOOL_RESULT with ``success``,
  ``codex.tool_decision`` -> TOOL_DECISION; everything else OTHER. Transport records
  (``websocket_connect``, ``transport.fallback_to_http``) are not API errors.
- The metrics client's DEBUG record "flushing OTEL metrics" has no ``event.name`` and no
  conversation: the normaliser interface returns one event per record and dropping silently
  is not allowed, so it is kept as an OTHER event (named by its ``LogRecord.event_name``) in
  the synthetic session of its resource; it never affects usage.
- Metrics: ``codex.turn.token_usage`` ``token_type``: ``cached_input`` -> tokens.cache_read,
  ``cache_write_input`` -> tokens.cache_creation, ``output`` -> tokens.output (reasoning
  included, canonical as sent), ``reasoning_output`` -> tokens.reasoning; ``input`` (cache
  included) and ``total`` get no measure. So that a reader summing measures gets canonical
  input, one derived point per series carries ``token_type=input_uncached`` = input -
  cached_input with measure tokens.input (attribute ``tokentide.derived``).
- No bogus usage from metrics: token measures are only given to points that carry a session
  identity (``conversation.id`` or ``session.id``, on the point or its resource). Codex
  0.169 sends none on metrics, so its points land in the synthetic per-(tenant, service,
  user) session, which never receives the conversations' usage events; the session state's
  metrics fallback (tokens from measures for a session without usage events) would count
  every conversation's usage there a second time. Those points are kept, with the raw
  values, but without token measures (and without derived points). Should Codex add a
  conversation id to its metrics (openai/codex#19897), the measures apply unchanged.
- Event ids: content hash of (session, record); Codex sends no sequence number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from streams.normalise.base import Origin
from streams.normalise.generic import (
    Derivation,
    GenericNormaliser,
    MeasureOf,
    derived_points,
    price_from_table,
)
from streams.otlp import as_bool, as_float, as_int, as_str
from tokentide import identity
from tokentide.bounds import token_count
from tokentide.records import Event, EventKind, Measure, Point, Tokens

SERVICE_PREFIX = "codex"
SCOPE_PREFIX = "codex"

SSE_EVENT = "codex.sse_event"
API_REQUEST = "codex.api_request"
TOOL_RESULT = "codex.tool_result"
TURN_USAGE_METRIC = "codex.turn.token_usage"

EVENT_KINDS = {
    "codex.user_prompt": EventKind.PROMPT,
    TOOL_RESULT: EventKind.TOOL_RESULT,
    "codex.tool_decision": EventKind.TOOL_DECISION,
}

#: ``codex.turn.token_usage`` ``token_type`` -> canonical token type, where the value is one.
TOKEN_TYPES = {
    "cached_input": Measure.TOKENS_CACHE_READ,
    "cache_write_input": Measure.TOKENS_CACHE_CREATION,
    "output": Measure.TOKENS_OUTPUT,
    "reasoning_output": Measure.TOKENS_REASONING,
}
DERIVATIONS = (
    Derivation("input_uncached", base="input", minus=("cached_input",), measure=Measure.TOKENS_INPUT),
)
_OK_STATUS_WORDS = frozenset({"ok", "success"})


def _token_measure(attrs: dict[str, Any]) -> Measure | None:
    return TOKEN_TYPES.get(str(attrs.get("token_type")))


def codex_tokens(attrs: Mapping[str, Any]) -> Tokens | None:
    """Canonical tokens of a token ``sse_event``; None for records without tokens."""
    reported_input = token_count(attrs.get("input_token_count"), "input_token_count")
    if reported_input is None:
        return None
    cached = token_count(attrs.get("cached_token_count"), "cached_token_count") or 0
    return Tokens(
        input=max(reported_input - cached, 0),
        output=token_count(attrs.get("output_token_count"), "output_token_count") or 0,
        cache_read=cached,
        cache_creation=token_count(attrs.get("cache_write_token_count"), "cache_write_token_count") or 0,
        reasoning=token_count(attrs.get("reasoning_token_count"), "reasoning_token_count") or 0,
    )


def has_session_identity(origin: Origin, attrs: Mapping[str, Any]) -> bool:
    """Whether a record or point names its session (else it lands in a synthetic session)."""
    return identity.declared_session(attrs, origin.resource) is not None


def request_failed(attrs: Mapping[str, Any]) -> bool:
    """Whether a ``codex.api_request`` record reports a failed attempt (rules in the docstring)."""
    status = attrs.get("http.response.status_code", attrs.get("status_code"))
    code = as_int(status)
    if code is not None:
        return not 100 <= code < 400
    success = as_bool(attrs.get("success"))
    if success is not None:
        return not success
    if isinstance(status, str) and status.strip():
        return status.strip().lower() not in _OK_STATUS_WORDS
    return bool(attrs.get("error.message") or attrs.get("error"))


class CodexNormaliser(GenericNormaliser):
    agent = "codex"
    metric_measures: ClassVar[Mapping[str, MeasureOf]] = {TURN_USAGE_METRIC: _token_measure}

    def matches(self, origin: Origin) -> bool:
        service = origin.service_name or ""
        return service.startswith(SERVICE_PREFIX) or origin.scope_name.startswith(SCOPE_PREFIX)

    def agent_of(self, origin: Origin) -> str:
        return self.agent

    def event(self, origin: Origin, record: LogRecord) -> Event:
        event = self.base_event(origin, record)
        attrs = event.attributes
        name = event.name
        event.user_id = event.user_id or as_str(attrs.get("user.account_id"))
        event.model = as_str(attrs.get("model"))
        event.duration_ms = as_float(attrs.get("duration_ms"))
        event.kind = EVENT_KINDS.get(name, EventKind.OTHER)
        if name == SSE_EVENT:
            event.tokens = codex_tokens(attrs)
            if event.tokens is not None:
                event.kind = EventKind.USAGE
                price_from_table(event)
        elif name == API_REQUEST and request_failed(attrs):
            event.kind = EventKind.API_ERROR
        elif name == TOOL_RESULT:
            event.success = as_bool(attrs.get("success"))
        return event

    def point_model(self, attrs: Mapping[str, Any]) -> str | None:
        return as_str(attrs.get("model"))

    def points(self, origin: Origin, metric: Metric) -> list[Point]:
        points = super().points(origin, metric)
        if metric.name != TURN_USAGE_METRIC:
            return points
        identified = [p for p in points if has_session_identity(origin, p.attributes)]
        for point in points:
            if not has_session_identity(origin, point.attributes):
                point.measure = None  # see "No bogus usage from metrics" above
        return points + derived_points(identified, "token_type", DERIVATIONS)
