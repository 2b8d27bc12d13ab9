"""The one interface every backend adapter implements, and the errors it raises.

An adapter takes an OpenAI payload for one endpoint (`UpstreamRequest.path`, e.g.
`/chat/completions`; model already set to the upstream's id) and returns an
`UpstreamResponse` whose bytes are OpenAI's wire format, JSON or SSE. Anything that stops
the call, before a 2xx answer or while its body is read, raises an `UpstreamError` of the
class that says what it means (`gateway.backends.errors`), so that the fallback policy and
the relay decide without reading adapter-specific (or HTTP-client-specific) exceptions.
"""

from __future__ import annotations

import abc
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.backends.errors import RequestNotEncodable, ResponseTooLarge
from gateway.backends.errors import UpstreamError as UpstreamError  # re-exported: the adapters' interface
from gateway.config.schema import BackendConfig
from gateway.config.snapshot import Offer

# Where a call of each API goes, relative to the backend's base_url.
CHAT_COMPLETIONS = "/chat/completions"
MESSAGES = "/messages"
RESPONSES = "/responses"
COMPLETIONS = "/completions"
EMBEDDINGS = "/embeddings"
# The upstream path of each ingress API (`config.schema.ApiName`).
API_PATHS: dict[str, str] = {
    "chat": CHAT_COMPLETIONS,
    "messages": MESSAGES,
    "responses": RESPONSES,
    "completions": COMPLETIONS,
    "embeddings": EMBEDDINGS,
}


def encode_payload(payload: Any) -> bytes:
    """The JSON body of an upstream call. A payload the encoder cannot write is the client's
    doing (nesting past orjson's write depth): `RequestNotEncodable`, a 400 that no circuit
    counts, rather than an exception the fallback loop would blame on the backend."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:
        raise RequestNotEncodable(f"The request cannot be forwarded: its JSON is nested too deeply ({exc}).") from None


# A non-streamed answer larger than this fails the attempt (`gateway.max_response_bytes`).
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class UpstreamRequest:
    offer: Offer
    payload: dict[str, Any]
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)  # per-call extras (request id, attribution)
    # The OpenAI endpoint called, relative to base_url: the same client layer serves every
    # ingress API (chat, embeddings, completions...), each adapter mapping it to its own.
    path: str = CHAT_COMPLETIONS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # non-streamed bodies only


class UpstreamResponse(abc.ABC):
    """A 2xx answer whose body has not been read yet."""

    status: int = 200
    media_type: str = "application/json"
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # what `aread` accepts before failing the call

    @abc.abstractmethod
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes:
        """The whole body, failing (`ResponseTooLarge`) once it passes `max_bytes` rather than holding it."""
        parts = []
        size = 0
        async for chunk in self.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise response_too_large(self.max_bytes)
            parts.append(chunk)
        return b"".join(parts)

    @property
    def exhausted(self) -> bool:
        """Whether every byte of the body has been handed out and none is to come (the answer
        arrived whole): a reader can finish it without waiting. False when not known."""
        return False

    def stream_started(self, idle_s: float) -> None:
        """The stream produced content: from now on, a silence longer than `idle_s` between
        reads fails it (`StreamIdleTimeout`). Set once per stream, so reads cost nothing more."""
        return None

    async def aclose(self) -> None:
        return None


class Backend(abc.ABC):
    """One configured provider. Created per config snapshot; holds its connection pool."""

    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        self.config = config

    @abc.abstractmethod
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Start the call; return once the upstream answered 2xx (body unread)."""

    async def check_health(self) -> bool:
        """Active health probe; backends without one are healthy by assumption."""
        return True

    async def aclose(self) -> None:
        return None


def response_too_large(limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(f"the upstream's answer is larger than {limit} bytes")


# The figures in an OpenAI-compatible server's context-length refusal. vLLM says "This model's
# maximum context length is X tokens. However, you requested T tokens (P in the messages, C in
# the completion)" (newer: "you requested C output tokens and your prompt contains [at least] P
# input tokens"); OpenAI "However, your messages resulted in T tokens".
_CONTEXT_MAX = re.compile(r"maximum context length is (\d+)")
_CONTEXT_PROMPT = re.compile(r"(\d+) in the messages|(?:contains|has) (?:at least )?(\d+) input tokens")
_CONTEXT_COMPLETION = re.compile(r"(\d+) in the completion|requested (\d+) output tokens")
_CONTEXT_TOTAL = re.compile(r"(?:resulted in|requested) (\d+) tokens")


def context_figures(message: str) -> tuple[int, int] | None:
    """The prompt's tokens and the most this model's context leaves for a prompt (its context
    less the completion asked), as an upstream's context-length refusal states them; None
    when it does not say."""
    found = _CONTEXT_MAX.search(message)
    if found is None:
        return None
    maximum = int(found[1])
    prompt = _CONTEXT_PROMPT.search(message) or _CONTEXT_TOTAL.search(message)
    if prompt is None:
        return None
    completion = _CONTEXT_COMPLETION.search(message)
    if completion is not None:
        maximum = max(maximum - _number(completion), 0)
    return _number(prompt), maximum


def _number(found: re.Match[str]) -> int:
    return int(next(group for group in found.groups() if group))


# The wordings `looks_like_unsupported_feature` reads as a lack of this backend.
_LACKS_A_FEATURE = re.compile(
    rb"\b(?:is|are) not (?:currently |yet )?supported"
    rb"|\bdoes(?: not|n't) support\b"
    rb"|requires --enable-auto-tool-choice"
    rb"|no endpoints found that (?:support|can handle)"
)


def looks_like_unsupported_feature(body: bytes, status: int = 400) -> bool:
    """Whether an upstream's refusal (a 400 or 422) names a feature or parameter this backend
    lacks, which another candidate may have (`FeatureUnsupported`: the request is passed on).
    The wordings, in the first 4 KiB of the body, any case:

    - the thing named, then "is not supported" / "are not supported" (also "not currently" or
      "not yet"): vLLM's "suffix is not currently supported", OpenAI's "Unsupported parameter:
      'max_tokens' is not supported with this model", Groq's "`logprobs` is not supported with
      this model";
    - "does not support" / "doesn't support": "This model does not support image input.";
    - vLLM (or a server sharing its words) started without tool calling: "\"auto\" tool choice
      requires --enable-auto-tool-choice and --tool-call-parser to be set";
    - OpenRouter, which answers these with a 404: "No endpoints found that support tool use",
      "No endpoints found that can handle the requested parameters". For a 404 only these:
      any other says the model or path is unknown (a misconfiguration).

    A bare "unsupported" is none of them: Groq's "property 'audio' is unsupported" (a field its
    strict schema refuses) and OpenAI's "You uploaded an unsupported image" judge the request
    itself, which every candidate would refuse alike: the client's at once."""
    found = _LACKS_A_FEATURE.search(body[:4096].lower())
    return found is not None and (status != 404 or found.group().startswith(b"no endpoints"))


def looks_like_context_overflow(body: bytes) -> bool:
    """Upstreams say 'context too long' in many words; all mean: try a longer-context model."""
    text = body[:4096].lower()
    return any(
        marker in text
        for marker in (
            b"context_length_exceeded",
            b"maximum context length",
            b"context length",
            b"context window",
            b"too many tokens",
            b"prompt is too long",
            b"input is too long",
            b"`inputs` must have less than",  # Hugging Face TEI (embeddings): "... N tokens. Given: M"
        )
    )
