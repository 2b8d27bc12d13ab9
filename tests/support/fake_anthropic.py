"""A real HTTP server speaking Anthropic's Messages API (JSON and SSE), for tests.

Like `FakeUpstream`, it runs uvicorn in a background thread on a free port, records what it
received and answers as its `behaviour` says. It checks requests the way Anthropic does
where a translation mistake would show: the API key and version headers, `max_tokens`,
alternating roles, and no fields the Messages API does not know.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_upstream import Received
from tests.support.ports import free_port
from tests.support.threaded_server import ThreadedServer

MESSAGES_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "output_config",  # {"effort", "format"}: Claude Code sends `effort` on every request
    "context_management",  # with its beta (Claude Code's first call of a turn clears old thinking)
    "service_tier",
    "container",
    "mcp_servers",
}


@dataclass
class AnthropicBehaviour:
    status: int = 200
    error_type: str = "api_error"
    error_message: str = "fake anthropic says no"
    content: str = "Hello from the fake Anthropic."
    input_tokens: int = 13
    output_tokens: int = 9
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    tool_use: dict | None = None  # {"id", "name", "input"}: answer with this tool call after the text
    thinking: str | None = None  # a thinking block (with a signature) before the text
    stop_reason: str = "end_turn"
    stream_error_before_content: bool = False  # 200 stream: message_start, then an overloaded error
    break_after_events: int | None = None  # drop the connection after N stream events
    end_after_events: int | None = None  # end the body cleanly after N stream events
    held_open_s: float = 0.0  # after message_stop or a mid-stream error, the body left open this long (then ended)
    # After N stream events, an `event: error` of this type (Anthropic's mid-stream failure),
    # a pause before it (a read of its own), and the stream's end.
    error_after_events: tuple[int, str] | None = None
    text_pieces: list[str] | None = None  # the text block's deltas when streamed (default: word by word)
    headers: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None  # a 200 non-streamed answer of exactly these bytes (a body that is not a Message)
    # Preserved thinking (Claude's newer models): a thinking block's signature binds it to the
    # request it was written for, and a block sent back under another prefix fails the check
    # (`_prefix_check`).
    bind_prefix: bool = False
    delta_input_nulls: bool = False  # message_delta's input and cache counts null (the SDK types them `int | None`)


class FakeAnthropic:
    def __init__(self, api_key: str = "sk-ant-test-key-123456", accept_bearer: bool = False) -> None:
        self.api_key = api_key
        # Servers that speak Messages beside OpenAI's API (vLLM, OpenRouter) take the key as
        # `Authorization: Bearer` too; Anthropic itself only as x-api-key.
        self.accept_bearer = accept_bearer
        self.behaviour = AnthropicBehaviour()
        self.received: list[Received] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server: ThreadedServer | None = None

    def start(self) -> FakeAnthropic:
        app = Starlette(
            routes=[
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        self._server = ThreadedServer(app, self.port, "the fake upstream")
        return self

    def stop(self) -> None:
        if self._server:
            self._server.stop()

    def reset(self, **kwargs: Any) -> None:
        self.behaviour = AnthropicBehaviour(**kwargs)
        self.received.clear()

    # -- handlers --------------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        return _json({"data": [], "has_more": False, "first_id": None, "last_id": None})

    async def _messages(self, request: Request) -> Response:
        b = self.behaviour
        body = orjson.loads(await request.body())
        self.received.append(Received(body, dict(request.headers)))
        problem = self._problem(request, body)
        dropped: list[dict] = []
        if problem is None and b.bind_prefix:
            problem = _prefix_check(body, request.headers.get("anthropic-beta", ""), dropped)
        if problem:
            status, kind, message = problem
            return _json({"type": "error", "error": {"type": kind, "message": message}}, status)
        if b.status >= 300:
            error = {
                "type": "error",
                "error": {"type": b.error_type, "message": b.error_message},
                "request_id": "req_fake",
            }
            return _json(error, b.status, b.headers)
        message = {
            "id": "msg_fake01",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": self._content(body),
            "stop_reason": "tool_use" if b.tool_use else b.stop_reason,
            "stop_sequence": None,
            "usage": self._usage(b.output_tokens),
        }
        if BINDING_BETA in _betas(request.headers.get("anthropic-beta", "")):
            message["input_transformations"] = dropped  # `[]` when nothing was dropped, as Anthropic's
        if not body.get("stream"):
            if b.raw_body is not None:
                return Response(b.raw_body, media_type="application/json", headers=b.headers)
            return _json(message, headers=b.headers)
        return StreamingResponse(self._stream(message), media_type="text/event-stream", headers=b.headers)

    def _problem(self, request: Request, body: dict) -> tuple[int, str, str] | None:
        bearer = self.accept_bearer and request.headers.get("authorization") == f"Bearer {self.api_key}"
        if request.headers.get("x-api-key") != self.api_key and not bearer:
            return 401, "authentication_error", "invalid x-api-key"
        if not request.headers.get("anthropic-version"):
            return 400, "invalid_request_error", "anthropic-version: header is required"
        extra = sorted(set(body) - MESSAGES_FIELDS)
        if extra:
            return 400, "invalid_request_error", f"{extra[0]}: Extra inputs are not permitted"
        if not isinstance(body.get("max_tokens"), int):
            return 400, "invalid_request_error", "max_tokens: Field required"
        # Consecutive turns of a role are combined into one turn, and a `system` turn may come
        # anywhere (SDK 2.15's `SystemMessageParam`: an instruction added mid-conversation).
        roles = [m.get("role") for m in body.get("messages") or []]
        if not roles:
            return 400, "invalid_request_error", "messages: List should have at least 1 item after validation"
        for i, role in enumerate(roles):
            if role not in ("user", "assistant", "system"):
                return (
                    400,
                    "invalid_request_error",
                    f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'",
                )
        return _block_problem(body) or _thinking_problem(body)

    def _content(self, body: dict) -> list[dict]:
        b = self.behaviour
        blocks: list[dict] = []
        if b.thinking:
            written = signature(body["model"])
            if b.bind_prefix:  # bound to everything the request sent: the block comes after it
                written += "~" + _prefix_hash(body, len(body["messages"]), 0)
            blocks.append({"type": "thinking", "thinking": b.thinking, "signature": written})
        if b.content:
            blocks.append({"type": "text", "text": b.content})
        if b.tool_use:
            blocks.append({"type": "tool_use", **b.tool_use})
        return blocks

    def _usage(self, output_tokens: int) -> dict:
        b = self.behaviour
        return {
            "input_tokens": b.input_tokens,
            "cache_creation_input_tokens": b.cache_creation_tokens,
            "cache_read_input_tokens": b.cache_read_tokens,
            "output_tokens": output_tokens,
        }

    async def _stream(self, message: dict):
        limit = self.behaviour.break_after_events
        failing = self.behaviour.error_after_events
        sent = 0
        async for event in self._events(message):
            if limit is not None and sent >= limit:
                raise RuntimeError("fake anthropic breaks the stream on purpose")
            if self.behaviour.end_after_events is not None and sent >= self.behaviour.end_after_events:
                return
            if failing is not None and sent >= failing[0]:
                await asyncio.sleep(0.1)
                error = {"type": failing[1], "message": f"fake anthropic mid-stream {failing[1]}"}
                yield _event("error", {"type": "error", "error": error})
                if self.behaviour.held_open_s:
                    await asyncio.sleep(self.behaviour.held_open_s)
                return
            sent += 1
            yield event
        if self.behaviour.held_open_s:
            await asyncio.sleep(self.behaviour.held_open_s)

    async def _events(self, message: dict):
        b = self.behaviour
        start = {**message, "content": [], "stop_reason": None, "usage": self._usage(1)}
        yield _event("message_start", {"type": "message_start", "message": start})
        if b.stream_error_before_content:
            yield _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            return
        yield _event("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            if block["type"] == "thinking":
                opening = {"type": "thinking", "thinking": "", "signature": ""}
                yield _event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
                )
                for delta in (
                    {"type": "thinking_delta", "thinking": block["thinking"]},
                    {"type": "signature_delta", "signature": block["signature"]},
                ):
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            elif block["type"] == "text":
                yield _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                for word in b.text_pieces or _pieces(block["text"]):
                    delta = {"type": "text_delta", "text": word}
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            else:
                opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                yield _event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
                )
                arguments = orjson.dumps(block["input"]).decode()
                for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": b.output_tokens},
        }
        if b.delta_input_nulls:
            nulls = dict.fromkeys(("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
            delta["usage"] = {**nulls, "output_tokens": b.output_tokens}
        yield _event("message_delta", delta)
        yield _event("message_stop", {"type": "message_stop"})


def _block_problem(body: dict) -> tuple[int, str, str] | None:
    """Anthropic's 400 for a text block, in any turn, that is empty, or whitespace alone in a
    turn with no other text (a blank block beside text stands: LibreChat-AI/agents#124 tried
    each on the API), and for a tool id outside its alphabet, in its words (as quoted from its
    API in clients' issues)."""
    for i, turn in enumerate(body["messages"]):
        content = turn.get("content")
        texts = [b.get("text") for b in content if b.get("type") == "text"] if isinstance(content, list) else []
        has_text = any(isinstance(t, str) and t.strip() for t in texts)
        for j, block in enumerate(content if isinstance(content, list) else ()):
            kind = block.get("type")
            field = {"tool_use": "id", "tool_result": "tool_use_id"}.get(kind) if isinstance(kind, str) else None
            if field and not re.fullmatch(r"[a-zA-Z0-9_-]+", str(block.get(field))):
                pattern = "String should match pattern '^[a-zA-Z0-9_-]+$'"
                return 400, "invalid_request_error", f"messages.{i}.content.{j}.{field}: {pattern}"
            text = block.get("text") if block.get("type") == "text" else None
            if text == "":
                return 400, "invalid_request_error", "messages: text content blocks must be non-empty"
            if isinstance(text, str) and not text.strip() and not has_text:
                return 400, "invalid_request_error", "messages: text content blocks must contain non-whitespace text"
    return None


def signature(model: str) -> str:
    """The signature this fake gives a thinking block `model` wrote, and takes back from it only."""
    return f"sig-fake-{model}"


def _thinking_problem(body: dict) -> tuple[int, str, str] | None:
    """Anthropic's 400s for thinking blocks it is sent back, in its words (as quoted from its
    API in agents' issues): a signature it did not issue for this model (signatures are
    model-bound), and, with `thinking` on, a last assistant turn that calls a tool without a
    thinking block first."""
    turns = body["messages"]
    for i, turn in enumerate(turns):
        content = turn.get("content") if turn.get("role") == "assistant" else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if block.get("type") == "thinking" and str(block.get("signature")).split("~")[0] != signature(
                body["model"]
            ):
                return (
                    400,
                    "invalid_request_error",
                    f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block",
                )
    thinking = body.get("thinking") or {}
    last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "assistant"), None)
    content = turns[last]["content"] if last is not None else None
    if thinking.get("type") == "enabled" and isinstance(content, list):  # adaptive may skip thinking
        calls = any(block.get("type") == "tool_use" for block in content)
        if calls and content[0].get("type") not in ("thinking", "redacted_thinking"):
            return (
                400,
                "invalid_request_error",
                f"messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{content[0].get('type')}`. When `thinking` is enabled, a final `assistant` message must start "
                "with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). "
                "To avoid this requirement, disable `thinking`.",
            )
    return None


