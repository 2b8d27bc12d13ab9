"""Tool ids of a Messages conversation in the alphabet Anthropic's API takes.

Anthropic refuses a `tool_use` id (and the `tool_use_id` of the `tool_result` answering it)
outside `^[a-zA-Z0-9_-]+$` ("String should match pattern"). A conversation the gateway routes
may have had turns answered by other backends, whose call ids the client keeps and sends
back: Kimi's are `functions.Bash:0`, as its chat template writes them. Posted as they came,
the first turn routed to an Anthropic backend after such a one was its 400, and so was every
turn after (the history never changes). So each id outside the alphabet is sent as one inside
it: its characters outside replaced, and a digest of the id as it came appended, so two ids
that differ only there stay two, and the same id is the same on every turn (a thinking block
Anthropic bound to the request it answered still finds that request's prefix). Nothing
comes back: Anthropic's answer carries its own ids, not these.

What is not here: which thinking blocks Anthropic takes back (`anthropic_thinking`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_ALLOWED = re.compile(r"[A-Za-z0-9_-]+")
_OUTSIDE = re.compile(r"[^A-Za-z0-9_-]")
# Where each kind of block names a call.
_ID_FIELDS = {"tool_use": "id", "tool_result": "tool_use_id"}


def with_anthropic_tool_ids(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload`, or a copy with each tool id outside Anthropic's alphabet replaced
    (`anthropic_tool_id`). The client's objects are never changed (every candidate is asked
    from the same body); one pass over the blocks, a match per id, when every id is fine."""
    turns = payload.get("messages")
    if type(turns) is not list:
        return payload  # malformed: Anthropic's 400 says so
    kept = turns
    for i, turn in enumerate(turns):
        content = turn.get("content") if type(turn) is dict else None
        if type(content) is not list:
            continue
        blocks = content
        for j, block in enumerate(content):
            kind = block.get("type") if type(block) is dict else None
            field = _ID_FIELDS.get(kind) if type(kind) is str else None
            value = block.get(field) if field is not None else None
            if type(value) is not str or _ALLOWED.fullmatch(value):
                continue  # a missing or mistyped id is Anthropic's own 400 to give
            if blocks is content:
                blocks = list(content)
            blocks[j] = {**block, field: anthropic_tool_id(value)}
        if blocks is not content:
            if kept is turns:
                kept = list(turns)
            kept[i] = {**turn, "content": blocks}
    return payload if kept is turns else {**payload, "messages": kept}


def anthropic_tool_id(value: str) -> str:
    """An id in Anthropic's alphabet for `value`, one that is not: the same for the same id."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    return f"{_OUTSIDE.sub('_', value)}_{digest}"
