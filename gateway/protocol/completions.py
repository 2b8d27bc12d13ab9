"""OpenAI's legacy text completions request (`POST /v1/completions`), read to route and account it.

Code-completion plugins still call it, with `suffix` for fill-in-the-middle, and vLLM and
several vendors serve it. The gateway passes it through to backends that serve it natively
(there is no faithful translation to chat: a raw prompt continued is not a conversation), so
the body reaches the backend as sent, `model` replaced and the gateway's routing fields
removed; a stream always asks the upstream for usage, as chat streams do.

Routing reads a chat-shaped view (`CompletionsRequest.chat`): the prompt (the longest one of
a batch) and the suffix as one user message, so size, context fit and the task come from the
text to complete; the completion budget is `max_tokens`, 16 when unset as OpenAI's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.protocol.batch import routing_request
from gateway.protocol.body import is_token, json_object, required_model
from gateway.protocol.chat import GATEWAY_OWNED_FIELDS, ChatRequest
from gateway.protocol.errors import invalid_request

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(slots=True)
class CompletionsRequest:
    payload: dict[str, Any]  # the client's body
    model: str
    stream: bool
    include_usage: bool  # the client asked for the final usage chunk
    chat: ChatRequest  # the view routing and limits read
    priced: bool = False  # asked for `usage.cost` (OpenRouter's `usage.include`: gateway.api.usage_cost)

    @property
    def native(self) -> dict[str, Any]:
        """The client's body (what the ingress passes through)."""
        return self.payload


def _prompt_texts(prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(is_token(t) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) or (isinstance(p, list) and p and all(is_token(t) for t in p)) for p in prompt):
            return prompt
    raise invalid_request(
        "`prompt` must be a string, an array of strings, an array of tokens or an array of token arrays.",
        "prompt",
        "invalid_type",
    )


def parse_completions_request(body: bytes) -> CompletionsRequest:
    payload = json_object(body, "`model` and `prompt`")
    model = required_model(payload)
    if payload.get("prompt") is None:
        raise invalid_request("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    prompts = _prompt_texts(payload["prompt"])
    suffix = payload.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid_request("`suffix` must be a string.", "suffix", "invalid_type")
    stream = payload.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid_request("`stream` must be a boolean.", "stream", "invalid_type")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("`stream_options` must be an object.", "stream_options", "invalid_type")
    if options and not stream:
        raise invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    for name in ("max_tokens", "n", "best_of"):
        value = payload.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise invalid_request(f"`{name}` must be a non-negative integer.", name, "invalid_type")
    include_usage = bool(stream and options and options.get("include_usage"))
    view = _routing_view(payload, model, prompts, suffix, stream, include_usage)
    return CompletionsRequest(payload, model, stream, include_usage, view)


def _routing_view(
    payload: dict[str, Any],
    model: str,
    prompts: list[str | list[int]],
    suffix: str | None,
    stream: bool,
    include_usage: bool,
) -> ChatRequest:
    longest = max(prompts, key=len)
    text = longest if isinstance(longest, str) else "xxx" * len(longest)  # a token: three bytes in the estimate
    if suffix:
        text += "\n" + suffix
    max_tokens = payload.get("max_tokens")
    view: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens if max_tokens else DEFAULT_MAX_TOKENS,
    }
    # Answers generated per call (best_of are generated and billed, n returned): what the
    # limiter's token and spend reservations multiply max_tokens by, as chat's `n`.
    answers = max(payload.get("n") or 1, payload.get("best_of") or 1)
    if answers > 1:
        view["n"] = answers
    for name in GATEWAY_OWNED_FIELDS:
        if name in payload:
            view[name] = payload[name]
    return routing_request(view, model, prompts, stream, include_usage, suffix)  # the relay reads both


def upstream_completions_payload(request: CompletionsRequest, upstream_model: str) -> dict[str, Any]:
    """The body one backend gets: the client's fields, the backend's model id, and for a
    stream `stream_options.include_usage` (the relay strips the usage chunk again unless the
    client asked for it)."""
    payload = {k: v for k, v in request.payload.items() if k not in GATEWAY_OWNED_FIELDS}
    payload["model"] = upstream_model
    if request.stream:
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    return payload
