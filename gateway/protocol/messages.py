"""Anthropic's Messages API at the gateway's edge, translated to and from chat completions.

Clients that speak Messages (Claude Code, the `anthropic` SDKs) reach the one chat pipeline
through this module: `messages_to_chat` turns their request into a chat payload,
`chat_to_message` turns the chat answer back into a Message (a streamed one becomes
Anthropic's event sequence in `gateway.protocol.messages_stream`), and `anthropic_error`
renders a gateway error in Anthropic's shape. Pure code, no I/O. The opposite direction (the gateway calling an
Anthropic backend) lives in `gateway.backends.anthropic_translate`, which shares the tables
defined here.

Mappings chosen where the APIs differ:
- `thinking.budget_tokens` -> `reasoning_effort`: under 4096 `low`, under 16384 `medium`,
  from 16384 `high`. These are the egress table's budgets read backwards (low 1024, medium
  4096, high 16384), so a budget survives a round trip through both directions as its
  effort. `adaptive` thinking sends no effort (the backend's default); `output_config.effort`
  is sent as given, `xhigh` and `max` as `high` (chat's highest).
- `cache_control` is accepted anywhere and dropped: chat backends have no equivalent, and
  native pass-through to Anthropic backends never comes through here.
- Earlier `thinking` blocks become the `reasoning_content` of their assistant message, sent
  to backends that take reasoning back (`reasoning_history`, on by default for vLLM,
  DeepSeek, Moonshot and Z.ai, whose thinking models reason across tool calls: DeepSeek
  refuses a tool call's turn without it) and left out for the rest; redacted ones are dropped.
- Consecutive user turns, or assistant turns, become one chat turn, as Anthropic combines
  them into one turn (`_conversation`); a `system` message inside `messages` (Anthropic's
  mid-conversation system messages) becomes a chat system message at the same position.
- A `tool_result` with `is_error: true` becomes a tool message whose text starts `Error: `
  (chat's tool messages have no error flag); `tool_use_id` is kept as the `tool_call_id`.
- Chat usage counts cached prompt tokens inside `prompt_tokens`; Anthropic's
  `input_tokens` excludes cache reads, which go in `cache_read_input_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.protocol.body import json_text
from gateway.protocol.chat import REASONING, tool_name
from gateway.protocol.errors import ContextLengthExceeded, GatewayError, UpstreamOverloaded, echoed, invalid_request
from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.protocol.translation import MALFORMED, malformed_answer
from gateway.protocol.usage_counts import read_counts

# Anthropic stop_reason -> chat finish_reason (read by the egress translation).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# chat finish_reason -> Anthropic stop_reason (this module's direction).
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# A failed tool's result starts with this in its chat tool message (just this when it has no
# text): chat's tool messages carry no error flag, and without it the model reads the failure
# as the tool's output. The text prefix is how other translators that keep the flag carry it.
FAILED_PREFIX = "Error: "
FAILED_ALONE = "Error"

# Anthropic error types and the HTTP status each comes with (streams carry only the type).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# A gateway status -> the Anthropic error type whose status the `anthropic` SDKs map to
# their own exception class. 503 (no backend can take the request now) is Anthropic's
# "overloaded", which its clients retry; it goes out as 529 so they recognise it, as does the
# 502 of a call every candidate refused as overloaded (`UpstreamOverloaded`). Other
# statuses keep their code (413 is `invalid_request_error`: the SDK's error union has no
# `request_too_large`, and picks ContentTooLargeError by the status anyway).
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}

# Anthropic's thinking budgets as chat's reasoning_effort: the inverse of the egress table.
_EFFORT_FLOORS = ((16384, "high"), (4096, "medium"), (0, "low"))
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_SERVICE_TIERS = ("auto", "standard_only")
# Claude Code's first system block is a per-request billing hash; it defeats prefix caching.
_BILLING_HEADER = "x-anthropic-billing-header"


# -- request ----------------------------------------------------------------------------------


def messages_to_chat(body: Any) -> dict[str, Any]:
    """The chat payload for a Messages request; a 400 naming the field for what is malformed."""
    model, max_tokens, turns = _head(body)
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    _conversation(turns, messages)

    chat: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    _options(body, chat)
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise invalid_request("tools: must be an array.", "tools")
        chat["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    _tail(body, chat)
    return chat


# The code of a 400 for content the chat translation has no form for but Anthropic's API takes
# (server tools, documents by URL or file id, search results, server tool blocks in history):
# such a request is still served by a candidate that speaks Messages natively.
ANTHROPIC_ONLY = "anthropic_only"


def _head(body: Any) -> tuple[str, int, list[Any]]:
    """The required fields: model, max_tokens, messages (checked in this order)."""
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", model, "a valid string", "Field required (a non-empty string)")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise _invalid("max_tokens", max_tokens, "a valid integer")
    if max_tokens < 1:
        raise invalid_request("max_tokens: Input should be greater than or equal to 1.", "max_tokens")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise invalid_request("messages: Field required (a non-empty array).", "messages")
    return model, max_tokens, turns


def _invalid(name: str, value: Any, expected: str, missing: str = "Field required") -> GatewayError:
    """Anthropic's 400 for a required or typed field, in its words: absent, or of the wrong type."""
    if value is None:
        return invalid_request(f"{name}: {missing}.", name)
    return invalid_request(f"{name}: Input should be {expected}.", name)


