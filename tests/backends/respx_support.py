"""Building adapters over a respx router instead of the network.

Adapters drive the aiohttp transport, which respx cannot patch, so tests hand the router
to the adapter through its `transport` seam.
"""

from __future__ import annotations

from typing import Any

import httpx
import respx

from gateway.backends.base import Backend, UpstreamRequest
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer


class RouterTransport(httpx.AsyncBaseTransport):
    """Answers from a respx router with an unread body, as a network transport would.

    (httpx.MockTransport and `httpx.Response(content=...)` read the body up front, which
    the adapters' raw streaming of transport responses then refuses.)
    """

    def __init__(self, router: respx.Router) -> None:
        self.router = router

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await self.router.async_handler(request)
        if response.is_stream_consumed:
            stream = httpx.ByteStream(response.content)
            return httpx.Response(response.status_code, headers=response.headers, stream=stream, request=request)
        return response


def backend_over(cls: type[Backend], router: respx.Router, name: str = "b", **config: Any) -> Any:
    return cls(name, BackendConfig(**config), transport=RouterTransport(router))


def request_for(
    payload: dict[str, Any], *, stream: bool = False, max_output_tokens: int | None = None, headers=None
) -> UpstreamRequest:
    offer = Offer(
        "author/model",
        "b",
        payload["model"],
        ModelOffer(upstream_id=payload["model"], max_output_tokens=max_output_tokens),
    )
    return UpstreamRequest(offer, payload, stream, headers or {})


class ChunkedStream(httpx.AsyncByteStream):
    """A response body delivered in the given pieces, optionally failing after them."""

    def __init__(self, pieces: list[bytes], then_raise: Exception | None = None) -> None:
        self.pieces = pieces
        self.then_raise = then_raise

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece
        if self.then_raise is not None:
            raise self.then_raise
