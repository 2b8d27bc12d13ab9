"""POST /v1/messages: Anthropic's Messages API at the edge (count_tokens: `api.token_counts`).

What Claude Code and the `anthropic` SDKs call. A request is routed like any chat request,
on what its chat translation (`protocol.messages.messages_to_chat`) would give routing,
limits and the classifier: read from the body itself (`protocol.messages_view`) when a
candidate could take it natively, so a pass-through is never translated, else from the
translation made up front. Each candidate is then asked natively when its backend serves `messages`
(`type: anthropic`, vLLM, OpenRouter, or any backend with `messages` in its `apis`: the
client's body with the upstream's model id, less the gateway's own routing fields, and its
`anthropic-version`/`anthropic-beta` headers), or the chat translation otherwise (OpenRouter's
`models` / `provider` steer routing on either path, as on chat completions). The answer goes back as Anthropic's bytes (native) or translated from
chat (`chat_to_message`, `MessageStream`: Anthropic's exact event sequence). Candidates of
both kinds mix freely in one fallback list. `max_tokens` is taken as the ceiling Anthropic
defines it to be: routing reserves its usual completion budget (key TPM and budget
reservations too, but never more than max_tokens: `ChatRequest.completion_ceiling`), and
each candidate is asked for at most what it can produce (its `max_output_tokens`, and its
context minus the prompt's estimate). Errors on this route are Anthropic-shaped
(`anthropic_error`), so the SDKs raise their own exception classes: 401, 429 with
retry-after, 400, and 529 `overloaded_error` when no backend can take the request or every
candidate said it was overloaded (a 503, or Anthropic's 529: chat completions' 502). Every
answer names its request in Anthropic's `request-id` header as well as `x-request-id`, and
an error body in its `request_id`, where the SDKs read them.

Clients authenticate with `x-api-key` or `Authorization: Bearer` (both read by
`api.auth`); `anthropic-version` is accepted and not required.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.edge import Ingress, IngressRequest, PassThrough, StreamTranslator, TranslationEnded, broken_error
from gateway.api.ingress import handle
from gateway.backends.base import CHAT_COMPLETIONS, MESSAGES, Backend, UpstreamError
from gateway.config.snapshot import Offer
from gateway.protocol.body import json_object
from gateway.protocol.chat import (
    GATEWAY_OWNED_FIELDS,
    ChatRequest,
    PromptFacts,
    owned_fields,
    upstream_payload,
    with_reasoning_history,
)
from gateway.protocol.errors import GatewayError, invalid_request
from gateway.protocol.messages import messages_to_chat
from gateway.protocol.messages_answer import anthropic_error, chat_to_message, untranslatable
from gateway.protocol.messages_checks import check_tool_results
from gateway.protocol.messages_stream import MessageStream
from gateway.protocol.messages_turns import ANTHROPIC_ONLY
from gateway.protocol.messages_view import coarse_prompt, messages_fields, messages_prompt
from gateway.protocol.sse import data_of, json_objects
from gateway.protocol.translation import encode_event
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.continuation import NativeResume, Partial
from gateway.proxy.formats import TranslatedChatFormat, TranslatedChatStream, UpstreamCall
from gateway.proxy.messages_format import MESSAGES as MESSAGES_FORMAT

log = logging.getLogger("gateway.api")
_JSON = (b"content-type", b"application/json")
# Request headers of the Messages API a native pass-through forwards to the backend: the
# version the client's body is written for, and the betas it uses (Claude Code's
# `context_management` field is refused without its beta).
_FORWARDED = ("anthropic-version", "anthropic-beta")


@dataclass(slots=True)
class MessagesRequest:
    chat: ChatRequest  # what routing reads and chat backends get: the translation, built when first read
    native: dict[str, Any]  # the client's Messages body, for backends that serve it natively
    forward: dict[str, str] | None  # the client's headers a native call carries
    stop_sequences: list[str] | None
    max_tokens: int  # as the client asked: a ceiling, capped per candidate (`capped_max_tokens`)
    body_bytes: int = 0  # the request body's size: bounds the prompt without estimating it
    owned: bool = False  # `native` has the gateway's own fields (models, provider, route): never passed through
    translation: _Translation | None = None  # a view's request's translation and routing facts

    @property
    def refused(self) -> bool:
        """The translation refused the body as Anthropic-only: native candidates only."""
        return self.translation is not None and self.translation.refused is not None

    def capped_max_tokens(self, offer: Offer) -> int:
        """`max_tokens` within what this offer can produce: its `max_output_tokens`, and its
        context minus the prompt's estimate."""
        spec = offer.spec
        cap = spec.longest_answer(self.max_tokens)
        # The estimate only when the prompt could matter: it is about a third of the body's
        # bytes, never half (images by URL aside).
        if cap + self.body_bytes // 2 >= spec.context_length:
            cap = spec.longest_answer(self.max_tokens, self.chat.prompt_tokens())
        return cap


