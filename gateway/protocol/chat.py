"""The chat-completions request, read just enough to route and account it.

The body stays a plain dict so that every field the gateway does not own (tools,
response_format, seed, vendor extras...) reaches the backend untouched. Validation here
checks only what the gateway itself relies on, and names the offending field, the way
OpenAI's own 400s do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.protocol.body import json_object
from gateway.protocol.errors import invalid_request
from gateway.protocol.tokens import estimate_prompt_tokens

# Fields the gateway consumes itself and never forwards (OpenRouter-style routing overrides).
GATEWAY_OWNED_FIELDS = ("models", "provider", "route")
_OWNED = frozenset(GATEWAY_OWNED_FIELDS)


def owned_fields(body: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway's own fields of a client's body in another API's shape (Messages,
    Responses), which its chat translation and routing view carry and no backend gets;
    None for the usual body, which has none (nothing copied)."""
    if _OWNED.isdisjoint(body):
        return None
    return {name: body[name] for name in GATEWAY_OWNED_FIELDS if name in body}


_IMAGE_PARTS = ("image_url", "input_image", "image")


def text_or_parts(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A translated user message's content: its parts' texts joined by lines when every part
    is text, else the parts. Joined, they are what vLLM makes of them (its string content
    format joins text parts with a newline) and what every chat backend takes: DeepSeek's API
    refuses an array ("invalid type: sequence, expected a string"), and Claude Code's turns
    are several text blocks."""
    if all(part["type"] == "text" for part in parts):
        return parts[0]["text"] if len(parts) == 1 else "\n".join([part["text"] for part in parts])
    return parts


def tool_name(tool: Any) -> Any:
    """A request tool's name: chat's `function.name`, or the `name` of the tool as Messages and
    Responses write it (their routing views keep the client's tools)."""
    if type(tool) is not dict:
        return None
    function = tool.get("function")
    return function.get("name") if type(function) is dict else tool.get("name")


def has_images(messages: Any) -> bool:
    """Whether any message carries an image part (routing then needs a vision model)."""
    if not isinstance(messages, list):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in _IMAGE_PARTS:
                    return True
    return False


@dataclass(slots=True)
class PromptFacts:
    """What routing reads of a prompt's messages, as an ingress's routing view computes it
    from its own API's body without building the chat translation (`messages_view`): each
    equal to what the translation would give (tests compare them on every sample)."""

    tokens: int  # estimate_prompt_tokens of the translation
    images: bool  # has_images of the translation's messages
    last_user: Any  # content of the translation's last user message, read as text (None: none)
    system: str  # the translation's leading system message ("" when it has none)


class ChatRequest:
    """A parsed request: the payload plus the facts routing and usage read.

    `fields` is what routing reads of the top level (model, models, provider, tools,
    tool_choice, response_format, reasoning, n, ...): the payload itself for chat. A request
    in another API's shape that may be passed through natively need not be translated to be
    routed: its view gives `fields` (the translation's top-level fields, `tools` as the
    client sent them) and, when first read, `prompt` (the messages' facts, counted on the
    client's body), and `build` makes the whole translation only when `payload` is read (a
    candidate asked in chat, a plugged classifier, a continuation)."""

    __slots__ = (
        "_build",
        "_payload",
        "_prompt",
        "_tokens",
        "_view",
        "batch",
        "completion_ceiling",
        "fields",
        "include_usage",
        "model",
        "stream",
    )

    def __init__(
        self,
        payload: dict[str, Any] | None = None,
        model: str = "",
        stream: bool = False,
        include_usage: bool = False,  # the client asked for the final usage chunk
        # A ceiling on the completion set outside the payload (Anthropic's required max_tokens,
        # which routing does not read as a demand): token and spend reservations never exceed it.
        completion_ceiling: int | None = None,
        # Prompts in one call (a completions or embeddings batch; routing reads the longest): the
        # limiter reserves the prompt and its answers once per prompt.
        batch: int = 1,
        *,
        build: Callable[[], dict[str, Any]] | None = None,
        fields: dict[str, Any] | None = None,
        view: Callable[[], PromptFacts | None] | None = None,
    ) -> None:
        if fields is None:
            if payload is None:
                raise TypeError("a ChatRequest needs its payload, or a view's build and fields")
            fields = payload
        elif payload is None and build is None:
            raise TypeError("a ChatRequest routed on a view needs the build of its translation")
        self._payload = payload
        self._build = build
        self._view = view
        self._prompt: PromptFacts | None = None
        self._tokens: int | None = None
        self.fields = fields
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        self.completion_ceiling = completion_ceiling
        self.batch = batch

    @property
    def payload(self) -> dict[str, Any]:
        """The chat payload (a view's translation, built on first read)."""
        payload = self._payload
        if payload is None:
            assert self._build is not None
            payload = self._payload = self._build()
            self._build = None
        return payload

    @property
    def translated(self) -> bool:
        """Whether the chat payload exists yet (a view builds it only when read)."""
        return self._payload is not None

    @property
    def prompt(self) -> PromptFacts | None:
        """The prompt's facts as the view counts them on the client's body, made when first
        read; None when routing reads the chat payload instead (a chat request, a view's
        request already translated, or a body outside the view's shape: translated then,
        which raises its 400 if it is malformed)."""
        prompt = self._prompt
        if prompt is None and self._view is not None:
            view, self._view = self._view, None
            if self._payload is None:
                prompt = self._prompt = view()
                if prompt is None:
                    self.translate()
        return prompt

    def translate(self) -> dict[str, Any]:
        """The chat payload, built now if it was not: routing then reads it, not the view,
        its top-level fields included (a translation can add tools the view's fields lack:
        those a Responses tool search's output offers)."""
        payload = self.fields = self.payload
        return payload

    # Below, `prompt` and `payload` are read in line when they are at hand (a chat request's
    # always are): a property's read is a Python call, several times a slot's, and routing
    # reads these on every request.

    @property
    def messages(self) -> list[dict[str, Any]]:
        payload = self._payload if self._payload is not None else self.payload
        messages: list[dict[str, Any]] = payload["messages"]  # parse_chat_request checked its shape
        return messages

    def prompt_tokens(self) -> int:
        """`estimate_prompt_tokens` of the payload, made once (routing, limits, the ledger's
        estimates and translations all read it)."""
        tokens = self._tokens
        if tokens is None:
            prompt = self._prompt if self._view is None else self.prompt
            if prompt is not None:
                tokens = prompt.tokens
            else:
                tokens = estimate_prompt_tokens(self._payload if self._payload is not None else self.payload)
            self._tokens = tokens
        return tokens

    def all_prompt_tokens(self) -> int:
        """The estimate for every prompt of the call, where the upstream reports no usage:
        `prompt_tokens` times `batch` (a batch's view, `gateway.protocol.batch.BatchRequest`,
        sums each prompt's estimate instead)."""
        return self.prompt_tokens() * self.batch

    def images(self) -> bool:
        prompt = self._prompt if self._view is None else self.prompt
        if prompt is not None:
            return prompt.images
        return has_images((self._payload if self._payload is not None else self.payload).get("messages"))

    def __repr__(self) -> str:
        return f"ChatRequest(model={self.model!r}, stream={self.stream}, translated={self.translated})"


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


# The chat field an assistant message's reasoning goes back to a backend in (DeepSeek's,
# vLLM's and most open models' name for it).
REASONING = "reasoning_content"


def without_message_fields(payload: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """`payload` (its own copy, shallow) without `fields` on its assistant messages, for a
    server that refuses them; the client's messages are copied where changed, never edited."""
    messages = payload.get("messages")
    if type(messages) is not list:
        return payload
    changed: list[Any] | None = None
    for i, message in enumerate(messages):
        if type(message) is dict and message.get("role") == "assistant" and not fields.isdisjoint(message):
            if changed is None:
                changed = list(messages)
            changed[i] = {k: v for k, v in message.items() if k not in fields}
    if changed is not None:
        payload["messages"] = changed
    return payload


def with_reasoning_history(payload: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A translated request's `payload` (its own copy) for a backend that takes earlier turns'
    reasoning back in the message `fields` (the offer's `reasoning_fields`), or takes none
    (`()`). Taking it, every assistant message with tool calls carries it, empty where its
    turn had none (DeepSeek refuses a tool call's turn without the field, whoever answered
    it); not, none does (a strict server refuses a message field it does not know). The
    translation writes it as `reasoning_content`."""
    messages = payload.get("messages")
    if type(messages) is not list:
        return payload
    if not fields:  # the usual case, reasoning or not: one lookup a message (a translation's are dicts)
        for message in messages:
            if REASONING in message:
                break
        else:
            return payload
    changed: list[Any] | None = None
    for i, message in enumerate(messages):
        if type(message) is not dict or message.get("role") != "assistant":
            continue
        had = REASONING in message
        if fields:
            if not had and not message.get("tool_calls"):
                continue
            if had and fields == (REASONING,):
                continue
            text = message.get(REASONING, "")
            replaced = {k: v for k, v in message.items() if k != REASONING}
            for field in fields:
                replaced[field] = text
        elif had:
            replaced = {k: v for k, v in message.items() if k != REASONING}
        else:
            continue
        if changed is None:
            changed = list(messages)
        changed[i] = replaced
    if changed is not None:
        payload["messages"] = changed
    return payload


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
