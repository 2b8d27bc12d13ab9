"""The facts about one request that routing reads: its size and what it needs from a model.

Computed once per request, before candidates are looked at, so that every filter and score
reads the same numbers (and the explanation shows them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config.schema import GatewaySettings
from gateway.protocol.chat import ChatRequest

NEEDS_NOTHING: frozenset[str] = frozenset()


@dataclass(slots=True)
class RequestFacts:
    """Not changed once made (plain slots rather than frozen: one is built per request)."""

    prompt_tokens: int  # conservative estimate (gateway.protocol.tokens)
    completion_tokens: int  # max_tokens asked, else the configured completion reserve
    completion_asked: bool  # whether the client set max_tokens / max_completion_tokens
    needs: frozenset[str]  # capabilities the request needs: tools, json, json_schema, vision
    reasoning_asked: bool  # reasoning / reasoning_effort fields present
    stream: bool = False  # streamed: ranked by time to first token, else by whole latency

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def wants_tools(payload: dict[str, Any]) -> bool:
    return bool(payload.get("tools")) and payload.get("tool_choice") != "none"


def request_facts(chat: ChatRequest, settings: GatewaySettings) -> RequestFacts:
    # The prompt first: a view that gives up translates the request, and its fields are then
    # the translation's.
    prompt_tokens = chat.prompt_tokens()
    images = chat.images()
    payload = chat.fields  # a pass-through's view: the translation's fields, its messages never built
    asked = payload.get("max_completion_tokens") or payload.get("max_tokens")
    needs: set[str] = set()
    if wants_tools(payload):
        needs.add("tools")
    response_format = payload.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_schema":
            needs.add("json_schema")
        elif kind == "json_object":
            needs.add("json")
    if images:
        needs.add("vision")
    return RequestFacts(
        prompt_tokens,
        int(asked) if asked else settings.default_completion_tokens,
        bool(asked),
        frozenset(needs) if needs else NEEDS_NOTHING,
        bool(payload.get("reasoning") or payload.get("reasoning_effort") or payload.get("thinking")),
        chat.stream,
    )
