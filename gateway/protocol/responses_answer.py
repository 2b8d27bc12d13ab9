"""Chat answers as OpenAI's Responses: the Response object, its output items, what is stored.

The answer half of the Responses translation (`gateway.protocol.responses` turns requests
into chat; `gateway.protocol.responses_stream` turns a chat stream into the typed event
sequence, with the items and Response object made here): `chat_to_response` for a
non-streamed answer, `response_object` and the item builders the stream shares, the
request's echo encoded once (`encoded_echo`), `conversation_items` for what
`previous_response_id` continues from, and the input-items listing of a stored response.
Pure code, no I/O.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.protocol.errors import GatewayError
from gateway.protocol.responses_input import input_items
from gateway.protocol.responses_tools import TOOL_SEARCH, CallKinds, call_kinds
from gateway.protocol.translation import MALFORMED, malformed_answer
from gateway.protocol.usage_counts import read_counts

_NO_KINDS: CallKinds = (frozenset(), {}, False)


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def response_usage(usage: Any) -> dict[str, Any] | None:
    """A Response's usage for chat's, read as the ledger reads it (`read_counts`: whole floats,
    DeepSeek's cache hits, cache writes), so the client is told what its call is billed for.
    Cache reads and writes are parts of the input count, as in chat's `prompt_tokens_details`."""
    counts = read_counts(usage)
    if counts is None:
        return None
    prompt, completion, cached, written, reasoning = counts
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def ending(finish_reason: Any) -> tuple[str, dict[str, str] | None]:
    """The Response's status and incomplete_details for a chat finish reason."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    request: dict[str, Any],
    response_id: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    completed_at: int | None = None,
) -> dict[str, Any]:
    """A Response with the request's settings echoed, as OpenAI's carry them; `completed_at`
    (when the answer was whole) is said only when `status` is completed, as OpenAI's is."""
    text = request.get("text")
    if not isinstance(text, dict):
        text = {}
    reasoning = request.get("reasoning")
    if not isinstance(reasoning, dict):
        reasoning = {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at if status == "completed" else None,
        "status": status,
        "background": False,  # `background: true` is refused: every answer is made in the foreground
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        # A limit on OpenAI's built-in tool calls, of which a translated answer makes none.
        "max_tool_calls": request.get("max_tool_calls"),
        "model": request.get("model"),
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        # The tier the answer was made at, as OpenAI reports it (not the one asked): a chat
        # backend has no tiers of OpenAI's to choose, so always the standard one.
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "text": _text_echo(text),
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs") or 0,
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _text_echo(text: dict[str, Any]) -> dict[str, Any]:
    """`text` as a Response echoes it: its format (`text` when none) and the verbosity asked."""
    echo = {"format": text.get("format") or {"type": "text"}}
    if text.get("verbosity") is not None:
        echo["verbosity"] = text["verbosity"]
    return echo


def encoded_echo(request: dict[str, Any]) -> dict[str, orjson.Fragment]:
    """The request's bulk that every Response echoes (its tools and instructions, an agent's
    are about 15 KB), encoded: what `response_object` puts in, as JSON fragments, so a Response
    or the stream's three events that carry it are written without walking them again."""
    echo = {}
    for name in ("tools", "instructions"):
        value = request.get(name)
        if value:
            try:
                echo[name] = orjson.Fragment(orjson.dumps(value))
            except TypeError:  # nested past what orjson writes: left to the Response's own dump
                return {}
    return echo


def encode_response(response: dict[str, Any], request: dict[str, Any], echo: dict[str, orjson.Fragment]) -> bytes:
    """`orjson.dumps(response)` with the request's echo (`encoded_echo`) put in as fragments:
    the same bytes (and bytes where the plain dump would fail: tools nested within orjson's
    write depth on their own, past it inside the Response)."""
    if echo and response.get("tools") is request.get("tools"):
        return orjson.dumps({**response, **echo})
    return orjson.dumps(response)


def _item_id(prefix: str, response_id: str, earlier: int) -> str:
    """An output item's id: `rs_`/`msg_` and the Response's suffix; `_2`, `_3`... after it
    for the second, third item of that type in one Response (text after a tool call,
    reasoning between messages), so every item id is unique, as OpenAI's are."""
    return f"{prefix}{_suffix(response_id)}" + (f"_{earlier + 1}" if earlier else "")


def reasoning_item(response_id: str, text: str, status: str, earlier: int = 0) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text or status != "in_progress" else []
    return {
        "type": "reasoning",
        "id": _item_id("rs_", response_id, earlier),
        "summary": [],
        "content": content,
        "status": status,
    }


def message_item(
    response_id: str, text: str | None, status: str, earlier: int = 0, logprobs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    content = (
        [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}]
    )
    return {
        "type": "message",
        "id": _item_id("msg_", response_id, earlier),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def output_logprobs(logprobs: Any) -> list[dict[str, Any]]:
    """A chat choice's `logprobs` (`{"content": [...]}`) as an output text's (`Logprob`: the
    token, its UTF-8 bytes, its logprob, the alternatives' the same). An entry that is not of
    that shape is left out: the backend's, it is no reason to fail the answer."""
    content = logprobs.get("content") if type(logprobs) is dict else None
    if type(content) is not list:
        return []
    out = []
    for entry in content:
        token = _token_logprob(entry)
        if token is not None:
            alternatives = entry.get("top_logprobs")
            tops = (_token_logprob(t) for t in (alternatives if type(alternatives) is list else ()))
            token["top_logprobs"] = [t for t in tops if t is not None]
            out.append(token)
    return out


def _token_logprob(entry: Any) -> dict[str, Any] | None:
    if type(entry) is not dict or type(entry.get("token")) is not str:
        return None
    logprob = entry.get("logprob")
    if type(logprob) is not float and type(logprob) is not int:
        return None
    raw = entry.get("bytes")
    if type(raw) is not list or not all(type(b) is int for b in raw):
        raw = list(entry["token"].encode())
    return {"token": entry["token"], "bytes": raw, "logprob": logprob}


def delta_logprobs(tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output text logprobs as a stream's text events carry them (no bytes)."""
    return [
        {
            "token": t["token"],
            "logprob": t["logprob"],
            "top_logprobs": [{"token": top["token"], "logprob": top["logprob"]} for top in t["top_logprobs"]],
        }
        for t in tokens
    ]


def call_id_of(call: dict[str, Any], response_id: str, position: int) -> str:
    """A chat tool call's id as the item's `call_id`; one made from the Response's id and the
    call's place when the backend sent none (some OpenAI-compatible servers leave it out).
    OpenAI's are never empty, and clients pair each output to its call by it: an empty one,
    sent on as every call's `tool_call_id`, leaves parallel calls' outputs unpaired."""
    call_id = call.get("id")
    return call_id if type(call_id) is str and call_id else f"call_{_suffix(response_id)}_{position}"


def call_item(
    response_id: str,
    position: int,
    call_id: str,
    name: str,
    arguments: str,
    status: str,
    custom: bool = False,
    namespace: str | None = None,
    search: bool = False,
) -> dict[str, Any]:
    if search:
        item_id = f"tsc_{_suffix(response_id)}_{position}"
        return {
            "type": "tool_search_call",
            "id": item_id,
            "call_id": call_id,
            "arguments": search_arguments(arguments),
            "execution": "client",
            "status": status,
        }
    if custom:
        item_id = f"ctc_{_suffix(response_id)}_{position}"
        return {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name, "input": arguments}
    item = {
        "type": "function_call",
        "id": f"fc_{_suffix(response_id)}_{position}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def chat_to_response(
    completion: Any, request: dict[str, Any], response_id: str, created_at: int | None = None
) -> dict[str, Any]:
    """The Response for a `chat.completion` (its first choice) answering `request`, made at
    `created_at` (when the gateway took the request, as a streamed Response says; else the
    completion's `created`). A body that is not a chat completion is the backend's fault: a
    502 saying so."""
    try:
        return _response(completion, request, response_id, created_at)
    except MALFORMED as exc:
        raise malformed_answer(exc) from None


def _response(
    completion: dict[str, Any], request: dict[str, Any], response_id: str, created_at: int | None
) -> dict[str, Any]:
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content") or reply.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(response_id, reasoning, "completed"))
    if isinstance(reply.get("content"), str) and reply["content"]:
        logprobs = output_logprobs(choice.get("logprobs")) if "logprobs" in choice else None
        output.append(message_item(response_id, reply["content"], "completed", logprobs=logprobs))
    calls = reply.get("tool_calls") or ()
    custom, namespaces, search = call_kinds(request) if calls else _NO_KINDS
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        name = function.get("name") or ""
        arguments = function.get("arguments") or ""
        if name in custom:
            arguments = custom_input(arguments)
        output.append(
            call_item(
                response_id,
                position,
                call_id_of(call, response_id, position),
                name,
                arguments,
                "completed",
                name in custom,
                namespaces.get(name),
                search and name == TOOL_SEARCH,
            )
        )
    status, incomplete = ending(choice.get("finish_reason"))
    if incomplete is not None and output and output[-1]["type"] in ("message", "reasoning"):
        output[-1]["status"] = status  # the text the cut fell in, as OpenAI marks it
    created = completion.get("created") if created_at is None else created_at
    if not isinstance(created, int):
        created = int(time.time())
    response = response_object(request, response_id, created, status, output, int(time.time()))
    response["incomplete_details"] = incomplete
    response["usage"] = response_usage(completion.get("usage"))
    return response


def search_arguments(arguments: str) -> Any:
    """A tool search's arguments, an object in the item (not a JSON string as for functions)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"query": arguments}
    return value if isinstance(value, dict) else {"query": arguments}


def custom_input(arguments: str) -> str:
    """A custom tool's free-text input from the function arguments it was called with."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments  # the model wrote the input bare: pass it as it is
    text = value.get("input") if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments


def conversation_items(
    previous: list[dict[str, Any]] | None, request: dict[str, Any], response: dict[str, Any]
) -> list[dict[str, Any]]:
    """What to store with a response: the items a request with `previous_response_id` set to
    it continues from (earlier items, this request's input, this response's output).
    `instructions` are not among them: OpenAI does not carry them over either."""
    return list(previous or ()) + input_items(request.get("input")) + list(response.get("output") or ())


def failed_response(request: dict[str, Any], response_id: str, error: GatewayError, created_at: int) -> dict[str, Any]:
    """The Response a failure leaves, for `response.failed`."""
    response = response_object(request, response_id, created_at, "failed", [])
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    response["error"] = {"code": code, "message": error.message}
    return response


# -- stored input, as GET /v1/responses/{id}/input_items lists it --------------------------------


def listed_input_items(items: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """A request's input items in the shapes the input-items list returns (`ResponseItem`):
    every item with an `id` (the client's, else one derived from the response's id and its
    place) and a status; message content as parts, never a bare string."""
    listed = []
    for i, item in enumerate(items):
        kind = item.get("type") or ("message" if "role" in item else "item")
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
        entry = {**item, "type": kind, "id": item.get("id") or f"{prefix}_{_suffix(response_id)}_in{i}"}
        entry.setdefault("status", "completed")
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            text: dict[str, Any] = {"type": part, "text": item["content"]}
            if part == "output_text":
                text["annotations"] = []
            entry["content"] = [text]
        parts = (
            entry.get("content")
            if kind == "message"
            else entry.get("output")
            if kind == "function_call_output"
            else None
        )
        if isinstance(parts, list) and any(_undetailed(part) for part in parts):
            # An image's `detail` defaults to auto, and the SDK's listed image requires one
            # (`ResponseInputImage.detail`): an image sent without it was listed without it,
            # and the SDK warned on every page. Filled on the listing, the stored item kept as sent.
            filled = [{**part, "detail": "auto"} if _undetailed(part) else part for part in parts]
            entry["content" if kind == "message" else "output"] = filled
        listed.append(entry)
    return listed


def _undetailed(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_image" and "detail" not in part
