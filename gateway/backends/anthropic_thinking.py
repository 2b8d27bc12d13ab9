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
- when that leaves the last tool-calling assistant turn without the thinking block it began
  with, and `thinking` is `enabled`, the request goes without `thinking`, as Anthropic's
  own message advises ("To avoid this requirement, disable `thinking`"): one turn without
  extended thinking, not a failed one (and without a `context_management` edit that clears
  thinking, refused without it). A conversation the client sent that way is left as it
  came: Anthropic takes a tool-use turn without thinking in cases the gateway cannot tell
  apart (adaptive thinking, which may skip it; a loop's later calls without interleaved
  thinking; `between_tools`).

Two of Anthropic's 400s get the same request once more, on the same backend (no other
candidate would take it either; at most twice, each time with less: `asked_again`):
`refused_signature`, a block another Claude model signed (signatures are model-bound: a
fallback from one to another), asked again with every thinking block left out
(`replayable(payload, signed=False)`); and `refused_unthought`, a last tool-use turn
Anthropic wants to start with a thinking block (a backend that did not reason answered it),
asked again without `thinking`.

Claude's newer models (preserved thinking) also bind each thinking block to the request it
was written for: the `system`, `tools` and messages before it. A block whose prefix changed
since (a client that rewrites its system prompt, summarises or edits earlier turns) fails the
prefix check, refused in the same words as a bad signature and more ("... The block is bound
to a different conversation. Remove the block, or set
`thinking.block_binding.prefix_mismatch_behavior` to "drop_block"."). Leaving every thinking
block out would not end it: the answer's own block would be bound to a prefix without them,
so the next turn, which sends them all back, fails again, and every turn after. Asked again
instead with `drop_block` (`refused_binding`), Anthropic drops just the blocks that fail and
keeps the rest, and the new block stays valid on later turns. Those still hold the changed
block, so the backend remembers its signature (`UnboundSignatures`) and sends `drop_block`
up front on any request that carries it: one refusal per conversation, not one per turn. A
request without `thinking` is asked with adaptive thinking and `drop_block` (those models
think adaptively by default); one with thinking `disabled` has no `block_binding`, and its
thinking blocks are left out. A client that chose `prefix_mismatch_behavior` itself gets
what it chose.
"""

from __future__ import annotations

import re
from typing import Any

_THINKING = ("thinking", "redacted_thinking")
# The beta under which a request chooses what happens to blocks that fail the prefix check
# (`thinking.block_binding`), and its answers list what was dropped (`input_transformations`).
BINDING_BETA = "thinking-binding-controls-2026-08-01"
_DROP_BLOCK = {"prefix_mismatch_behavior": "drop_block"}
# The thinking types that take `block_binding` (Anthropic's enabled and adaptive configs).
_BINDABLE = ("enabled", "adaptive")
# Where a refusal says the failing block is: `messages.{i}.content.{j}: ...`.
_BLOCK_AT = re.compile(rb"messages\.(\d{1,6})\.content\.(\d{1,6})")


def replayable(payload: dict[str, Any], signed: bool = True) -> dict[str, Any]:
    """`payload`, or a copy with unsigned thinking blocks (`signed=False`: every thinking
    block) left out, and `thinking` off where that left the last tool-use turn without the
    block it began with. The client's objects are never changed (every candidate is asked
    from the same body)."""
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
    if kept is turns:
        return payload
    out = {**payload, "messages": _without_emptied(turns, kept)}
    thinking = payload.get("thinking")
    if (
        type(thinking) is dict
        and thinking.get("type") == "enabled"
        and unthought_tool_use(out["messages"])
        and not unthought_tool_use(turns)
    ):
        out = _without_thinking(out)  # what was left out made the turn unthought
    return out


def asked_again(payload: dict[str, Any], refusal: bytes) -> dict[str, Any] | None:
    """What to ask the same Anthropic backend after its 400 `refusal` of `payload` (as
    `replayable` made it): `drop_block` for a block bound to another prefix, less thinking
    history, or no `thinking`; None when the refusal is not about thinking blocks, or nothing
    is left to take out."""
    if refused_binding(refusal):
        if _binding_chosen(payload):
            return None  # the client chose what a changed prefix gets: Anthropic's 400 is its answer
        dropping = dropping_unbound(payload)
        if dropping is not None:
            return dropping
        # Thinking off (no `block_binding` to set): the blocks go, as for a bad signature.
    if refused_signature(refusal):
        # `replayable`'s own rule turns `enabled` thinking off where the blocks left out led
        # the last tool-use turn; under any other type Anthropic's next 400 says if it must.
        without = replayable(payload, signed=False)
        return without if without is not payload else None
    if refused_unthought(refusal) and "thinking" in payload:
        return _without_thinking(payload)
    return None


def bound_to_drop(
    payload: dict[str, Any], headers: dict[str, str], configured: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """`payload` and `headers` asking up front for `drop_block` (`dropping_unbound`, under
    `BINDING_BETA`), for a request that sends back a block refused before; as they are when
    the client chose the behaviour itself or its thinking takes no `block_binding`."""
    dropping = dropping_unbound(payload)
    return (payload, headers) if dropping is None else (dropping, with_binding_beta(headers, configured))


def dropping_unbound(payload: dict[str, Any]) -> dict[str, Any] | None:
    """`payload` with `thinking.block_binding.prefix_mismatch_behavior: "drop_block"` (a copy;
    the rest of `block_binding` as the client sent it), or None when its thinking type takes
    no `block_binding` or the client chose a behaviour itself. Sent under `BINDING_BETA`."""
    thinking = payload.get("thinking")
    if thinking is None:
        # No thinking asked: only Claude's preserved-thinking models refuse a block as bound to
        # another conversation, and they think adaptively when not told otherwise, so adaptive
        # thinking is what the request asked already, now with the blocks that fail dropped
        # (left out instead, the answer's block would be bound to a history without them).
        return {**payload, "thinking": {"type": "adaptive", "block_binding": dict(_DROP_BLOCK)}}
    if type(thinking) is not dict or thinking.get("type") not in _BINDABLE or _binding_chosen(payload):
        return None
    binding = thinking.get("block_binding")
    binding = {**binding, **_DROP_BLOCK} if type(binding) is dict else dict(_DROP_BLOCK)
    return {**payload, "thinking": {**thinking, "block_binding": binding}}


def drops_unbound(payload: dict[str, Any]) -> bool:
    """Whether `payload` asks Anthropic to drop blocks that fail the prefix check."""
    return bool(_mismatch_behavior(payload) == "drop_block")


def _binding_chosen(payload: dict[str, Any]) -> bool:
    """Whether the client set `thinking.block_binding.prefix_mismatch_behavior` itself."""
    return _mismatch_behavior(payload) is not None


def _mismatch_behavior(payload: dict[str, Any]) -> Any:
    """`thinking.block_binding.prefix_mismatch_behavior`, None where it is not set."""
    thinking = payload.get("thinking")
    binding = thinking.get("block_binding") if type(thinking) is dict else None
    return binding.get("prefix_mismatch_behavior") if type(binding) is dict else None


def with_binding_beta(headers: dict[str, str], configured: str | None = None) -> dict[str, str]:
    """`headers` with `BINDING_BETA` among the `anthropic-beta` the client sent, else among
    the backend's `configured` ones (the call's header takes the place of the backend's, so
    those must be in it too); a copy."""
    betas = headers.get("anthropic-beta") or configured or ""
    if BINDING_BETA in (beta.strip() for beta in betas.split(",")):
        return headers if "anthropic-beta" in headers else {**headers, "anthropic-beta": betas}
    return {**headers, "anthropic-beta": f"{betas},{BINDING_BETA}" if betas.strip() else BINDING_BETA}


class UnboundSignatures:
    """Signatures of thinking blocks a backend refused as bound to another prefix, most recent
    last, at most `limit` of them (a conversation needs one: its first changed block, which
    every later turn sends back). Held per backend, for the app's life."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._seen: dict[int, None] = {}  # hashes of the signatures, in the order last seen

    def __bool__(self) -> bool:
        return bool(self._seen)

    def remember(self, payload: dict[str, Any], refusal: bytes) -> None:
        """The signature of the block `refusal` names (`messages.{i}.content.{j}` of `payload`,
        as sent), if there is one there."""
        found = _BLOCK_AT.search(refusal[:4096])
        if found is None:
            return
        i, j = int(found.group(1)), int(found.group(2))
        turns = payload.get("messages")
        turn = turns[i] if type(turns) is list and i < len(turns) else None
        content = turn.get("content") if type(turn) is dict else None
        block = content[j] if type(content) is list and j < len(content) else None
        signature = _signature(block)
        if signature is None:
            return
        key = hash(signature)
        self._seen.pop(key, None)
        self._seen[key] = None
        if len(self._seen) > self._limit:
            del self._seen[next(iter(self._seen))]

    def carried_by(self, payload: dict[str, Any]) -> bool:
        """Whether `payload` sends back a block whose signature was refused before (then the
        most recently seen: a conversation still going keeps its place)."""
        seen = self._seen
        turns = payload.get("messages")
        for turn in turns if type(turns) is list else ():
            content = turn.get("content") if type(turn) is dict and turn.get("role") == "assistant" else None
            for block in content if type(content) is list else ():
                signature = _signature(block)
                key = hash(signature) if signature is not None else None
                if key is not None and key in seen:
                    del seen[key]
                    seen[key] = None
                    return True
        return False


