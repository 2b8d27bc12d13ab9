"""OpenAI's Responses API at the gateway's edge: a request translated to chat completions.

Codex and the `openai` SDK's `responses` calls reach the one chat pipeline through this
module: `responses_to_chat` turns a request (plus the items of the response it continues)
into a chat payload. The way back is `gateway.protocol.responses_answer` (a chat answer as a
Response object, and `conversation_items`, what the gateway stores so that
`previous_response_id` can continue a conversation through any backend) and
`gateway.protocol.responses_stream` (a streamed one as the typed event sequence). Pure
code, no I/O; storing and looking up responses is the route's business.

Mappings chosen where the APIs differ:
- Function tools translate as they are. Custom (freeform) tools, which Codex uses for
  apply_patch, become function tools taking one string `input` (their grammar, if any, in the
  description), and calls to them come back as `custom_tool_call` items. OpenAI's built-in
  tools (web search, file search, computer use, code interpreter...) run inside OpenAI, so
  they get a 400 naming the tool. A `namespace` tool (Codex's sub-agent functions) is the
  function tools inside it; calls to them come back with the `namespace` set. A `tool_search`
  the client runs itself (`execution: "client"`, Codex's tool discovery) is a function tool
  named `tool_search`; calls to it come back as `tool_search_call` items, and the tools a
  `tool_search_output` item brings are offered from then on. A hosted tool search is a 400.
- `reasoning` items in the input become the `reasoning_content` of the assistant message
  that follows them (its text, or its summary's), sent to backends that take reasoning back
  (`reasoning_history`: DeepSeek refuses a tool call's turn without it) and left out for the
  rest; reasoning a backend returns comes back as a `reasoning` item with `reasoning_text` content.
- `metadata`, `store` and `previous_response_id` are the gateway's: echoed in the Response,
  never sent to a backend. So are `truncation` (`disabled` unless asked), `text.verbosity`,
  `reasoning.summary`, `prompt_cache_key` and `max_tool_calls` (OpenAI's limit on its
  built-in tools' calls, of which there are none here) in chat: echoed as asked, not sent.
  `include: ["message.output_text.logprobs"]` is chat's `logprobs` (with `top_logprobs`),
  the backend's coming back on the output text; `top_logprobs` is echoed (0 unless asked). `service_tier` is not sent and the Response
  says `default`, the tier used, as OpenAI's does. `user` (else `safety_identifier`) is chat's
  `user`. `instructions` apply to their own request only, as OpenAI's do.
- `reasoning.effort` `minimal` is sent as `low`, `xhigh` and `max` as `high` (open-model
  servers take low, medium and high); `none` sends no effort.
- Settings OpenAI refuses get its 400 here, before any backend is asked, whichever way the
  request is sent on (a native backend is sent them as they came): `temperature` outside 0..2,
  `top_p` outside 0..1, `max_output_tokens` under 16, `top_logprobs` outside 0..20, a
  `max_tool_calls` that is not an integer, an unknown `truncation`, `text.verbosity` or
  `reasoning.summary` value, a `reasoning.effort` that is not a string, an `include` that is
  not an array of strings.
  `background: true` is a 400 too: the gateway answers every request while its connection
  is open, so there is no queued response to poll.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.body import json_text
from gateway.protocol.chat import REASONING, text_or_parts, tool_name
from gateway.protocol.errors import echoed, invalid_request
from gateway.protocol.translation import encode_event

# Responses events go out as Anthropic's do (an `event:` line naming the type, then the data),
# so one encoder serves both; it is re-exported here for the /v1/responses route.
__all__ = ["encode_event", "responses_to_chat"]

_FUNCTION_FIELDS = ("name", "description", "parameters", "strict")
# reasoning.effort as OpenAI documents it -> what chat backends are sent (None: no effort).
_EFFORTS = {
    "none": None,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
_SAMPLING_MAXIMUM = {"temperature": 2, "top_p": 1}
_MIN_OUTPUT_TOKENS = 16  # OpenAI's minimum for max_output_tokens
_MAX_TOP_LOGPROBS = 20  # OpenAI's range for top_logprobs: 0..20
LOGPROBS = "message.output_text.logprobs"  # the includable that asks for the text's logprobs
_TRUNCATIONS = ("auto", "disabled")
_VERBOSITIES = ("low", "medium", "high")  # text.verbosity
_SUMMARIES = ("auto", "concise", "detailed")  # reasoning.summary
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS = ("input_text", "output_text")
TOOL_SEARCH = "tool_search"  # the function a client-side tool search is offered as
_SEARCH_PARAMETERS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
# Delta fields a plain text continuation may carry with a value (others only as nulls).
_CONTENT_ONLY = frozenset({"content", "role"})


# -- request ----------------------------------------------------------------------------------


def responses_to_chat(body: Any, previous: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat payload for a Responses request continuing `previous` (stored items) if any."""
    model = _model(body)
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = input_items(body.get("input"))
    if not items and previous is None:  # continuing a conversation may add no input
        raise invalid_request("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    discovered: list[dict[str, Any]] = []  # tools a client-side tool search brought in
    joined: list[dict[str, Any]] = []  # the messages holding a `_Text`
    _append_items(previous or [], messages, "previous_response_id", discovered, joined)  # stored by us: well-formed
    _append_items(items, messages, "input", discovered, joined)
    _join_texts(joined)

    chat: dict[str, Any] = {"model": model, "messages": messages}
    _options(body, chat)
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise invalid_request("Invalid type for 'tools': expected an array.", "tools")
        chat["tools"] = _tools(tools)
    if discovered:
        known = {t["function"]["name"] for t in chat.get("tools", ())}
        chat["tools"] = chat.get("tools", []) + [t for t in discovered if t["function"]["name"] not in known]
    _tail(body, chat)
    return chat


def _model(body: Any) -> str:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid_request("Invalid type for 'model': expected a string.", "model", "invalid_type")
    if not model:
        raise invalid_request("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    return model


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """Sampling, user, max_output_tokens, reasoning and text.format, as chat spells them;
    OpenAI's 400s for those and for the settings no backend is sent in chat (`_settings`)."""
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        value = body.get(name)
        if value is not None:
            if name != "parallel_tool_calls":
                _sampling(name, value)
            chat[name] = value
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        if body.get(name) is not None and type(body[name]) is not str:
            raise invalid_request(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    for name, maximum in (("top_logprobs", _MAX_TOP_LOGPROBS), ("max_tool_calls", None)):
        if body.get(name) is not None:
            _count(name, body[name], maximum)
    user = body.get("user") or body.get("safety_identifier")
    if user:
        chat["user"] = user
    limit = body.get("max_output_tokens")
    if limit is not None:
        chat["max_tokens"] = _output_limit(limit)
    reasoning = _object(body.get("reasoning"), "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        effort = _effort(effort)
        if effort is not None:
            chat["reasoning_effort"] = effort
    text = _object(body.get("text"), "text")
    response_format = _response_format(text.get("format"))
    if response_format:
        chat["response_format"] = response_format
    # Echoed in the Response (no chat backend is sent them): OpenAI's values only.
    if reasoning.get("summary") is not None:
        _supported(reasoning["summary"], _SUMMARIES, "reasoning.summary")
    if text.get("verbosity") is not None:
        _supported(text["verbosity"], _VERBOSITIES, "text.verbosity")
    _settings(body)
    if LOGPROBS in (body.get("include") or ()):
        # Asked as OpenAI's are: the includable, `top_logprobs` alternatives at each token.
        chat["logprobs"] = True
        if body.get("top_logprobs"):
            chat["top_logprobs"] = body["top_logprobs"]


def _supported(value: Any, supported: tuple[str, ...], where: str) -> None:
    if value not in supported:
        listed = ", ".join(f"'{v}'" for v in supported[:-1]) + f", and '{supported[-1]}'"
        raise invalid_request(
            f"Invalid value: '{echoed(str(value))}'. Supported values are: {listed}.", where, "invalid_value"
        )


def _sampling(name: str, value: Any) -> None:
    """OpenAI's 400 for a `temperature` outside 0..2 or a `top_p` outside 0..1."""
    if type(value) is not int and type(value) is not float:
        raise invalid_request(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
    if value < 0:
        raise invalid_request(
            f"Invalid '{name}': decimal below minimum value. Expected a value >= 0, but got {value} instead.",
            name,
            "decimal_below_min_value",
        )
    maximum = _SAMPLING_MAXIMUM[name]
    if value > maximum:
        raise invalid_request(
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {maximum}, but got {value} instead.",
            name,
            "decimal_above_max_value",
        )


def _count(name: str, value: Any, maximum: int | None) -> None:
    """OpenAI's 400 for `top_logprobs` outside 0..20 or a `max_tool_calls` that is not a
    count: echoed in every Response (the SDK reads them as integers), a native backend refuses
    them, so a chat one is not let take them."""
    if type(value) is not int:
        raise invalid_request(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
    if value < 0:
        raise invalid_request(
            f"Invalid '{name}': integer below minimum value. Expected a value >= 0, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    if maximum is not None and value > maximum:
        raise invalid_request(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {maximum}, but got {value} instead.",
            name,
            "integer_above_max_value",
        )


def _output_limit(limit: Any) -> int:
    """`max_output_tokens`, which OpenAI requires to be an integer of at least 16: a smaller
    one was taken by a chat backend and refused by a native one, so the answer depended on
    which was asked; now it is this 400 whichever would be."""
    if type(limit) is not int:
        raise invalid_request(
            "Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens", "invalid_type"
        )
    if limit < _MIN_OUTPUT_TOKENS:
        raise invalid_request(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {_MIN_OUTPUT_TOKENS}, "
            f"but got {limit} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    return limit


def _effort(effort: Any) -> str | None:
    """The chat `reasoning_effort` for a `reasoning.effort` (OpenAI's 400 for one that is not
    a string). An effort this table does not know is sent as none: OpenAI adds efforts with
    its models (`xhigh`, then `max`) and Codex sends them as soon as they exist, so refusing
    one would break a newer client on every request; a native backend reads it as sent."""
    if type(effort) is not str:
        raise invalid_request(
            "Invalid type for 'reasoning.effort': expected a string.", "reasoning.effort", "invalid_type"
        )
    return _EFFORTS.get(effort)


def _settings(body: dict[str, Any]) -> None:
    """OpenAI's 400s for `truncation`, `include` and `background`, which no chat backend is
    sent: a value OpenAI refuses would be passed to a native backend or dropped unsaid."""
    truncation = body.get("truncation")
    if truncation is not None and truncation not in _TRUNCATIONS:
        if type(truncation) is not str:
            raise invalid_request(
                "Invalid type for 'truncation': expected one of 'auto' or 'disabled'.", "truncation", "invalid_type"
            )
        raise invalid_request(
            f"Invalid value: '{echoed(truncation)}'. Supported values are: 'auto' and 'disabled'.",
            "truncation",
            "invalid_value",
        )
    include = body.get("include")
    if include is not None:
        if type(include) is not list:
            raise invalid_request(
                "Invalid type for 'include': expected an array of strings.", "include", "invalid_type"
            )
        # Each value a string; which ones is not checked: clients ask for new ones (Codex:
        # `reasoning.encrypted_content`) before a list kept here would know them, and the
        # gateway fills none (a native backend answers for its own).
        for i, value in enumerate(include):  # a few values at most (Codex sends one)
            if type(value) is not str:
                raise invalid_request(
                    f"Invalid type for 'include[{i}]': expected a string.", f"include[{i}]", "invalid_type"
                )
    background = body.get("background")
    if background is not None:
        if type(background) is not bool:
            raise invalid_request("Invalid type for 'background': expected a boolean.", "background", "invalid_type")
        if background:
            # Answered in the foreground, the client would poll a response that was never queued.
            raise invalid_request(
                "Unsupported parameter: 'background'. This gateway runs no background responses: it answers "
                "while the request's connection is open. Send the request without 'background' (or with it "
                "false), and with 'stream' true to read the answer as it is written.",
                "background",
                "unsupported_parameter",
            )


def _tail(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """tool_choice and stream, which follow the tools."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        chat["tool_choice"] = _allowed_tools(choice, chat)
    elif choice is not None:
        chat["tool_choice"] = named = _tool_choice(choice)
        if type(named) is dict and not any(tool_name(t) == named["function"]["name"] for t in chat.get("tools") or ()):
            # Forwarded, one server answered 500 (SGLang), another called a tool not named.
            raise invalid_request(
                f"tool_choice names '{echoed(named['function']['name'])}', which is not in 'tools'.", "tool_choice.name"
            )
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries the usage


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional object field: {} when absent, a 400 when it is something else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid type for '{where}': expected an object.", where)
    return value


def input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items: a string is one user message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise invalid_request("Invalid type for 'input': expected a string or an array of items.", "input")
    return value


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
            role = _ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
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
                merged = messages[-1]["content"] = _joined(earlier, content, _SEPARATORS[role])
                if type(merged) is _Text and type(earlier) is not _Text:
                    joined.append(messages[-1])
            else:
                messages.append({"role": role, "content": content})
            if thought:
                if role == "assistant":
                    _reasoned(messages[-1], thought, joined)
                thought = []
        elif kind in ("function_call", "custom_tool_call", "tool_search_call"):
            call = _search_call(item, where) if kind == "tool_search_call" else _function_call(item, where)
            if messages and _open_assistant(messages[-1]):
                messages[-1].setdefault("tool_calls", []).append(call)  # parallel calls share a turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            if thought:
                _reasoned(messages[-1], thought, joined)
                thought = []
        elif kind == "reasoning":
            text = _reasoning_text(item)
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
            found = _discovered_tools(item.get("tools"))
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


def _reasoning_text(item: dict[str, Any]) -> str:
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
_SEPARATORS = {"system": "\n\n", "user": "\n", "assistant": "\n"}


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
    if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
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


def _text_of(value: Any, where: str) -> str:
    if not isinstance(value, list):
        raise invalid_request(f"Invalid type for '{where}': expected a string or an array.", where)
    return "".join(_part(part, f"{where}[{i}]").get("text", "") for i, part in enumerate(value))


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
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


def _discovered_tools(tools: Any) -> list[dict[str, Any]]:
    """The function tools a client-side tool search returned (namespaces flattened); others,
    which this gateway could not offer anyway, are left out."""
    found = []
    for tool in tools if isinstance(tools, list) else ():
        for inner, _ in _flattened(tool, "tools") if isinstance(tool, dict) else ():
            if isinstance(inner, dict) and inner.get("type") in ("function", "custom") and inner.get("name"):
                found.append(_tool(inner, "tools"))
    return found


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    """The chat tools for the request's `tools` (namespaces flattened). A named function tool,
    nearly every tool an agent sends, is spelled here without `_tool`'s checks (a fifth of
    the translation's time for 20 tools); the same dict either way."""
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if type(tool) is dict and tool.get("type") == "function":
            name = tool.get("name")
            if type(name) is str and name:
                function = {"name": name}
                for key in ("description", "parameters", "strict"):  # _FUNCTION_FIELDS after the name
                    value = tool.get(key)
                    if value is not None:
                        function[key] = value
                out.append({"type": "function", "function": function})
                continue
        out += [_tool(inner, where) for inner, where in _flattened(tool, f"tools[{i}]")]
    return out


def _tool(tool: Any, where: str) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "custom" and isinstance(tool.get("name"), str) and tool["name"]:
        return _custom_tool(tool)
    if kind == "tool_search" and tool.get("execution") == "client":
        # Codex searches its own (deferred) tools: to the model, a function like any other.
        parameters = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else _SEARCH_PARAMETERS
        function = {"name": TOOL_SEARCH, "parameters": parameters}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        return {"type": "function", "function": function}
    if kind != "function":
        raise invalid_request(
            f"The built-in tool '{echoed(kind)}' is not supported by this gateway: it runs inside OpenAI. "
            "Declare your own function tools instead.",
            f"{where}.type",
            "unsupported_tool",
        )
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise invalid_request(f"Missing required parameter: '{where}.name'.", f"{where}.name")
    return {"type": "function", "function": {k: tool[k] for k in _FUNCTION_FIELDS if tool.get(k) is not None}}


def _flattened(tool: Any, where: str) -> list[tuple[Any, str]]:
    """A `namespace` tool (Codex groups its sub-agent functions in one) as the tools inside it,
    each with where it was; any other tool as itself. Calls to them come back with the namespace."""
    if not (isinstance(tool, dict) and tool.get("type") == "namespace"):
        return [(tool, where)]
    inner = tool.get("tools")
    if not isinstance(inner, list):
        raise invalid_request(f"Invalid type for '{where}.tools': expected an array.", f"{where}.tools")
    return [(t, f"{where}.tools[{j}]") for j, t in enumerate(inner)]


def _custom_tool(tool: dict[str, Any]) -> dict[str, Any]:
    description = tool.get("description")
    if not isinstance(description, str):
        description = ""
    fmt = tool.get("format")
    if not isinstance(fmt, dict):
        fmt = {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        description += f"\n\nThe input must follow this {fmt.get('syntax', '')} grammar:\n{fmt['definition']}"
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
        "required": ["input"],
    }
    function: dict[str, Any] = {"name": tool["name"], "parameters": parameters}
    if description:
        function["description"] = description.strip()
    return {"type": "function", "function": function}


CallKinds = tuple[frozenset[str], dict[str, str], bool]


def call_kinds(request: dict[str, Any]) -> CallKinds:
    """What the calls coming back are, by the request's tools, read in one pass and only once
    the answer has a call: the custom tools' names (they answer as custom_tool_call items),
    function name -> the namespace it was declared in, and whether a tool search is the
    client's (its calls answer as tool_search_call items)."""
    custom: set[str] = set()
    namespaces: dict[str, str] = {}
    search = False
    tools = request.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind == "function":
            continue
        if kind == "custom" and "name" in tool:
            custom.add(tool["name"])
        elif kind == "namespace" and isinstance(tool.get("name"), str):
            for inner in tool.get("tools") or ():
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    namespaces[inner["name"]] = tool["name"]
        elif kind == "tool_search" and tool.get("execution") == "client":
            search = True
    return frozenset(custom), namespaces, search


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    named = isinstance(choice, dict) and choice.get("type") in ("function", "custom")
    if named and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if named:  # a kind this gateway takes, without the name it needs
        raise invalid_request(
            "Missing required parameter: 'tool_choice.name'.", "tool_choice.name", "missing_required_parameter"
        )
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise invalid_request(f"tool_choice '{echoed(kind)}' is not supported by this gateway.", "tool_choice")


def _allowed_tools(choice: dict[str, Any], chat: dict[str, Any]) -> str:
    """OpenAI's `allowed_tools` choice as chat spells it: `tools` cut to the ones it names, and
    its mode ("auto", "required") as the choice. `chat["tools"]` is replaced, not edited (in
    the routing view it may be the client's own list)."""
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise invalid_request(
            "Invalid value for 'tool_choice.mode': expected 'auto' or 'required'.", "tool_choice.mode", "invalid_value"
        )
    named = choice.get("tools")
    if type(named) is not list or not named:
        raise invalid_request(
            "Missing required parameter: 'tool_choice.tools'.", "tool_choice.tools", "missing_required_parameter"
        )
    names: set[str] = set()
    for i, tool in enumerate(named):
        if (
            type(tool) is not dict
            or tool.get("type") not in ("function", "custom")
            or type(tool.get("name")) is not str
        ):
            where = f"tool_choice.tools[{i}]"
            raise invalid_request(
                f"'{where}' must name a function or custom tool ({{'type': 'function', 'name': ...}}): allowed "
                "tools of other kinds are not supported by this gateway.",
                where,
            )
        names.add(tool["name"])
    kept = [tool for tool in chat.get("tools") or () if tool_name(tool) in names]
    missing = names.difference(tool_name(tool) for tool in kept)
    if missing:
        raise invalid_request(
            f"tool_choice.tools names '{echoed(min(missing))}', which is not in 'tools'.", "tool_choice.tools"
        )
    chat["tools"] = kept
    return str(mode)


def _response_format(fmt: Any) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt.get("schema"), dict) and isinstance(fmt.get("name"), str):
        schema = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    raise invalid_request("text.format must be text, json_object or json_schema with a name and schema.", "text.format")
