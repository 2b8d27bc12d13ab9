"""A Messages request's conversation as chat messages: its system prompt and turns, block by block.

The bulk of the request translation: `gateway.protocol.messages.messages_to_chat` reads the
top-level fields and calls `system_text` and `append_turns` here; the routing view
(`gateway.protocol.messages_view`) reuses them to count a prompt without translating it.
Each block is checked as it is translated, a malformed one a 400 naming its place
(`messages.N.content.M...`); content chat has no form for (a document by URL, an image by
file id, a server tool's block) a 400 coded `ANTHROPIC_ONLY`, which a candidate that speaks
Messages natively still serves. Anthropic's checks across turns (tool_use and tool_result
pairing, empty turns, blank text) are `gateway.protocol.messages_checks`'. Pure code, no I/O.

Mappings chosen where the APIs differ:
- Earlier `thinking` blocks become the `reasoning_content` of their assistant message, sent
  to backends that take reasoning back (`reasoning_history`, on by default for vLLM,
  DeepSeek, Moonshot and Z.ai, whose thinking models reason across tool calls: DeepSeek
  refuses a tool call's turn without it) and left out for the rest; redacted ones are dropped.
- Consecutive user turns, or assistant turns, become one chat turn, as Anthropic combines
  them into one turn (`append_turns`); a `system` message inside `messages` (Anthropic's
  mid-conversation system messages) is read as user text in its place.
- A `tool_result` with `is_error: true` becomes a tool message whose text starts `Error: `
  (chat's tool messages have no error flag); `tool_use_id` is kept as the `tool_call_id`.
"""

from __future__ import annotations

from typing import Any

from gateway.protocol.body import json_text
from gateway.protocol.chat import REASONING
from gateway.protocol.errors import invalid_request

# The code of a 400 for content the chat translation has no form for but Anthropic's API takes
# (server tools, documents by URL or file id, search results, server tool blocks in history):
# such a request is still served by a candidate that speaks Messages natively.
ANTHROPIC_ONLY = "anthropic_only"

# A failed tool's result starts with this in its chat tool message (just this when it has no
# text): chat's tool messages carry no error flag, and without it the model reads the failure
# as the tool's output. The text prefix is how other translators that keep the flag carry it.
FAILED_PREFIX = "Error: "
FAILED_ALONE = "Error"

# Claude Code's first system block is a per-request billing hash; it defeats prefix caching.
_BILLING_HEADER = "x-anthropic-billing-header"


def system_text(system: Any, where: str = "system") -> str:
    """A system prompt's text (a string, or text blocks joined by a blank line, Claude Code's
    billing header left out); a 400 naming `where` for anything else."""
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise invalid_request(f"{where}: must be a string or an array of text blocks.", where)
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise invalid_request(f"{where}.{i}: must be a text block.", f"{where}.{i}")
        if not block["text"].startswith(_BILLING_HEADER):
            texts.append(block["text"])
    return "\n\n".join(texts)


def append_turns(turns: list[Any], messages: list[dict[str, Any]]) -> None:
    """The turns as chat messages, appended to `messages`. A run of consecutive user turns, or
    of assistant turns, becomes one chat turn, as Anthropic combines them into one turn (their
    blocks in order): an assistant run one message with its text and all its tool calls, a
    user run its tool messages then one user message. Sent apart, many chat backends refuse
    them (chat templates that raise "Conversation roles must alternate"), and a tool call
    would leave the text it was written with. Each turn is still read, and named in a 400,
    by its own index.

    A `system` turn (Anthropic's mid-conversation system message, after the first turn) is
    read as user text in its place, joined to the user turns beside it: Qwen3.5-3.8's chat
    templates refuse a system message anywhere but first ("System message must be at the
    beginning"), and Claude Code sends one on every request (its environment, after the
    first user turn; to Haiku a `<total_tokens>` note after each tool result). Moved into the
    first system message instead, a note that changes each turn would change the prompt's
    start, and no backend could reuse its cached prefix."""
    count = len(turns)
    start = 0
    while start < count:
        role = _role(turns[start], start)
        end = start + 1
        while end < count and type(turns[end]) is dict:
            then = turns[end].get("role")
            if then != role and (then != "system" or role != "user"):
                break
            end += 1
        if role == "assistant":
            messages.append(_assistant(turns, start, end))
        else:
            messages += _user(turns, start, end)
        start = end


