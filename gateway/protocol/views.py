"""Any ingress API's request as the chat request routing reads (its "routing view").

Routing decides on a chat-completions request whatever API the client called: Messages and
Responses bodies are translated to chat (`messages_to_chat`, `responses_to_chat`), embeddings
and legacy completions have their own views (`protocol.embeddings`, `protocol.completions`).
`POST /v1/route/explain?endpoint=...` and `gateway explain --endpoint` use this to show the
decision the endpoint itself would make. (The endpoints route a request that may be passed
through on a view of its body, `messages_view` / `responses_view`, which gives routing the
same facts without translating it: tests compare the two on every sample.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.protocol.chat import ChatRequest, owned_fields, parse_chat_request
from gateway.protocol.completions import parse_completions_request
from gateway.protocol.embeddings import parse_embeddings_request
from gateway.protocol.errors import invalid_request
from gateway.protocol.messages import messages_to_chat
from gateway.protocol.responses import responses_to_chat

ENDPOINTS = ("chat", "messages", "responses", "completions", "embeddings")


def _json(body: bytes) -> Any:
    if not body:
        raise invalid_request("The request body is empty.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}.") from None


def _translated(translate: Callable[[Any], dict[str, Any]], ceiling: bool = False) -> Callable[[bytes], ChatRequest]:
    """`ceiling`: the translated `max_tokens` is Anthropic's ceiling, not a demand, and routing
    takes it as `api/messages.py` does (else Claude Code's 32000 filters out every model with
    a smaller context, which the endpoint itself would use)."""

    def view(body: bytes) -> ChatRequest:
        payload = _json(body)
        chat = translate(payload)
        # OpenRouter-style routing fields apply on every ingress (as `api.messages` and
        # `api.responses` carry them into what they route on).
        owned = owned_fields(payload) if isinstance(payload, dict) else None
        if owned is not None:
            chat.update(owned)
        limit = chat.pop("max_tokens", None) if ceiling else None
        request = parse_chat_request(orjson.dumps(chat))
        if limit is not None:
            request.completion_ceiling = limit
        return request

    return view


_VIEWS: dict[str, Callable[[bytes], ChatRequest]] = {
    "chat": parse_chat_request,
    "messages": _translated(messages_to_chat, ceiling=True),
    "responses": _translated(responses_to_chat),
    "completions": lambda body: parse_completions_request(body).chat,
    "embeddings": lambda body: parse_embeddings_request(body).chat,
}


def routing_view(endpoint: str, body: bytes) -> ChatRequest:
    """The chat request routing reads for `body` sent to `endpoint`; a 400 for an unknown endpoint."""
    view = _VIEWS.get(endpoint)
    if view is None:
        raise invalid_request(f"`endpoint` must be one of {', '.join(ENDPOINTS)}; got {endpoint!r}.", "endpoint")
    return view(body)
