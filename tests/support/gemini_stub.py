"""A local stand-in for the Gemini API (``generativelanguage.googleapis.com``), enough for the
real Gemini CLI to run a turn against it (``GOOGLE_GEMINI_BASE_URL``).

- ``POST /v1beta/models/<model>:generateContent`` answers one JSON response: the Gemini CLI's
  model router asks this way (role ``utility_router``) and gets a routing verdict back (the
  JSON its numerical classifier reads: a low complexity score, so the main call goes to the
  router's flash model).
- ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse`` streams the main reply as
  Server-Sent Events.
- Both report the usage the test chose: by default ``promptTokenCount`` 1500 (none cached),
  ``candidatesTokenCount`` 42, ``thoughtsTokenCount`` 10, total 1552 (the numbers of the
  Gemini captures in ``tests/fixtures/gemini-cli/``).

Every call is kept in :attr:`GeminiStub.served` (model, streamed or not, usage), so expected
totals come from what the stub said, not from tokentide's code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.stub_server import ThreadedServer

#: What the Gemini CLI's numerical classifier expects from its router call.
ROUTER_VERDICT = {
    "complexity_reasoning": "stub",
    "complexity_score": 10,
    "reasoning": "stub",
    "next_speaker": "user",
    "model_choice": "flash",
}


@dataclass(frozen=True)
class Usage:
    """One response's ``usageMetadata`` (Gemini's definitions: ``prompt`` includes the cached
    part; ``thoughts`` are not part of ``candidates``; total = prompt + candidates + thoughts)."""

    prompt: int = 1500
    cached: int = 0
    candidates: int = 42
    thoughts: int = 10

    def as_api(self) -> dict[str, int]:
        return {
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.candidates,
            "thoughtsTokenCount": self.thoughts,
            "cachedContentTokenCount": self.cached,
            "totalTokenCount": self.prompt + self.candidates + self.thoughts,
        }


@dataclass(frozen=True)
class Served:
    model: str
    streamed: bool
    usage: Usage


@dataclass
class GeminiStub:
    port: int
    usage: Usage = field(default_factory=Usage)
    reply: str = "Hi! (stub reply)"
    served: list[Served] = field(default_factory=list)
    #: ``(path, body)`` of every request, in arrival order.
    requests: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    _serving: ThreadedServer = field(default_factory=ThreadedServer)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _response(self, model: str, text: str) -> dict[str, Any]:
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": self.usage.as_api(),
            "responseId": f"stub-{len(self.served)}",
            "modelVersion": model,
        }

    def _stream(self, model: str) -> Iterator[str]:
        yield f"data: {json.dumps(self._response(model, self.reply))}\r\n\r\n"

    async def _models(self, request: Request) -> Response:
        model, _, method = request.path_params["call"].partition(":")
        try:
            body: dict[str, Any] | None = await request.json()
        except json.JSONDecodeError:
            body = None
        with self._lock:
            self.requests.append((request.url.path, body))
        if method == "streamGenerateContent":
            with self._lock:
                self.served.append(Served(model, True, self.usage))
            return StreamingResponse(self._stream(model), media_type="text/event-stream")
        if method == "generateContent":
            with self._lock:
                self.served.append(Served(model, False, self.usage))
            return JSONResponse(self._response(model, json.dumps(ROUTER_VERDICT)))
        if method == "countTokens":
            return JSONResponse({"totalTokens": self.usage.prompt})
        return JSONResponse({"error": {"code": 404, "message": "not found"}}, status_code=404)

    async def _anything(self, request: Request) -> Response:
        with self._lock:
            self.requests.append((request.url.path, None))
        return JSONResponse({"error": {"code": 404, "message": "not found"}}, status_code=404)

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/{version}/models/{call}", self._models, methods=["POST"]),
                Route("/{path:path}", self._anything, methods=["GET", "POST", "HEAD"]),
            ]
        )
        self._serving.start(app, self.port, "Gemini stub")

    def stop(self) -> None:
        self._serving.stop()
