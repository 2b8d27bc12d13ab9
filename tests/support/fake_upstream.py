"""A real HTTP server speaking OpenAI's chat-completions wire format, for tests.

Runs uvicorn in a background thread on a free port. Each instance records what it
received and answers as its `behaviour` says; tests change the behaviour between calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support import fake_endpoints
from tests.support.ports import free_port
from tests.support.threaded_server import ThreadedServer


@dataclass
class Behaviour:
    status: int = 200
    error_body: dict | None = None  # body for non-2xx answers
    delay_s: float = 0.0  # before the first byte
    chunk_delay_s: float = 0.0  # between stream events
    linger_after_stream_s: float = 0.0  # hold the connection open after the last event
    content: str = "Hello from the fake upstream."
    prompt_tokens: int = 11
    completion_tokens: int = 7
    send_usage: bool = True  # include usage (honouring stream_options for streams)
    stream_error_before_content: bool = False  # 200 stream whose first event is an error
    break_after_events: int | None = None  # drop the connection after N stream events
    end_after_events: int | None = None  # end the body cleanly after N stream events (no [DONE] after a cut)
    one_write: bool = False  # the stream's events in one write (read whole by the gateway)
    tool_call: dict | None = None  # answer with this tool call instead of content
    finish_reason: str = "stop"  # of an answer without a tool call (`length`: cut at max_tokens)
    tool_call_content: str | None = None  # the content beside it (Qwen on vLLM: "\n\n" before its call)
    reasoning: str | None = None  # `reasoning_content` before the answer (vLLM/DeepSeek reasoning models)
    # DeepSeek's thinking mode: an assistant message with tool calls and no `reasoning_content`
    # is its 400 (api-docs.deepseek.com "Thinking Mode", quoted in agents' issues).
    thinking_mode: bool = False
    # Groq's strictness: an assistant message with one of these fields is its 400 ("property
    # 'reasoning_content' is unsupported", as quoted in clients' issues).
    refused_message_fields: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)
    cached_tokens: int = 0
    usage: dict | None = None  # the usage object sent as it is (counts as floats, other names)
    # Answers that are not what they claim (hostile or broken upstreams):
    truncate_body: bool = False  # a 200 non-streamed body cut off halfway through its JSON
    raw_stream: list[bytes] | None = None  # a 200 stream of exactly these bytes, whatever was asked
    # completions: a stream waits after this many events until `release` is set (a test acts meanwhile)
    hold_after_events: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    raw_body: bytes | None = None  # embeddings, completions: a 200 JSON body of exactly these bytes, not streamed
    # embeddings: float lists whatever `encoding_format` asks (LM Studio, the Infinity worker, LocalAI did)
    ignore_encoding_format: bool = False
    # Raw bytes sent before the stream event of that index (0 is the role chunk): junk, error events.
    inject_before_event: dict[int, bytes] = field(default_factory=dict)
    usage_with_empty_choice: bool = False  # the usage chunk as LiteLLM's proxy sends it: one empty choice
    content_bytes: int = 0  # non-streamed: pad the answer's content to this many bytes
    chunked: bool = False  # non-streamed: send the body in 1 MB pieces, with no content-length
    cut_body_after: int | None = None  # non-streamed: declare the whole length, send N bytes, drop
    created: int | None = None  # the answer's `created` (None: now), as a backend with its own clock says


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]


class FakeUpstream:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.behaviour = Behaviour()
        self.received: list[Received] = []
        self.streams_completed = 0
        self.streams_aborted = 0  # streams whose reader went away before the end
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server: ThreadedServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/embeddings", partial(fake_endpoints.embeddings, self), methods=["POST"]),
                Route("/v1/completions", partial(fake_endpoints.completions, self), methods=["POST"]),
                Route("/health", self._health, methods=["GET"]),
            ]
        )
        self._server = ThreadedServer(app, self.port, "the fake upstream")
        return self

    def stop(self) -> None:
        if self._server:
            self._server.stop()

    def reset(self, **kwargs: Any) -> None:
        self.behaviour = Behaviour(**kwargs)
        self.received.clear()

    # -- handlers --------------------------------------------------------------------------
    async def _health(self, request: Request) -> Response:
        return Response("ok")

    async def _models(self, request: Request) -> Response:
        return Response(orjson.dumps({"object": "list", "data": []}), media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        b = self.behaviour
        body = orjson.loads(await request.body())
        self.received.append(Received(body, dict(request.headers)))
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.thinking_mode and any(
            m.get("role") == "assistant" and m.get("tool_calls") and "reasoning_content" not in m
            for m in body.get("messages") or ()
        ):
            message = "The `reasoning_content` in the thinking mode must be passed back to the API."
            error = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
            }
            return Response(orjson.dumps(error), status_code=400, media_type="application/json")
        for i, m in enumerate(body.get("messages") or ()):
            refused = sorted(b.refused_message_fields.intersection(m)) if m.get("role") == "assistant" else []
            if refused:
                where = f"'messages.{i}'"
                message = (
                    f"{where} : for 'role:assistant' the following must be satisfied"
                    f"[({where} : property '{refused[0]}' is unsupported)]"
                )
                error = {"error": {"message": message, "type": "invalid_request_error"}}
                return Response(orjson.dumps(error), status_code=400, media_type="application/json")
        if b.status >= 300:
            error = b.error_body or {
                "error": {"message": f"fake upstream says {b.status}", "type": "server_error", "code": None}
            }
            return Response(orjson.dumps(error), status_code=b.status, media_type="application/json", headers=b.headers)
        usage = {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens,
            "total_tokens": b.prompt_tokens + b.completion_tokens,
        }
        if b.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": b.cached_tokens}
        if b.usage is not None:
            usage = b.usage
        created = int(time.time()) if b.created is None else b.created
        base = {"id": f"chatcmpl-{self.name}", "created": created, "model": body.get("model")}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": b.content}
            finish = b.finish_reason
            if b.tool_call:
                message = {"role": "assistant", "content": b.tool_call_content, "tool_calls": [b.tool_call]}
                finish = "tool_calls"
            if b.reasoning:  # before a call too, as a thinking model's (the stream's does so)
                message["reasoning_content"] = b.reasoning
            out = {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            }
            if b.send_usage:
                out["usage"] = usage
            if b.content_bytes:
                message["content"] = "x" * b.content_bytes
            data = orjson.dumps(out)
            if b.truncate_body:
                data = data[: len(data) // 2]
            if b.chunked or b.cut_body_after is not None:
                headers = dict(b.headers)
                if b.cut_body_after is not None:
                    headers["content-length"] = str(len(data))
                return StreamingResponse(self._pieces(data), media_type="application/json", headers=headers)
            return Response(data, media_type="application/json", headers=b.headers)
        return StreamingResponse(self._events(body, base, usage), media_type="text/event-stream", headers=b.headers)

    async def _pieces(self, data: bytes):
        cut = self.behaviour.cut_body_after
        if cut is not None:
            yield data[:cut]
            raise RuntimeError("fake upstream cuts the body short on purpose")
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    async def _events(self, body: dict, base: dict, usage: dict):
        b = self.behaviour
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[bytes] = []
        if b.stream_error_before_content:
            events.append(_event({"error": {"message": "overloaded", "type": "server_error", "code": 503}}))
        else:
            events.append(
                _event(
                    {
                        **chunk,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
            )
            if b.reasoning:
                delta = {"reasoning_content": b.reasoning}
                events.append(_event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
            if b.tool_call:
                if b.tool_call_content:
                    delta = {"content": b.tool_call_content}
                    events.append(_event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
                delta = {"tool_calls": [{"index": 0, **b.tool_call}]}
                events.append(_event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
                finish = "tool_calls"
            else:
                for word in b.content.split(" "):
                    events.append(
                        _event(
                            {
                                **chunk,
                                "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
                            }
                        )
                    )
                finish = b.finish_reason
            events.append(_event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
            if b.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                choices = [{"index": 0, "delta": {}}] if b.usage_with_empty_choice else []
                events.append(_event({**chunk, "choices": choices, "usage": usage}))
            events.append(b"data: [DONE]\n\n")
        if b.raw_stream is not None:
            events = list(b.raw_stream)
        for index in sorted(b.inject_before_event, reverse=True):
            events.insert(index, b.inject_before_event[index])
        if b.end_after_events is not None:
            events = events[: b.end_after_events]
        if b.one_write:
            events = [b"".join(events)]
        finished = False
        try:
            for i, event in enumerate(events):
                if b.break_after_events is not None and i >= b.break_after_events:
                    finished = True
                    raise RuntimeError("fake upstream breaks the stream on purpose")
                if b.chunk_delay_s and i:
                    await asyncio.sleep(b.chunk_delay_s)
                yield event
            if b.linger_after_stream_s:
                await asyncio.sleep(b.linger_after_stream_s)
            finished = True
            self.streams_completed += 1
        finally:
            if not finished:
                self.streams_aborted += 1


def _event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
