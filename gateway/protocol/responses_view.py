"""A Responses request as routing reads it, without translating it to chat (its routing view).

The Responses twin of `gateway.protocol.messages_view` (read its docstring for why): the
fields routing reads are made by the translation's own code (`responses_settings`:
`request_model`, `chat_options`, `chat_tail`), and the prompt's facts (token estimate,
images, system text, last user text) are counted on the input items as the chat messages
they become: an assistant message takes the function calls that follow it, and its text when
it had none, exactly as `responses_input.append_messages` merges them, and the reasoning
items before it as its `reasoning_content`.
Function tools are counted as their JSON as sent plus what chat's `{"type": "function",
"function": {...}}` spelling adds. Any other tool the translation takes (Codex's `custom`
apply_patch, a `namespace` of functions, a client-run `tool_search`) is made into its chat
tool by the translation's own `chat_tool`, namespaces flattened (`view_tools`): routing reads
their names for the classifier and their JSON for the estimate. Outside the usual shape (tool
search items, built-in tools, anything malformed) there is no view: the caller translates
the request whole.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.chat import PromptFacts
from gateway.protocol.errors import GatewayError, invalid_request
from gateway.protocol.responses_input import (
    ROLES,
    SEPARATORS,
    TEXT_PARTS,
    chat_tool_call,
    content_text,
    input_items,
    reasoning_text,
)
from gateway.protocol.responses_settings import chat_options, chat_tail, request_model
from gateway.protocol.responses_tools import FUNCTION_FIELDS, chat_tool, flatten_namespace
from gateway.protocol.tokens import IMAGE_BYTES, PER_MESSAGE, utf8_length


def _json_length(value: Any) -> int:
    return len(orjson.dumps(value))


# What chat's spelling of a function tool adds to the Responses one: the members it keeps are
# the same bytes, `"type":"function",` becomes `"type":"function","function":{` ... `}`.
_CHAT_TOOL_DELTA = _json_length({"type": "function", "function": {"name": ""}}) - _json_length(
    {"type": "function", "name": ""}
)
_KEPT = frozenset(FUNCTION_FIELDS)
# A chat tool call's JSON, less its three strings (id, name, arguments), which one dump of
# the three as an array measures (less its brackets and commas): what `chat_tool_call` would
# build and `json_tokens` dump, without building it.
_CALL_FRAME = _json_length({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
_CALL_FRAME -= _json_length(("", "", ""))


class _Message:
    """One chat message the items become, reduced to what the estimate and classifier read."""

    __slots__ = ("calls", "images", "joined", "pieces", "reasoning", "role", "size", "text")

    def __init__(self, role: str, size: int, text: str, calls: int = 0, images: bool = False, pieces: int = 1) -> None:
        self.role = role
        self.size = size  # UTF-8 bytes of its content's text as `estimate_prompt_tokens` reads it
        self.text = text  # its content's text as the classifier reads it (`whole_text`)
        # A message joined from several in a row: its texts, joined when read (each join
        # copying the text before it, a request of many messages in a row was seconds of CPU).
        self.joined: list[str] | None = None
        self.calls = calls  # JSON bytes of its `tool_calls` list (0: none)
        self.images = images
        self.pieces = pieces  # the texts and images the estimate joins (a user's: 0 for none)
        self.reasoning: int | None = None  # UTF-8 bytes of its `reasoning_content` (None: it has none)

    def whole_text(self) -> str:
        return self.text if self.joined is None else "".join(self.joined)


def responses_fields(body: Any) -> dict[str, Any] | None:
    """The chat translation's top-level fields (no `messages`; `tools` as `view_tools` gives
    them); None when a field is malformed (the translation names it in its 400)."""
    try:
        fields: dict[str, Any] = {"model": request_model(body)}
        chat_options(body, fields)
        tools = body.get("tools")
        if tools:
            fields["tools"] = view_tools(tools)
        chat_tail(body, fields)
    except GatewayError:
        return None
    return fields


def view_tools(tools: Any) -> Any:
    """The tools as routing reads them: the client's list itself when every tool is a function
    tool (the usual case), else its function tools as sent (inside a namespace too) and each
    other tool as the chat tool the translation's `chat_tool` makes of it (a custom tool, a
    client tool search), so the classifier reads the names the translation gives. A 400 for
    a tool the translation refuses (or a function without a name, which the estimate could
    not tell from a made one)."""
    if type(tools) is not list:
        return tools  # the prompt has no view: the translation refuses it
    for tool in tools:
        if type(tool) is not dict or tool.get("type") != "function":
            break
    else:
        return tools
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if type(tool) is dict and tool.get("type") == "function":
            _named(tool, i, None)
            out.append(tool)
        elif type(tool) is dict and tool.get("type") == "namespace":
            for inner, where in flatten_namespace(tool, f"tools[{i}]"):
                if type(inner) is dict and inner.get("type") == "function":
                    _named(inner, i, where)
                    out.append(inner)
                else:
                    out.append(chat_tool(inner, where))
        else:
            out.append(chat_tool(tool, f"tools[{i}]"))
    return out


def _named(tool: dict[str, Any], i: int, where: str | None) -> None:
    """The translation's 400 for a function tool without a name."""
    name = tool.get("name")
    if type(name) is not str or not name:
        where = where or f"tools[{i}]"
        raise invalid_request(f"Missing required parameter: '{where}.name'.", f"{where}.name")


