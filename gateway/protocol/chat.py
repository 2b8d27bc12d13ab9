"""The chat-completions request, read just enough to route and account it.

The body stays a plain dict so that every field the gateway does not own (tools,
response_format, seed, vendor extras...) reaches the backend untouched. Validation here
checks only what the gateway itself relies on, and names the offending field, the way
OpenAI's own 400s do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.protocol.body import json_object
from gateway.protocol.errors import invalid_request

# Fields the gateway consumes itself and never forwards (OpenRouter-style routing overrides).
GATEWAY_OWNED_FIELDS = ("models", "provider", "route")
_OWNED = frozenset(GATEWAY_OWNED_FIELDS)


@dataclass(slots=True)
class ChatRequest:
    """A parsed request: the raw payload plus the facts routing and usage read."""

    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool  # the client asked for the final usage chunk
    # A ceiling on the completion set outside the payload (Anthropic's required max_tokens,
    # which routing does not read as a demand): token and spend reservations never exceed it.
    completion_ceiling: int | None = None
    # Prompts in one call (a completions or embeddings batch; routing reads the longest): the limiter
    # reserves the prompt and its answers once per prompt.
    batch: int = 1

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.payload["messages"]  # parse_chat_request checked its shape
        return messages


def parse_chat_request(body: bytes) -> ChatRequest:
    payload = json_object(body, "`model` and `messages`")

    model = payload.get("model")
    if model is None and not payload.get("models"):
        raise invalid_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    if model is None:
        model = payload["models"][0] if isinstance(payload["models"], list) else None
    if not isinstance(model, str) or not model:
        raise invalid_request("`model` must be a non-empty string.", param="model", code="invalid_type")

    messages = payload.get("messages")
    if messages is None:
        raise invalid_request(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise invalid_request("`messages` must be a non-empty array.", param="messages", code="invalid_type")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"`messages[{i}]` must be an object.", param=f"messages[{i}]", code="invalid_type")
        if not isinstance(message.get("role"), str):
            raise invalid_request(
                f"Missing required parameter: 'messages[{i}].role'.",
                param=f"messages[{i}].role",
                code="missing_required_parameter",
            )

    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid_request("`stream` must be a boolean.", param="stream", code="invalid_type")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request("`stream_options` must be an object.", param="stream_options", code="invalid_type")
    if options and not stream:
        raise invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    for field in ("max_tokens", "max_completion_tokens", "n"):
        value = payload.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise invalid_request(f"`{field}` must be a positive integer.", param=field, code="invalid_type")
    _check_number(payload, "temperature", 0, 2)
    _check_number(payload, "top_p", 0, 1)
    if "tools" in payload and payload["tools"] is not None and not isinstance(payload["tools"], list):
        raise invalid_request("`tools` must be an array.", param="tools", code="invalid_type")

    include_usage = bool(stream and options and options.get("include_usage"))
    return ChatRequest(payload=payload, model=model, stream=stream, include_usage=include_usage)


def _check_number(payload: dict[str, Any], field: str, low: float, high: float) -> None:
    value = payload.get(field)
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid_request(f"`{field}` must be a number.", param=field, code="invalid_type")
    if not low <= value <= high:
        raise invalid_request(
            f"`{field}` must be between {low} and {high}, got {value}.", param=field, code="invalid_value"
        )


def upstream_payload(request: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The body to send to one backend: the client's fields, the backend's model id.

    Streams always ask the upstream for usage so that every call can be accounted;
    the relay strips that chunk again when the client did not ask for it.
    """
    client = request.payload
    if _OWNED.isdisjoint(client):  # the common case: a copy in C (the comprehension costs 3x)
        payload = dict(client)
    else:
        payload = {k: v for k, v in client.items() if k not in GATEWAY_OWNED_FIELDS}
    payload["model"] = upstream_model
    if request.stream:
        options = dict(payload.get("stream_options") or {})
        options["include_usage"] = True
        payload["stream_options"] = options
    return payload
