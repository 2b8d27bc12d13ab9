"""Adapter for Anthropic's Messages API (`type: anthropic`).

A Messages request from a Messages client (`UpstreamRequest.path` `/messages`) is posted
as is and its answer relayed untouched. Chat-completions requests are translated: the
request to a Messages call (`anthropic_translate`), and the answer back: a Message to a
`chat.completion`, Messages SSE events to `chat.completion.chunk` events ending in
`data: [DONE]` (`anthropic_stream`). Unlike OpenAI-compatible upstreams the bytes cannot pass through, so every
event is parsed here; the HTTP side (pooling, timeouts, error classification) is
OpenAI-compatible's, reached through its `upstream_path` and `auth_headers` seams.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.backends.anthropic_ids import with_anthropic_tool_ids
from gateway.backends.anthropic_stream import StreamTranslator
from gateway.backends.anthropic_thinking import (
    UnboundSignatures,
    asked_again,
    bound_to_drop,
    drops_unbound,
    refusal_reason,
    refused_binding,
    replayable,
    with_binding_beta,
)
from gateway.backends.anthropic_translate import (
    UnsupportedRequest,
    openai_error,
    to_chat_completion,
    to_messages_request,
)
from gateway.backends.base import CHAT_COMPLETIONS, MESSAGES, UpstreamRequest, UpstreamResponse, encode_payload
from gateway.backends.errors import (
    ClientRejected,
    ContextTooLong,
    MalformedAnswer,
    UpstreamError,
    UpstreamStatusError,
    status_error,
)
from gateway.backends.http1 import Http1Response
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.config.schema import BackendConfig
from gateway.protocol.translation import MALFORMED

log = logging.getLogger("gateway.backends")
# Anthropic's 400s about thinking blocks are answered by asking again with less (each time
# strictly less: `anthropic_thinking.asked_again`), this many times at most.
_ASKED_AGAIN_AT_MOST = 2

# Anthropic's 400 when input plus max_tokens overflow the window, in words the shared
# context-overflow check does not know.
_CONTEXT_MARKERS = (b"prompt is too long", b"exceed context limit", b"context window")


class AnthropicResponse(UpstreamResponse):
    """A Messages API answer, read and handed on in OpenAI's wire format."""

    def __init__(self, response: Http1Response, stream: bool, include_usage: bool) -> None:
        self._response = response
        self._stream = stream
        self._include_usage = include_usage
        self.status = response.status
        self.media_type = "text/event-stream" if stream else "application/json"
        self.max_bytes = response.max_bytes

    async def aread(self) -> bytes:
        if self._stream:
            return await super().aread()
        return self._translate(await self._response.aread())  # the size cap applies to Anthropic's bytes

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if not self._stream:
            yield self._translate(await self._response.aread())
            return
        translator = StreamTranslator(self._include_usage)
        async for chunk in self._response.aiter_bytes():
            out = translator.feed(chunk)
            if out:
                yield out
        tail = translator.finish()
        if tail:
            yield tail

    @staticmethod
    def _translate(body: bytes) -> bytes:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedAnswer("anthropic upstream answered with a body that is not JSON") from None
        if not isinstance(message, dict):
            raise MalformedAnswer("anthropic upstream answered with a body that is not a message")
        try:
            return orjson.dumps(to_chat_completion(message))
        except MALFORMED:
            # A member that is not what a Message holds (content not a list of blocks, usage
            # not an object): the backend's malformed answer, as an OpenAI-compatible
            # backend's 200 that is not a chat completion is (the next candidate, no bill).
            raise MalformedAnswer("anthropic upstream answered with a body that is not a message") from None

    def stream_started(self, idle_s: float) -> None:
        self._response.stream_started(idle_s)

    async def aclose(self) -> None:
        await self._response.aclose()


