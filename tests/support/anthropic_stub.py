"""A local stand-in for the Anthropic Messages API, enough for the real Claude Code CLI to run a
turn against it (``ANTHROPIC_BASE_URL``): every ``POST /v1/messages`` is answered with a short
text reply, streamed as the API streams, with the usage the test chooses; every request body is
kept so a test can see what Claude Code sent (e.g. what a hook added to the conversation).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class AnthropicStub:
    port: int
    #: The usage each reply reports; a test raises ``input_tokens`` to grow the context.
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "input_tokens": 1200,
            "cache_read_input_tokens": 4500,
            "cache_creation_input_tokens": 300,
        }
    )
    reply: str = "stub answer"
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def texts(self) -> list[str]:
        """Every request body as JSON text, in arrival order."""
        return [json.dumps(r) for r in self.requests]

    def _events(self, model: str) -> Iterator[str]:
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
            "usage": {**self.usage, "output_tokens": 1},
        }
        yield event("message_start", {"type": "message_start", "message": message})
        yield event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        yield event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": self.reply}},
        )
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 42},
            },
        )
        yield event("message_stop", {"type": "message_stop"})

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        model = str(body.get("model", "claude-opus-4-8"))
        if body.get("stream"):
            return StreamingResponse(self._events(model), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "msg_stub",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": self.reply}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {**self.usage, "output_tokens": 42},
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
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the Anthropic stub did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
