"""Adapter for every OpenAI-compatible upstream: vLLM, OpenRouter, DeepSeek, Moonshot, Zhipu,
DashScope, MiniMax, Groq, Together, Fireworks, or any `openai`-type server.

Bytes pass through: the payload is serialised once and the answer is relayed as received.
Calls go through one pooled `aiohttp.ClientSession` per backend, driven directly: URLs are
built once per endpoint, headers are plain strings, and the answer is read from aiohttp's
stream without a request/response model in between. Profiled under wrk, httpx's models
(even over its aiohttp transport) were most of the gateway's cost per call (see `make
bench` and issue 14). httpx remains for what is not per call: the health probe.

Every exception the HTTP client can raise, at any point of the call, leaves this module as
an `UpstreamError` subclass (`gateway.backends.errors`: unreachable, first-byte or idle
timeout, protocol error, broken stream: `transport_failure`; a non-2xx status:
`status_error`), so the fallback loop and the relay never see aiohttp's exception tree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import orjson
from yarl import URL

from gateway.backends.base import (
    CHAT_COMPLETIONS,
    Backend,
    UpstreamRequest,
    UpstreamResponse,
    looks_like_context_overflow,
    response_too_large,
)
from gateway.backends.errors import (
    FirstByteTimeout,
    StreamBroken,
    StreamIdleTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamUnreachable,
    status_error,
)
from gateway.config.schema import BackendConfig
from gateway.config.vendors import VENDORS

_MAX_ERROR_BODY = 64 * 1024


def transport_failure(exc: BaseException, backend: str, answering: bool) -> UpstreamError:
    """What an HTTP client exception means for the call, as an `UpstreamError` subclass.

    `answering`: the upstream had already begun its 2xx answer (a failure mid-body).
    """
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"{backend}: cannot reach upstream ({name})")
    if isinstance(exc, TimeoutError):  # aiohttp's per-read timeout (ServerTimeoutError)
        if answering:
            return StreamIdleTimeout(f"{backend}: upstream stalled mid-answer ({name})")
        return FirstByteTimeout(f"{backend}: upstream sent no answer in time ({name})")
    if answering:
        return StreamBroken(f"{backend}: upstream broke off mid-answer ({name})")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return UpstreamProtocolError(f"{backend}: upstream answered badly ({name})")
    return UpstreamUnreachable(f"{backend}: cannot reach upstream ({name})")


class AiohttpUpstreamResponse(UpstreamResponse):
    """A 2xx answer as aiohttp delivers it: bytes as they arrive, nothing parsed."""

    def __init__(self, response: aiohttp.ClientResponse, backend: str, max_bytes: int) -> None:
        self._response = response
        self._backend = backend
        self.status = response.status
        self.media_type = response.headers.get("content-type", "application/json").partition(";")[0].strip()
        self.max_bytes = max_bytes

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except Exception as exc:
            raise transport_failure(exc, self._backend, answering=True) from None

    async def aread(self) -> bytes:
        """The whole body, read straight from aiohttp's stream (no generator per chunk)."""
        response = self._response
        limit = self.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise response_too_large(limit)  # refused unread: aclose() drops the connection
        content = response.content
        parts = []
        size = 0
        try:
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise response_too_large(limit)
                parts.append(chunk)
        except UpstreamError:
            raise
        except Exception as exc:
            raise transport_failure(exc, self._backend, answering=True) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def stream_started(self, idle_s: float) -> None:
        # aiohttp re-arms its read timer on every packet anyway (`sock_read`); changing the
        # limit it re-arms with, and re-arming now, makes the idle limit free per chunk.
        connection = self._response.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.read_timeout = idle_s
            connection.protocol.start_timeout()

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # read whole: the connection goes back to the pool
        else:
            response.close()  # abandoned mid-body (client left, cap passed): the upstream sees it end


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: rare from LLM APIs, ignored rather than mis-parsed


class OpenAICompatBackend(Backend):
    def __init__(self, name: str, config: BackendConfig) -> None:
        super().__init__(name, config)
        vendor = VENDORS[config.type]
        self.base_url = (config.base_url or vendor.base_url or "").rstrip("/")
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **vendor.headers,
            **config.headers,
        }
        if config.api_key:
            headers.update(self.auth_headers(config.api_key))
        self._headers = headers
        # connect: reaching the upstream; sock_read: the longest silence while it answers.
        # The call's overall deadline is the fallback loop's (gateway.proxy.attempts).
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout_s, sock_read=config.timeout_s
        )
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the loop
        self._urls: dict[str, URL] = {}  # endpoint path -> parsed URL (paths come from code: bounded)
        self._health_client: httpx.AsyncClient | None = None
        root = self.base_url.removesuffix("/v1") if vendor.health_at_root else self.base_url
        self.health_url = f"{root}{vendor.health_path}" if vendor.health_path else None

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def upstream_path(self, path: str) -> str:
        """Where an OpenAI endpoint lives on this upstream (the same path for OpenAI's protocol)."""
        return path

    def _session_for_calls(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.config.max_connections, limit_per_host=0)
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing to keep between calls: skip the jar
                trust_env=False,
            )
        return session

    def url_for(self, path: str) -> URL:
        """The upstream URL an endpoint's calls go to (parsed once per path)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(f"{self.base_url}{self.upstream_path(path)}")
        return url

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        response = await self.post(orjson.dumps(request.payload), request.headers, request.path)
        return AiohttpUpstreamResponse(response, self.name, request.max_response_bytes)

    async def post(
        self, body: bytes, extra_headers: dict[str, str] | None = None, path: str = CHAT_COMPLETIONS
    ) -> aiohttp.ClientResponse:
        """POST to the endpoint; return the 2xx response unread, or raise a classified UpstreamError."""
        try:
            response = await self._session_for_calls().request(
                "POST", self.url_for(path), data=body, headers=extra_headers or None
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise transport_failure(exc, self.name, answering=False) from None
        if response.status >= 300:
            try:
                body = await self._read_bounded(response)
            finally:
                response.close()
            status = response.status
            raise status_error(
                f"{self.name}: upstream answered {status}",
                status,
                body,
                retry_after_seconds(response.headers.get("retry-after")),
                context_overflow=looks_like_context_overflow(body),
            )
        return response

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        out = bytearray()
        try:
            while len(out) <= _MAX_ERROR_BODY:
                chunk = await response.content.readany()
                if not chunk:
                    break
                out += chunk
        except Exception:
            pass  # a broken error body is still the status it came with
        body = bytes(out[:_MAX_ERROR_BODY])
        # Upstreams sometimes quote the key they were sent; it must never reach a client.
        key = self.config.api_key
        return body.replace(key.encode(), b"[redacted]") if key and len(key) >= 8 else body

    async def check_health(self) -> bool:
        if not self.health_url:
            return True
        if self._health_client is None:
            self._health_client = httpx.AsyncClient(headers=self._headers)
        try:
            response = await self._health_client.get(self.health_url, timeout=self.config.health_check.timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._health_client is not None:
            await self._health_client.aclose()