class AnthropicBackend(OpenAICompatBackend):
    def __init__(self, name: str, config: BackendConfig) -> None:
        super().__init__(name, config)
        # Thinking blocks this backend refused as bound to another prefix: a request that
        # sends one back again asks for `drop_block` up front (`anthropic_thinking`).
        self.unbound = UnboundSignatures()

    def upstream_path(self, path: str) -> str:
        return "/messages"  # every endpoint this adapter serves is translated to a Messages call

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.path == MESSAGES:
            # Native: a Messages body from a Messages client, posted as is (but for thinking
            # blocks Anthropic would refuse: `anthropic_thinking`), answered in Anthropic's
            # own bytes (read by `gateway.proxy.messages_format`).
            return await self._messages(request.payload, request.headers, request.max_response_bytes)
        if request.path != CHAT_COMPLETIONS:
            raise ClientRejected(
                f"{self.name}: {request.path} has no Anthropic translation",
                404,
                orjson.dumps({"error": {"message": f"{request.path} is not served by this backend"}}),
            )
        try:
            body = to_messages_request(request.payload, request.offer.spec.max_output_tokens)
        except UnsupportedRequest as exc:
            error = {
                "message": str(exc),
                "type": "invalid_request_error",
                "param": exc.param,
                "code": "unsupported_by_backend",
            }
            raise ClientRejected(f"{self.name}: {exc}", 400, orjson.dumps({"error": error})) from None
        # The translation carries the signed thinking a chat client sent back (its
        # `reasoning_details`), which Anthropic may refuse as a native body's: the same rules.
        response = await self._messages(body, request.headers, request.max_response_bytes)
        include_usage = bool((request.payload.get("stream_options") or {}).get("include_usage"))
        return AnthropicResponse(response, request.stream, include_usage)

    async def _messages(self, body: dict[str, Any], headers: dict[str, str], max_bytes: int) -> Http1Response:
        """POST /messages with the thinking blocks Anthropic will take back (`anthropic_thinking`),
        asked again after its 400 for those it will not, and tool ids in its alphabet
        (`anthropic_ids`); any other failure in OpenAI's terms."""
        payload = replayable(with_anthropic_tool_ids(body))
        if self.unbound and self.unbound.carried_by(payload):
            payload, headers = bound_to_drop(payload, headers, self._headers.get("anthropic-beta"))
        asked = 0
        while True:
            try:
                return await self.post(encode_payload(payload), headers, MESSAGES, max_bytes)
            except UpstreamError as exc:
                refusal = exc.body if isinstance(exc, ClientRejected) and exc.status == 400 else b""
                again = asked_again(payload, refusal) if refusal and asked < _ASKED_AGAIN_AT_MOST else None
                if again is None:
                    raise _in_openai_terms(exc) from None
            asked += 1
            if refused_binding(refusal):
                self.unbound.remember(payload, refusal)
            dropping = drops_unbound(again) and not drops_unbound(payload)
            if dropping:
                headers = with_binding_beta(headers, self._headers.get("anthropic-beta"))
            log.info(
                "%s refused the thinking blocks it was sent back (%s): asked again %s",
                self.name,
                refusal_reason(refusal),
                "with drop_block" if dropping else "with less",
            )
            payload = again


def _in_openai_terms(error: UpstreamError) -> UpstreamError:
    """The same failure with an OpenAI-shaped body, and context overflow recognised."""
    if not error.body:
        return error
    try:
        parsed = orjson.loads(error.body)
    except orjson.JSONDecodeError:
        return error
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
        return error
    if not isinstance(error, UpstreamStatusError) or error.status is None:
        return error
    overflow = isinstance(error, ContextTooLong) or (
        error.status in (400, 413) and any(m in error.body[:4096].lower() for m in _CONTEXT_MARKERS)
    )
    body = orjson.dumps({"error": {**openai_error(parsed["error"]), "code": None}})
    return status_error(error.message, error.status, body, error.retry_after, context_overflow=overflow)
