"""A Responses request's input items as chat messages, and OpenAI's 400s for calls and outputs that do not pair up.

`input_items` reads `input` (a string is one user message). `append_messages` turns the
items a stored response continues from, then the request's, into chat messages: messages of
one role in a row joined into one (chat backends refuse successive ones), function, custom
and tool search calls as an assistant turn's `tool_calls`, their outputs as `tool` messages
(the images an output holds after them, as the user's). `check_tool_outputs`, run by the
route over the stored conversation and the input before routing, is OpenAI's 400 for a call
no output answers or an output answering no call. The routing view
(`gateway.protocol.responses_view`) counts the same items as the messages made here,
without making them. Pure code, no I/O.

Mappings chosen where the APIs differ: `reasoning` items in the input become the
`reasoning_content` of the assistant message that follows them (its text, or its summary's),
sent to backends that take reasoning back (`reasoning_history`: DeepSeek refuses a tool
call's turn without it) and left out for the rest; reasoning a backend returns comes back as
a `reasoning` item with `reasoning_text` content (`gateway.protocol.responses_answer`).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.body import json_text
from gateway.protocol.chat import REASONING, text_or_parts
from gateway.protocol.errors import echoed, invalid_request
from gateway.protocol.responses_tools import TOOL_SEARCH, discovered_tools

# The chat role of each message role (a developer message is a system one).
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# The content parts that are text, input and output alike.
TEXT_PARTS = ("input_text", "output_text")


def input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items: a string is one user message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise invalid_request("Invalid type for 'input': expected a string or an array of items.", "input")
    return value


def append_messages(
    messages: list[dict[str, Any]], previous: list[dict[str, Any]], items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Append to `messages` (the instructions, if any) the chat messages of `previous`, the
    stored items a response continues from, then of the request's input `items`; return the
    tools a client-side tool search brought in, offered from then on."""
    discovered: list[dict[str, Any]] = []  # tools a client-side tool search brought in
    joined: list[dict[str, Any]] = []  # the messages holding a `_Text`
    _append_items(previous, messages, "previous_response_id", discovered, joined)  # stored by us: well-formed
    _append_items(items, messages, "input", discovered, joined)
    _join_texts(joined)
    return discovered


