"""A Messages request as routing reads it, without translating it to chat (its routing view).

A request passed through natively to a backend that serves Messages never needs its chat
translation, yet routing, limits and the classifier read the chat request: its top-level
fields, its prompt's token estimate, whether it carries images, its system text and last
user text. `messages_view` computes exactly those from the Messages body, and the ingress
builds the whole translation (`messages_to_chat`) only when something reads it: a candidate
asked in chat, a plugged classifier, a broken stream's continuation. `messages_fields` is
made at parse time; `messages_prompt`, the dearer part, when routing first reads the prompt
(`ChatRequest.prompt`), and not at all when no candidate could take the request natively
(the ingress translates it up front then). Its pass also reads what Anthropic refuses
(`check_tool_results`): a body it could refuse has no view, so one walk of the turns serves
routing and the check alike.

Each fact equals what the translation gives (tests compare both on every sample): the
fields are made by the translation's own code (`required_fields`, `chat_options`,
`tool_choice_and_stream`); the estimate counts, message by message, the bytes
`estimate_prompt_tokens` would count in the chat messages the turns become (thinking blocks as the `reasoning_content` they become), and the tools' JSON by its length as Anthropic's tools plus the
difference each tool's chat spelling makes (their schemas, most of the bytes, are the same
in both). A body outside the usual shape (a mid-conversation system turn, documents, images
inside tool results, a malformed turn or tool) has no view: the caller translates it whole,
which also names what is wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.chat import PromptFacts
from gateway.protocol.errors import GatewayError
from gateway.protocol.messages import chat_options, required_fields, tool_choice_and_stream
from gateway.protocol.messages_turns import (
    FAILED_ALONE,
    FAILED_PREFIX,
    TOOL_INPUT_TYPES,
    chat_tool_call,
    image_url,
    system_text,
)
from gateway.protocol.tokens import IMAGE_BYTES, PER_MESSAGE, json_tokens, utf8_length


def _json_length(value: Any) -> int:
    return len(orjson.dumps(value))


# The JSON bytes a chat tool adds around the values it shares with the Anthropic tool it
# comes from (name, input_schema as parameters, description): measured, not written out.
_CHAT_TOOL = _json_length({"type": "function", "function": {"name": "", "parameters": {}}}) - 4
_CHAT_DESCRIPTION = _json_length({"type": "function", "function": {"name": "", "parameters": {}, "description": ""}})
_CHAT_DESCRIPTION -= _CHAT_TOOL + 6
_DEFAULT_PARAMETERS = _json_length({"type": "object", "properties": {}})
_KEYS = {key: _json_length(key) + 1 for key in ("name", "description", "input_schema", "cache_control", "type")}
# The usual tool (name, description, input_schema): braces, two commas, three keys and colons.
_USUAL_DELTA = (
    _CHAT_TOOL + _CHAT_DESCRIPTION - (2 + 2 + sum(_KEYS[key] for key in ("name", "description", "input_schema")))
)


def messages_fields(body: Any) -> dict[str, Any] | None:
    """The chat translation's top-level fields (`tools` as the client sent them, no
    `messages`); None when a field is malformed (the translation names it in its 400)."""
    try:
        model, max_tokens, _ = required_fields(body)
        fields: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
        chat_options(body, fields)
        tools = body.get("tools")
        if tools:
            fields["tools"] = tools
        tool_choice_and_stream(body, fields)
    except GatewayError:
        return None
    return fields


def messages_prompt(body: dict[str, Any]) -> PromptFacts | None:
    """The translation's prompt facts, counted on the body (after `messages_fields`); None
    when the body is not of the usual shape (translate it whole)."""
    try:
        system = system_text(body.get("system"))
        prompt = _prompt(body["messages"], system)
        if prompt is None:
            return None
        tools = body.get("tools")
        if tools:
            delta = _tools_delta(tools)
            if delta is None:
                return None
            prompt.tokens += (_json_length(tools) + delta + 2) // 3
    except GatewayError:
        return None  # the translation raises it again, in its own order
    except orjson.JSONEncodeError:
        return None  # nested deeper than orjson writes (it reads deeper): the translation's estimate refuses it (400)
    return prompt


def coarse_prompt(body: dict[str, Any], body_bytes: int) -> PromptFacts:
    """Facts for a body whose translation is refused as Anthropic-only (`ANTHROPIC_ONLY`:
    server tools, documents by URL, search results), which only a native candidate can take:
    the body's size as the estimate (bytes / 3, more than its content's), an image or base64
    document counted as the view counts an image (not by its data's size), whether there is
    one, and the system and last user text as far as they are plain."""
    try:
        system = system_text(body.get("system"))
    except GatewayError:
        system = ""
    size, images, last_user = body_bytes, False, None
    for turn in body.get("messages") or ():
        content = turn.get("content") if type(turn) is dict else None
        if type(content) is str:
            if turn.get("role") == "user":
                last_user = content
            continue
        if type(content) is not list:
            continue
        texts = []
        for block in content:
            if type(block) is not dict:
                continue
            kind = block.get("type")
            if kind == "text" and type(block.get("text")) is str:
                texts.append(block["text"])
            elif kind == "image" or kind == "document":
                images = True
                source = block.get("source")
                data = source.get("data") if type(source) is dict and source.get("type") == "base64" else None
                if type(data) is str:  # base64 bytes: counted as one image, as the view does
                    size += IMAGE_BYTES - len(data)
        if turn.get("role") == "user" and texts:
            last_user = "\n".join(texts)
    return PromptFacts(3 + (max(size, 0) + 2) // 3, images, last_user, system)


def _prompt(turns: list[Any], system: str) -> PromptFacts | None:
    """`estimate_prompt_tokens` of the translated messages, counted on the turns. A run of
    consecutive user turns, or of assistant turns, is one chat message in the translation
    (`append_turns`): its text and calls are counted together when the run ends.

    The same pass reads what `check_tool_results` reads, and gives up (None) on anything it
    could refuse: an empty turn or text block, a blank one, a prefill ending in whitespace,
    a turn's tool_result ids other than the tool_use ids of the turn before, in order, once
    each. So a view exists only for a conversation the check passes, and the ingress runs the
    check (which names what is wrong) only for a body without one: a second walk of every
    turn and block, 85k instructions of an agent's ten-turn request, for the usual body none."""
    tokens = 3
    images = False
    last_user = None
    if system:
        tokens += PER_MESSAGE + (utf8_length(system) + 2) // 3
    run = None  # the role of the run of turns being counted, and its chat message so far:
    size, parts = 0, 0  # text bytes and parts
    thinking, thoughts = 0, 0  # an assistant's thinking: bytes as its `reasoning_content` holds them, blocks
    texts: list[str] = []  # a user's texts
    calls: list[dict[str, Any]] = []
    asked: list[Any] = []  # the tool_use ids of the turn before, which this one must answer
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        if type(turn) is not dict:
            return None
        role = turn.get("role")
        if role != "user" and role != "assistant":
            return None  # a system turn (or a malformed one): the translation's
        if role != run:
            if run is not None:
                tokens += _message_tokens(run, size, parts, calls, thinking)
                if run == "user" and parts:
                    last_user = "\n".join(texts)
            run, size, parts, texts, calls = role, 0, 0, [], []
            thinking, thoughts = 0, 0
        content = turn.get("content")
        if type(content) is str:
            if asked:
                return None  # calls left unanswered: the check's
            if i == last and role == "assistant":
                if content[-1:].isspace():
                    return None  # a prefill ending in whitespace (an empty one stands)
            elif not content:
                return None  # an empty turn
            size += utf8_length(content)
            parts += 1
            texts.append(content)
            continue
        if type(content) is not list or (asked and role == "assistant"):
            return None
        if not content and (i != last or role != "assistant"):
            return None  # an empty turn (but for an empty prefill)
        if role == "assistant":
            for block in content:
                kind = block.get("type") if type(block) is dict else None
                if kind == "text":
                    text = block.get("text")
                    if type(text) is not str or not text or text.isspace():
                        return None
                    size += utf8_length(text)
                elif kind == "tool_use":
                    if type(block.get("id")) is not str or type(block.get("name")) is not str:
                        return None
                    if type(block.get("input")) not in TOOL_INPUT_TYPES:
                        return None  # the translation's 400
                    calls.append(chat_tool_call(block))
                    asked.append(block["id"])
                elif kind == "thinking":
                    thought = block.get("thinking")
                    if type(thought) is str:  # the translation's blocks, a paragraph ("\n\n") apart
                        thinking += utf8_length(thought) + (2 if thoughts else 0)
                        thoughts += 1
                elif kind != "redacted_thinking":
                    return None
            if len(asked) > 1 and len(set(asked)) != len(asked):
                return None  # an id twice
            if i == last:
                asked = []  # a prefill's calls: nothing after it answers them
                end = content[-1] if content else None
                if end is not None and end.get("type") == "text" and end["text"][-1].isspace():
                    return None
            continue
        # A user turn: each tool_result a tool message, the rest parts of the run's user message.
        answered = 0
        for block in content:
            kind = block.get("type") if type(block) is dict else None
            if kind == "tool_result":
                result = _result_length(block)
                if result is None or answered >= len(asked) or block["tool_use_id"] != asked[answered]:
                    return None
                answered += 1
                tokens += PER_MESSAGE + (result + 2) // 3
            elif kind == "text":
                text = block.get("text")
                if type(text) is not str or not text or text.isspace():
                    return None
                size += utf8_length(text)
                parts += 1
                texts.append(text)
            elif kind == "image":
                image_url(block.get("source"), "")  # a 400 for a bad source: no view
                size += IMAGE_BYTES
                parts += 1
                images = True
            else:
                return None  # documents, and blocks the translation refuses
        if answered != len(asked):
            return None
        asked = []
    if run is not None:
        tokens += _message_tokens(run, size, parts, calls, thinking)
        if run == "user" and parts:
            last_user = "\n".join(texts)
    return PromptFacts(tokens, images, last_user, system)


def _message_tokens(role: str, size: int, parts: int, calls: list[dict[str, Any]], thinking: int) -> int:
    """The estimate of a run's one chat message (`size`: its text bytes). An assistant's
    texts are one string, followed by its calls and its thinking (`thinking`: the bytes of
    its `reasoning_content`, a field the estimate counts apart); a user's are one string of
    its texts joined by lines when all are text (`messages._user_content`), else parts
    the estimate joins by spaces (`_content_text`): one separator between parts either way. A user run of tool results alone has no user message."""
    if role == "assistant":
        return PER_MESSAGE + (size + 2) // 3 + (json_tokens(calls) if calls else 0) + (thinking + 2) // 3
    if not parts:
        return 0
    return PER_MESSAGE + (size + parts - 1 + 2) // 3


def _result_length(block: dict[str, Any]) -> int | None:
    """The bytes of a tool_result's text as its tool message holds it (a failed tool's says
    so: `_failed`); None for images."""
    if type(block.get("tool_use_id")) is not str:
        return None
    content = block.get("content")
    if content is None or type(content) is str:
        size = utf8_length(content) if content else 0
    elif type(content) is not list:
        return None
    else:
        size = 0
        for part in content:
            if type(part) is not dict or part.get("type") != "text" or type(part.get("text")) is not str:
                return None
            size += utf8_length(part["text"])
        size = size + len(content) - 1 if content else 0
    if block.get("is_error") is True:
        return size + len(FAILED_PREFIX) if size else len(FAILED_ALONE)
    return size


def _tools_delta(tools: Any) -> int | None:
    """How many more JSON bytes the tools take as chat's function tools than as sent; None
    for a tool the translation refuses."""
    if type(tools) is not list:
        return None
    delta = 0
    for tool in tools:
        if type(tool) is not dict:
            return None
        name = tool.get("name")
        description = tool.get("description")
        schema = tool.get("input_schema")
        if type(schema) is not dict:  # none (a server tool's, or missing) or malformed: the translation's
            return None
        # The usual tool: exactly these three members, all carried over.
        if len(tool) == 3 and type(name) is str and name and type(description) is str and schema:
            delta += _USUAL_DELTA
            continue
        if type(name) is not str or not name or tool.get("type") not in (None, "custom"):
            return None
        chat = _CHAT_TOOL
        # Anthropic's tool: braces, commas between its members, each key and colon, and the
        # values chat does not carry over (name, a schema and a string description it does).
        native = 2 + len(tool) - 1
        for key, value in tool.items():
            native += _KEYS.get(key) or _json_length(key) + 1
            if key == "name":
                continue
            if key == "input_schema" and value:
                continue
            if key == "description" and type(value) is str:
                continue
            native += _json_length(value)
        if type(description) is str:
            chat += _CHAT_DESCRIPTION
        if not schema:
            chat += _DEFAULT_PARAMETERS
        delta += chat - native
    return delta
