"""The built-in `mock` backend: OpenAI-shaped answers synthesised in-process.

It lets a fresh gateway answer out of the box and lets tests and demos run without any
upstream. It serves `/chat/completions`, legacy `/completions` (streamed or not) and
`/embeddings` (vectors of the offer's `dimensions`, default 1536, or the request's). What it
answers (tool calls, JSON for a schema, n, max_tokens, stop) is decided in `mock_answers`;
this module turns the answer into wire bytes, vLLM's fields included (a choice's
`stop_reason` names the stop string that ended it). Token counts are realistic
(prompt estimated like the router does, completion as generated); `delay_ms` and
`tokens_per_second` simulate a model's time to first token and generation speed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.backends.base import COMPLETIONS, EMBEDDINGS, Backend, UpstreamRequest, UpstreamResponse
from gateway.backends.errors import status_error
from gateway.backends.mock_answers import (
    DEFAULT_DIMENSIONS,
    Answer,
    Choice,
    answer,
    embeddings_response,
    text_completion,
)
from gateway.protocol.errors import GatewayError, invalid_request
from gateway.protocol.tokens import estimate_prompt_tokens, estimate_text_tokens


class MockResponse(UpstreamResponse):
    def __init__(self, backend: MockBackend, request: UpstreamRequest) -> None:
        self._backend = backend
        self._payload = request.payload
        self._stream = request.stream
        self.media_type = "text/event-stream" if request.stream else "application/json"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        config = self._backend.config
        payload = self._payload
        reply = answer(payload, config.completion_tokens)  # what to say: see mock_answers
        prompt_tokens = estimate_prompt_tokens(payload)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": prompt_tokens + reply.completion_tokens,
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
                await asyncio.sleep(pace * reply.completion_tokens)
            choices = [_whole(i, choice) for i, choice in enumerate(reply.choices)]
            yield orjson.dumps({**base, "object": "chat.completion", "choices": choices, "usage": usage})
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        for i, choice in enumerate(reply.choices):
            first = {"role": "assistant", "content": None if choice.tool_calls else ""}
            yield _event({**chunk, "choices": [_delta(i, first)]})
            for piece in _pieces(choice):
                if pace:
                    await asyncio.sleep(pace)
                yield _event({**chunk, "choices": [_delta(i, piece)]})
            yield _event({**chunk, "choices": [_finish(i, choice)]})
        if (payload.get("stream_options") or {}).get("include_usage"):
            yield _event({**chunk, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


def _whole(index: int, choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content}
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in choice.tool_calls
        ]
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": choice.finish_reason,
        "stop_reason": choice.stop_reason,
    }


def _pieces(choice: Choice) -> list[dict[str, Any]]:
    """The deltas a choice streams as: a word at a time, or a tool call's head then its arguments."""
    if choice.tool_calls:
        pieces = []
        for position, call in enumerate(choice.tool_calls):
            head = {
                "index": position,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            pieces.append({"tool_calls": [head]})
            pieces.append({"tool_calls": [{"index": position, "function": {"arguments": call.arguments}}]})
        return pieces
    words = (choice.content or "").split(" ")
    return [{"content": word if i == 0 else " " + word} for i, word in enumerate(words) if word or i == 0]


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


def _finish(index: int, choice: Choice) -> dict[str, Any]:
    """A streamed choice's last chunk: vLLM's carries the matched stop string in `stop_reason`."""
    return {
        "index": index,
        "delta": {},
        "logprobs": None,
        "finish_reason": choice.finish_reason,
        "stop_reason": choice.stop_reason,
    }


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class MockEmbeddings(UpstreamResponse):
    """An embeddings answer, computed when the call is made (a bad request fails it with a
    400, as a real upstream's would)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body


# Choices in one completions answer (prompts in a batch times `n`), past which the mock
# answers 400: each is built and held whole, so a 100 KB batch of short prompts with n=128
# (2.5 million choices) cost 650 MB and seconds of the event loop, and the largest body the
# gateway takes would have run it out of memory.
MAX_COMPLETION_CHOICES = 2048


class MockCompletions(UpstreamResponse):
    """A legacy text completion: `text_completion` objects, one JSON body or SSE chunks."""

    def __init__(self, backend: MockBackend, request: UpstreamRequest) -> None:
        self._backend = backend
        self._payload = request.payload
        self._stream = request.stream
        self.media_type = "text/event-stream" if request.stream else "application/json"
        self.reply: Answer = text_completion(request.payload, backend.config.completion_tokens)
        prompt: Any = request.payload.get("prompt")
        self.prompts: list[Any] = prompt if _is_batch(prompt) else [prompt]

    @property
    def choices(self) -> int:
        return len(self.reply.choices) * len(self.prompts)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        config = self._backend.config
        payload = self._payload
        reply, prompts = self.reply, self.prompts
        prompt_tokens = sum(_prompt_tokens(p) for p in prompts)
        # As OpenAI answers a batch: `n` choices for each prompt, indexed prompt by prompt
        # (choice i answers prompt i // n).
        answers = reply.choices * len(prompts)
        completion_tokens = reply.completion_tokens * len(prompts)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {
            "id": f"cmpl-mock-{uuid.uuid4().hex[:20]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": payload.get("model"),
        }
        if config.delay_ms:
            await asyncio.sleep(config.delay_ms / 1000)
        pace = 1.0 / config.tokens_per_second if config.tokens_per_second else 0.0
        if not self._stream:
            if pace:
                await asyncio.sleep(pace * completion_tokens)
            choices = [_text(i, choice.content or "", choice) for i, choice in enumerate(answers)]
            yield orjson.dumps({**base, "choices": choices, "usage": usage})
            return
        for i, choice in enumerate(answers):
            for piece in _pieces(choice):
                if pace:
                    await asyncio.sleep(pace)
                yield _event({**base, "choices": [_text(i, piece["content"], None)]})
            yield _event({**base, "choices": [_text(i, "", choice)]})
        if (payload.get("stream_options") or {}).get("include_usage"):
            yield _event({**base, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


def _text(index: int, text: str, finished: Choice | None) -> dict[str, Any]:
    """A text completion choice; `finished`: the choice it ends (vLLM's last one names the
    matched stop string in `stop_reason`)."""
    if finished is None:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": None}
    return {
        "text": text,
        "index": index,
        "logprobs": None,
        "finish_reason": finished.finish_reason,
        "stop_reason": finished.stop_reason,
    }


def _is_batch(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int)


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list):
        return len(prompt)
    return estimate_text_tokens(prompt) if isinstance(prompt, str) else 0


class MockBackend(Backend):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.path == EMBEDDINGS:
            dimensions = request.offer.spec.dimensions or DEFAULT_DIMENSIONS
            try:
                body = orjson.dumps(embeddings_response(request.payload, dimensions))
            except GatewayError as exc:
                raise status_error(exc.message, exc.status, orjson.dumps(exc.body())) from None
            if self.config.delay_ms:
                await asyncio.sleep(self.config.delay_ms / 1000)
            return MockEmbeddings(body)
        if request.path == COMPLETIONS:
            completions = MockCompletions(self, request)
            if completions.choices > MAX_COMPLETION_CHOICES:
                refused = invalid_request(
                    f"The mock answers at most {MAX_COMPLETION_CHOICES} choices (prompts times `n`); "
                    f"this request asks for {completions.choices}.",
                    "prompt",
                )
                raise status_error(refused.message, 400, orjson.dumps(refused.body()))
            return completions
        return MockResponse(self, request)
