"""An ASGI front door that sends the proxy route straight to its handler.

FastAPI wraps every request in several middleware layers (error, exception, telemetry,
body limit, exit stack, router). The chat route needs none of them, and on the proxy path
they cost a measurable share of each call (see `make bench`), so POST /v1/chat/completions
goes to its raw ASGI handler (`gateway.api.chat`); every other path, and the lifespan, goes
through FastAPI as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from gateway.protocol.errors import GatewayError

log = logging.getLogger("gateway.api")

AsgiHandler = Callable[[Scope, Receive, Send], Awaitable[None]]


class FastPathApp:
    def __init__(self, app: FastAPI, routes: Mapping[str, AsgiHandler]) -> None:
        self.app = app  # the FastAPI app: state, lifespan, every other route
        self._routes = routes  # path -> ASGI handler, POST only; it sends its own response

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                try:
                    await handler(scope, receive, send)
                except Exception:
                    # A bug, not a client's or upstream's fault (those are answered by the
                    # handler). Answer 500 if nothing was sent yet; the server ends it otherwise.
                    log.exception("unhandled error on %s", scope["path"])
                    response = GatewayError(500, "Internal gateway error.", code="internal_error").to_response()
                    try:
                        await response(scope, receive, send)
                    except Exception:
                        pass
                return
        await self.app(scope, receive, send)
