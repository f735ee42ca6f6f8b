"""Request bodies are bounded before anything reads them: 413 with a JSON ``detail`` past the cap.

FastAPI reads a whole body into memory before validating it, so without a bound a client could
make a replica hold any amount. :class:`BodyLimit` (plain ASGI, so that it sees the body as it
streams) refuses a ``Content-Length`` over the path's cap at once and stops a chunked body when
it passes the cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The cap of every body but the checkpoints' (login, logout: a few hundred bytes).
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """ASGI middleware: at most ``limit_for(path)`` body bytes per request.

    Past the cap it answers 413 itself, tells the app the client went away (whatever the app
    then makes of it, e.g. FastAPI's 400 for an unreadable body, is dropped)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not started:
                    refused = True
                    await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except ClientDisconnect:
            if not refused:
                raise  # a real disconnect; after a refusal it is the one told to the app


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class NoNulBytes:
    """ASGI middleware: 400 for an API request whose path or query string holds a NUL byte
    (``%00``): the API's parameters reach PostgreSQL, which refuses NUL in text (a 500 deeper
    down); no id, filter or name of tokentide's contains one. Pages and probes ignore what
    they do not read, so they are left alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(("/api/", "/metrics/usage"))
            and (
                "\x00" in scope["path"]
                or b"%00" in scope.get("query_string", b"").lower()
                or b"\x00" in scope.get("query_string", b"")
            )
        ):
            body = json.dumps({"detail": "NUL bytes are not accepted in the path or the query"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
