"""An ASGI front door that sends the proxy route straight to its handler.

FastAPI wraps every request in several middleware layers (error, exception, telemetry,
body limit, exit stack, router). The chat route needs none of them, and on the proxy path
they cost a measurable share of each call (see `make bench`), so POST /v1/chat/completions
skips them; every other path, and the lifespan, goes through FastAPI as usual.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.protocol.errors import GatewayError

log = logging.getLogger("gateway.api")


class FastPathApp:
    def __init__(self, app: FastAPI, routes: dict[str, object]) -> None:
        self.app = app  # the FastAPI app: state, lifespan, every other route
        self._routes = routes  # path -> async handler(Request) -> Response, POST only

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except GatewayError as exc:
                    response = exc.to_response()
                except Exception:
                    log.exception("unhandled error on %s", scope["path"])
                    response = GatewayError(500, "Internal gateway error.", code="internal_error").to_response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