def _options(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """The sampling, stop, user, reasoning and output-format fields, as chat spells them."""
    for name in ("temperature", "top_p", "top_k"):
        value = body.get(name)
        if value is not None:
            if type(value) is not int and (name == "top_k" or type(value) is not float):
                raise _invalid(name, value, "a valid integer" if name == "top_k" else "a valid number")
            _in_range(name, value)
            chat[name] = value
    stops = body.get("stop_sequences")
    if stops is not None:  # `""` or `{}` is not "no stop sequences": Anthropic refuses them
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid_request("stop_sequences: must be an array of strings.", "stop_sequences")
        if stops:
            chat["stop"] = stops
    user = _object(body.get("metadata"), "metadata").get("user_id")
    if user is not None:
        if type(user) is not str:
            raise _invalid("metadata.user_id", user, "a valid string")
        if user:
            chat["user"] = user
    tier = body.get("service_tier")
    if tier is not None and tier not in _SERVICE_TIERS:  # Anthropic's enum; chat backends have no such tier
        raise invalid_request("service_tier: Input should be 'auto' or 'standard_only'", "service_tier")
    output_config = _object(body.get("output_config"), "output_config")
    effort = _reasoning_effort(body.get("thinking"), output_config)
    if effort:
        chat["reasoning_effort"] = effort
    schema = _object(output_config.get("format"), "output_config.format").get("schema")
    if isinstance(schema, dict):
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _in_range(name: str, value: float) -> None:
    """Anthropic's bounds for a sampling field whose type is checked: `temperature` and `top_p`
    0 to 1 (chat's `temperature` goes to 2, so 1.5 would be served, not refused), in its words
    ("temperature: range: 0..1", as quoted from its API), and `top_k` from 0."""
    if name == "top_k":
        if value < 0:
            raise invalid_request("top_k: Input should be greater than or equal to 0.", name)
    elif value < 0 or value > 1:
        raise invalid_request(f"{name}: range: 0..1", name)


def _tail(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """The tools' names unique (Anthropic's 400 in its words: a chat backend was sent two
    functions of one name), then tool_choice and stream, which follow the tools."""
    tools = body.get("tools")
    if type(tools) is list and len(tools) > 1:
        names = [tool.get("name") for tool in tools if type(tool) is dict]
        # A name that is not a string (a list is not hashable): the translation's 400 names it.
        if all(type(name) is str for name in names) and len(set(names)) < len(names):
            raise invalid_request("tools: Tool names must be unique.", "tools")
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, chat)
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:  # "false" is not false, nor a reason to stream
        raise _invalid("stream", stream, "a valid boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # message_delta carries the usage


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional object field: {} when absent, a 400 when it is something else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"{where}: must be an object.", where)
    return value


def _system_text(system: Any, where: str = "system") -> str:
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


def _conversation(turns: list[Any], messages: list[dict[str, Any]]) -> None:
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
                if type(block.get("input")) not in _INPUT_TYPES:  # Anthropic's is an object (or left out)
                    raise invalid_request(f"{at}.input: Input should be a valid dictionary", f"{at}.input")
                calls.append(_tool_call(block))
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
_INPUT_TYPES = (dict, type(None))


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
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
            text = _system_text(turns[n].get("content"), f"{where}.content")
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
            if texts:
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
    if all(type(t) is str and not t.strip() for t in texts):
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


def _reasoning_effort(thinking: Any, output_config: dict[str, Any]) -> str | None:
    """The effort `output_config` names, else the enabled thinking budget's; `thinking` is
    checked either way, as Anthropic checks it."""
    budget = _thinking_budget(thinking) if thinking is not None else None
    effort = output_config.get("effort")
    if effort is not None:
        if type(effort) is not str:
            raise _invalid("output_config.effort", effort, "a valid string")
        if effort in _EFFORTS:
            return _EFFORTS[effort]
    if budget is None:
        return None
    return next(name for floor, name in _EFFORT_FLOORS if budget >= floor)


def _thinking_budget(thinking: Any) -> int | None:
    """An enabled thinking's budget (None for any other type: `disabled`, `adaptive`,
    `between_tools`, Claude Sonnet 5.5's lowest, and whatever Anthropic adds next, which a
    native backend reads and a chat one is sent no effort for). Anthropic refuses a budget
    under 1,024. Its other rule, a budget under `max_tokens`, is not checked: interleaved
    thinking (an `anthropic-beta` Claude Code sends, which this does not see) lifts it."""
    thinking = _object(thinking, "thinking")
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if type(budget) is not int:
            raise _invalid("thinking.budget_tokens", budget, "a valid integer", "Field required (an integer)")
        if budget < 1024:
            raise invalid_request(
                "thinking.budget_tokens: Input should be greater than or equal to 1024.", "thinking.budget_tokens"
            )
        return budget
    if type(kind) is not str:
        raise _invalid("thinking.type", kind, "a valid string")
    return None


def _tool(tool: Any, index: int) -> dict[str, Any]:
    """The chat tool for `tools[index]` (its place named only in a 400: 20 f-strings were a
    quarter of this for an agent's tools)."""
    name = tool.get("name") if type(tool) is dict else None
    if type(name) is not str or not name:
        raise invalid_request(f"tools.{index}.name: Field required.", f"tools.{index}.name")
    if tool.get("type") not in (None, "custom"):
        # Anthropic's server tools (web search, code execution, computer use...) run at Anthropic.
        raise invalid_request(
            f"tools.{index}: the server tool `{tool['type']}` is only available on Anthropic backends; "
            "declare it as a custom tool with an input_schema instead.",
            f"tools.{index}",
            ANTHROPIC_ONLY,
        )
    schema = tool.get("input_schema")
    if type(schema) is not dict:  # required of a custom tool; `{}` stands for no parameters
        raise _invalid(f"tools.{index}.input_schema", schema, "a valid dictionary")
    function: dict[str, Any] = {"name": name, "parameters": schema or {"type": "object", "properties": {}}}
    description = tool.get("description")
    if type(description) is str:
        function["description"] = description
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        name = choice["name"]
        if not any(tool_name(tool) == name for tool in chat.get("tools") or ()):
            # Forwarded, one server answered 500 (SGLang), another called a tool not named.
            raise invalid_request(f"tool_choice.name: no tool named '{echoed(name)}' in tools.", "tool_choice.name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise invalid_request("tool_choice: must be auto, any, none or a named tool.", "tool_choice")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        chat["parallel_tool_calls"] = False


def count_tokens(body: Any) -> dict[str, int]:
    """The `/v1/messages/count_tokens` answer: the router's own estimate of the prompt."""
    body = {**body, "max_tokens": 1} if isinstance(body, dict) and "max_tokens" not in body else body
    return {"input_tokens": estimate_prompt_tokens(messages_to_chat(body))}


# -- answers ----------------------------------------------------------------------------------


def message_id(chat_id: Any) -> str:
    """Anthropic's `msg_` id for a chat completion's id, kept recognisable for tracing."""
    text = chat_id if isinstance(chat_id, str) and chat_id else "unknown"
    return text if text.startswith("msg_") else "msg_" + text.removeprefix("chatcmpl-")


def anthropic_usage(usage: Any) -> dict[str, int]:
    """Anthropic's usage for chat's, read as the ledger reads it (`read_counts`: whole floats,
    DeepSeek's cache hits), so the client is told what its call is billed for: cache reads
    and writes (OpenRouter's `prompt_tokens_details.cache_write_tokens`) come out of the
    prompt count."""
    prompt, completion, cached, written, _ = read_counts(usage) or _NO_COUNTS
    return {
        "input_tokens": prompt - cached - written,
        "output_tokens": completion,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


_NO_COUNTS = (0, 0, 0, 0, 0)


def _stop(choice: dict[str, Any], stop_sequences: list[str] | None) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for a chat choice."""
    matched = choice.get("stop_reason")  # vLLM names the stop string that ended the answer
    if choice.get("finish_reason") == "stop" and isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence", matched
    finish = choice.get("finish_reason")
    if not isinstance(finish, str):  # a backend that names no reason (or not as a string)
        return "end_turn", None
    return STOP_REASONS.get(finish, "end_turn"), None


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_use_id(call_id: Any, message: str, n: int) -> str:
    """The `tool_use` id for the `n`th tool call of message `message`: the call's own id, or,
    when the backend gave it none (a null or empty `id`), one made from the message's, as
    Anthropic's `toolu_` ids are. Relayed as it came (null, `""`), it was an id the client
    could not send back: its next turn, the tool_use and its tool_result, was the gateway's
    own 400 (an `id` is required), or Anthropic's for a native backend (ids are
    `^[a-zA-Z0-9_-]+$`)."""
    if isinstance(call_id, str) and call_id:
        return call_id
    return f"toolu_{_ID_UNSAFE.sub('', message.removeprefix('msg_'))}_{n}"


def _tool_input(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        value = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise GatewayError(
            502, f"The backend returned arguments for `{function.get('name')}` that are not a JSON object."
        )
    return value


def untranslatable(completion: dict[str, Any], object_arguments: bool = False) -> str | None:
    """Why a chat completion's first choice cannot be translated (`chat_to_message`,
    `chat_to_response`), or None when it can. The fallback loop asks this of a translated
    call's answer before accepting it (`TranslatedChatFormat`), so an answer with a choice,
    message or tool call that is not an object fails its attempt like any malformed answer:
    the next candidate is asked and nothing is billed, where a translation failing once the
    answer was accepted left the client a 502 and its key the bill. `object_arguments`: the
    calls' arguments must be a JSON object (Messages' tool_use `input` is one)."""
    choices = completion.get("choices")
    if not choices:
        return None
    choice = choices[0]
    if not isinstance(choice, dict):
        return "its first choice is not an object"
    reply = choice.get("message")
    if not reply:
        return None
    if not isinstance(reply, dict):
        return "its `message` is not an object"
    calls = reply.get("tool_calls")
    if not calls:
        return None
    if not isinstance(calls, list):
        return "its `tool_calls` is not a list"
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            return "a tool call has no function name"
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if arguments is not None and not isinstance(arguments, str):
            return f"the arguments of `{name}` are not a string"
        if object_arguments:
            try:
                _tool_input(call)
            except GatewayError as exc:
                return exc.message
    return None


def chat_to_message(completion: Any, model: str, stop_sequences: list[str] | None = None) -> dict[str, Any]:
    """The Message for a `chat.completion` (its first choice), named `model` as the client asked.
    A body that is not a chat completion is the backend's fault: a 502 saying so."""
    try:
        return _message(completion, model, stop_sequences)
    except MALFORMED as exc:
        raise malformed_answer(exc) from None