def _role(turn: Any, index: int) -> str:
    """The chat role a turn is read as: a `system` turn (allowed after the first) as `user`."""
    role = turn.get("role") if isinstance(turn, dict) else None
    if role == "user" or role == "assistant":
        return str(role)
    if role == "system" and index:
        return "user"
    allowed = "`user`, `assistant` or `system`" if index else "`user` or `assistant`"
    raise invalid_request(f"messages.{index}.role: must be {allowed}.", f"messages.{index}.role")


def _blocks(turn: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """A user or assistant turn's content as blocks (a string is one text block)."""
    content = turn.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise invalid_request(f"{where}.content: must be a string or an array of blocks.", f"{where}.content")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid_request(f"{where}.content.{i}: must be a content block.", f"{where}.content.{i}")
    return content


def _assistant(turns: list[Any], start: int, end: int) -> dict[str, Any]:
    """The one chat message for assistant turns `start` to `end` (exclusive)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for n in range(start, end):
        where = f"messages.{n}"
        for i, block in enumerate(_blocks(turns[n], where)):
            kind = block["type"]
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    raise invalid_request(f"{where}.content.{i}.text: must be a string.", f"{where}.content.{i}.text")
                texts.append(block["text"])
            elif kind == "tool_use":
                at = f"{where}.content.{i}"
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise invalid_request(f"{at}: tool_use needs an `id` and a `name`.", at)
                if type(block.get("input")) not in TOOL_INPUT_TYPES:  # Anthropic's is an object (or left out)
                    raise invalid_request(f"{at}.input: Input should be a valid dictionary", f"{at}.input")
                calls.append(chat_tool_call(block))
            elif kind == "thinking":
                if isinstance(block.get("thinking"), str):
                    reasoning.append(block["thinking"])
            elif kind != "redacted_thinking":
                raise invalid_request(
                    f"{where}.content.{i}: `{kind}` blocks are not accepted in assistant turns.", where, ANTHROPIC_ONLY
                )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        # For backends that take it back (`reasoning_history`); interleaved blocks a paragraph apart.
        message[REASONING] = "\n\n".join(reasoning)
    return message


# A tool_use's `input` as Anthropic takes it: an object. One left out stands for no arguments;
# a string or a list went to a chat backend as arguments that are not an object.
TOOL_INPUT_TYPES = (dict, type(None))


def chat_tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """A checked tool_use block as chat's tool call (its input as the arguments' JSON text)."""
    arguments = json_text(block.get("input") or {}, "messages")
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def _user(turns: list[Any], start: int, end: int) -> list[dict[str, Any]]:
    """The chat messages for user turns `start` to `end` (exclusive; system turns among them
    give their text). Tool results become `tool` messages, which must directly follow the
    assistant's calls; the rest (text, images) follows them as one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for n in range(start, end):
        where = f"messages.{n}"
        if turns[n].get("role") == "system":  # a mid-conversation system message: its text
            text = system_text(turns[n].get("content"), f"{where}.content")
            if text:
                parts.append({"type": "text", "text": text})
            continue
        for i, block in enumerate(_blocks(turns[n], where)):
            at = f"{where}.content.{i}"
            kind = block["type"]
            if kind == "tool_result":
                if not isinstance(block.get("tool_use_id"), str):
                    raise invalid_request(f"{at}.tool_use_id: Field required.", f"{at}.tool_use_id")
                text, images = _tool_result_content(block.get("content"), at)
                if block.get("is_error") is True:
                    text = _failed(text)
                results.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
                parts += images
            else:
                parts.append(_part(block, at))
    out = results
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})
    return out


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A user run's chat content: its texts as one string when all its parts are text, else
    the parts (images go only so). One string because DeepSeek's API refuses array content
    ("invalid type: sequence, expected a string") and Claude Code's turns are several text
    blocks; joined by lines, as vLLM reads them (its own Anthropic endpoint sends the blocks
    as parts, leaving out empty ones, and its string content format joins text parts with a
    newline). An empty block adds nothing: joined as it was, it added a stray line."""
    if any(part["type"] != "text" for part in parts):
        return parts
    if len(parts) == 1:
        text: str = parts[0]["text"]
        return text
    return "\n".join([text for part in parts if (text := part["text"])])


def _failed(text: str) -> str:
    """A failed tool's result (`is_error`) as its tool message says it: chat has no error flag."""
    return FAILED_PREFIX + text if text else FAILED_ALONE


