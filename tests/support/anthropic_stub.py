"""A local stand-in for the Anthropic Messages API, enough for the real Claude Code CLI to run a
turn against it (``ANTHROPIC_BASE_URL``): every ``POST /v1/messages`` is answered with a short
text reply, streamed as the API streams, with the usage the test chooses; every request body is
kept so a test can see what Claude Code sent (e.g. what a hook added to the conversation).

Two things make it behave like the real API for a conversation that grows:

- with a :class:`Conversation`, the usage a request reports follows the conversation's length
  (as the real API's input tokens do), and a request above the model's window is refused as the
  API refuses it (HTTP 400 ``prompt is too long: N tokens > M maximum``), which is what makes
  Claude Code compact by itself on a 200k model;
- a compaction's summary request (Claude Code asks for an ``<analysis>`` and a ``<summary>``
  block) gets a summary back in that form, so the compaction succeeds.

What each request was answered (:attr:`AnthropicStub.served`, :attr:`AnthropicStub.refused`)
is kept, so a test derives its expected numbers from what the stub reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.stub_server import ThreadedServer

#: What Claude Code's request for a compaction summary asks for (its last message, 2.1.332).
SUMMARY_MARKERS = ("<analysis>", "<summary>")
SUMMARY = (
    "<analysis>The stub's conversation: numbered turns, nothing else.</analysis>\n"
    "<summary>\n1. Primary Request and Intent: the user sent numbered turns.\n"
    "2. Pending Tasks: none.\n3. Current Work: waiting for the next turn.\n</summary>"
)


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def is_summary_request(body: dict[str, Any]) -> bool:
    """Whether ``body`` is a compaction's request for a summary of the conversation."""
    messages = body.get("messages") or []
    if not messages or messages[-1].get("role") != "user":
        return False
    text = message_text(messages[-1])
    return all(marker in text for marker in SUMMARY_MARKERS)


@dataclass(frozen=True)
class Conversation:
    """Usage that grows with the conversation: a request of ``n`` messages (a summary
    request's own instruction not counted) reports ``base + per_message * n`` tokens of
    context, split into ``cache_read``, ``cache_creation`` and the rest as ``input_tokens``.
    A request whose context is above ``window`` is refused (HTTP 400, prompt too long)."""

    base: int
    per_message: int
    window: int
    cache_read: int = 4500
    cache_creation: int = 300

    def context(self, body: dict[str, Any]) -> int:
        messages = len(body.get("messages") or [])
        if is_summary_request(body):
            messages -= 1
        return self.base + self.per_message * messages

    def usage(self, context: int) -> dict[str, int]:
        return {
            "input_tokens": context - self.cache_read - self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_creation,
        }


@dataclass(frozen=True)
class Served:
    """One answered request: its model, whether it was a summary request, and the usage
    reported (``output_tokens`` included)."""

    model: str
    summary: bool
    usage: dict[str, Any]

    @property
    def context(self) -> int:
        """input + cache read + cache write, as Claude Code counts a request's context."""
        return int(
            self.usage["input_tokens"]
            + self.usage.get("cache_read_input_tokens", 0)
            + self.usage.get("cache_creation_input_tokens", 0)
        )


@dataclass
class AnthropicStub:
    port: int
    #: The usage each reply reports (without a :attr:`conversation`); a test raises
    #: ``input_tokens`` to grow the context. A ``cache_creation`` object (the API's split of
    #: cache writes by lifetime) may be given too.
    usage: dict[str, Any] = field(
        default_factory=lambda: {
            "input_tokens": 1200,
            "cache_read_input_tokens": 4500,
            "cache_creation_input_tokens": 300,
        }
    )
    reply: str = "stub answer"
    output_tokens: int = 42
    #: When set, the usage follows the conversation and long prompts are refused.
    conversation: Conversation | None = None
    summary_output_tokens: int = 600
    #: Scripted tool calls: the first request offering tools whose last user message contains
    #: the key is answered with the script's first ``tool_use`` (tool name, input), each next
    #: request bringing a tool result with the next one, then text again; each script runs once.
    #: (Claude Code defers some tools, TodoWrite among them: a script loads it with ToolSearch
    #: ``select:TodoWrite`` first.)
    tool_calls: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    #: The tool calls made, in order (tool name, input).
    called: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _script: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)
    #: The context of every request refused as too long.
    refused: list[int] = field(default_factory=list)
    _serving: ThreadedServer = field(default_factory=ThreadedServer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def texts(self) -> list[str]:
        """Every request body as JSON text, in arrival order."""
        return [json.dumps(r) for r in self.requests]

    def _tool_call(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The tool call this request is to be answered with, if any (each made once)."""
        messages = body.get("messages") or []
        if not messages or messages[-1].get("role") != "user":
            return None
        content = messages[-1].get("content")
        parts = content if isinstance(content, list) else []
        call = None
        if self._script and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in parts):
            call = self._script.pop(0)
        elif body.get("tools"):
            text = message_text(messages[-1])
            for key in [k for k in self.tool_calls if k in text][:1]:
                self._script = list(self.tool_calls.pop(key))
                call = self._script.pop(0)
        if call is not None:
            self.called.append(call)
        return call

    def _events(
        self, model: str, usage: dict[str, Any], text: str, tool: tuple[str, dict[str, Any]] | None = None
    ) -> Iterator[str]:
        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        message = {
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        yield event("message_start", {"type": "message_start", "message": message})
        if tool is None:
            start: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": text}
        else:
            start = {"type": "tool_use", "id": f"toolu_stub{len(self.called)}", "name": tool[0], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(tool[1])}
        yield event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": start}
        )
        yield event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn" if tool is None else "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield event("message_stop", {"type": "message_stop"})

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        model = str(body.get("model", "claude-opus-4-8"))
        summary = is_summary_request(body)
        if self.conversation is not None:
            context = self.conversation.context(body)
            if context > self.conversation.window:
                self.refused.append(context)
                message = f"prompt is too long: {context} tokens > {self.conversation.window} maximum"
                return JSONResponse(
                    {"type": "error", "error": {"type": "invalid_request_error", "message": message}},
                    status_code=400,
                )
            usage: dict[str, Any] = self.conversation.usage(context)
        else:
            usage = dict(self.usage)
        usage["output_tokens"] = self.summary_output_tokens if summary else self.output_tokens
        text = SUMMARY if summary else self.reply
        tool = None if summary else self._tool_call(body)
        self.served.append(Served(model, summary, usage))
        if body.get("stream"):
            return StreamingResponse(self._events(model, usage, text, tool), media_type="text/event-stream")
        content: dict[str, Any] = {"type": "text", "text": text}
        if tool is not None:
            content = {
                "type": "tool_use",
                "id": f"toolu_stub{len(self.called)}",
                "name": tool[0],
                "input": tool[1],
            }
        return JSONResponse(
            {
                "id": "msg_stub",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [content],
                "stop_reason": "end_turn" if tool is None else "tool_use",
                "stop_sequence": None,
                "usage": usage,
            }
        )

    async def _anything(self, request: Request) -> Response:
        return JSONResponse({})

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/{path:path}", self._anything, methods=["GET", "POST", "HEAD"]),
            ]
        )
        self._serving.start(app, self.port, "Anthropic stub")

    def stop(self) -> None:
        self._serving.stop()
