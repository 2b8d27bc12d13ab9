"""POST /v1/embeddings: OpenAI's embeddings API as an `Ingress`.

Passed through: each candidate (an offer of `kind: embedding` whose backend serves
`embeddings` natively; routing gathers no other) gets the client's body with its own model
id, and the client gets the upstream's answer as it came (`encoding_format: base64` vectors
untouched), but for float lists answering a request for base64, which are encoded so.
Routed, limited, retried and accounted like chat (`endpoint: embeddings` in the ledger,
prompt tokens priced at the offer's `input_price`, rankings category `embeddings`).
Never streamed; errors in OpenAI's shape. `usage: {"include": true}` adds `usage.cost`
(`gateway.api.usage_cost`); the field is never sent upstream.
"""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.edge import Ingress, IngressRequest, StreamTranslator
from gateway.api.ingress import handle
from gateway.api.usage_cost import priced_embeddings, wants_cost
from gateway.backends.base import EMBEDDINGS, Backend
from gateway.config.snapshot import Offer
from gateway.protocol.embeddings import (
    EmbeddingsRequest,
    answer_bytes,
    parse_embeddings_request,
    upstream_embeddings_payload,
)
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.formats import UpstreamCall
from gateway.proxy.openai_formats import EmbeddingsFormat


class EmbeddingsIngress(Ingress):
    endpoint = "embeddings"

    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        request = parse_embeddings_request(body)
        if "usage" in request.payload and wants_cost(request.payload):  # OpenRouter's usage accounting
            request.priced = True
        return request

    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        if "embeddings" not in offer.apis or not isinstance(request, EmbeddingsRequest):
            return None  # no translation exists: only a backend serving /embeddings can answer
        # One vector per input is owed: an answer with fewer (or more) fails the attempt.
        # Float lists answering a request for base64 are encoded for the client (`body`).
        answer = EmbeddingsFormat(vectors=len(request.inputs), base64=request.encoding_format == "base64")
        return UpstreamCall(EMBEDDINGS, upstream_embeddings_payload(request, offer.upstream_id), answer)

    def answer_bound(self, request: IngressRequest, configured: int) -> int:
        # A valid answer grows with the batch: 2,048 float vectors of 3,072 dimensions are
        # about 130 MB of JSON, which OpenAI sends. Bounded by what this request asked for.
        if isinstance(request, EmbeddingsRequest):
            return max(configured, answer_bytes(request))
        return configured

    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        if isinstance(request, EmbeddingsRequest) and request.priced:
            return priced_embeddings(opened)
        if opened.answer is not None:  # its float lists encoded as the base64 asked for
            return orjson.dumps(opened.answer)
        return opened.body

    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        raise TypeError("embeddings are never streamed")  # the routing view never asks for a stream

    def error(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return exc.status, exc.headers, orjson.dumps(exc.body())


EMBEDDINGS_INGRESS = EmbeddingsIngress()


async def embeddings(scope: Scope, receive: Receive, send: Send) -> None:
    await handle(scope, receive, send, EMBEDDINGS_INGRESS)
