"""Chat answers as Anthropic's Messages: the Message, its stop reason, ids and usage, and errors.

The answer half of the Messages translation (`gateway.protocol.messages` turns requests into
chat; `gateway.protocol.messages_stream` turns a chat stream into Anthropic's events, with
the ids, stop reasons, usage and errors made here): `chat_to_message` for a non-streamed
answer, `untranslatable` for the fallback loop to refuse an answer neither this nor the
Responses translation could read, and `anthropic_error` for a gateway error in Anthropic's
shape. The stop-reason and error-status tables are read in the other direction too, by
`gateway.backends.anthropic_translate` for an Anthropic backend's answers. Pure code, no I/O.

Chat usage counts cached prompt tokens inside `prompt_tokens`; Anthropic's `input_tokens`
excludes cache reads, which go in `cache_read_input_tokens`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from gateway.protocol.errors import ContextLengthExceeded, GatewayError, UpstreamOverloaded
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


def anthropic_stop(choice: dict[str, Any], stop_sequences: list[str] | None) -> tuple[str, str | None]:
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
    stop_reason, stop_sequence = anthropic_stop(choice, stop_sequences)
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
