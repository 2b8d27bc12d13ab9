"""Adapter for every OpenAI-compatible upstream: vLLM, OpenRouter, DeepSeek, Moonshot, Zhipu,
DashScope, MiniMax, Groq, Together, Fireworks, or any `openai`-type server.

Bytes pass through: the payload is serialised once and the answer is relayed as received.
Calls go through the gateway's own HTTP/1.1 client, one connection pool per backend
(`gateway.backends.http1`): the request is one prebuilt buffer (request line and static
headers made once per endpoint), and of the answer only the status and three headers are
read before its bytes are handed on. Profiled under wrk, first httpx's models and then
aiohttp's client were most of the gateway's cost per call (issue 14; figures in http1's
docstring). httpx remains for what is not per call: the health probe.

Every failure, at any point of the call, leaves this module as an `UpstreamError` subclass
(`gateway.backends.errors`: unreachable, first-byte or idle timeout, protocol error, broken
stream, raised by the client; a non-2xx status: `status_error`, here), so the fallback loop
and the relay never see a transport's exceptions.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Callable
from datetime import UTC

import httpx

from gateway.backends.base import (
    CHAT_COMPLETIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    Backend,
    UpstreamRequest,
    UpstreamResponse,
    encode_payload,
    looks_like_context_overflow,
    looks_like_unsupported_feature,
)
from gateway.backends.errors import status_error
from gateway.backends.http1 import Http1Client, Http1Response
from gateway.config.schema import BackendConfig
from gateway.config.vendors import VENDORS

MAX_ERROR_BODY = 64 * 1024
MAX_RETRY_AFTER_S = 3600.0  # an upstream's wait taken at most this long (a candidate cools for it)


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """The seconds an upstream's `Retry-After` asks for, within [0, MAX_RETRY_AFTER_S]:
    `inf` or `1e400` (which float() reads as infinite) as the longest, `nan` as none.

    Either of RFC 9110's forms: delay-seconds, or an HTTP-date (`Wed, 21 Oct 2026 07:28:00
    GMT`: what proxies and maintenance pages in front of a model server send), read as the
    seconds from `now` until it (a date passed: 0). Ignored, that date made the 429 one
    without a wait: the candidate was left at once and not put at the back of the list."""
    if not value:
        return None
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until_date(value, now)
    if seconds is None or seconds != seconds:  # not a number nor a date; nan
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _seconds_until_date(value: str, now: Callable[[], float]) -> float | None:
    """An HTTP-date's distance from `now`, or None when `value` is not a date."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now()


class OpenAICompatBackend(Backend):
    # The TLS context of https upstreams; None: `ssl.create_default_context()`, made once per
    # backend. Tests set it to trust a local CA.
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, name: str, config: BackendConfig) -> None:
        super().__init__(name, config)
        vendor = VENDORS[config.type]
        self.base_url = (config.base_url or vendor.base_url or "").rstrip("/")
        headers = {
            "content-type": "application/json",
            "accept": "*/*",
            "accept-encoding": "identity",
            "user-agent": "open-model-gateway",
            **vendor.headers,
            **config.headers,
        }
        if config.api_key:
            headers.update(self.auth_headers(config.api_key))
        self._headers = headers
        self._client: Http1Client | None = None  # made on first use, inside the loop
        self._health_client: httpx.AsyncClient | None = None
        root = self.base_url.removesuffix("/v1") if vendor.health_at_root else self.base_url
        self.health_url = f"{root}{vendor.health_path}" if vendor.health_path else None

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def upstream_path(self, path: str) -> str:
        """Where an OpenAI endpoint lives on this upstream (the same path for OpenAI's protocol)."""
        return path

    def client(self) -> Http1Client:
        """The backend's connection pool. connect_timeout_s: reaching the upstream; timeout_s:
        the longest silence while it answers (its head included). The call's overall deadline
        is the fallback loop's (gateway.proxy.attempts)."""
        client = self._client
        if client is None:
            config = self.config
            client = self._client = Http1Client(
                self.name,
                self.base_url,
                self._headers,
                max_connections=config.max_connections,
                connect_timeout_s=config.connect_timeout_s,
                read_timeout_s=config.timeout_s,
                ssl_context=self.ssl_context,
            )
        return client

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = encode_payload(request.payload)
        return await self.post(body, request.headers, request.path, request.max_response_bytes)

    async def post(
        self,
        body: bytes,
        extra_headers: dict[str, str] | None = None,
        path: str = CHAT_COMPLETIONS,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> Http1Response:
        """POST to the endpoint; return the 2xx response unread, or raise a classified UpstreamError."""
        client = self._client or self.client()
        response = await client.post(self.upstream_path(path), body, extra_headers, max_bytes)
        status = response.status
        if status >= 300:
            # Upstreams sometimes quote the key they were sent; it must never reach a client,
            # not even its head cut at the bound: read past the bound by the key's length,
            # redact, then cut.
            key = self.config.api_key
            secret = key.encode() if key and len(key) >= 8 else b""
            try:
                error_body = await response.read_bounded(MAX_ERROR_BODY + len(secret))
            finally:
                await response.aclose()
            if secret:
                error_body = error_body.replace(secret, b"[redacted]")
            error_body = error_body[:MAX_ERROR_BODY]
            message = f"{self.name}: upstream answered {status}"
            if status < 400:  # not followed: see gateway.backends.errors.Redirected
                message += f", redirecting to {response.location!r}: check the backend's base_url"
            raise status_error(
                message,
                status,
                error_body,
                retry_after_seconds(response.retry_after),
                context_overflow=looks_like_context_overflow(error_body),
                unsupported=looks_like_unsupported_feature(error_body, status),
            )
        return response

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
        if self._client is not None:
            await self._client.aclose()
        if self._health_client is not None:
            await self._health_client.aclose()