def _append_items(
    items: list[dict[str, Any]],
    messages: list[dict[str, Any]],
    field: str,
    discovered: list[dict[str, Any]],
    joined: list[dict[str, Any]],
) -> None:
    thought: list[str] = []  # the reasoning items' texts since the last message: the next assistant turn's
    # Images (and files) tool outputs hold: a chat tool message carries text only, and tool
    # messages must follow their calls together, so they follow the run as one user message.
    shown: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        kind = item.get("type") or ("message" if "role" in item else None)
        if shown and kind not in _TOOL_OUTPUTS:
            _show(messages, shown)
            shown = []
        if kind == "message":
            role = ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
            if role is None:
                raise invalid_request(f"Invalid value for '{where}.role'.", f"{where}.role")
            content = _content(item.get("content"), f"{where}.content", role)
            if role == "system" and messages and messages[-1]["role"] != "system":
                # A system or developer message after the conversation began: user text in its
                # place. Qwen3.5-3.8's templates refuse a system message anywhere but first,
                # and moved there, a note that changes each turn would defeat prefix caching.
                role = "user"
            if role == "assistant" and messages and _open_assistant(messages[-1]) and not messages[-1]["content"]:
                messages[-1]["content"] = content
            elif messages and messages[-1]["role"] == role and "tool_calls" not in messages[-1]:
                # One message of a role where there were several in a row, as chat backends
                # want: DeepSeek refuses "successive user or assistant messages", Qwen3.5/3.6's
                # template (on vLLM) "System message must be at the beginning" for a second
                # one; Codex sends the instructions and a developer message, then its
                # environment context and the prompt as two user messages.
                earlier = messages[-1]["content"]
                merged = messages[-1]["content"] = _joined(earlier, content, SEPARATORS[role])
                if type(merged) is _Text and type(earlier) is not _Text:
                    joined.append(messages[-1])
            else:
                messages.append({"role": role, "content": content})
            if thought:
                if role == "assistant":
                    _reasoned(messages[-1], thought, joined)
                thought = []
        elif kind in ("function_call", "custom_tool_call", "tool_search_call"):
            call = _search_call(item, where) if kind == "tool_search_call" else chat_tool_call(item, where)
            if messages and _open_assistant(messages[-1]):
                messages[-1].setdefault("tool_calls", []).append(call)  # parallel calls share a turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if thought:
                _reasoned(messages[-1], thought, joined)
                thought = []
        elif kind == "reasoning":
            text = reasoning_text(item)
            if text:
                thought.append(text)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise invalid_request(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id")
            output = item.get("output")
            if isinstance(output, str):
                text = output
            else:
                text, parts = _tool_output(output, f"{where}.output")
                shown += parts
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        elif kind == "tool_search_output":
            found = discovered_tools(item.get("tools"))
            discovered += found
            if isinstance(item.get("call_id"), str):
                names = [t["function"]["name"] for t in found]
                text = "Tools now available: " + (", ".join(names) if names else "none found") + "."
                messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        else:
            raise invalid_request(
                f"Input items of type '{echoed(kind)}' are not supported by this gateway; "
                "send messages, function_call and function_call_output items.",
                f"{where}.type",
            )
    if shown:
        _show(messages, shown)


_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output", "tool_search_output"})


def _tool_output(output: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool output given as content parts: its text (the tool message's), and its other
    parts (images, files: Codex's `view_image` answers with one), which were dropped, so the
    model never saw the image it had asked to view."""
    if not isinstance(output, list):
        raise invalid_request(f"Invalid type for '{where}': expected a string or an array.", where)
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(output):
        made = _part(part, f"{where}[{i}]")
        if made["type"] == "text":
            texts.append(made["text"])
        else:
            parts.append(made)
    return "".join(texts), parts


def _show(messages: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
    """The tool outputs' images after their tool messages, as the user's (the Messages
    translation does the same with a tool_result's images); a user message right after joins it."""
    messages.append({"role": "user", "content": parts})


def reasoning_text(item: dict[str, Any]) -> str:
    """A reasoning item's text: its `reasoning_text` content (the gateway's own items, and
    open models' through vLLM), else its summary's (OpenAI's); encrypted content is no text."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if type(parts) is list:
            text = "".join(
                p["text"] for p in parts if type(p) is dict and p.get("type") == kind and type(p.get("text")) is str
            )
            if text:
                return text
    return ""


def _reasoned(message: dict[str, Any], thought: list[str], joined: list[dict[str, Any]]) -> None:
    """The reasoning before an assistant turn, as its chat message's `reasoning_content`
    (sent to backends that take it back: `with_reasoning_history`): the texts a paragraph
    apart, after any it had (`_Text` until `_join_texts`, the message then in `joined`)."""
    pieces = message.get(REASONING)
    if not pieces and len(thought) == 1:  # the usual turn: one reasoning item before it
        message[REASONING] = thought[0]
        return
    if type(pieces) is not _Text:
        pieces = message[REASONING] = _Text([pieces] if pieces else [])
        joined.append(message)
    for text in thought:
        if pieces:
            pieces.append("\n\n")
        pieces.append(text)


# Items that make a tool call and the outputs answering one, as OpenAI's 400s name them.
_CALLS = {
    "function_call": "function call",
    "custom_tool_call": "custom tool call",
    "tool_search_call": "tool search call",
}
_OUTPUTS = {
    "function_call_output": "function call output",
    "custom_tool_call_output": "custom tool call output",
    "tool_search_output": "tool search output",
}


def check_tool_outputs(previous: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """OpenAI's 400s for tool calls and outputs that do not pair up, over the conversation
    `previous` continues and the request's input `items`: an output in `items` whose call
    is neither earlier in them nor in `previous`, and a call (in either) that no output
    answers, even the last item. Sent on, the first is a chat `tool` message answering no
    call (or answering it before it is made), the second an assistant `tool_calls` message
    no tool message answers: chat backends refuse both with an opaque 400, or take them and
    answer nonsense. An output answers a call of any kind (the translation reads only the
    ids). A malformed item is left to the translation, which names it."""
    calls: dict[str, str] = {}  # call_id -> the kind of call, in the order they were made
    answered: set[str] = set()
    for checked, some in ((False, previous), (True, items)):
        for item in some:
            kind, call_id = item.get("type"), item.get("call_id")
            if type(kind) is not str or type(call_id) is not str:
                continue
            if kind in _CALLS:
                calls[call_id] = _CALLS[kind]
            elif kind in _OUTPUTS:
                if checked and call_id not in calls:
                    raise invalid_request(
                        f"No tool call found for {_OUTPUTS[kind]} with call_id {echoed(call_id)}.", "input"
                    )
                answered.add(call_id)
    unanswered = next((call_id for call_id in calls if call_id not in answered), None)
    if unanswered is not None:
        raise invalid_request(f"No tool output found for {calls[unanswered]} {echoed(unanswered)}.", "input")


# What joins the texts of two messages of a role made one: a blank line between system
# prompts (often Markdown documents), a line break elsewhere (as text parts are joined).
SEPARATORS = {"system": "\n\n", "user": "\n", "assistant": "\n"}


class _Text(list[str]):
    """A text being joined from many pieces, as a list of them until `_join_texts`: joined
    message by message, each join copied all the text before it, so a request of many short
    messages in a row (8 MB of them) held the event loop for seconds."""


def _join_texts(joined: list[dict[str, Any]]) -> None:
    for message in joined:
        for key in ("content", REASONING):
            if type(message.get(key)) is _Text:
                message[key] = "".join(message[key])


def _joined(first: Any, then: Any, separator: str) -> Any:
    """Two messages' contents as one: texts joined by `separator` (a `_Text`), else their
    parts in order (one string again when they are all text: an empty list of parts joined
    to a text). `first` is the translation's own, so it is added to in place."""
    if type(first) is _Text:
        if type(then) is str:
            first += (separator, then)
            return first
        first = "".join(first)
    if type(first) is str and type(then) is str:
        return _Text((first, separator, then))
    if type(first) is list and first:
        # Parts, one not text (all-text parts are one string): parts they stay, whatever follows.
        first += _as_parts(then)
        return first
    parts = _as_parts(first) + _as_parts(then)
    return text_or_parts(parts) if parts else parts


def _as_parts(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if type(content) is str else content


def _open_assistant(message: dict[str, object]) -> bool:
    """Whether tool calls may still join this message: an assistant turn that is still the last
    message (a tool's answer would have followed it)."""
    return message["role"] == "assistant"


def _content(content: Any, where: str, role: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid_request(f"Invalid type for '{where}': expected a string or an array.", where)
    parts = [_part(part, f"{where}[{i}]") for i, part in enumerate(content)]
    if role != "user":
        # System and assistant turns carry text.
        if not all(part["type"] == "text" for part in parts):
            raise invalid_request(f"'{where}' may only hold text for the {role} role.", where)
        return "".join(part["text"] for part in parts)
    return text_or_parts(parts) if parts else parts


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        if not isinstance(part.get("image_url"), str):
            raise invalid_request(
                f"'{where}' needs an 'image_url' (a URL or data URL); uploaded file ids are not supported.", where
            )
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file = {"file_data": part["file_data"]}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise invalid_request(f"Content parts of type '{kind}' are not supported here.", where)


def content_text(value: Any, where: str) -> str:
    """The text of content parts (a tool output's): a 400 for a part not supported, none for an image."""
    if not isinstance(value, list):
        raise invalid_request(f"Invalid type for '{where}': expected a string or an array.", where)
    return "".join(_part(part, f"{where}[{i}]").get("text", "") for i, part in enumerate(value))


def chat_tool_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A function or custom tool call item as a chat tool call (a custom call's input as the one
    `input` argument of the function it was offered as); a 400 for a field missing."""
    custom = item.get("type") == "custom_tool_call"
    for name in ("call_id", "name", "input" if custom else "arguments"):
        if not isinstance(item.get(name), str):
            raise invalid_request(f"Missing required parameter: '{where}.{name}'.", f"{where}.{name}")
    if custom:
        arguments = orjson.dumps({"input": item["input"]}).decode()
        return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": arguments}}
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _search_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A client-side tool search the model made: a call of the `tool_search` function."""
    if not isinstance(item.get("call_id"), str):
        raise invalid_request(f"Missing required parameter: '{where}.call_id'.", f"{where}.call_id")
    arguments = item.get("arguments")
    text = arguments if isinstance(arguments, str) else json_text(arguments or {}, f"{where}.arguments")
    return {"id": item["call_id"], "type": "function", "function": {"name": TOOL_SEARCH, "arguments": text}}