def _signature(block: Any) -> str | None:
    """A thinking block's signature (a redacted one's `data`, which Anthropic checks alike)."""
    if type(block) is not dict:
        return None
    kind = block.get("type")
    value = block.get("signature") if kind == "thinking" else block.get("data") if kind == "redacted_thinking" else None
    return value if type(value) is str and value else None


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


def refusal_reason(body: bytes) -> str:
    """Which thinking refusal an Anthropic 400 is, in words for the log."""
    if refused_binding(body):
        return "bound to a different conversation"
    return "another model's signature" if refused_signature(body) else "a tool-use turn without one"


def refused_binding(body: bytes) -> bool:
    """Whether an Anthropic 400's body refuses a thinking block bound to another prefix ("...
    Invalid `signature` in `thinking` block. The block is bound to a different conversation.
    ..."): a signature refusal too (`refused_signature`), answered differently."""
    return body[:4096].lower().find(b"bound to a different conversation") >= 0


def refused_unthought(body: bytes) -> bool:
    """Whether an Anthropic 400's body says the last tool-use turn must start with a thinking
    block ("... When `thinking` is enabled, a final `assistant` message must start with a
    thinking block ...")."""
    return body[:4096].lower().find(b"must start with a thinking block") >= 0


def _thinking(block: Any) -> bool:
    return type(block) is dict and block.get("type") in _THINKING


def _unsigned(block: Any) -> bool:
    if type(block) is not dict or block.get("type") != "thinking":
        return False
    signature = block.get("signature")
    return type(signature) is not str or not signature


def unthought_tool_use(turns: list[Any]) -> bool:
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