def parse_messages_request(body: bytes, headers: dict[str, str]) -> MessagesRequest:
    native = _json_object(body)
    # Anthropic's max_tokens is a required ceiling (Claude Code asks 32000-128000 whatever the
    # model), not a demand: routing reserves its usual completion budget, and each candidate
    # gets max_tokens capped to what it can produce, as the `anthropic` adapter caps it.
    # OpenRouter-style `models` / `provider` (and `route`): routing reads them on either path,
    # as on chat completions and as explain shows; `plan` keeps them from a native backend.
    owned = owned_fields(native)
    fields = messages_fields(native)
    if fields is None:  # a malformed field: the translation's 400 names it
        chat = messages_to_chat(native)
        max_tokens: int = chat.pop("max_tokens")
        if owned is not None:
            chat.update(owned)
        request = ChatRequest(chat, native["model"], bool(chat.get("stream")))
        check_tool_results(native["messages"])
    else:
        # Routed on its view: the translation is built only if a candidate is asked in chat.
        max_tokens = fields.pop("max_tokens")
        if owned is not None:
            fields.update(owned)
        translation = _Translation(native, owned, len(body))
        request = ChatRequest(
            None, fields["model"], bool(fields.get("stream")), build=translation, fields=fields, view=translation.view
        )
    request.include_usage = request.stream
    request.completion_ceiling = max_tokens
    stops = native.get("stop_sequences")
    forward = {name: headers[name] for name in _FORWARDED if name in headers} or None
    stops = stops if isinstance(stops, list) else None
    made = translation if fields is not None else None
    return MessagesRequest(request, native, forward, stops, max_tokens, len(body), owned is not None, made)


class _Translation:
    """A view's request's chat translation, made when first needed, and its routing facts.

    A body the view cannot read is translated to be routed; one the translation refuses as
    Anthropic-only (`ANTHROPIC_ONLY`: a server tool, a document by URL or image by file id, a search result) is
    routed on its coarse facts (`coarse_prompt`) and can only be answered natively: `refused`
    keeps the 400 for a candidate asked in chat (passed over) and for a request no candidate
    could take natively (it answers that 400, as before)."""

    __slots__ = ("_native", "_owned", "_size", "payload", "refused")

    def __init__(self, native: dict[str, Any], owned: dict[str, Any] | None, size: int) -> None:
        self._native, self._owned, self._size = native, owned, size
        self.payload: dict[str, Any] | None = None
        self.refused: tuple[str, str | None, str | None] | None = None  # the 400's message, param, code

    def __call__(self) -> dict[str, Any]:
        if self.payload is None:
            if self.refused is not None:
                raise invalid_request(*self.refused)  # a fresh one each time: nothing kept holds frames
            self.payload = _translation(self._native, self._owned)
        return self.payload

    def view(self) -> PromptFacts | None:
        facts = messages_prompt(self._native)
        if facts is not None:
            return facts
        try:
            self.payload = _translation(self._native, self._owned)
        except GatewayError as refused:
            if refused.code != ANTHROPIC_ONLY:
                raise  # malformed: its 400 now, as the translation would give it
            self.refused = (refused.message, refused.param, refused.code)  # not the error: its frames
            return coarse_prompt(self._native, self._size)
        return None  # translated: routing reads the translation


