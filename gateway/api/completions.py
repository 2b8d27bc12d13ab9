"""POST /v1/completions: OpenAI's legacy text completions as an `Ingress`.

Code-completion plugins call it (with `suffix` for fill-in-the-middle). There is no faithful
translation to chat, so it is passed through only: routing gathers the chat offers whose
backend serves `completions` natively (`apis:`, defaulted per vendor type), and a route or
model none of whose backends does is a 400 that says so. Each candidate gets the client's
body with its own model id (`suffix`, `echo`, `logprobs`... untouched; a stream asks for
usage, stripped again unless the client asked); the answer, JSON or SSE, is relayed as it
came. Fallback, limits and the ledger (`endpoint: completions`) are chat's, and so is
OpenRouter's usage accounting (`usage: {"include": true}`: the field kept from the backend,
the answer's usage priced, `gateway.api.usage_cost`).
"""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.edge import OPENAI_PASSTHROUGH, Ingress, IngressRequest, StreamTranslator
from gateway.api.ingress import handle
from gateway.api.usage_cost import ask_for_usage, priced_body, priced_stream, wants_cost
from gateway.backends.base import COMPLETIONS, Backend
from gateway.config.snapshot import Offer
from gateway.protocol.completions import CompletionsRequest, parse_completions_request, upstream_completions_payload
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.formats import UpstreamCall
from gateway.proxy.openai_formats import COMPLETIONS as COMPLETIONS_FORMAT

_STREAM = OPENAI_PASSTHROUGH  # the upstream's `text_completion` chunks, forwarded untouched


class CompletionsIngress(Ingress):
    endpoint = "completions"

    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        request = parse_completions_request(body)
        if "usage" in request.payload and wants_cost(request.payload):  # OpenRouter's usage accounting
            ask_for_usage(request.chat)
            request.include_usage = request.chat.include_usage
            request.priced = True
        return request

    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        if "completions" not in offer.apis or not isinstance(request, CompletionsRequest):
            return None
        payload = upstream_completions_payload(request, offer.upstream_id)
        if "usage" in payload:  # OpenRouter's usage accounting, whatever its value: the gateway's field, as chat's
            del payload["usage"]
        return UpstreamCall(COMPLETIONS, payload, COMPLETIONS_FORMAT)

    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        if isinstance(request, CompletionsRequest) and request.priced:
            return priced_body(opened)
        return opened.body

    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        if isinstance(request, CompletionsRequest) and request.priced:
            return priced_stream(opened, _STREAM.broken)
        return _STREAM

    def error(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return exc.status, exc.headers, orjson.dumps(exc.body())


COMPLETIONS_INGRESS = CompletionsIngress()


async def completions(scope: Scope, receive: Receive, send: Send) -> None:
    await handle(scope, receive, send, COMPLETIONS_INGRESS)
