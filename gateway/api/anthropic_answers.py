"""Anthropic-shaped answers of the routes outside the Messages ingress: Anthropic's model list
and lookup (`GET /v1/models[/{id}]` with `anthropic-version`), and the paths and methods
under `/v1/messages` the gateway does not serve.

Anthropic's API names every answer's request in a `request-id` header and every error body's
in `request_id`; its SDKs read them (`_request_id`, `APIStatusError.request_id`). The Messages
ingress does so (`Ingress.request_id_header`); these answers take a fresh id the same way,
also sent as the gateway's `x-request-id`, so an error from any Anthropic path is traced alike.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response

from gateway.api.state import AppState
from gateway.protocol.errors import GatewayError
from gateway.protocol.messages_answer import anthropic_error


def request_id_headers(request_id: str) -> dict[str, str]:
    """The headers naming an Anthropic answer's request: Anthropic's and the gateway's."""
    return {"request-id": request_id, "x-request-id": request_id}


def anthropic_answer(state: AppState, body: bytes) -> Response:
    """A JSON answer in Anthropic's API, naming its request."""
    return Response(body, media_type="application/json", headers=request_id_headers(state.request_ids.next()))


def anthropic_error_response(state: AppState, error: GatewayError) -> Response:
    """The error in Anthropic's shape, its request named in the body and the headers, with the
    error's own headers (the failed-auth throttle's 429 carries Retry-After, which the SDKs
    wait by)."""
    request_id = state.request_ids.next()
    status, body = anthropic_error(error, request_id)
    headers = {**error.headers, **request_id_headers(request_id)}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)
