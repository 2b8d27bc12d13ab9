"""The reference a gateway is held against: a bare pass-through proxy and nothing else.

Starlette + httpx over the aiohttp transport, forwarding bytes to UPSTREAM. No routing, no
accounting, no metrics: the floor a Python proxy reaches on this machine.
"""

import os

import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:18001")
_client: httpx.AsyncClient | None = None


async def chat(request: Request) -> Response:
    global _client  # a benchmark fixture, not product code: one lazily built client
    if _client is None:
        _client = httpx.AsyncClient(base_url=UPSTREAM, timeout=60, transport=AiohttpTransport())
    body = await request.body()
    upstream = await _client.send(
        _client.build_request(
            "POST", "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        ),
        stream=True,
    )
    if upstream.headers.get("content-type", "").startswith("text/event-stream"):

        async def relay():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()

        return StreamingResponse(relay(), status_code=upstream.status_code, media_type="text/event-stream")
    data = await upstream.aread()
    await upstream.aclose()
    return Response(data, status_code=upstream.status_code, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
