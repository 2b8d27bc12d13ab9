"""The built-in `mock` backend: OpenAI-shaped answers synthesised in-process.

It lets a fresh gateway answer out of the box and lets tests and demos run without any
upstream. Token counts are realistic (prompt estimated like the router does, completion
as generated); `delay_ms` and `tokens_per_second` simulate a model's time to first token
and generation speed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse
from gateway.protocol.tokens import estimate_prompt_tokens

_WORDS = [
    "This",
    "is",
    "a",
    "synthetic",
    "reply",
    "from",
    "the",
    "gateway's",
    "mock",
    "backend,",
    "generated",
    "locally",
    "so",
    "the",
    "gateway",
    "answers",
    "without",
    "any",
    "upstream.",
    "Point",
    "a",
    "real",
    "backend",
    "at",
    "a",
    "model",
    "to",
    "get",
    "real",
    "text.",
]


def _completion_words(payload: dict[str, Any], default: int) -> list[str]:
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens") or default
    count = max(1, min(int(limit), default))
    return [_WORDS[i % len(_WORDS)] for i in range(count)]


class MockResponse(UpstreamResponse):
    def __init__(self, backend: MockBackend, request: UpstreamRequest) -> None:
        self._backend = backend
        self._payload = request.payload
        self._stream = request.stream
        self.media_type = "text/event-stream" if request.stream else "application/json"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        config = self._backend.config
        payload = self._payload
        words = _completion_words(payload, config.completion_tokens)
        prompt_tokens = estimate_prompt_tokens(payload)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        base = {
            "id": f"chatcmpl-mock-{uuid.uuid4().hex[:20]}",
            "created": int(time.time()),
            "model": payload.get("model"),
        }
        if config.delay_ms:
            await asyncio.sleep(config.delay_ms / 1000)
        pace = 1.0 / config.tokens_per_second if config.tokens_per_second else 0.0
        if not self._stream:
            if pace:
                await asyncio.sleep(pace * len(words))
            message = {"role": "assistant", "content": " ".join(words)}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            yield orjson.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        yield _event({**chunk, "choices": [first]})
        for i, word in enumerate(words):
            if pace:
                await asyncio.sleep(pace)
            text = word if i == 0 else " " + word
            yield _event(
                {
                    **chunk,
                    "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
                }
            )
        yield _event({**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        if (payload.get("stream_options") or {}).get("include_usage"):
            yield _event({**chunk, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class MockBackend(Backend):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return MockResponse(self, request)
