"""Translation between OpenAI's chat-completions wire format and Anthropic's Messages API.

Pure code, no I/O: `to_messages_request` turns an OpenAI payload into a Messages payload and
`to_chat_completion` turns a Message into a `chat.completion`. Streams are translated in
`anthropic_stream`; the adapter that calls both (HTTP, errors) is `gateway.backends.anthropic`.

What the Messages API cannot express is refused with `UnsupportedRequest` (naming the
field) rather than dropped; OpenAI-only knobs that change no meaning (seed, logprobs,
penalties) are left out, because the Messages API rejects fields it does not know.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

# The stop-reason and error tables are shared with the ingress direction (defined there, below
# this layer); anthropic_stream and the adapter still import them from this module.
from gateway.backends.anthropic_thinking import unthought_tool_use
from gateway.protocol.messages_answer import ERROR_STATUS, FINISH_REASONS

DEFAULT_MAX_TOKENS = 4096

# Thinking budgets for OpenAI's reasoning_effort; Anthropic's minimum budget is 1024.
_EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
_MIN_THINKING_BUDGET = 1024
# OpenRouter's `reasoning_details` items for Claude's thinking: a `reasoning.text` (the
# thinking and its signature) or `reasoning.encrypted` (a redacted block's data) of this
# format. Chat clients that keep them on the assistant message send them back, so a tool loop
# keeps its signed thinking (Anthropic wants the last tool-use turn to start with it).
REASONING_FORMAT = "anthropic-claude-v1"
# Anthropic-native fields a client may send through the OpenAI SDK's extra_body.
_NATIVE_FIELDS = ("top_k", "thinking")
_DATA_URL = re.compile(r"data:([^;,]+)((?:;[^;,]+)*),(.*)", re.DOTALL)


class UnsupportedRequest(ValueError):
    """The request asks for something the Messages API cannot express."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# -- request -------------------------------------------------------------------------------


def to_messages_request(payload: dict[str, Any], max_output_tokens: int | None = None) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat payload (whose `model` is the upstream id).

    `max_output_tokens` is the model's limit from its offer: Anthropic requires max_tokens,
    so it is the default when the client sets none, and the cap when the client asks more
    (OpenAI's max_tokens is a ceiling, and a ceiling above the model's is a 400 upstream).
    """
    if (payload.get("n") or 1) > 1:
        raise UnsupportedRequest("Anthropic backends produce one choice per request; `n` must be 1.", "n")
    system, messages = _messages(payload["messages"])
    max_tokens = (
        payload.get("max_completion_tokens") or payload.get("max_tokens") or max_output_tokens or DEFAULT_MAX_TOKENS
    )
    if max_output_tokens:
        max_tokens = min(max_tokens, max_output_tokens)
    body: dict[str, Any] = {"model": payload["model"], "messages": messages, "max_tokens": max_tokens}
    if system is not None:
        body["system"] = system
    if payload.get("temperature") is not None:
        # OpenAI allows up to 2, Anthropic up to 1: the hottest OpenAI setting is Anthropic's hottest.
        body["temperature"] = min(float(payload["temperature"]), 1.0)
    if payload.get("top_p") is not None:
        body["top_p"] = payload["top_p"]
    stop = payload.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if payload.get("stream"):
        body["stream"] = True
    user = payload.get("user") or payload.get("safety_identifier")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    for name in _NATIVE_FIELDS:
        if payload.get(name) is not None:
            body[name] = payload[name]
    if "thinking" not in body:
        budget = _thinking_budget(payload, body["max_tokens"])
        if budget:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if (body.get("thinking") or {}).get("type") == "enabled" and unthought_tool_use(messages):
        # Anthropic wants the last tool-use turn to start with the thinking block its answer
        # began with ("a final `assistant` message must start with a thinking block"), and a
        # chat message has no place to send one back (nor its signature): that turn is asked
        # without extended thinking, as the 400 advises, rather than refused on every tool loop.
        del body["thinking"]
    if (body.get("thinking") or {}).get("type") == "enabled":
        # Extended thinking refuses temperature and top_k changes.
        body.pop("temperature", None)
        body.pop("top_k", None)
    tools = payload.get("tools")
    if tools:
        body["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
        choice = _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    return body


def _thinking_budget(payload: dict[str, Any], max_tokens: int) -> int:
    """Anthropic's thinking budget for OpenAI's `reasoning_effort` or OpenRouter's `reasoning`."""
    given = payload.get("reasoning")
    reasoning: dict[str, Any] = given if isinstance(given, dict) else {}
    effort = reasoning.get("effort") or payload.get("reasoning_effort")
    budget = reasoning.get("max_tokens") or (_EFFORT_BUDGETS.get(effort, 0) if isinstance(effort, str) else 0)
    if not isinstance(budget, int) or budget <= 0:
        return 0
    # Like OpenAI's max_completion_tokens, Anthropic's max_tokens includes the thinking.
    budget = min(budget, max_tokens - 1)
    return budget if budget >= _MIN_THINKING_BUDGET else 0


