"""A local stand-in for the OpenAI Responses API, enough for the real Codex CLI to run a turn
against it (``openai_base_url`` in Codex's ``config.toml``).

- ``POST /v1/responses`` streams one assistant message as Server-Sent Events, the way the API
  does (``response.created`` ... ``response.completed``), and the completed response carries the
  usage the test chose: by default input 1500 of which 1024 cached, output 42 of which 10
  reasoning, total 1542 (the numbers of the Codex captures in ``tests/fixtures/codex/``).
- ``GET /v1/responses`` is Codex's WebSocket upgrade: answered 404 as a plain HTTP request
  (uvicorn runs without WebSocket support), which makes Codex fall back to HTTPS streaming.
- Anything else is 404.

Every request is kept (method, path, JSON body) so a test sees what Codex asked for, and every
usage reported is kept in :attr:`OpenAIStub.served`, so expected totals come from what the stub
said, not from tokentide's code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.stub_server import ThreadedServer


@dataclass(frozen=True)
class Usage:
    """What one completed response reports (OpenAI's definitions: ``input`` includes the cached
    part, ``output`` includes the reasoning part)."""

    input: int = 1500
    cached: int = 1024
    output: int = 42
    reasoning: int = 10

    def as_api(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input,
            "input_tokens_details": {"cached_tokens": self.cached},
            "output_tokens": self.output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning},
            "total_tokens": self.input + self.output,
        }


@dataclass
class OpenAIStub:
    port: int
    usage: Usage = field(default_factory=Usage)
    reply: str = "Hi! (stub reply)"
    #: ``(method, path, body or None)`` of every request, in arrival order.
    requests: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    #: ``(model, usage)`` of every response streamed.
    served: list[tuple[str, Usage]] = field(default_factory=list)
    _serving: ThreadedServer = field(default_factory=ThreadedServer)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The base URL Codex's ``openai_base_url`` takes (with ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def responses(self) -> list[dict[str, Any]]:
        """The bodies of the ``POST /v1/responses`` requests."""
        with self._lock:
            return [b for m, p, b in self.requests if m == "POST" and p == "/v1/responses" and b]

    def _events(self, model: str, usage: Usage) -> Iterator[str]:
        created = int(time.time())
        base = {"id": "resp_stub", "object": "response", "created_at": created, "model": model}
        item_id = "msg_stub"
        text = self.reply

        def event(data: dict[str, Any]) -> str:
            return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"

        yield event({"type": "response.created", "response": {**base, "status": "in_progress", "output": []}})
        yield event(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "id": item_id,
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            }
        )
        yield event(
            {
                "type": "response.content_part.added",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            }
        )
        yield event(
            {
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": text,
            }
        )
        message = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        yield event({"type": "response.output_item.done", "output_index": 0, "item": message})
        yield event(
            {
                "type": "response.completed",
                "response": {
                    **base,
                    "status": "completed",
                    "output": [message],
                    "usage": usage.as_api(),
                },
            }
        )

    async def _responses(self, request: Request) -> Response:
        if request.method != "POST":
            with self._lock:
                self.requests.append((request.method, request.url.path, None))
            return JSONResponse({"error": {"message": "no websocket here"}}, status_code=404)
        body = await request.json()
        model = str(body.get("model", ""))
        with self._lock:
            self.requests.append(("POST", request.url.path, body))
            self.served.append((model, self.usage))
        return StreamingResponse(self._events(model, self.usage), media_type="text/event-stream")

    async def _anything(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.method, request.url.path, None))
        return JSONResponse({"error": {"message": "not found"}}, status_code=404)

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v1/responses", self._responses, methods=["GET", "POST"]),
                Route("/{path:path}", self._anything, methods=["GET", "POST", "HEAD"]),
            ]
        )
        # ws="none": a WebSocket upgrade is an ordinary GET (404), as Codex's fallback needs.
        self._serving.start(app, self.port, "OpenAI stub", ws="none")

    def stop(self) -> None:
        self._serving.stop()
