"""Middleware an operator would add, for tests that set `GATEWAY_MIDDLEWARE` to these names."""

from __future__ import annotations

import functools

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ORIGIN = "https://app.example"

# CORS for one browser origin, as `GATEWAY_MIDDLEWARE=tests.support.operator_middleware:cors`.
cors = functools.partial(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["*"], allow_headers=["*"])


class Traced:
    """What a tracing middleware does: it sees each HTTP request (method and path) and tags
    the answer with a header naming what it saw."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append((scope["method"], scope["path"]))
        tag = f"{scope['method']} {scope['path']}".encode()

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-traced", tag)]}
            await send(message)

        await self.app(scope, receive, tagged)