def _message(completion: dict[str, Any], model: str, stop_sequences: list[str] | None) -> dict[str, Any]:
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content") or reply.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(reply.get("content"), str) and reply["content"].strip():
        # Whitespace alone (Qwen's "\n\n" before its tool call) is no block: sent back, as
        # clients send each turn, Anthropic refuses it ("text content blocks must contain
        # non-whitespace text"), and a native candidate could not take the conversation on.
        content.append({"type": "text", "text": reply["content"]})
    calls = reply.get("tool_calls") or []
    made = message_id(completion.get("id"))
    for n, call in enumerate(calls):
        name = (call.get("function") or {}).get("name")
        use_id = tool_use_id(call.get("id"), made, n)
        content.append({"type": "tool_use", "id": use_id, "name": name, "input": _tool_input(call)})
    stop_reason, stop_sequence = _stop(choice, stop_sequences)
    if calls and stop_reason == "end_turn":
        stop_reason = "tool_use"  # some backends finish a tool call with `stop`
    return {
        "id": made,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(completion.get("usage")),
    }


# -- errors -----------------------------------------------------------------------------------


def anthropic_error(error: GatewayError, request_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """The status and body of a gateway error in Anthropic's shape; an answer's body names its
    request in `request_id`, as Anthropic's do (the SDKs' `APIStatusError.request_id`)."""
    if isinstance(error, UpstreamOverloaded):
        kind = "overloaded_error"  # every candidate overloaded: a 502 to OpenAI's clients
    else:
        kind = _ERROR_TYPES.get(error.status) or ("api_error" if error.status >= 500 else "invalid_request_error")
    status = ERROR_STATUS[kind] if kind == "overloaded_error" else error.status
    message = _prompt_too_long(error) if isinstance(error, ContextLengthExceeded) else error.message
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return status, body


_PROMPT_TOO_LONG = "prompt is too long"  # Anthropic's words for a context overflow


def _prompt_too_long(error: ContextLengthExceeded) -> str:
    """A context overflow in Anthropic's words, `prompt is too long: N tokens > M maximum`:
    what Claude Code recognises to compact the conversation (and reads the figures of). The
    gateway's own explanation follows; without figures, the prefix alone."""
    if error.message.startswith(_PROMPT_TOO_LONG):  # an Anthropic upstream's own words
        return error.message
    if error.prompt_tokens is None or error.maximum is None:
        return f"{_PROMPT_TOO_LONG}: {error.message}"
    return f"{_PROMPT_TOO_LONG}: {error.prompt_tokens} tokens > {error.maximum} maximum. {error.message}"


def anthropic_error_from_chat(error: Any) -> dict[str, Any]:
    """An OpenAI-shaped error member (from a chat stream or body) as Anthropic's error event."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    status = code if isinstance(code, int) else 502
    return anthropic_error(GatewayError(status, str(error.get("message") or "The backend failed.")))[1]
