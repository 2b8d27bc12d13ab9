"""POST /v1/route/explain: the routing decision for a request, without calling any backend.

`?endpoint=chat|messages|responses|completions|embeddings` (default chat) says which API's
request the body is. It is read by that endpoint's own `Ingress` (`parse`, then `prepare`:
a Responses `previous_response_id` brings its stored conversation) into the chat request
routing reads, and decided exactly as that endpoint would decide it. Same auth, same 400/404
errors as the endpoint itself (in OpenAI's shape: this is the gateway's own API), and the
same 403 `model_not_allowed` for a key restricted to other models (an explanation shows a
model's backends, prices and live stats); an unknown endpoint, or `endpoint` given twice,
is a 400 naming it.

The endpoint's parser, not a reading of the body kept apart for explain: one kept apart
explained requests the endpoint refuses (a Messages tool_result answering no tool_use,
Responses' stored `prompt`) and routed a Responses continuation on its new input alone.
"""

from __future__ import annotations

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.chat import CHAT_INGRESS
from gateway.api.completions import COMPLETIONS_INGRESS
from gateway.api.edge import Ingress, IngressRequest
from gateway.api.embeddings import EMBEDDINGS_INGRESS
from gateway.api.ingress import read_body
from gateway.api.messages import MESSAGES_INGRESS
from gateway.api.responses import INGRESS as RESPONSES_INGRESS
from gateway.api.state import AppState
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.errors import echoed, invalid_request
from gateway.ratelimit import check_models
from gateway.routing.candidates import may_answer_natively
from gateway.routing.explain import explanation
from gateway.routing.live import LiveState
from gateway.routing.pipeline import RoutingDecision, plan

INGRESSES: dict[str, Ingress] = {
    ingress.endpoint: ingress
    for ingress in (CHAT_INGRESS, MESSAGES_INGRESS, RESPONSES_INGRESS, COMPLETIONS_INGRESS, EMBEDDINGS_INGRESS)
}


def ingress_for(endpoint: str) -> Ingress:
    """The ingress of `endpoint`; a 400 naming `endpoint` for one the gateway does not serve."""
    ingress = INGRESSES.get(endpoint)
    if ingress is None:
        raise invalid_request(
            f"`endpoint` must be one of {', '.join(INGRESSES)}; got {echoed(endpoint)!r}.", "endpoint"
        )
    return ingress


def requested_endpoint(query: QueryParams) -> str:
    """The `endpoint` query parameter (chat when absent). Given twice it is a 400 naming it:
    read as the last one, `?endpoint=chat&endpoint=messages` explained a Messages request
    to a client that may have meant the first; an empty one is not "chat" but a value no
    endpoint has (`ingress_for`'s 400)."""
    values = query.getlist("endpoint")
    if len(values) > 1:
        raise invalid_request(f"`endpoint` was given {len(values)} times; give it once.", "endpoint")
    return values[0] if values else "chat"


def explained_plan(
    ingress: Ingress,
    request: IngressRequest,
    headers: dict[str, str],
    snapshot: ConfigSnapshot,
    live: LiveState | None = None,
) -> RoutingDecision:
    """The decision for a parsed (and prepared) request, as `api.ingress.handle` reaches it:
    translated first when no offer it names could take it natively, and the translation's
    400 when it needs a native candidate and routing left none. No exploration draw: the
    explanation shows the order the strategy itself gives."""
    chat = request.chat
    endpoint = ingress.endpoint
    if not chat.translated and not may_answer_natively(chat.fields, chat.model, snapshot, endpoint):
        chat.translate()
    decision = plan(chat, headers, snapshot, live, explore=False, endpoint=endpoint)
    if (
        ingress.may_need_native
        and ingress.native_only(request)
        and decision.error is None
        and not any(endpoint in o.apis for o in decision.candidates)
    ):
        chat.translate()  # no candidate takes it natively: the translation's own 400
    return decision


async def explain(request: Request) -> Response:
    state: AppState = request.app.state.gateway
    principal = await state.auth.authenticate_current(request)
    snapshot = state.config.current
    ingress = ingress_for(requested_endpoint(request.query_params))
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    parsed = ingress.parse(await read_body(request, snapshot.config.gateway.max_body_bytes), headers)
    if ingress.prepares:
        parsed = await ingress.prepare(parsed, principal, state)
    check_models(principal, parsed.chat, snapshot)
    decision = explained_plan(ingress, parsed, headers, snapshot, state.stats)
    body = explanation(decision, state.stats)
    body["config_version"] = snapshot.version
    return Response(orjson.dumps(body), media_type="application/json")
