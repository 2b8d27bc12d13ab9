"""What an ingress API is to the request path every API shares (`gateway.api.ingress`).

An `Ingress` says what differs per API: how its body is parsed, what each candidate is asked
(native pass-through or the chat translation), how an answer becomes its own shape, and how
its errors look. Its parsed request is an `IngressRequest` (the chat request routing reads,
and the client's own body); a streamed answer goes through a `StreamTranslator`, or a
`PassThrough` when it already is the client's format.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.api.state import AppState
from gateway.backends.base import Backend
from gateway.backends.errors import MalformedAnswer, UpstreamError
from gateway.config.snapshot import Offer
from gateway.protocol.chat import ChatRequest, upstream_payload, with_reasoning_history
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.continuation import NativeResume
from gateway.proxy.formats import UpstreamCall
from gateway.tenants.principal import Principal


class IngressRequest(Protocol):
    """A parsed request: `chat` is what routing, limits and the classifier read (messages,
    tools, model, stream; for a translated API, the translation or a view of the body that
    builds it when read: `ChatRequest.fields`/`prompt`); `native` the client's
    body as its API defines it."""

    @property
    def chat(self) -> ChatRequest: ...

    @property
    def native(self) -> Any: ...


@dataclass(slots=True)
class Parsed:
    """The plain `IngressRequest`."""

    chat: ChatRequest
    native: Any = None


class StreamTranslator(Protocol):
    """Turns the answer's stream (in `opened.format`) into the client's API's events.

    `passthrough`: the stream is already the client's format; the handler then forwards
    the bytes untouched and never calls `feed`/`finish` (no per-chunk call on the chat path).
    `broken` is the last event when the upstream stream breaks after bytes reached the
    client (or the gateway's shutdown cuts it: `ShuttingDown`), whatever `passthrough` says. `feed` and `finish` raise `TranslationEnded` at a
    chunk the translation cannot read."""

    passthrough: bool

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def broken(self, error: UpstreamError) -> bytes: ...


class TranslationEnded(MalformedAnswer):
    """A translated stream met a chunk it cannot read (a choice or a delta that is not an
    object): the translation has ended the client's stream with its own error event, in
    `events` after what came before the chunk. The upstream's malformed answer, accounted as
    the chat relay accounts one that breaks its stream; the client's stream ends with
    `events` (nothing continued elsewhere: its error event is already written)."""

    def __init__(self, events: bytes) -> None:
        super().__init__("the upstream stream sent a chunk the translation cannot read")
        self.events = events


class ShuttingDown(UpstreamError):
    """Not the upstream's failure: the gateway's shutdown grace period ran out with the stream
    still in flight. The client's stream ends with its API's error event (`broken`) saying
    so, as after a break, and nothing is continued elsewhere; the backend is not blamed."""

    reason = "shutdown"  # the ledger's `error` for a call the shutdown cut
    retryable = False
    backend_fault = False

    def __init__(self) -> None:
        super().__init__("The gateway is shutting down.")


def broken_error(error: UpstreamError) -> GatewayError:
    """What a client's stream that ended before its answer did is told, as the gateway's own
    errors are worded: the upstream stream broke off (a 502's), or the gateway is shutting
    down (a 503's). `code` names why (`UpstreamError.reason`)."""
    if isinstance(error, ShuttingDown):
        return GatewayError(503, error.message, code=error.reason)
    return GatewayError(502, "The upstream stream broke off.", code=error.reason)


class PassThrough:
    """A stream already in the client's wire format, forwarded untouched (chat to chat,
    native pass-through). Only how the format says the stream broke off differs per API, so
    the client's SDK raises instead of taking a cut answer as whole: `broken`, given."""

    passthrough = True
    __slots__ = ("broken",)

    def __init__(self, broken: Callable[[UpstreamError], bytes]) -> None:
        self.broken = broken

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


def openai_broken(error: UpstreamError) -> bytes:
    """OpenAI's error event for a chat or completions stream that broke off (or was cut by
    the gateway's shutdown): `{"error": {"message", "type", "param", "code"}}`."""
    return b"data: " + orjson.dumps(broken_error(error).body()) + b"\n\n"


OPENAI_PASSTHROUGH = PassThrough(openai_broken)  # stateless: one for every request


class Ingress(abc.ABC):
    """One API at the edge (see the module docstring). Stateless: one instance serves every
    request of its route, per-request state lives in the `IngressRequest` and translators."""

    endpoint: str = "chat"  # the ledger's `endpoint` (`CallOutcome.endpoint`)
    # Whether a subclass overrides `prepare` / `completed` (set per class below): the
    # handler awaits them only then, so an ingress without them (chat) pays nothing.
    prepares: bool = False
    completes: bool = False
    may_need_native: bool = False  # overrides `native_only`
    # A header besides x-request-id that every answer carries the request's id in, for an API
    # whose SDKs read their own (Anthropic's `request-id`: `message._request_id`).
    request_id_header: bytes | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.prepares = cls.prepare is not Ingress.prepare
        cls.completes = cls.completed is not Ingress.completed
        cls.may_need_native = cls.native_only is not Ingress.native_only

    @abc.abstractmethod
    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        """The request, or a `GatewayError` (400) naming what is wrong."""

    async def prepare(self, request: IngressRequest, principal: Principal, state: AppState) -> IngressRequest:
        """Async work between parsing and routing (loading stored state the request refers
        to, which routing must see: e.g. `previous_response_id`). May raise `GatewayError`."""
        return request

    async def completed(self, request: IngressRequest, opened: OpenedAnswer) -> None:
        """Called once the client's whole answer is ready, before its last bytes are sent
        (non-streamed: after `body`; streamed: after the translator's `finish`; for a
        stream that broke, only when `completes_failed` says so), so a follow-up request the client makes next can rely on it."""
        return None

    def completes_failed(self, request: IngressRequest) -> bool:
        """Whether `completed` is also called for a stream that failed after content (its
        error event sent, the call a 5xx): an API whose failed answers are objects the client
        may ask for again (a Responses `failed` Response). Asked only of an ingress that
        overrides `completed`, and only on failure."""
        return False

    def completes_request(self, request: IngressRequest) -> bool:
        """Whether `completed` has work for this request: only then does a stream's end wait
        for it, the answer sent first and its last bytes (the chunked end) after (a second
        write). Asked only of an ingress that overrides `completed`."""
        return True

    def answer_bound(self, request: IngressRequest, configured: int) -> int:
        """The most of a non-streamed answer this request may have held (`configured`:
        `gateway.max_response_bytes`); an API whose legitimate answers grow past it with what
        the request asks for raises it in proportion."""
        return configured

    def native_only(self, request: IngressRequest) -> bool:
        """Whether only a candidate serving this API natively can take the request (its chat
        translation refused it: content only that API has). When routing leaves none, the
        handler answers the translation's 400, not "no backend"."""
        return False

    def chat_payload(self, request: IngressRequest, offer: Offer) -> dict[str, Any]:
        """The chat completions payload this candidate is asked when the request goes to it
        translated (and what a continuation of a broken stream starts from): earlier turns'
        reasoning sent back only where the offer takes it (`with_reasoning_history`)."""
        return with_reasoning_history(upstream_payload(request.chat, offer.upstream_id), offer.reasoning_fields)

    def native_resume(self, request: IngressRequest, opened: OpenedAnswer) -> NativeResume | None:
        """How this answer's stream is continued should it break, when it is passed through
        in a format other than chat (chat streams are continued as they are); None: not
        continued (the stream ends with its error event)."""
        return None

    @abc.abstractmethod
    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        """What this candidate is asked: native pass-through when its backend serves the
        API, else the chat translation; None if it can serve neither (skipped)."""

    @abc.abstractmethod
    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        """The non-streamed answer for the client, from `opened.body` (in `opened.format`)."""

    @abc.abstractmethod
    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        """The translator for this streamed answer."""

    @abc.abstractmethod
    def error(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and JSON body of an error in this API's own shape (`request_id`:
        for a shape that carries it, as Anthropic's does)."""
