"""Continuing a stream that broke mid-answer on another candidate (issue 12).

A stream that breaks after content reached the client (cut, idle past
`stream_idle_timeout_s`, a run of malformed events) cannot fall back the usual way: the
client has read part of an answer. Instead the original request plus the partial answer, as
an assistant prefill, goes to the next candidate that accepts one (`prefill`, defaulted per
backend type in `gateway.config.vendors`, settable per offer), and its continuation is
spliced into the same client stream: the chunk `id`/`created`/`model` the client already
saw, no second role delta, one usage total (the first attempt's prompt plus every
completion token delivered), one `[DONE]`.

What is not continued: an answer that had started a tool call (a prefill cannot hold a
half-written call), and a stream broken when no candidate takes a prefill. Those end with
an error event naming the real failure, never a prefill's 400.

The healthy path pays for this only with what `PartialRecord.keep` costs per relayed chunk
(a list append, when some other candidate could continue); everything else here runs
after a break.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config.schema import BackendConfig
from gateway.config.snapshot import Offer
from gateway.config.vendors import VENDORS, PrefillMode
from gateway.protocol.sse import data_of
from gateway.proxy.usage import Usage

# Relayed chunks kept for a possible continuation, at most: past it (a very long answer) the
# stream is no longer continuable and the record is dropped, so the memory stays bounded.
MAX_KEPT_CHUNKS = 20_000


def prefill_mode(offer: Offer, backend: BackendConfig) -> PrefillMode | None:
    """How `offer` continues a partial answer: its own `prefill`, else its backend type's."""
    own = offer.spec.prefill
    if own is False:
        return None
    if own is not None:
        return own
    vendor = VENDORS.get(backend.type)
    return vendor.prefill if vendor is not None else None


@dataclass(slots=True)
class Partial:
    """What the client received of a broken stream, read back from the relayed bytes."""

    text: str  # the answer's content so far
    tokens: int  # content deltas delivered (the broken attempt's completion tokens)
    tool_call: bool  # a tool call had started: not continuable
    meta: tuple[Any, Any, Any]  # id, created, model of the chunks the client saw


class PartialRecord:
    """The chunks relayed to the client, kept while a continuation is possible."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] | None = []

    def keep(self, out: bytes) -> None:
        chunks = self.chunks
        if chunks is not None:
            chunks.append(out)
            if len(chunks) > MAX_KEPT_CHUNKS:
                self.chunks = None

    def partial(self) -> Partial | None:
        """The partial answer, or None when too much was relayed to keep it."""
        if self.chunks is None:
            return None
        return read_partial(b"".join(self.chunks))


def read_partial(relayed: bytes) -> Partial:
    text: list[str] = []
    tokens = 0
    tool_call = False
    meta: tuple[Any, Any, Any] | None = None
    for event in relayed.split(b"\n\n"):
        payload = data_of(event.strip(b"\n"))
        if payload is None or payload == b"[DONE]":
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        if meta is None and "id" in obj:
            meta = (obj.get("id"), obj.get("created"), obj.get("model"))
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if delta.get("tool_calls") or delta.get("function_call"):
                tool_call = True
            content = delta.get("content")
            if isinstance(content, str) and content:
                text.append(content)
                tokens += 1
    return Partial("".join(text), tokens, tool_call, meta or (None, None, None))


def continuation_payload(payload: dict[str, Any], partial: Partial, mode: PrefillMode) -> dict[str, Any]:
    """The request for the continuing candidate: `payload` (the original request as sent
    upstream, with that candidate's model id) plus the partial answer as a prefill."""
    out = dict(payload)
    message: dict[str, Any] = {"role": "assistant", "content": partial.text}
    if mode == "continue_final_message":
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    elif mode == "prefix":
        message["prefix"] = True
    elif mode == "partial":
        message["partial"] = True
    else:  # "assistant": Anthropic refuses a prefill ending in whitespace
        message["content"] = partial.text.rstrip()
    out["messages"] = [*payload.get("messages", ()), message]
    # What is left of the client's output budget.
    for field in ("max_tokens", "max_completion_tokens"):
        limit = out.get(field)
        if isinstance(limit, int) and not isinstance(limit, bool):
            out[field] = max(1, limit - partial.tokens)
    return out


class Splice:
    """Rewrites the continuing stream's events into the client's stream."""

    __slots__ = ("_delivered", "_meta", "_prompt_tokens", "usage")

    def __init__(self, partial: Partial, prompt_tokens: int | None) -> None:
        self._meta = partial.meta
        self._delivered = partial.tokens
        self._prompt_tokens = prompt_tokens  # the first attempt's prompt, when known
        self.usage: Usage | None = None  # the continuing attempt's own, as it reported it

    def events(self, relayed: bytes) -> bytes:
        """Events as the continuing candidate's accountant relayed them, made the client's."""
        out: list[bytes] = []
        for event in relayed.split(b"\n\n"):
            event = event.strip(b"\n")
            if not event:
                continue
            payload = data_of(event)
            if payload is None or payload == b"[DONE]":
                out.append(event + b"\n\n")
                continue
            rewritten = self._event(payload)
            if rewritten is not None:
                out.append(b"data: " + rewritten + b"\n\n")
        return b"".join(out)

    def _event(self, payload: bytes) -> bytes | None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        if "error" in obj and not obj.get("choices"):
            return payload  # already redacted and shaped by the accountant
        chunk_id, created, model = self._meta
        obj["id"], obj["created"], obj["model"] = chunk_id, created, model
        choices = []
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and "role" in delta:
                delta = {k: v for k, v in delta.items() if k != "role"}  # the client saw the role once
                choice = {**choice, "delta": delta}
                if not any(delta.values()) and not choice.get("finish_reason"):
                    continue
            choices.append(choice)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            own = Usage.from_openai(usage)
            if own is not None:
                self.usage = own
                total = self.total(own)
                obj["usage"] = {
                    "prompt_tokens": total.prompt_tokens,
                    "completion_tokens": total.completion_tokens,
                    "total_tokens": total.total_tokens,
                }
        elif not choices and obj.get("choices"):
            return None  # only a role delta: nothing for the client
        obj["choices"] = choices
        return orjson.dumps(obj)

    def total(self, own: Usage) -> Usage:
        """What the client is told: the first prompt, every completion token it received."""
        prompt = self._prompt_tokens if self._prompt_tokens is not None else own.prompt_tokens
        return Usage(prompt, self._delivered + own.completion_tokens, estimated=own.estimated)
