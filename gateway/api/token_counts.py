"""POST /v1/messages/count_tokens and /v1/responses/input_tokens: a prompt's token count.

Both answer the gateway's own estimate of the prompt, the one routing and limits use (the
tokenizer of whichever backend would serve it is not known before routing), and ask no
backend. Each checks what its API's generating route would check first: the key, the body,
a model that route would take (an unknown one is a 404, an embedding model a 400; the key's
allowed models a 403), and, for Responses, the stored conversation `previous_response_id`
continues (another key's is a 404), which counts as part of the input. Errors are in each
API's own shape, with the request's id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.edge import Ingress
from gateway.api.ingress import HeadersOnly, receive_body, send_error
from gateway.api.messages import MESSAGES_INGRESS
from gateway.api.responses import INGRESS as RESPONSES_INGRESS
from gateway.api.responses import parse_request
from gateway.api.state import AppState
from gateway.config.snapshot import ConfigSnapshot
from gateway.protocol.body import json_object
from gateway.protocol.errors import GatewayError
from gateway.protocol.messages import count_tokens
from gateway.protocol.messages_checks import check_tool_results
from gateway.protocol.messages_turns import ANTHROPIC_ONLY
from gateway.protocol.messages_view import coarse_prompt
from gateway.ratelimit import check_model_names
from gateway.routing.candidates import target_offers
from gateway.routing.overrides import requested_models
from gateway.routing.pipeline import wrong_kind_error
from gateway.routing.resolve import resolve
from gateway.tenants.principal import Principal

log = logging.getLogger("gateway.api")

_JSON = (b"content-type", b"application/json")

# (the state, the principal, the body) -> the answer's JSON object.
Counter = Callable[[AppState, Principal, bytes], Coroutine[Any, Any, dict[str, Any]]]


def check_model(
    model: str, endpoint: str, principal: Principal, payload: dict[str, Any], snapshot: ConfigSnapshot
) -> None:
    """What the endpoint's generating route would say of the model before routing: a 404 for
    a name nothing maps (`resolve`), a 400 for an embedding model (`wrong_kind_error`), a 403
    for a model the key may not use."""
    error = wrong_kind_error(model, endpoint, "chat", target_offers(resolve(model, snapshot), snapshot))
    if error is not None:
        try:
            raise error
        finally:
            del error  # not held by the frame its traceback holds (see `routing.pipeline.decide`)
    check_model_names(principal, requested_models(payload, model), snapshot)


async def _messages_count(state: AppState, principal: Principal, body: bytes) -> dict[str, Any]:
    native = json_object(body, "`model` and `messages`")  # no max_tokens: nothing is generated
    try:
        counted = count_tokens(native)
    except GatewayError as refused:
        if refused.code != ANTHROPIC_ONLY:
            raise
        # Content only Anthropic's API takes (a server tool, a document by URL): counted as
        # routing counts it, by the body's size.
        counted = {"input_tokens": coarse_prompt(native, len(body)).tokens}
    check_tool_results(native["messages"])  # Anthropic's count_tokens refuses them as /v1/messages does
    check_model(native["model"], "messages", principal, native, state.config.current)
    return counted


async def _responses_count(state: AppState, principal: Principal, body: bytes) -> dict[str, Any]:
    """OpenAI's `{"object": "response.input_tokens", "input_tokens": n}`. `model` is optional
    there: without one, the input is counted as the default route would read it."""
    native = json_object(body, "`input`")
    model = native.get("model")
    if model is None:
        body = orjson.dumps({**native, "model": "auto"})
    request = await RESPONSES_INGRESS.prepare(parse_request(body), principal, state)
    if model is not None:
        check_model(request.chat.model, "responses", principal, request.native, state.config.current)
    return {"object": "response.input_tokens", "input_tokens": request.chat.prompt_tokens()}


def _endpoint(ingress: Ingress, count: Counter) -> Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = scope["app"].state.gateway
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = state.request_ids.next()
        named = request_id.encode()
        out_headers = [(b"x-request-id", named)]
        if ingress.request_id_header is not None:
            out_headers.append((ingress.request_id_header, named))
        try:
            principal = await state.auth.authenticate_current(HeadersOnly(headers, scope.get("client")))
            limit = state.config.current.config.gateway.max_body_bytes
            body = await receive_body(receive, headers.get("content-length"), limit)
            answer = orjson.dumps(await count(state, principal, body))
        except GatewayError as exc:
            await send_error(send, ingress, exc, request_id, out_headers)
            return
        except Exception:
            # A fault of the gateway's own: answered as `handle` answers one, in the API's
            # shape with the request's id (the front door's generic 500 has neither).
            log.exception("internal error on %s (request %s)", scope["path"], request_id)
            internal = GatewayError(500, "Internal gateway error.", code="internal_error")
            await send_error(send, ingress, internal, request_id, out_headers)
            return
        out_headers += [_JSON, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": out_headers})
        await send({"type": "http.response.body", "body": answer})

    return endpoint


messages_count_tokens = _endpoint(MESSAGES_INGRESS, _messages_count)
responses_input_tokens = _endpoint(RESPONSES_INGRESS, _responses_count)
