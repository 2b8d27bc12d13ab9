"""Adapter for every OpenAI-compatible upstream: vLLM, OpenRouter, DeepSeek, Moonshot, Zhipu,
DashScope, MiniMax, Groq, Together, Fireworks, or any `openai`-type server.

Bytes pass through: the payload is serialised once and the answer is relayed as received.
httpx drives the calls over the aiohttp transport, whose connection pool holds up under
concurrency where httpx's default transport does not (see the README's performance notes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from gateway.backends.base import Backend, UpstreamError, UpstreamRequest, UpstreamResponse, looks_like_context_overflow
from gateway.backends.registry import VENDORS
from gateway.config.schema import BackendConfig

_MAX_ERROR_BODY = 64 * 1024


class HttpUpstreamResponse(UpstreamResponse):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.media_type = response.headers.get("content-type", "application/json").split(";")[0].strip()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamError("timeout", f"upstream stalled mid-answer: {exc}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError("protocol", f"upstream broke off mid-answer: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._response.aclose()


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: rare from LLM APIs, ignored rather than mis-parsed


class OpenAICompatBackend(Backend):
    # Where chat calls go, relative to base_url; adapters for other protocols override it.
    chat_path = "/chat/completions"

    def __init__(self, name: str, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
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
        self._total_timeout = config.timeout_s
        limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        # `transport` is a seam for tests (respx, httpx.MockTransport).
        self._transport = transport or AiohttpTransport(limits=limits)
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=self._transport
        )
        # The hot path builds requests from these and hands them to the transport directly:
        # AsyncClient.send's auth, redirect, cookie and URL-merging layers cost more than the
        # whole relay and do nothing an LLM API call needs.
        self._url = httpx.URL(f"{self.base_url}{self.chat_path}")
        self._headers = list(httpx.Headers(headers).raw)
        self._timeout = {"timeout": timeout.as_dict()}
        root = self.base_url.removesuffix("/v1") if vendor.health_at_root else self.base_url
        self.health_url = f"{root}{vendor.health_path}" if vendor.health_path else None

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return HttpUpstreamResponse(await self.post(orjson.dumps(request.payload), request.headers))

    async def post(self, body: bytes, extra_headers: dict[str, str] | None = None) -> httpx.Response:
        """POST to `chat_path`; return the 2xx response unread, or raise a classified UpstreamError."""
        headers = self._headers
        if extra_headers:
            headers = headers + [(k.encode(), v.encode()) for k, v in extra_headers.items()]
        http_request = httpx.Request("POST", self._url, headers=headers, content=body, extensions=self._timeout)
        # The call's overall deadline (first content for streams, the whole answer otherwise)
        # is the fallback loop's (gateway.proxy.attempts); httpx enforces connect and read.
        try:
            response = await self._transport.handle_async_request(http_request)
        except httpx.TimeoutException as exc:
            # aiohttp reports refused connections as a connect *timeout*; both mean: not reachable.
            kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "timeout"
            raise UpstreamError(kind, f"{self.name}: {kind} failure ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise UpstreamError("connect", f"{self.name}: cannot reach upstream ({type(exc).__name__})") from None
        if response.status_code >= 300:
            try:
                body = await self._read_bounded(response)
            finally:
                await response.aclose()
            status = response.status_code
            kind = "context_length" if status in (400, 413, 422) and looks_like_context_overflow(body) else "status"
            raise UpstreamError(
                kind,
                f"{self.name}: upstream answered {status}",
                status=status,
                body=body,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        return response

    async def _read_bounded(self, response: httpx.Response) -> bytes:
        out = bytearray()
        try:
            async for chunk in response.aiter_raw():
                out += chunk
                if len(out) > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        body = bytes(out[:_MAX_ERROR_BODY])
        # Upstreams sometimes quote the key they were sent; it must never reach a client.
        key = self.config.api_key
        return body.replace(key.encode(), b"[redacted]") if key and len(key) >= 8 else body

    async def check_health(self) -> bool:
        if not self.health_url:
            return True
        try:
            response = await self._client.get(self.health_url, timeout=self.config.health_check.timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    async def aclose(self) -> None:
        await self._client.aclose()
