"""POST /v1/chat/completions: the hot path, the identity `Ingress`.

The request is already what routing reads, the answer already what the client gets: no
translation, the stream relayed byte for byte (`passthrough`), errors in OpenAI's shape.
Everything else, the path every ingress shares, is `gateway.api.ingress.handle`.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway.api.ingress import Ingress, IngressRequest, Parsed, StreamTranslator, handle
from gateway.api.ingress import client_request_id as client_request_id
from gateway.api.ingress import read_body as read_body
from gateway.api.ingress import receive_body as receive_body
from gateway.backends.base import CHAT_COMPLETIONS, Backend, UpstreamError
from gateway.config.snapshot import Offer
from gateway.protocol.chat import parse_chat_request, upstream_payload
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.formats import CHAT, UpstreamCall


class _ChatStream:
    """Chat answers stream as chat chunks: forwarded untouched."""

    passthrough = True

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""

    def broken(self, error: UpstreamError) -> bytes:
        """The SDK's error event: it raises on it instead of taking the stream as complete."""
        event = {
            "error": {
                "message": "The upstream stream broke off.",
                "type": "upstream_error",
                "param": None,
                "code": error.reason,
            }
        }
        return b"data: " + orjson.dumps(event) + b"\n\n"


_STREAM = _ChatStream()  # stateless: one for every request


class ChatIngress(Ingress):
    endpoint = "chat"

    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        chat = parse_chat_request(body)
        return Parsed(chat, chat)

    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        # Every adapter answers chat completions (the Anthropic one by translating).
        return UpstreamCall(CHAT_COMPLETIONS, upstream_payload(request.chat, offer.upstream_id), CHAT)

    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        return opened.body

    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        return _STREAM

    def error(self, exc: GatewayError) -> tuple[int, dict[str, str], bytes]:
        return exc.status, exc.headers, orjson.dumps(exc.body())


CHAT_INGRESS = ChatIngress()


async def chat_completions(scope: Scope, receive: Receive, send: Send) -> None:
    await handle(scope, receive, send, CHAT_INGRESS)


class ChatEndpoint:
    """The route as an ASGI app (Starlette mounts a non-function endpoint as ASGI as-is)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await handle(scope, receive, send, CHAT_INGRESS)


def register(app: FastAPI) -> None:
    endpoint = ChatEndpoint()
    for path in FAST_ROUTES:
        app.router.add_route(path, endpoint, methods=["POST"])


# Served by gateway.api.fastpath ahead of FastAPI's middleware (also registered on the
# FastAPI router, so the paths are listed and reachable however the app is mounted).
FAST_ROUTES = {"/v1/chat/completions": chat_completions, "/chat/completions": chat_completions}