def _messages(messages: list[dict[str, Any]]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message["role"]
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            # The Messages API has one system prompt; instructions from anywhere go there, in order.
            system += _text_blocks(message.get("content"), f"{where}.content")
            continue
        if role == "user":
            anthropic_role, blocks = "user", _content_blocks(message.get("content"), f"{where}.content")
        elif role == "assistant":
            anthropic_role, blocks = "assistant", _assistant_blocks(message, where)
        elif role == "tool":
            anthropic_role, blocks = "user", [_tool_result(message, where)]
        else:
            raise UnsupportedRequest(
                f"`{where}.role` `{role}` has no equivalent in Anthropic's Messages API.", f"{where}.role"
            )
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)  # the Messages API alternates roles: merge runs
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # Tool results must lead the user turn that answers the tool calls.
            turn["content"].sort(key=lambda block: block.get("type") != "tool_result")
    if not system:
        return None, turns
    if len(system) == 1 and set(system[0]) == {"type", "text"}:
        return system[0]["text"], turns
    return system, turns


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return _text_part({"type": "text", "text": content})
    blocks = []
    for i, part in enumerate(_parts(content, where)):
        if part.get("type") not in ("text", "refusal"):
            raise UnsupportedRequest(f"`{where}[{i}]` must be a text part here.", f"{where}[{i}]")
        blocks += _text_part(part)
    return blocks


def _text_part(part: dict[str, Any]) -> list[dict[str, Any]]:
    text = part.get("text") if part.get("type") == "text" else part.get("refusal")
    if not text or (type(text) is str and not text.strip()):
        # The Messages API rejects empty text blocks, and whitespace alone ("text content
        # blocks must contain non-whitespace text"): Qwen's "\n\n" before its tool call,
        # which a chat client keeps in the turn's content.
        return []
    block: dict[str, Any] = {"type": "text", "text": text}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return [block]


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_blocks(content, where)
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(_parts(content, where)):
        kind = part.get("type")
        if kind in ("text", "refusal"):
            blocks += _text_part(part)
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{where}[{i}]"))
        elif kind == "file":
            blocks.append(_document_block(part, f"{where}[{i}]"))
        elif kind in ("image", "document"):
            blocks.append(part)  # already Anthropic-shaped
        else:
            raise UnsupportedRequest(
                f"`{where}[{i}]` of type `{kind}` is not supported by Anthropic backends.", f"{where}[{i}]"
            )
    return blocks


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise UnsupportedRequest(f"`{where}` must be a string or an array of content parts.", where)
    return content


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise UnsupportedRequest(f"`{where}.image_url.url` must be a URL or a data URL.", f"{where}.image_url")
    if url.startswith("data:"):
        media_type, data = _base64_data(url, f"{where}.image_url.url")
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    else:
        source = {"type": "url", "url": url}
    block: dict[str, Any] = {"type": "image", "source": source}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _document_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    given = part.get("file")
    file: dict[str, Any] = given if isinstance(given, dict) else {}
    data_url = file.get("file_data")
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        raise UnsupportedRequest(
            f"`{where}.file` must carry `file_data` as a base64 data URL for Anthropic backends.", where
        )
    media_type, data = _base64_data(data_url, f"{where}.file.file_data")
    block: dict[str, Any] = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _base64_data(url: str, where: str) -> tuple[str, str]:
    match = _DATA_URL.fullmatch(url)
    if not match or ";base64" not in match.group(2):
        raise UnsupportedRequest(f"`{where}` must be a base64 data URL (data:<type>;base64,<data>).", where)
    return match.group(1), match.group(3)


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _thinking_blocks(message.get("reasoning_details"))
    blocks += _text_blocks(message.get("content"), f"{where}.content")
    for i, call in enumerate(message.get("tool_calls") or ()):
        at = f"{where}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not function.get("name") or not call.get("id"):
            raise UnsupportedRequest(f"`{at}` needs an `id` and a `function.name`.", at)
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise UnsupportedRequest(
                f"`{at}.function.arguments` must be a JSON object.", f"{at}.function.arguments"
            ) from None
        if not isinstance(arguments, dict):
            raise UnsupportedRequest(f"`{at}.function.arguments` must be a JSON object.", f"{at}.function.arguments")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments})
    return blocks


