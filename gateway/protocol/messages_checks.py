"""Anthropic's 400s for a conversation the chat translation would serve but Anthropic refuses.

`check_tool_results` reads a Messages request's turns, before routing and whichever way a
candidate is asked (and for a token count), where the routing view's own pass did not
(`messages_view._prompt` gives up on whatever this could refuse): a `tool_use` the next turn
does not answer, a `tool_result` answering no call, an id twice in a turn, an empty turn, an
empty or blank text block, a prefill ending in whitespace. Translated, a chat backend served
each of them or refused them with an opaque 400, where a native one (and Anthropic itself)
refuses them in Anthropic's words, which these are. Apart from the translation
(`gateway.protocol.messages_turns`), which names what is malformed within a block and needs
none of this. Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.protocol.errors import echoed, invalid_request


def check_tool_results(turns: list[Any]) -> None:
    """Anthropic's 400s for `tool_use` and `tool_result` blocks that do not pair up: a
    `tool_use` the next turn does not answer with a `tool_result` (named by the assistant's
    turn; a system turn between is that next turn, as any turn is), and a `tool_result` whose
    `tool_use_id` no `tool_use` of the turn just before has (named by the result's turn and
    block). A `tool_use` in the last turn is a prefill and stands: nothing after it could
    answer it. Translated, either would be tool calls no tool message answers or a tool
    message answering no call, which chat backends refuse with an opaque 400.

    Every request's turns pass through here, an agent's by the hundred: one pass reading only
    the blocks' types and ids (a comprehension per turn, half the time of a loop with its
    branches), the ids compared only where a turn has either. A malformed turn ends it (the
    translation names what is wrong).

    The same pass refuses a user or assistant turn whose content is empty (`""` or `[]`), but
    for a last assistant turn (an empty prefill), as Anthropic does: translated, an empty user
    turn became no chat message at all, and the backend answered a different conversation.
    It refuses their text blocks as Anthropic does too (`_check_texts`), so a chat candidate
    serves no conversation a native one would refuse."""
    calls: list[Any] = []  # the tool_use ids of turn `asked`, the one just before
    asked = 0
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        if type(turn) is not dict:
            return
        role = turn.get("role")
        content = turn.get("content")
        if not content and (content == "" or content == []) and (i != last or role != "assistant"):
            _empty(role, i)
        if type(content) is not list:
            if type(content) is str and i == last and role == "assistant" and content[-1:].isspace():
                raise invalid_request(_TRAILING_WHITESPACE, f"messages.{i}.content")
            content = ()
        elif role == "user" or role == "assistant":
            texts = [b.get("text") for b in content if type(b) is dict and b.get("type") == "text"]
            # Read further only when something could be refused: an empty text, a prefill, a
            # first text that is not words (a turn whose first text has words is not blank).
            if texts and (
                "" in texts
                or (i == last and role == "assistant")
                or type(first := texts[0]) is not str
                or first.isspace()
            ):
                _check_texts(texts, content, i, i == last and role == "assistant")
        if role == "user":
            results = [b.get("tool_use_id") for b in content if type(b) is dict and b.get("type") == "tool_result"]
            if len(results) > 1:
                _unique(results, content, i, "tool_result")
            if calls or results:
                _pair(turns, asked, calls, i, results)
            calls = []
        elif role == "assistant":
            if calls:
                _pair(turns, asked, calls, i, [])
            calls = [b.get("id") for b in content if type(b) is dict and b.get("type") == "tool_use"]
            if len(calls) > 1:
                _unique(calls, content, i, "tool_use")
            asked = i
        elif role == "system":
            if calls:
                _pair(turns, asked, calls, i, [])
            calls = []
        else:
            return


def _unique(ids: list[Any], content: Sequence[Any], i: int, kind: str) -> None:
    """Anthropic's 400, in its words (as quoted from its API in clients' issues), for turn
    `i`'s `tool_use` blocks sharing an id, or `tool_result` blocks answering one id twice,
    named by the second block. Translated, a chat backend got two calls (or two answers) under
    one id, and a native one refuses them."""
    named = [x for x in ids if type(x) is str]  # an id that is not a string: the translation's 400
    if len(set(named)) == len(named):
        return
    field = "id" if kind == "tool_use" else "tool_use_id"
    seen: set[str] = set()
    for j, block in enumerate(content):
        value = block.get(field) if type(block) is dict and block.get("type") == kind else None
        if type(value) is not str:
            continue
        if value in seen:
            where = f"messages.{i}.content.{j}"
            if kind == "tool_use":
                raise invalid_request(f"{where}: `tool_use` ids must be unique", where)
            raise invalid_request(
                f"{where}: each tool_use must have a single result. Found multiple `tool_result` blocks with id: "
                f"{echoed(value)}",
                where,
            )
        seen.add(value)


# Anthropic's words for the text blocks it refuses (quoted from its 400s; the messages name
# no block, as its own do not).
_EMPTY_TEXT = "messages: text content blocks must be non-empty"
_BLANK_TEXT = "messages: text content blocks must contain non-whitespace text"
_TRAILING_WHITESPACE = "messages: final assistant content cannot end with trailing whitespace"


def _check_texts(texts: list[Any], content: list[Any], i: int, prefill: bool) -> None:
    """Anthropic's 400s for the text blocks (`texts`: their `text`s) of turn `i`'s `content`:
    an empty one anywhere; a turn whose text blocks are all whitespace (a blank block beside
    text stands: LibreChat-AI/agents#124 tried each on the API); and, for the last turn when it
    is the assistant's (`prefill`), text that ends it with whitespace. Translated, a chat
    backend served each of them; a native one, and Anthropic itself, refuse them. A `text`
    that is not a string: the translation's 400."""
    if "" in texts:
        raise invalid_request(_EMPTY_TEXT, f"messages.{i}.content")
    last = content[-1]
    if prefill and type(last) is dict and last.get("type") == "text":
        text = last.get("text")
        if type(text) is str and text[-1:].isspace():
            raise invalid_request(_TRAILING_WHITESPACE, f"messages.{i}.content")
    # Blank: every text whitespace alone. `isspace()` stops at the first other character (the
    # first, in any real text), where `strip()` copied the whole text of every block.
    for text in texts:
        if type(text) is not str or not text.isspace():
            return
    raise invalid_request(_BLANK_TEXT, f"messages.{i}.content")


def _empty(role: Any, i: int) -> None:
    """Anthropic's 400, in its words, for turn `i` of `role` with empty content (a system
    turn's is the translation's to judge)."""
    if role == "user" or role == "assistant":
        raise invalid_request(
            f"messages.{i}: all messages must have non-empty content except for the optional final assistant message",
            f"messages.{i}.content",
        )


def _pair(turns: list[Any], asked: int, calls: list[Any], i: int, results: list[Any]) -> None:
    """Anthropic's 400 when turn `i`'s tool_result ids do not answer exactly the tool_use ids
    of turn `asked`, the one before it (ids that are not strings: the translation's 400)."""
    if calls == results:  # the usual: each call's result, in order
        return
    answered = {r for r in results if type(r) is str}
    missing = [c for c in calls if type(c) is str and c not in answered]
    if missing:
        raise invalid_request(
            f"messages.{asked}: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{_ids(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the "
            "next message.",
            f"messages.{asked}",
        )
    unexpected = [r for r in results if type(r) is str and r not in calls]
    if unexpected:
        first = next(
            j
            for j, block in enumerate(turns[i]["content"])
            if type(block) is dict and block.get("type") == "tool_result" and block.get("tool_use_id") == unexpected[0]
        )
        where = f"messages.{i}.content.{first}"
        raise invalid_request(
            f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {_ids(unexpected)}. Each "
            "`tool_result` block must have a corresponding `tool_use` block in the previous message.",
            where,
        )


# Unpaired ids an error names before it only counts the rest: a client sends any number of
# blocks, and the 400 listing every one of them was as large as the ids it was sent.
_NAMED_IDS = 10


def _ids(ids: list[str]) -> str:
    named = ", ".join(echoed(i) for i in ids[:_NAMED_IDS])
    return named if len(ids) <= _NAMED_IDS else f"{named} and {len(ids) - _NAMED_IDS} more"
