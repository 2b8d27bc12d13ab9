"""The fake upstream's `/v1/embeddings` and legacy `/v1/completions`, as OpenAI shapes them.

Kept apart from `fake_upstream` (which routes to them) so chat's handler stays as it is. They
follow the same `Behaviour` (status and error body, delay, token counts, `send_usage`,
`stream_error_before_content`, `break_after_events`) and record what they received.

Shapes, from OpenAI's API reference:
- embeddings: `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
  "model", "usage": {"prompt_tokens", "total_tokens"}}`; `embedding` is a list of floats, or
  with `encoding_format: "base64"` the base64 of little-endian float32s;
- completions: `{"id": "cmpl-...", "object": "text_completion", "created", "model",
  "choices": [{"text", "index", "logprobs", "finish_reason"}], "usage"}`; streamed, the same
  object per chunk (`finish_reason` null until the last), then with
  `stream_options.include_usage` a chunk with `"choices": []` and the usage, then `[DONE]`;
  as vLLM does, `stream_options.continuous_usage_stats` (with `include_usage`) also puts the
  usage so far on every text chunk. `raw_stream`: exactly those bytes, whatever was asked;
  `hold_after_events`: the stream waits there until the test sets `release`.

`ignore_encoding_format`: embeddings are float lists whatever was asked, as several
OpenAI-compatible servers answer. `raw_body`: either endpoint answers a 200 JSON body of exactly those bytes (not streamed).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

DEFAULT_DIMENSIONS = 3


class _Upstream(Protocol):
    name: str
    behaviour: Any
    received: list[Any]


def vector(index: int, dimensions: int) -> list[float]:
    """The fake's vector for input `index`: exact in float32, so base64 round-trips to it."""
    return [index + (d + 1) / 8 for d in range(dimensions)]


async def _received(upstream: _Upstream, request: Request) -> dict[str, Any] | Response:
    from tests.support.fake_upstream import Received

    b = upstream.behaviour
    body = orjson.loads(await request.body())
    upstream.received.append(Received(body, dict(request.headers)))
    if b.delay_s:
        await asyncio.sleep(b.delay_s)
    if b.status >= 300:
        error = b.error_body or {
            "error": {"message": f"fake upstream says {b.status}", "type": "server_error", "code": None}
        }
        return Response(orjson.dumps(error), status_code=b.status, media_type="application/json", headers=b.headers)
    if b.raw_body is not None:
        return Response(b.raw_body, media_type="application/json", headers=b.headers)
    return body


async def embeddings(upstream: _Upstream, request: Request) -> Response:
    body = await _received(upstream, request)
    if isinstance(body, Response):
        return body
    b = upstream.behaviour
    inputs = body["input"]
    count = 1 if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else len(inputs)
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    data = []
    for index in range(count):
        values = vector(index, dimensions)
        value: Any = values
        if body.get("encoding_format") == "base64" and not b.ignore_encoding_format:
            value = base64.b64encode(struct.pack(f"<{dimensions}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    out: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
    if b.send_usage:
        out["usage"] = {"prompt_tokens": b.prompt_tokens, "total_tokens": b.prompt_tokens}
    return Response(orjson.dumps(out), media_type="application/json", headers=b.headers)


async def completions(upstream: _Upstream, request: Request) -> Response:
    body = await _received(upstream, request)
    if isinstance(body, Response):
        return body
    b = upstream.behaviour
    usage = {
        "prompt_tokens": b.prompt_tokens,
        "completion_tokens": b.completion_tokens,
        "total_tokens": b.prompt_tokens + b.completion_tokens,
    }
    base = {
        "id": f"cmpl-{upstream.name}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
    }
    if not body.get("stream"):
        out: dict[str, Any] = {
            **base,
            "choices": [{"text": b.content, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        }
        if b.send_usage:
            out["usage"] = usage
        return Response(orjson.dumps(out), media_type="application/json", headers=b.headers)
    return StreamingResponse(_stream(b, body, base, usage), media_type="text/event-stream", headers=b.headers)


async def _stream(b: Any, body: dict[str, Any], base: dict[str, Any], usage: dict[str, Any]):
    events: list[bytes] = []
    options = body.get("stream_options") or {}
    include_usage = b.send_usage and options.get("include_usage")
    continuous = include_usage and options.get("continuous_usage_stats")  # vLLM's rule
    if b.stream_error_before_content:
        events.append(_event({"error": {"message": "overloaded", "type": "server_error", "code": 503}}))
    else:
        words = b.content.split(" ")
        for i, word in enumerate(words):
            chunk = {**base, "choices": [_choice(word + " ", None)]}
            if continuous:
                chunk["usage"] = _usage_so_far(usage, i + 1)
            events.append(_event(chunk))
        last = {**base, "choices": [_choice("", "stop")]}
        if continuous:
            last["usage"] = _usage_so_far(usage, len(words))
        events.append(_event(last))
        if include_usage:
            events.append(_event({**base, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
    if b.raw_stream is not None:
        events = list(b.raw_stream)
    for i, event in enumerate(events):
        if b.break_after_events is not None and i >= b.break_after_events:
            raise RuntimeError("fake upstream breaks the stream on purpose")
        if b.chunk_delay_s and i:
            await asyncio.sleep(b.chunk_delay_s)
        if i == b.hold_after_events:
            while not b.release.is_set():
                await asyncio.sleep(0.01)
        yield event


def _usage_so_far(usage: dict[str, Any], words: int) -> dict[str, Any]:
    """A continuous usage count: the prompt's tokens and one completion token per word sent."""
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": words,
        "total_tokens": usage["prompt_tokens"] + words,
    }


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
