"""Pure: redact content attributes (prompts, responses, tool input, e-mail) before Kafka.

Agents can leak what users type and what the model answers: Claude Code's ``tool_parameters``
and ``tool_input``, Gemini CLI's prompts, requests, responses and tool arguments (file content)
by default, and Gemini's ``process.command_args`` resource attribute, which holds a ``-p``
prompt. Per tenant, such attributes are replaced by a keyed hash (equal values stay equal,
the text is gone), dropped, or kept.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from google.protobuf.message import Message

from tokentide.tenancy import Redaction
from tokentide.topics import Signal

#: Attribute keys whose values are content, on any record or resource of any agent.
CONTENT_KEYS = frozenset(
    {
        "prompt",  # user_prompt (Claude Code, Gemini CLI, Codex)
        "response",  # Claude Code assistant_response
        "request_text",  # Gemini api_request: the whole request
        "response_text",  # Gemini api_response
        "tool_parameters",  # Claude Code tool_decision / tool_result
        "tool_input",  # Claude Code tool_result
        "function_args",  # Gemini tool_call (file paths and content)
        "body",  # Claude Code api_request_body / api_response_body events
        "user.email",
        "process.command_args",  # Gemini resource: argv, including a -p prompt
        "gen_ai.system_instructions",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)
#: What agents already put in place of content they did not log; left as it is.
AGENT_PLACEHOLDER = "<REDACTED>"


class Redactor:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, value: bytes) -> str:
        return "redacted:" + hmac.new(self._key, value, hashlib.sha256).hexdigest()[:32]

    def apply(self, signal: Signal, request: Message, mode: Redaction) -> int:
        """Redact ``request`` in place; returns how many attributes were changed."""
        if mode is Redaction.OFF:
            return 0
        changed = 0
        for attributes in _attribute_lists(signal, request):
            changed += self.redact_attributes(attributes, mode)
        return changed

    def redact_attributes(self, attributes: Any, mode: Redaction, hits: list[int] | None = None) -> int:
        """Redact one attribute list in place (``hits``: the indices of its content keys, when
        the caller has them); how many attributes were changed."""
        if hits is None:
            hits = [i for i, kv in enumerate(attributes) if kv.key in CONTENT_KEYS]
        if not hits:
            return 0
        changed = 0
        for i in reversed(hits):
            value = attributes[i].value
            if value.WhichOneof("value") is None or value.string_value == AGENT_PLACEHOLDER:
                continue
            if mode is Redaction.DROP:
                del attributes[i]
            else:
                raw = (
                    value.string_value.encode()
                    if value.WhichOneof("value") == "string_value"
                    else value.SerializeToString(deterministic=True)
                )
                value.Clear()
                value.string_value = self.digest(raw)
            changed += 1
        return changed


def _attribute_lists(signal: Signal, request: Any) -> Any:
    """Every attribute list of a request: resources, records, data points, span events."""
    walk = {Signal.LOGS: _log_lists, Signal.TRACES: _span_lists, Signal.METRICS: _metric_lists}[signal]
    return walk(request)


def _log_lists(request: Any) -> Any:
    for resource in request.resource_logs:
        yield resource.resource.attributes
        for scope in resource.scope_logs:
            for record in scope.log_records:
                yield record.attributes


def _span_lists(request: Any) -> Any:
    for resource in request.resource_spans:
        yield resource.resource.attributes
        for scope in resource.scope_spans:
            for span in scope.spans:
                yield span.attributes
                for event in span.events:
                    yield event.attributes


def _metric_lists(request: Any) -> Any:
    for resource in request.resource_metrics:
        yield resource.resource.attributes
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    for point in getattr(metric, kind).data_points:
                        yield point.attributes
