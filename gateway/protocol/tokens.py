"""Cheap, conservative token estimates for requests whose usage nobody reported yet.

Routing needs a prompt size before any upstream has seen the prompt, and the ledger needs
a count when an upstream streams without usage. A real tokenizer per model family would be
exact but slow and heavy to ship; bytes/3 overestimates typical BPE counts (about 4 bytes
per token in English, fewer in code and CJK text), which is the safe side for context checks.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocol.body import not_encodable, too_deep

PER_MESSAGE = 4
IMAGE_BYTES = 3 * 765  # what an image part counts as in the text it is estimated with


def estimate_text_tokens(text: str) -> int:
    return ((len(text) if text.isascii() else len(text.encode("utf-8", "ignore"))) + 2) // 3  # utf8_length, inline


def utf8_length(text: str) -> int:
    """The text's UTF-8 bytes, as the estimates count them (lone surrogates dropped)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "ignore"))


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "input_image"):
                    parts.append("x" * IMAGE_BYTES)  # an image costs roughly 765 tokens at high detail
        return " ".join(parts)
    return ""


def json_tokens(value: Any) -> int:
    """Tokens of a JSON value as the upstream receives it: its JSON bytes / 3.

    orjson rather than `str()`: an agent's 20 tool schemas took `str()` about 90 µs (a
    fifth of the gateway's CPU for such a request under wrk), orjson a tenth of that.

    A client's value nested deeper than orjson writes can never be forwarded: the 400 that
    says so (`str()` of it would recurse, and past about 1,000 levels fail as a 500)."""
    try:
        return (len(orjson.dumps(value)) + 2) // 3
    except orjson.JSONEncodeError as exc:
        if too_deep(exc):
            raise not_encodable() from None
        return estimate_text_tokens(str(value))  # not JSON (a payload built in code, not parsed): its text


def estimate_prompt_tokens(payload: dict[str, Any]) -> int:
    total = 3
    for message in payload.get("messages") or ():
        if isinstance(message, dict):
            # `estimate_text_tokens(_content_text(content))`, the calls in line for a text
            # content (most messages): this runs for every message of every request.
            content = message.get("content")
            text = content if isinstance(content, str) else _content_text(content)
            total += PER_MESSAGE + ((len(text) if text.isascii() else len(text.encode("utf-8", "ignore"))) + 2) // 3
            calls = message.get("tool_calls")
            if calls:
                total += json_tokens(calls)
            # An assistant's reasoning sent back: three lookups, no call, when it has none.
            if message.get("role") == "assistant" and (message.get("reasoning_content") or message.get("reasoning")):
                total += _reasoning_tokens(message)
    tools = payload.get("tools")
    if tools:
        total += json_tokens(tools)
    return total


def _reasoning_tokens(message: dict[str, Any]) -> int:
    """An assistant message's earlier reasoning sent back, text its backend receives: as
    `reasoning_content` (DeepSeek's spelling, and what translated Messages thinking blocks and
    Responses reasoning items become) or `reasoning` (OpenRouter's, and vLLM's now). Left out,
    a coding agent's long thinking history routed as a far shorter prompt than it is.

    The longer of the two, not their sum: vLLM and mlx-vlm answer with the same text in both
    (and the gateway sends both to vLLM), a client sends its history back as it came, and the
    backend reads one. Summed, such a conversation counted its reasoning twice and was refused
    400 `context_length_exceeded` by a model whose context it fits."""
    tokens = 0
    for field in ("reasoning_content", "reasoning"):
        text = message.get(field)
        if type(text) is str:
            tokens = max(tokens, estimate_text_tokens(text))
    return tokens


def estimate_answer_tokens(message: Any) -> int:
    """Tokens an answer's message took to generate, for an upstream that reported none: its
    text, its tool calls' JSON and its reasoning (the longer spelling), bytes / 3 as a prompt
    is estimated; no per-message overhead (nothing was sent)."""
    if not isinstance(message, dict):
        return 0
    content = message.get("content")
    text = content if isinstance(content, str) else _content_text(content)
    total = estimate_text_tokens(text) if text else 0
    calls = message.get("tool_calls")
    if calls:
        total += json_tokens(calls)
    return total + _reasoning_tokens(message)
