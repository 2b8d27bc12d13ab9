"""Translating a Messages API SSE stream into OpenAI `chat.completion.chunk` events.

Anthropic streams typed events (message_start, content_block_start/delta/stop,
message_delta, message_stop, ping, error); OpenAI streams chunks with a `delta` per choice,
a finish-reason chunk, an optional usage chunk and `data: [DONE]`. `StreamTranslator`
maps one onto the other as bytes arrive, whatever the chunk boundaries.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.backends.anthropic_translate import REASONING_FORMAT, openai_error, openai_usage
from gateway.backends.errors import MalformedAnswer
from gateway.protocol.messages_answer import FINISH_REASONS
from gateway.protocol.sse import EventCutter, data_of
from gateway.protocol.translation import MALFORMED

_NOT_MESSAGES_EVENTS = "anthropic upstream stream sent an event that is not a Messages event"


class StreamTranslator:
    """Messages API SSE bytes in, OpenAI `chat.completion.chunk` SSE bytes out.

    Feed upstream bytes as they arrive (events may be split anywhere); each call returns
    the translated events completed so far. The stream ends, as OpenAI's does, with the
    finish-reason chunk, the usage chunk when asked for, and `data: [DONE]`.
    """

    def __init__(self, include_usage: bool, created: int | None = None) -> None:
        self.include_usage = include_usage
        self.created = created if created is not None else int(time.time())
        self.id = ""
        self.model = ""
        self.usage: dict[str, Any] = {}
        self.finished = False  # the finish-reason chunk went out
        self.done = False  # [DONE] went out
        self._tool_calls: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._reasoning: dict[int, int] = {}  # Anthropic block index -> `reasoning_details` index
        self._formatted: set[int] = set()  # `reasoning_details` indexes whose `format` went out
        self._events = EventCutter()

    def feed(self, data: bytes) -> bytes:
        """Raises `MalformedAnswer` for an event whose members are not what its type holds
        (a `delta` or `content_block` that is not an object): the backend's malformed stream."""
        complete = self._events.complete(data)
        try:
            out = [self._translate(event) for event in complete.split(b"\n\n") if event]
        except MALFORMED:
            raise MalformedAnswer(_NOT_MESSAGES_EVENTS) from None
        return b"".join(out)

    def finish(self) -> bytes:
        """At the end of the upstream stream: translate a last unterminated event, close properly."""
        tail = self._events.rest()
        try:
            out = self._translate(tail) if tail.strip() else b""
        except MALFORMED:
            raise MalformedAnswer(_NOT_MESSAGES_EVENTS) from None
        if self.finished and not self.done:
            out += self._close()  # message_delta arrived but message_stop did not: still end cleanly
        return out

    def _translate(self, event: bytes) -> bytes:
        data = data_of(event)
        if data is None:
            return b""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        kind = obj.get("type")
        if kind == "content_block_delta":
            return self._delta(obj.get("index"), obj.get("delta") or {})
        if kind == "content_block_start":
            return self._block_start(obj.get("index"), obj.get("content_block") or {})
        if kind == "message_start":
            message = obj.get("message") or {}
            self.id = message.get("id") or self.id
            self.model = message.get("model") or self.model
            self.usage.update(message.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):  # cumulative counts; a null one (`int | None`) says nothing new
                self.usage.update((k, v) for k, v in usage.items() if v is not None)
            stop_reason = (obj.get("delta") or {}).get("stop_reason")
            if stop_reason and not self.finished:
                self.finished = True
                return self._chunk({}, FINISH_REASONS.get(stop_reason, "stop"))
            return b""
        if kind == "message_stop":
            out = b"" if self.finished else self._chunk({}, "stop")
            self.finished = True
            return out + self._close()
        if kind == "error":
            return _sse({"error": openai_error(obj.get("error"))})
        return b""  # ping, content_block_stop, and event types added after this was written

    def _block_start(self, index: Any, block: dict[str, Any]) -> bytes:
        kind = block.get("type")
        if kind == "tool_use":
            position = self._tool_calls.setdefault(index, len(self._tool_calls))
            arguments = orjson.dumps(block["input"]).decode() if block.get("input") else ""
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": arguments},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if kind == "thinking" or kind == "redacted_thinking":
            # Also as OpenRouter's `reasoning_details`, pieces by index: a client that keeps
            # them sends the signed thinking back on its next turn (`anthropic_translate`).
            if kind == "redacted_thinking":
                detail = self._detail(index, {"type": "reasoning.encrypted", "data": block.get("data") or ""})
                return self._chunk({"reasoning_details": [detail]})
            if block.get("thinking"):
                detail = self._detail(index, {"type": "reasoning.text", "text": block["thinking"]})
                return self._chunk({"reasoning_content": block["thinking"], "reasoning_details": [detail]})
        return b""

    def _delta(self, index: Any, delta: dict[str, Any]) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta":
            return self._chunk({"content": delta.get("text") or ""})
        if kind == "input_json_delta":
            position = self._tool_calls.get(index)
            partial = delta.get("partial_json")
            if position is None or not partial:
                return b""
            return self._chunk({"tool_calls": [{"index": position, "function": {"arguments": partial}}]})
        if kind == "thinking_delta":
            piece = delta.get("thinking") or ""
            detail = self._detail(index, {"type": "reasoning.text", "text": piece})
            return self._chunk({"reasoning_content": piece, "reasoning_details": [detail]})
        if kind == "signature_delta" and delta.get("signature"):
            detail = self._detail(index, {"type": "reasoning.text", "signature": delta["signature"]})
            return self._chunk({"reasoning_details": [detail]})
        return b""  # citations_delta: nothing in OpenAI's format carries it

    def _at(self, index: Any) -> int:
        """The `reasoning_details` index of Anthropic's thinking block `index`."""
        return self._reasoning.setdefault(index, len(self._reasoning))

    def _detail(self, index: Any, detail: dict[str, Any]) -> dict[str, Any]:
        """A streamed piece of thinking block `index` as a `reasoning_details` item: `format`
        on its first piece only, as OpenRouter streams it (the openai SDK's stream helper
        joins a string field repeated across pieces: "anthropic-claude-v1anthropic-...")."""
        position = self._at(index)
        detail["index"] = position
        if position not in self._formatted:
            self._formatted.add(position)
            detail["format"] = REASONING_FORMAT
        return detail

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
            }
        )

    def _close(self) -> bytes:
        self.done = True
        out = b""
        if self.include_usage:
            chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": openai_usage(self.usage),
            }
            out = _sse(chunk)
        return out + b"data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