BINDING_BETA = "thinking-binding-controls-2026-08-01"


def _betas(header: str) -> list[str]:
    return [beta.strip() for beta in header.split(",")]


def _prefix_check(body: dict, betas: str, dropped: list[dict]) -> tuple[int, str, str] | None:
    """Anthropic's prefix check of preserved thinking: each thinking block sent back must have
    been written after exactly the `system`, `tools` and messages that come before it now
    (cache_control markers aside). One that fails is Anthropic's 400, in its words, or with
    `thinking.block_binding.prefix_mismatch_behavior: "drop_block"` (a field of
    `BINDING_BETA`) left out of what the model sees and listed in `dropped`."""
    thinking = body.get("thinking") or {}
    binding = thinking.get("block_binding")
    if binding is not None and BINDING_BETA not in _betas(betas):
        return 400, "invalid_request_error", "thinking.block_binding: Extra inputs are not permitted"
    drop = isinstance(binding, dict) and binding.get("prefix_mismatch_behavior") == "drop_block"
    for i, turn in enumerate(body["messages"]):
        content = turn.get("content") if turn.get("role") == "assistant" else None
        for j, block in enumerate(content if isinstance(content, list) else ()):
            if block.get("type") != "thinking":
                continue
            bound = str(block.get("signature")).partition("~")[2]
            if bound == _prefix_hash(body, i, j):
                continue
            if drop:
                dropped.append(
                    {
                        "type": "thinking_dropped",
                        "path": f"messages.{i}.content.{j}",
                        "reason": "prefix_binding_mismatch",
                    }
                )
                continue
            return (
                400,
                "invalid_request_error",
                f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block. The block is bound to a "
                "different conversation. Remove the block, or set `thinking.block_binding.prefix_mismatch_behavior` "
                'to "drop_block".',
            )
    return None


def _prefix_hash(body: dict, i: int, j: int) -> str:
    """What a block at `messages[i].content[j]` is bound to: the system, tools and everything
    before it in the request, cache_control markers left out."""
    turns = body["messages"][:i]
    if j:
        turns = [*turns, {**body["messages"][i], "content": body["messages"][i]["content"][:j]}]
    prefix = _without_cache_control({"system": body.get("system"), "tools": body.get("tools"), "messages": turns})
    return hashlib.sha256(orjson.dumps(prefix, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _json(obj: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers)