def _thinking_blocks(details: Any) -> list[dict[str, Any]]:
    """The signed thinking blocks an assistant message's `reasoning_details` carry (items of
    `REASONING_FORMAT`, or of none; streamed pieces joined by `index`). Unsigned thinking
    (Anthropic would refuse it), summaries and other vendors' reasoning are left out."""
    if type(details) is not list or not details:
        return []
    merged: dict[Any, dict[str, Any]] = {}
    for n, item in enumerate(details):
        if type(item) is not dict or not _claude_format(item.get("format")):
            continue
        index = item.get("index")
        key = index if type(index) is int else ("item", n)
        seen = merged.setdefault(key, {"type": item.get("type"), "text": "", "signature": "", "data": ""})
        for field in ("text", "signature", "data"):
            value = item.get(field)
            if type(value) is str:
                seen[field] = seen[field] + value if field == "text" else value or seen[field]
    blocks: list[dict[str, Any]] = []
    for item in merged.values():
        if item["type"] == "reasoning.text" and item["signature"]:
            blocks.append({"type": "thinking", "thinking": item["text"], "signature": item["signature"]})
        elif item["type"] == "reasoning.encrypted" and item["data"]:
            blocks.append({"type": "redacted_thinking", "data": item["data"]})
    return blocks


def _claude_format(value: Any) -> bool:
    """Whether a `reasoning_details` item is Claude's: of `REASONING_FORMAT`, or of none (a
    streamed piece after the first), or the format repeated (a client that joined it across
    the pieces, as the openai SDK's stream helper does with string fields)."""
    return value is None or (type(value) is str and value.replace(REASONING_FORMAT, "") == "")


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise UnsupportedRequest(f"`{where}.tool_call_id` is required for tool messages.", f"{where}.tool_call_id")
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _content_blocks(content, f"{where}.content")
    return result


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise UnsupportedRequest(f"`tools[{i}]` must be an object.", f"tools[{i}]")
    if tool.get("type") != "function":
        return tool  # an Anthropic-native tool (web search, bash...), passed as given
    function = tool.get("function") or {}
    if not function.get("name"):
        raise UnsupportedRequest(f"`tools[{i}].function.name` is required.", f"tools[{i}].function.name")
    out: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    if tool.get("cache_control"):
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"):
        out = dict(choice)
    else:
        raise UnsupportedRequest("`tool_choice` must be auto, required, none or a named function.", "tool_choice")
    if parallel is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out


# -- answers -------------------------------------------------------------------------------


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's usage for Anthropic's: prompt tokens include cache reads and cache writes."""
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + read + written
    completion = _count(usage.get("output_tokens"))
    details = {"cached_tokens": read}
    if written:  # OpenRouter's name for them: the ledger prices them at the offer's cache_write_price
        details["cache_write_tokens"] = written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }


def reasoning_detail(block: dict[str, Any], index: int) -> dict[str, Any]:
    """A thinking or redacted_thinking block as OpenRouter's `reasoning_details` item."""
    if block.get("type") == "redacted_thinking":
        return {
            "type": "reasoning.encrypted",
            "data": block.get("data") or "",
            "format": REASONING_FORMAT,
            "index": index,
        }
    item = {"type": "reasoning.text", "text": block.get("thinking") or "", "format": REASONING_FORMAT, "index": index}
    if block.get("signature"):
        item["signature"] = block["signature"]
    return item


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def openai_error(error: Any) -> dict[str, Any]:
    """OpenAI's error object for an Anthropic `error` member; `code` is the matching HTTP status."""
    error = error if isinstance(error, dict) else {}
    kind = str(error.get("type") or "api_error")
    message = str(error.get("message") or kind)
    return {"message": message, "type": kind, "param": None, "code": ERROR_STATUS.get(kind, 502)}


def to_chat_completion(message: dict[str, Any], created: int | None = None) -> dict[str, Any]:
    """A `chat.completion` for a Messages API answer (or `{"error": ...}` for an error body)."""
    if message.get("type") == "error":
        return {"error": openai_error(message.get("error"))}
    texts: list[str] = []
    thinking: list[str] = []
    details: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking" or kind == "redacted_thinking":
            if kind == "thinking":
                thinking.append(block.get("thinking") or "")
            details.append(reasoning_detail(block, len(details)))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if details:
        reply["reasoning_details"] = details
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": _finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": openai_usage(message.get("usage") or {}),
    }


def _finish_reason(stop_reason: object) -> str:
    """OpenAI's finish_reason for Anthropic's stop_reason; "stop" for one it does not name."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