def _translation(native: dict[str, Any], owned: dict[str, Any] | None) -> dict[str, Any]:
    """The chat payload of a Messages body, without max_tokens (capped per candidate), with
    the gateway's own fields (routing reads a translation's; `upstream_payload` drops them)."""
    # Before the translation names what it refuses, as before routing whichever way a candidate
    # is asked: Anthropic refuses a tool_use and a tool_result that do not pair up (and the
    # rest `check_tool_results` reads), so a native backend would as well. A body with a view
    # was checked by the view's own pass (`messages_view._prompt`) and never comes here first.
    check_tool_results(native["messages"])
    chat = messages_to_chat(native)
    del chat["max_tokens"]
    if owned is not None:
        chat.update(owned)
    return chat


def _json_object(body: bytes) -> dict[str, Any]:
    return json_object(body, "`model`, `max_tokens`, `messages`")


def _error_event(kind: str, message: str) -> bytes:
    return encode_event({"type": "error", "error": {"type": kind, "message": message}})


def _native_broken(error: UpstreamError) -> bytes:
    """The error event ending a Messages stream that broke off or was cut by the shutdown."""
    return _error_event("api_error", f"{broken_error(error).message.removesuffix('.')} ({error.reason}).")


_NATIVE = PassThrough(_native_broken)  # a native Messages stream: already the client's events


class _FromChat:
    """Chat chunk events (as the relay forwards them) in, Anthropic's events out."""

    passthrough = False

    def __init__(self, request: MessagesRequest) -> None:
        chat = request.chat
        self._stream = MessageStream(chat.model, chat.prompt_tokens(), request.stop_sequences)

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        stream = self._stream
        for event in data.split(b"\n\n"):
            # The relay forwards chat events as `data: {...}` lines; anything else it passed
            # (comments, other fields) goes through the general reader.
            payload = event[6:] if event.startswith(b"data: {") else data_of(event) if event else None
            if payload is None or payload == b"[DONE]":
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue  # the relay forwards only well-formed events; nothing to translate
            if type(chunk) is dict:
                fast = stream.text_delta(chunk)
                if fast is not None:
                    out.append(fast)
                    continue
            out.extend(encode_event(e) for e in stream.feed(chunk))
            if stream.malformed:
                raise TranslationEnded(b"".join(out))
        return b"".join(out)

    def resume_at(self, last_index: int, text_open: bool, delivered_bytes: int) -> None:
        """Continue a message the client already has (`MessageStream.resume_at`)."""
        self._stream.resume_at(last_index, text_open, delivered_bytes)

    def finish(self) -> bytes:
        out = b"".join(encode_event(e) for e in self._stream.finish())
        if self._stream.malformed:
            raise TranslationEnded(out)
        return out

    def broken(self, error: UpstreamError) -> bytes:
        return _native_broken(error)


class _NativeResume:
    """A native Messages stream continued after a break (`gateway.proxy.continuation`): the
    events the client got are read back (its text so far, and where the break came), and the
    continuation's chat chunks become events of the SAME message: no second message_start,
    text appended to the open text block or in a new block after the last, then the closing
    content_block_stop, message_delta (stop_reason, usage counting every output token the
    client got) and message_stop. A break inside a tool_use or thinking block, or after one
    tool_use block, is not continued (a prefill cannot hold a tool call or half a thought)."""

    __slots__ = ("_request", "_translator")

    def __init__(self, request: MessagesRequest) -> None:
        self._request = request
        self._translator: _FromChat | None = None  # made on a break only

    def read(self, relayed: bytes) -> Partial | None:
        text: list[str] = []
        tokens = delivered = reasoning = 0
        last_index, open_kind, tool_use = -1, None, False
        for obj in json_objects(relayed):
            kind = obj.get("type")
            if kind == "content_block_start":
                block = obj.get("content_block")
                index = obj.get("index")
                open_kind = block.get("type") if isinstance(block, dict) else None
                last_index = index if isinstance(index, int) and index > last_index else last_index + 1
                tool_use = tool_use or open_kind not in ("text", "thinking", "redacted_thinking")
            elif kind == "content_block_delta":
                delta = obj.get("delta")
                piece = delta.get("text") if isinstance(delta, dict) and delta.get("type") == "text_delta" else None
                if isinstance(piece, str) and piece:
                    text.append(piece)
                    tokens += 1
                    delivered += len(piece.encode())
                elif isinstance(delta, dict) and delta.get("type") == "thinking_delta" and delta.get("thinking"):
                    tokens += 1  # the client read it: billed, and it used up `max_tokens`
                    reasoning += 1
            elif kind == "content_block_stop":
                open_kind = None
            elif kind in ("message_delta", "message_stop", "error"):
                return None  # the message had ended, or the upstream said why it stopped
        translator = _FromChat(self._request)
        translator.resume_at(last_index, open_kind == "text", delivered)
        self._translator = translator
        # Not continuable (the relay then ends with the error event): a tool call had
        # started, or the break came inside a block other than text.
        blocked = tool_use or open_kind not in (None, "text")
        return Partial("".join(text), tokens, blocked, (None, None, None), reasoning=reasoning)

    def feed(self, data: bytes) -> bytes:
        assert self._translator is not None, "read() comes first"
        return self._translator.feed(data)

    def finish(self) -> bytes:
        assert self._translator is not None, "read() comes first"
        return self._translator.finish()