def responses_prompt(
    body: dict[str, Any], previous: list[dict[str, Any]] | None = None, tools: Any = None
) -> PromptFacts | None:
    """The translation's prompt facts, counted on the input items (after `responses_fields`,
    whose `tools` are passed here); None when the request is not of the usual shape
    (translate it whole)."""
    try:
        instructions = body.get("instructions")
        messages: list[_Message] = []
        if isinstance(instructions, str) and instructions:
            messages.append(_Message("system", utf8_length(instructions), instructions))
        items = input_items(body.get("input"))
        if not items and previous is None:
            return None
        if previous and not _read_items(previous, messages):
            return None
        if not _read_items(items, messages):
            return None
        tokens = 3
        images = False
        for message in messages:
            images = images or message.images
            tokens += PER_MESSAGE + (message.size + 2) // 3
            if message.calls:
                tokens += (message.calls + 2) // 3  # json_tokens of its tool calls
            if message.reasoning is not None:
                tokens += (message.reasoning + 2) // 3
        sent = body.get("tools")
        if sent:
            if tools is None:
                tools = sent
            delta = _tools_delta(tools, tools is not sent)
            if delta is None:
                return None
            if tools:  # none, for an empty namespace
                tokens += (_json_length(tools) + delta + 2) // 3
    except GatewayError:
        return None  # the translation raises it again, in its own order
    except orjson.JSONEncodeError:
        return None  # nested deeper than orjson writes (it reads deeper): the translation's estimate refuses it (400)
    last_user = next((m.whole_text() for m in reversed(messages) if m.role == "user"), None)
    system = messages[0].whole_text() if messages and messages[0].role == "system" else ""
    return PromptFacts(tokens, images, last_user, system)


