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
from functools import partial
from typing import Any

import orjson

from gateway.protocol.body import json_text
from gateway.protocol.chat import ChatRequest, owned_fields, parse_chat_request
from gateway.protocol.completions import parse_completions_request
from gateway.protocol.embeddings import parse_embeddings_request
from gateway.protocol.errors import GatewayError, echoed, invalid_request
from gateway.protocol.messages import ANTHROPIC_ONLY, messages_to_chat
from gateway.protocol.messages_view import coarse_prompt, messages_fields
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
        request = parse_chat_request(json_text(chat).encode())
        if limit is not None:
            request.completion_ceiling = limit
        return request

    return view


_messages_translated = _translated(messages_to_chat, ceiling=True)


def _messages(body: bytes) -> ChatRequest:
    """As /v1/messages routes it: on its translation, or, for content only Anthropic's API
    takes (`ANTHROPIC_ONLY`), on the body's coarse facts (the endpoint then asks only the
    candidates serving Messages natively)."""
    try:
        return _messages_translated(body)
    except GatewayError as refused:
        if refused.code != ANTHROPIC_ONLY:
            raise
    payload = _json(body)
    fields = messages_fields(payload)
    if fields is None:  # a malformed field besides: the translation's 400 names it
        return _messages_translated(body)
    limit = fields.pop("max_tokens")
    facts = coarse_prompt(payload, len(body))
    owned = owned_fields(payload)
    if owned is not None:
        fields.update(owned)
    request = ChatRequest(
        None,
        fields["model"],
        bool(fields.get("stream")),
        build=partial(messages_to_chat, payload),  # raises the 400, as for a candidate asked in chat
        fields=fields,
        view=lambda: facts,
    )
    request.completion_ceiling = limit
    return request


_VIEWS: dict[str, Callable[[bytes], ChatRequest]] = {
    "chat": parse_chat_request,
    "messages": _messages,
    "responses": _translated(responses_to_chat),
    "completions": lambda body: parse_completions_request(body).chat,
    "embeddings": lambda body: parse_embeddings_request(body).chat,
}


def routing_view(endpoint: str, body: bytes) -> ChatRequest:
    """The chat request routing reads for `body` sent to `endpoint`; a 400 for an unknown endpoint."""
    view = _VIEWS.get(endpoint)
    if view is None:
        raise invalid_request(
            f"`endpoint` must be one of {', '.join(ENDPOINTS)}; got {echoed(endpoint)!r}.", "endpoint"
        )
    return view(body)