# A non-streamed chat answer to translate: checked, before it is accepted, for what
# `chat_to_message` reads (tool calls' arguments a JSON object included).
_TRANSLATED = TranslatedChatFormat(partial(untranslatable, object_arguments=True))


class MessagesIngress(Ingress):
    endpoint = "messages"
    request_id_header = b"request-id"  # Anthropic's, which its SDKs read

    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        return parse_messages_request(body, headers)

    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        assert isinstance(request, MessagesRequest)
        if "messages" in offer.apis:
            payload = dict(request.native)
            if request.owned:  # Anthropic refuses a top-level field it does not know
                for name in GATEWAY_OWNED_FIELDS:
                    payload.pop(name, None)
            payload["model"] = offer.upstream_id
            payload["max_tokens"] = request.capped_max_tokens(offer)
            return UpstreamCall(MESSAGES, payload, MESSAGES_FORMAT, request.forward)
        if request.refused:
            return None  # Anthropic-only content: this candidate, asked in chat, cannot take it
        answer_format = TranslatedChatStream(partial(_FromChat, request)) if request.chat.stream else _TRANSLATED
        return UpstreamCall(CHAT_COMPLETIONS, self.chat_payload(request, offer), answer_format)

    def native_only(self, request: IngressRequest) -> bool:
        assert isinstance(request, MessagesRequest)
        return request.refused

    def chat_payload(self, request: IngressRequest, offer: Offer) -> dict[str, Any]:
        assert isinstance(request, MessagesRequest)
        payload = with_reasoning_history(upstream_payload(request.chat, offer.upstream_id), offer.reasoning_fields)
        payload["max_tokens"] = request.capped_max_tokens(offer)
        if not offer.takes_top_k:  # Anthropic's field, which OpenAI's API (and others) refuse
            payload.pop("top_k", None)
        return payload

    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        if opened.format is MESSAGES_FORMAT:
            return opened.body
        assert isinstance(request, MessagesRequest)
        completion = opened.answer  # parsed and checked by the loop (`_TRANSLATED`)
        return orjson.dumps(chat_to_message(completion, request.chat.model, request.stop_sequences))

    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        if opened.format is MESSAGES_FORMAT:
            return _NATIVE
        assert isinstance(request, MessagesRequest)
        if opened.checked is not None:
            started: StreamTranslator = opened.checked.translator  # fed the events before the first content
            return started
        return _FromChat(request)

    def native_resume(self, request: IngressRequest, opened: OpenedAnswer) -> NativeResume | None:
        if opened.format is not MESSAGES_FORMAT:
            return None
        assert isinstance(request, MessagesRequest)
        return _NativeResume(request)

    def error(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        status, body = anthropic_error(exc, request_id)
        return status, exc.headers, orjson.dumps(body)


MESSAGES_INGRESS = MessagesIngress()


async def messages(scope: Scope, receive: Receive, send: Send) -> None:
    await handle(scope, receive, send, MESSAGES_INGRESS)