def _tool_result_content(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise invalid_request(f"{where}.content: must be a string or an array of blocks.", f"{where}.content")
    texts, images = [], []
    for i, block in enumerate(content):
        part = _part(block, f"{where}.content.{i}")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)  # chat's tool messages carry text only: images follow as user content
    return "\n".join(texts), images


def _part(block: Any, where: str) -> dict[str, Any]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if isinstance(block.get("text"), str):
            return {"type": "text", "text": block["text"]}
        # Malformed, not Anthropic-only: it was refused as "blocks of type `text` are not
        # supported here" and kept for native candidates only.
        raise invalid_request(f"{where}.text: must be a string.", f"{where}.text")
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": image_url(block.get("source"), where)}}
    if kind == "document":
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return {"type": "text", "text": source["data"]}
        text = _content_document_text(source)
        if text is not None:
            return {"type": "text", "text": text}
        if source.get("type") != "base64":
            # chat's file parts carry the file's bytes; nothing here fetches a URL for them
            raise invalid_request(
                f"{where}.source: documents must be base64 or text sources.", f"{where}.source", ANTHROPIC_ONLY
            )
        file: dict[str, Any] = {"file_data": _source_url(source, where)}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    raise invalid_request(f"{where}: blocks of type `{kind}` are not supported here.", where, ANTHROPIC_ONLY)


def _content_document_text(source: dict[str, Any]) -> str | None:
    """A custom-content document's text (`source: {type: content, content: ...}`: a string or
    text blocks, each a chunk Anthropic may cite), joined by line breaks as chat has no chunks;
    None for another source, or one holding images (kept for a native candidate)."""
    if source.get("type") != "content":
        return None
    content = source.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for block in content:
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            return None
        texts.append(block["text"])
    return "\n".join(texts)


# The image types Anthropic takes in a base64 source (its API's enum).
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def image_url(source: Any, where: str) -> str:
    """An image block's source as chat's image URL. A base64 source of another type is
    Anthropic's 400 (a chat backend was sent `data:image/bmp;...`); an image by file id
    (its Files API) only Anthropic holds: a native candidate takes it (`ANTHROPIC_ONLY`)."""
    if type(source) is dict:
        kind = source.get("type")
        if kind == "file":
            raise invalid_request(
                f"{where}.source: images by file id are only available on Anthropic backends.",
                f"{where}.source",
                ANTHROPIC_ONLY,
            )
        if kind == "base64" and source.get("media_type") not in _IMAGE_TYPES:
            raise invalid_request(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
                f"{where}.source.media_type",
            )
    return _source_url(source, where)


def _source_url(source: Any, where: str) -> str:
    if isinstance(source, dict) and source.get("type") == "url":
        url = source.get("url")
        if isinstance(url, str):
            return url
    if (
        isinstance(source, dict)
        and source.get("type") == "base64"
        and isinstance(source.get("media_type"), str)
        and isinstance(source.get("data"), str)
    ):
        return f"data:{source['media_type']};base64,{source['data']}"
    raise invalid_request(f"{where}.source: must be a base64 or url source.", f"{where}.source")