def _read_items(items: list[dict[str, Any]], messages: list[_Message]) -> bool:
    """Append the chat messages `items` become (as `append_messages` does); False when an item
    is not of the usual kinds."""
    thought: int | None = None  # the bytes of the reasoning items' text since the last message
    for item in items:
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            role = ROLES.get(role) if type(role) is str else None
            if role is None:
                return False
            read = _content(item.get("content"), role)
            if read is None:
                return False
            size, text, images, pieces = read
            last = messages[-1] if messages else None
            if role == "system" and last is not None and last.role != "system":
                role = "user"  # a developer message mid-conversation: user text in its place, as translated
            if role == "assistant" and last is not None and last.role == "assistant" and last.size == 0:
                last.size, last.text, last.joined = size, text, None  # the text of the turn whose calls came first
            elif last is not None and last.role == role and not last.calls:
                # One message of a role (as `responses_input` joins them): texts joined by its
                # separator, a user's parts by a space (as long as its line break).
                separator = SEPARATORS[role] if last.pieces and pieces else ""
                last.size = last.size + len(separator) + size
                if last.joined is None:
                    last.joined = [last.text]
                last.joined += (separator, text)
                last.images, last.pieces = last.images or images, last.pieces + pieces
            else:
                messages.append(_Message(role, size, text, 0, images, pieces))
            if thought is not None:
                if role == "assistant":
                    _reasoned(messages[-1], thought)
                thought = None  # reasoning before any other turn is not sent
        elif kind == "function_call" or kind == "custom_tool_call":
            call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
            if (
                kind != "function_call"
                or type(call_id) is not str
                or type(name) is not str
                or type(arguments) is not str
            ):
                made = chat_tool_call(item, "")  # a 400 for a malformed call (no view), or a custom call's
                call_id, name, arguments = made["id"], made["function"]["name"], made["function"]["arguments"]
            size = _CALL_FRAME + _json_length((call_id, name, arguments))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                # Parallel calls share a turn: `[call]`, then `,call` for each one more.
                last.calls = last.calls + 1 + size if last.calls else 2 + size
            else:
                messages.append(_Message("assistant", 0, "", 2 + size))
            if thought is not None:
                _reasoned(messages[-1], thought)
                thought = None
        elif kind == "function_call_output" or kind == "custom_tool_call_output":
            if type(item.get("call_id")) is not str:
                return False
            output = item.get("output")
            if type(output) is list and any(type(p) is not dict or p.get("type") not in TEXT_PARTS for p in output):
                return False  # an image: a user message after the tool messages (translated whole)
            text = output if type(output) is str else content_text(output, "")
            messages.append(_Message("tool", utf8_length(text), text))
        elif kind == "reasoning":
            reasoning = reasoning_text(item)
            if reasoning:  # the items' texts a paragraph ("\n\n") apart, as the translation joins them
                size = utf8_length(reasoning)
                thought = size if thought is None else thought + 2 + size
        else:
            return False  # tool search items, and kinds the translation refuses
    return True


def _reasoned(message: _Message, thought: int) -> None:
    """The reasoning before an assistant turn, counted as the `reasoning_content` the
    translation (`responses_input`) gives it: after any it had, a paragraph apart."""
    message.reasoning = thought if message.reasoning is None else message.reasoning + 2 + thought


def _content(content: Any, role: str) -> tuple[int, str, bool, int] | None:
    """(size, text, whether it has images, its texts and images) of a message's content as
    its chat message holds it; None for parts the translation refuses."""
    if type(content) is str:
        return utf8_length(content), content, False, 1
    if type(content) is not list:
        return None
    texts: list[str] = []
    size = pieces = 0
    images = False
    for part in content:
        kind = part.get("type") if type(part) is dict else None
        if kind in TEXT_PARTS:
            text = part.get("text")
        elif kind == "refusal":
            text = part.get("refusal")
        elif kind == "input_image" and type(part.get("image_url")) is str and role == "user":
            size += IMAGE_BYTES
            pieces += 1
            images = True
            continue
        elif kind == "input_file" and type(part.get("file_data")) is str and role == "user":
            continue  # a file part: no text, not an image
        else:
            return None
        if type(text) is not str:
            return None
        texts.append(text)
        size += utf8_length(text)
        pieces += 1
    if role != "user":
        return size, "".join(texts), False, 1  # one string: the texts joined with nothing
    # A user's texts are joined by lines (`text_or_parts`), its parts with an image by spaces
    # as `estimate_prompt_tokens` reads them: the same length.
    size += pieces - 1 if pieces else 0
    return size, "\n".join(texts), images, pieces


def _tools_delta(tools: Any, made: bool = False) -> int | None:
    """How many more JSON bytes the tools take as chat's function tools than as sent; None
    for a tool that is not a plain function tool. `made`: the list is `view_tools`' own,
    whose tools without a `name` are the chat tools it made (counted as they are)."""
    if type(tools) is not list:
        return None
    delta = 0
    for tool in tools:
        if type(tool) is not dict or tool.get("type") != "function":
            return None
        if made and "name" not in tool:
            continue
        name = tool.get("name")
        if type(name) is not str or not name:
            return None
        delta += _CHAT_TOOL_DELTA
        # The usual tool: type, name and the other kept members, none of them null.
        kept = 2 + (tool.get("description") is not None) + (tool.get("parameters") is not None)
        if len(tool) == kept + (tool.get("strict") is not None):
            continue
        for key, value in tool.items():
            if key == "type" or (key in _KEPT and value is not None):
                continue
            delta -= _json_length(key) + 2 + _json_length(value)  # a member chat drops, and its comma
    return delta
