"""POST /v1/route/explain: the routing decision for a chat-completions body, without calling
any backend. Same body, same auth, same 400/404 errors as /v1/chat/completions."""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.ingress import read_body
from gateway.api.state import AppState
from gateway.protocol.chat import parse_chat_request
from gateway.routing.explain import explanation
from gateway.routing.pipeline import plan


def register(app: FastAPI) -> None:
    async def explain(request: Request) -> Response:
        state: AppState = request.app.state.gateway
        state.auth.authenticate(request)
        snapshot = state.config.current
        chat = parse_chat_request(await read_body(request, snapshot.config.gateway.max_body_bytes))
        # No exploration draw: the explanation shows the order the strategy itself gives.
        decision = plan(chat, request.headers, snapshot, state.stats, explore=False)
        body = explanation(decision, state.stats)
        body["config_version"] = snapshot.version
        return Response(orjson.dumps(body), media_type="application/json")

    app.router.add_route("/v1/route/explain", explain, methods=["POST"])
