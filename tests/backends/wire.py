"""A real HTTP upstream in the test's own event loop, scripted per test, for adapter tests.

The adapters talk to upstreams through their HTTP client on a real socket; these servers answer on a
free local port as a test says (status, headers, body in pieces, a stall, a cut
connection, bytes that are not HTTP), and record what each call carried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.backends.base import UpstreamRequest
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer
from tests.support.ports import free_port


@dataclass
class Call:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    peer: Any = None  # the client's (host, port): calls on one kept-alive connection share it

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    pieces: list[bytes] | None = None  # sent chunked, one write each (instead of `body`)
    then: str | None = None  # after the pieces: "cut" (close the socket mid-body) or "stall"
    delay_s: float = 0.0  # before the status line


class WireUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.answer = Answer()
        self.calls: list[Call] = []
        self._runner: web.AppRunner | None = None

    def respond(self, status: int = 200, json: Any = None, **kwargs: Any) -> None:
        if json is not None:
            kwargs["body"] = orjson.dumps(json)
        self.answer = Answer(status=status, **kwargs)

    async def start(self) -> WireUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # shutdown_timeout: a handler left stalling by its test is cancelled at once on stop.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.calls.append(Call(request.path, headers, await request.read(), peer))
        a = self.answer
        if a.delay_s:
            await asyncio.sleep(a.delay_s)
        if a.pieces is None and a.then is None:
            return web.Response(status=a.status, body=a.body, headers=a.headers)
        response = web.StreamResponse(status=a.status, headers=a.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in a.pieces or []:
            await response.write(piece)
        if a.then == "cut":
            assert request.transport is not None
            request.transport.close()  # the chunked body never ends: the client sees a broken answer
            return response
        if a.then == "stall":
            await asyncio.sleep(3600)
        await response.write_eof()
        return response


class RawUpstream:
    """A TCP server answering every connection with fixed bytes (not necessarily HTTP), then closing."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None

    async def start(self) -> RawUpstream:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            writer.write(self.reply)
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def request_for(
    payload: dict[str, Any],
    *,
    stream: bool = False,
    max_output_tokens: int | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/chat/completions",
    max_response_bytes: int = 32 * 1024 * 1024,
) -> UpstreamRequest:
    offer = Offer(
        "author/model",
        "b",
        payload["model"],
        ModelOffer(upstream_id=payload["model"], max_output_tokens=max_output_tokens),
    )
    return UpstreamRequest(offer, payload, stream, headers or {}, path, max_response_bytes)


def backend_at(cls: type, url: str, name: str = "b", **config: Any) -> Any:
    return cls(name, BackendConfig(base_url=url, **config))
