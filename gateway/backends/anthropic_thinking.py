"""The thinking blocks of a Messages conversation that Anthropic's API will take back.

A conversation the gateway routes may have had turns answered by other backends: a chat
backend's reasoning comes back to the client as a `thinking` block with an empty
`signature` (the gateway has none to give), and a backend that did not reason sends no
thinking block at all. Anthropic verifies every thinking block it is sent ("Invalid
`signature` in `thinking` block") and, with `thinking` on, wants the last assistant turn of
a tool-use exchange to start with one ("a final `assistant` message must start with a
thinking block"). Either 400 would end the agent's session on the first turn routed to an
Anthropic backend after another answered, so a Messages body posted natively to one is
first made replayable:

- a thinking block without a signature is left out (it cannot be verified; Anthropic does
  not keep earlier turns' thinking in the model's context anyway), and a turn that held
  nothing else with it (a chat backend that only reasoned), its user turns either side joined:
  Anthropic refuses an empty turn but for a last assistant one;
- when the last assistant turn then holds a `tool_use` without a thinking block before it
  and `thinking` is `enabled` or `adaptive`, the request goes without `thinking`, as
  Anthropic's own message advises ("To avoid this requirement, disable `thinking`"): one turn
  without extended thinking, not a failed one (and without a `context_management` edit that
  clears thinking, refused without it).

Signed blocks pass as they are: the gateway cannot tell a valid signature from one another
Anthropic model wrote (signatures are model-bound: a fallback from one Claude model to
another). Anthropic's 400 for such a block (`refused_signature`) gets the same request once
more with every thinking block left out (`replayable(payload, signed=False)`), on the same
backend: no other candidate would take the blocks either.
"""

from __future__ import annotations

from typing import Any

_THINKING = ("thinking", "redacted_thinking")


def replayable(payload: dict[str, Any], signed: bool = True) -> dict[str, Any]:
    """`payload`, or a copy with unsigned thinking blocks (`signed=False`: every thinking
    block) left out and `thinking` off where Anthropic would refuse the last tool-use turn
    without one. The client's objects are never changed (every candidate is asked from the
    same body)."""
    unusable = _unsigned if signed else _thinking
    turns = payload.get("messages")
    if type(turns) is not list:
        return payload  # malformed: Anthropic's 400 says so
    kept = turns
    for i, turn in enumerate(turns):
        content = turn.get("content") if type(turn) is dict and turn.get("role") == "assistant" else None
        if type(content) is not list or not any(unusable(block) for block in content):
            continue
        if kept is turns:
            kept = list(turns)
        kept[i] = {**turn, "content": [block for block in content if not unusable(block)]}
    if kept is not turns:
        kept = _without_emptied(turns, kept)
    out = payload if kept is turns else {**payload, "messages": kept}
    if _thinking_on(payload) and _unthought_tool_use(kept):
        out = _without_thinking(out)
    return out


def _without_thinking(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` without `thinking`, and without the `context_management` edit that needs it:
    Claude Code keeps thinking blocks with a `clear_thinking` edit, which Anthropic refuses
    otherwise ("`clear_thinking_20251015` strategy requires `thinking` to be enabled")."""
    out = {k: v for k, v in payload.items() if k != "thinking"}
    management = out.get("context_management")
    if type(management) is not dict:
        return out
    edits = management.get("edits")
    if type(edits) is not list or not any(_clears_thinking(edit) for edit in edits):
        return out
    kept = [edit for edit in edits if not _clears_thinking(edit)]
    if kept or len(management) > 1:
        out["context_management"] = {**management, "edits": kept}
    else:
        del out["context_management"]
    return out


def _clears_thinking(edit: Any) -> bool:
    kind = edit.get("type") if type(edit) is dict else None
    return type(kind) is str and kind.startswith("clear_thinking_")


def _without_emptied(turns: list[Any], kept: list[Any]) -> list[Any]:
    """`kept` without the assistant turns its thinking blocks were all of (a chat backend
    that only reasoned): `content: []` is Anthropic's 400 but for a last assistant turn ("all
    messages must have non-empty content except for the optional final assistant message").
    The user turns either side of one are joined, as one turn of the conversation."""
    out: list[Any] = []
    dropped = False
    last = len(kept) - 1
    for i, turn in enumerate(kept):
        if turn is not turns[i] and not turn["content"] and i != last:
            dropped = True
            continue
        if dropped and out and _joinable(out[-1]) and _joinable(turn):
            out[-1] = {**out[-1], "content": _blocks(out[-1]["content"]) + _blocks(turn["content"])}
        else:
            out.append(turn)
        dropped = False
    return out


def _joinable(turn: Any) -> bool:
    """A user turn whose content is a string or a list of blocks. One without content, or
    with another value, is left as sent, for Anthropic's 400 to name (it reaches a native
    backend unchecked when an earlier block was Anthropic-only and ended the ingress's read)."""
    return type(turn) is dict and turn.get("role") == "user" and type(turn.get("content")) in (str, list)


def _blocks(content: str | list[Any]) -> list[Any]:
    """A user turn's content as a list of blocks (a string is one text block)."""
    if type(content) is str:
        return [{"type": "text", "text": content}] if content else []
    return list(content)


def refused_signature(body: bytes) -> bool:
    """Whether an Anthropic 400's body is its refusal of a thinking block's signature
    ("messages.1.content.0: Invalid `signature` in `thinking` block")."""
    text = body[:4096].lower()
    return text.find(b"invalid `signature` in `thinking`") >= 0 or text.find(b"invalid signature in thinking") >= 0


def _thinking(block: Any) -> bool:
    return type(block) is dict and block.get("type") in _THINKING


def _unsigned(block: Any) -> bool:
    if type(block) is not dict or block.get("type") != "thinking":
        return False
    signature = block.get("signature")
    return type(signature) is not str or not signature


# The `thinking.type`s under which Anthropic wants the last tool-use turn to start with a
# thinking block. Not `between_tools` (Claude Sonnet 5.5's setting without up-front thinking:
# its own tool-use turns start without one, and without `thinking` that model runs adaptive,
# the up-front thinking the client turned off), nor a type newer than this gateway (whose rule
# it cannot know): those pass as sent.
_LEADING_THINKING = ("enabled", "adaptive")


def _thinking_on(payload: dict[str, Any]) -> bool:
    thinking = payload.get("thinking")
    return type(thinking) is dict and thinking.get("type") in _LEADING_THINKING


def _unthought_tool_use(turns: list[Any]) -> bool:
    """Whether the last assistant turn calls a tool and does not start with a thinking block."""
    for turn in reversed(turns):
        if type(turn) is not dict or turn.get("role") != "assistant":
            continue
        content = turn.get("content")
        if type(content) is not list:
            return False
        calls = any(type(b) is dict and b.get("type") == "tool_use" for b in content)
        first = content[0] if content else None
        return calls and not (type(first) is dict and first.get("type") in _THINKING)
    return False
