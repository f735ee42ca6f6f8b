"""Gemini CLI: events (log records named by attribute ``event.name``) and metrics.

Facts (reference/agent-telemetry.md, sections 3, 5 and 6):
- ``session.id`` is on the resource and on every record and data point;
- the same requests are reported four times: ``gemini_cli.api_response`` events,
  ``gen_ai.client.inference.operation.details`` events, and the ``gemini_cli.token.usage``
  and ``gen_ai.client.token.usage`` metrics;
- ``input_token_count`` includes the cached tokens, ``output_token_count`` excludes the
  thoughts (``total = input + output + thoughts``);
- router calls (``role=utility_router``, a flash-lite model) are real usage but not part of
  the conversation's context; only events carry ``role``;
- no cost is sent; unset attributes arrive as empty AnyValues (dropped on reading);
  ``status_code`` is an int or a string (``"ok"``/``"error"``); numbers may be strings.

Rules:
- One source of truth: ``gemini_cli.api_response`` is the only USAGE event. Tokens
  (section 6): ``input = input_token_count - cached_content_token_count``, ``cache_read =
  cached_content_token_count``, ``cache_creation = 0``, ``output = output_token_count +
  thoughts_token_count``, ``reasoning = thoughts_token_count``. ``tool_token_count`` and
  ``total_token_count`` are not used. ``main_context`` is ``role == "main"`` (no role: None,
  which the session state treats as the main conversation). Cost from the price table.
- ``gen_ai.client.inference.operation.details`` describes the same request again: it stays
  OTHER (never a second USAGE), whatever usage attributes it carries.
- ``gemini_cli.api_error`` -> API_ERROR (the CLI emits one per failed attempt, retries
  included; there is no separate "retries exhausted" event), ``gemini_cli.user_prompt`` ->
  PROMPT, ``gemini_cli.tool_call`` -> TOOL_RESULT with ``success``,
  ``gemini_cli.chat_compression`` -> COMPACTION with ``context_after = tokens_after`` (not
  captured; attribute names from the CLI's telemetry docs); everything else OTHER.
- Event model: attribute ``model`` (``model_name`` on errors), else the GenAI conventions'
  model; not for ``gemini_cli.config``, whose ``model`` is a setting (``auto``), not a request.
- Metrics: ``gemini_cli.token.usage`` is the one token metric with measures (it has the cache
  and thought breakdown); ``gen_ai.client.token.usage`` counts the same tokens without the
  breakdown and gets no measure, so a reader summing measures counts every token once.
  ``type``: ``cache`` -> tokens.cache_read, ``thought`` -> tokens.reasoning; ``input``
  (cache included), ``output`` (thoughts excluded) and ``tool`` are not canonical and get no
  measure; instead two derived points per series carry the canonical values:
  ``type=input_uncached`` = input - cache (tokens.input) and ``type=output_with_thoughts`` =
  output + thought (tokens.output), marked with attribute ``tokentide.derived``.
- Event ids: content hash of (session, record); Gemini sends no sequence number.
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
    semconv_model,
)
from streams.otlp import as_bool, as_float, as_int, as_str
from tokentide.bounds import token_count
from tokentide.records import Event, EventKind, Measure, Point, Tokens

SERVICE_NAME = "gemini-cli"
SCOPE_NAME = "gemini-cli"
MAIN_ROLE = "main"

API_RESPONSE = "gemini_cli.api_response"
API_ERROR = "gemini_cli.api_error"
CONFIG = "gemini_cli.config"
TOOL_CALL = "gemini_cli.tool_call"
CHAT_COMPRESSION = "gemini_cli.chat_compression"
USAGE_METRIC = "gemini_cli.token.usage"

EVENT_KINDS = {
    API_RESPONSE: EventKind.USAGE,
    API_ERROR: EventKind.API_ERROR,
    "gemini_cli.user_prompt": EventKind.PROMPT,
    TOOL_CALL: EventKind.TOOL_RESULT,
    CHAT_COMPRESSION: EventKind.COMPACTION,
}

#: ``gemini_cli.token.usage`` ``type`` -> canonical token type, where the value is one.
TOKEN_TYPES = {"cache": Measure.TOKENS_CACHE_READ, "thought": Measure.TOKENS_REASONING}
#: Canonical values Gemini reports only as parts of others.
DERIVATIONS = (
    Derivation("input_uncached", base="input", minus=("cache",), measure=Measure.TOKENS_INPUT),
    Derivation("output_with_thoughts", base="output", plus=("thought",), measure=Measure.TOKENS_OUTPUT),
)


def _token_measure(attrs: dict[str, Any]) -> Measure | None:
    return TOKEN_TYPES.get(str(attrs.get("type")))


def gemini_tokens(attrs: Mapping[str, Any]) -> Tokens:
    """Canonical tokens of an ``api_response`` (missing counts are 0)."""
    prompt = token_count(attrs.get("input_token_count"), "input_token_count") or 0
    cached = token_count(attrs.get("cached_content_token_count"), "cached_content_token_count") or 0
    candidates = token_count(attrs.get("output_token_count"), "output_token_count") or 0
    thoughts = token_count(attrs.get("thoughts_token_count"), "thoughts_token_count") or 0
    return Tokens(
        input=max(prompt - cached, 0),
        output=candidates + thoughts,
        cache_read=cached,
        reasoning=thoughts,
    )


def main_context_of(role: str | None) -> bool | None:
    """Whether a request with ``role`` belongs to the session's conversation (None: not said)."""
    return None if role is None else role == MAIN_ROLE


class GeminiCliNormaliser(GenericNormaliser):
    agent = "gemini_cli"
    metric_measures: ClassVar[Mapping[str, MeasureOf]] = {USAGE_METRIC: _token_measure}

    def matches(self, origin: Origin) -> bool:
        return origin.service_name == SERVICE_NAME or origin.scope_name == SCOPE_NAME

    def agent_of(self, origin: Origin) -> str:
        return self.agent

    def event(self, origin: Origin, record: LogRecord) -> Event:
        event = self.base_event(origin, record)
        attrs = event.attributes
        name = event.name
        event.user_id = event.user_id or as_str(attrs.get("installation.id"))
        if name != CONFIG:
            event.model = (
                as_str(attrs.get("model")) or as_str(attrs.get("model_name")) or semconv_model(attrs)
            )
        role = as_str(attrs.get("role"))
        event.query_source = role
        event.duration_ms = as_float(attrs.get("duration_ms"))
        event.kind = EVENT_KINDS.get(name, EventKind.OTHER)
        if name in (API_RESPONSE, API_ERROR):
            event.main_context = main_context_of(role)
        if name == API_RESPONSE:
            event.tokens = gemini_tokens(attrs)
            price_from_table(event)
        elif name == TOOL_CALL:
            event.success = as_bool(attrs.get("success"))
        elif name == CHAT_COMPRESSION:
            event.context_after = as_int(attrs.get("tokens_after"))
        return event

    def point_model(self, attrs: Mapping[str, Any]) -> str | None:
        return as_str(attrs.get("model")) or semconv_model(attrs)

    def points(self, origin: Origin, metric: Metric) -> list[Point]:
        points = super().points(origin, metric)
        if metric.name == USAGE_METRIC:
            points += derived_points(points, "type", DERIVATIONS)
        return points
