"""POST /v1/route/explain: the routing decision for a request, without calling any backend.

`?endpoint=chat|messages|responses|completions|embeddings` (default chat) says which API's
request shape the body has; it is read into the chat request routing reads (see
`protocol.views`) and decided exactly as that endpoint would. Same auth, same 400/404 errors
as the endpoint itself (in OpenAI's shape: this is the gateway's own API), and the same 403
`model_not_allowed` for a key restricted to other models (an explanation shows a model's
backends, prices and live stats); an unknown endpoint is a 400.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.ingress import read_body
from gateway.api.state import AppState
from gateway.protocol.views import routing_view
from gateway.ratelimit import check_models
from gateway.routing.explain import explanation
from gateway.routing.pipeline import plan


async def explain(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    principal = state.auth.authenticate(request)
    snapshot = state.config.current
    endpoint = request.query_params.get("endpoint") or "chat"
    chat = routing_view(endpoint, await read_body(request, snapshot.config.gateway.max_body_bytes))
    check_models(principal, chat, snapshot)
    # No exploration draw: the explanation shows the order the strategy itself gives.
    decision = plan(chat, request.headers, snapshot, state.stats, explore=False, endpoint=endpoint)
    body = explanation(decision, state.stats)
    body["config_version"] = snapshot.version
    return Response(orjson.dumps(body), media_type="application/json")
