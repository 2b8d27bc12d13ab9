"""POST /v1/chat/completions: the hot path, the identity `Ingress`.

The request is already what routing reads, the answer already what the client gets: no
translation, the stream relayed byte for byte (`passthrough`), errors in OpenAI's shape.
Everything else, the path every ingress shares, is `gateway.api.ingress.handle`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.edge import OPENAI_PASSTHROUGH, Ingress, IngressRequest, Parsed, StreamTranslator
from gateway.api.ingress import client_request_id as client_request_id
from gateway.api.ingress import handle
from gateway.api.ingress import read_body as read_body
from gateway.api.ingress import receive_body as receive_body
from gateway.api.usage_cost import ask_for_usage, priced_body, priced_stream, wants_cost
from gateway.backends.base import CHAT_COMPLETIONS, Backend
from gateway.config.snapshot import Offer
from gateway.protocol.chat import parse_chat_request, upstream_payload, without_message_fields
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.formats import CHAT, UpstreamCall

_STREAM = OPENAI_PASSTHROUGH  # chat answers stream as chat chunks: forwarded untouched
_COST = object()  # `Parsed.native` of a request that asked for `usage.cost` (gateway.api.usage_cost)


class ChatIngress(Ingress):
    endpoint = "chat"

    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        chat = parse_chat_request(body)
        if "usage" in chat.payload and wants_cost(chat.payload):  # OpenRouter's usage accounting
            ask_for_usage(chat)
            return Parsed(chat, _COST)
        return Parsed(chat, chat)

    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        # Every adapter answers chat completions (the Anthropic one by translating).
        return UpstreamCall(CHAT_COMPLETIONS, self.chat_payload(request, offer), CHAT)

    def chat_payload(self, request: IngressRequest, offer: Offer) -> dict[str, Any]:
        """The client's request as sent, with the backend's model id, both on the first call
        and continuing a broken stream: its messages' reasoning fields are the client's own,
        never adjusted as a translation's are (`with_reasoning_history`), but left out for a
        backend that refuses them (`Offer.refused_message_fields`: Groq)."""
        payload = upstream_payload(request.chat, offer.upstream_id)
        if "usage" in payload:  # OpenRouter's usage accounting, whatever its value: the gateway's field
            del payload["usage"]  # (an upstream that refuses unknown fields would 400 on it)
        if offer.refused_message_fields:
            return without_message_fields(payload, offer.refused_message_fields)
        return payload

    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        if request.native is _COST:
            return priced_body(opened)
        return opened.body

    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        if request.native is _COST:
            return priced_stream(opened, _STREAM.broken)
        return _STREAM

    def error(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return exc.status, exc.headers, orjson.dumps(exc.body())


CHAT_INGRESS = ChatIngress()


# The route's ASGI handler: `handle` itself, not a coroutine awaiting it (one frame less
# per request on the hot path).
chat_completions: Callable[[Scope, Receive, Send], Awaitable[None]] = partial(handle, ingress=CHAT_INGRESS)
