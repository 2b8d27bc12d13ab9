"""Relaying an upstream SSE stream to the client, reading only what accounting needs.

Events are forwarded as the upstream sent them. The relay looks inside an event only when
it mentions `usage` or `error`, or while it still waits for the first content: that is
where usage is read, where the usage chunk the gateway asked for is stripped again if the
client did not ask for it, and where an upstream that fails before producing anything is
caught early enough to fall back.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.protocol.sse import EventCutter, data_of
from gateway.proxy.usage import Usage

DONE = b"data: [DONE]"


class StreamFailedEarly(Exception):
    """The upstream sent an error event before any content: safe to try another backend."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SseAccountant:
    """Feeds upstream bytes through; returns what to forward to the client."""

    __slots__ = (
        "_events",
        "_started",
        "content_events",
        "done_held",
        "first_content_at",
        "hold_done",
        "meta",
        "saw_done",
        "strip_usage",
        "usage",
    )

    def __init__(self, strip_usage: bool, hold_done: bool = False) -> None:
        self.strip_usage = strip_usage
        # The client asked for usage: if the upstream ends without any, `[DONE]` is held back
        # so the relay can send an estimated usage chunk first, as OpenAI always sends one.
        self.hold_done = hold_done
        self.done_held = False
        self.meta: tuple[Any, Any, Any] | None = None  # id, created, model of the stream
        self.usage: Usage | None = None
        self.content_events = 0
        self.first_content_at: float | None = None
        self.saw_done = False
        self._events = EventCutter()
        self._started = False

    @property
    def started(self) -> bool:
        """Whether content has been produced (past which no fallback is possible)."""
        return self._started

    def feed(self, chunk: bytes) -> bytes:
        complete = self._events.complete(chunk)
        if not complete:
            return b""
        # Fast path: nothing to inspect once content flows and no usage/error is mentioned.
        if (
            self._started
            and b'"usage":{' not in complete
            and b'"usage": {' not in complete
            and b'"error"' not in complete
            and not (self.hold_done and self.usage is None and DONE in complete)
        ):
            # Anchored at line starts: content text may itself contain "data: {" or "[DONE]"
            # (JSON strings cannot hold a raw newline, so "\ndata:" is always a field).
            self.content_events += complete.count(b"\ndata: {") + complete.startswith(b"data: {")
            if complete.startswith(DONE) or b"\n" + DONE in complete:
                self.saw_done = True
            return complete
        out = []
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if self._inspect(event):
                out.append(event)
                out.append(b"\n\n")
        return b"".join(out)

    def flush(self) -> bytes:
        """Whatever the upstream left unterminated at the end of the stream."""
        return self._events.rest()

    def closing_events(self, usage: Usage) -> bytes:
        """The usage chunk the upstream did not send (estimated), then the held `[DONE]`."""
        chunk_id, created, model = self.meta or (None, None, None)
        counts = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        event = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": counts,
        }
        return b"data: " + orjson.dumps(event) + b"\n\ndata: [DONE]\n\n"

    def _inspect(self, event: bytes) -> bool:
        """Account one event; return False to drop it."""
        payload = data_of(event)
        if payload is None:
            return True  # comments, keep-alives, retry: fields
        if payload == b"[DONE]":
            self.saw_done = True
            if self.hold_done and self.usage is None:
                self.done_held = True
                return False
            return True
        try:
            obj: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(obj, dict):
            return True
        if self.meta is None:
            self.meta = (obj.get("id"), obj.get("created"), obj.get("model"))
        if "error" in obj and not obj.get("choices"):
            if not self._started:
                err = obj.get("error") or {}
                message = err.get("message") if isinstance(err, dict) else str(err)
                status = err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), int) else None
                raise StreamFailedEarly(str(message or "error event before any content"), status)
            return True
        choices = obj.get("choices")
        usage = Usage.from_openai(obj.get("usage"))
        if usage is not None:
            self.usage = usage
        if choices:
            self.content_events += 1
            if not self._started and _has_content(choices):
                self._started = True
                self.first_content_at = time.perf_counter()
        elif usage is not None and self.strip_usage:
            return False
        return True


def _has_content(choices: Any) -> bool:
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if isinstance(delta, dict) and (
            delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content") or delta.get("reasoning")
        ):
            return True
    return False
