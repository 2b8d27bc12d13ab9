"""POST /v1/responses: OpenAI's Responses API as an `Ingress` of the one pipeline.

Routing, limits and the classifier see what the request's chat translation
(`gateway.protocol.responses.responses_to_chat`) would give them: read from the body itself
(`protocol.responses_view`) when a candidate could take it natively, so a pass-through is
never translated, else from the translation made up front. Each candidate is then asked natively
when its backend serves `/v1/responses` (its `apis` include `responses`: vLLM, OpenRouter),
the answer going to the client as the backend wrote it (`RESPONSES` format), or else in chat
completions, the answer translated back (`chat_to_response`, `ResponseStream`).

The gateway, not the backend, keeps conversations: `previous_response_id` is looked up in the
gateway's store (`gateway.conversations`, owner = the client key, `Owner`) before routing, and
the conversation it continues is sent whole to whichever backend answers, natively with
`store: false` and no `previous_response_id`. So a conversation continues through any backend
and, with Redis, on any replica. With `store` true (the default) the Response the client got
is stored once the answer is complete and before its last bytes are sent, so a follow-up
that arrives right after finds it. `store: false` keeps nothing.

Not here: GET/DELETE of stored responses and the store's lifecycle (`stored_responses`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway.api.edge import Ingress, IngressRequest, PassThrough, StreamTranslator, TranslationEnded, broken_error
from gateway.api.ingress import handle
from gateway.api.state import AppState
from gateway.api.stored_responses import Owner, has_references, load, owner_of, resolve_references, save
from gateway.backends.base import CHAT_COMPLETIONS, RESPONSES, Backend, UpstreamError
from gateway.config.snapshot import Offer
from gateway.conversations.store import StoredResponse
from gateway.protocol.chat import GATEWAY_OWNED_FIELDS, ChatRequest, owned_fields
from gateway.protocol.errors import GatewayError, echoed, invalid_request
from gateway.protocol.messages_answer import untranslatable
from gateway.protocol.responses import encode_event, responses_to_chat
from gateway.protocol.responses_answer import chat_to_response, conversation_items, encode_response, encoded_echo
from gateway.protocol.responses_input import check_tool_outputs, input_items
from gateway.protocol.responses_stream import ResponseStream
from gateway.protocol.responses_view import responses_fields, responses_prompt
from gateway.protocol.sse import data_of, json_objects
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.continuation import NativeResume, Partial
from gateway.proxy.formats import TranslatedChatFormat, TranslatedChatStream, UpstreamCall
from gateway.proxy.responses_format import RESPONSES_UNKEPT, ClientEcho, ResponsesFormat
from gateway.tenants.principal import Principal

log = logging.getLogger("gateway.responses")

# Fields of a Responses request that are the gateway's own: never sent to a backend natively.
_GATEWAY_FIELDS = ("previous_response_id", "store", *GATEWAY_OWNED_FIELDS)


def new_response_id() -> str:
    """`resp_` and 48 hex digits, as OpenAI's look; unguessable, since on a gateway without
    keys the id is all that stands between a stored response and anyone else."""
    return "resp_" + secrets.token_hex(24)


_OPEN = Owner("")  # a gateway without keys: one owner


@dataclass(slots=True)
class ResponsesRequest:
    """One Responses request on its way: the client's body, its chat translation (what
    routing reads), and what storing the answer needs."""

    native: dict[str, Any]
    chat: ChatRequest
    created_at: int
    store: bool
    owner: Owner = _OPEN
    previous: list[dict[str, Any]] = field(default_factory=list)  # items previous_response_id continues
    response: dict[str, Any] | None = None  # the Response the client got, once complete
    state: AppState | None = None  # the app's, set by `prepare`: its response store
    # The request's tools and instructions encoded (`encoded_echo`) by its translation, for the
    # Response written back: empty until translated (a native answer echoes nothing).
    echo: dict[str, orjson.Fragment] = field(default_factory=dict)
    _response_id: str = ""
    _native_format: ResponsesFormat | None = None

    @property
    def native_format(self) -> ResponsesFormat:
        """How a native backend's answer is read: kept whole with `store`, and its Responses
        made to say the client's `store` and `previous_response_id` (the backend was sent
        false and none) unless they already do (`store: false`, no id: Codex's turns)."""
        if self._native_format is None:
            previous = self.native.get("previous_response_id")
            if self.store or previous:
                self._native_format = ResponsesFormat(self.store, ClientEcho(self.store, previous))
            else:
                self._native_format = RESPONSES_UNKEPT
        return self._native_format

    @property
    def response_id(self) -> str:
        """The id of the Response the gateway writes (a translated answer, a continued native
        stream), made when first asked: a native answer carries its backend's own."""
        if not self._response_id:
            state = self.state
            self._response_id = "resp_" + state.response_ids.next() if state is not None else new_response_id()
        return self._response_id


# State kept at OpenAI that no backend here holds: refused, not dropped.
_NOT_KEPT = {
    "conversation": "Unsupported parameter: 'conversation'. This gateway keeps no Conversations objects; "
    "continue a conversation with 'previous_response_id' (the gateway stores each response).",
    "prompt": "Unsupported parameter: 'prompt'. Stored prompt templates are not available through this gateway; "
    "send the prompt's text as 'instructions' and 'input'.",
}


def parse_request(body: bytes) -> ResponsesRequest:
    """The request, translated without its previous conversation (`continue_from` adds it)."""
    if not body:
        raise invalid_request("The request body is empty; send a JSON object with `model` and `input`.")
    try:
        native = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(native, dict):
        raise invalid_request("The request body must be a JSON object.")
    for name in ("stream", "store", "parallel_tool_calls"):
        if native.get(name) is not None and not isinstance(native[name], bool):
            raise invalid_request(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")
    instructions = native.get("instructions")
    if instructions is not None and not isinstance(instructions, str):  # else dropped, and echoed as sent
        raise invalid_request("Invalid type for 'instructions': expected a string.", "instructions", "invalid_type")
    previous = native.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise invalid_request("Invalid type for 'previous_response_id': expected a string.", "previous_response_id")
    for name, message in _NOT_KEPT.items():
        if native.get(name) is not None:  # answered without it, the client would lose its context unawares
            raise invalid_request(message, name, "unsupported_parameter")
    metadata = native.get("metadata")
    if metadata is not None:
        _check_metadata(metadata)
    echo: dict[str, orjson.Fragment] = {}
    request = ResponsesRequest(
        native,
        _chat(native, [] if previous else None, echo),  # the stored conversation joins in `continue_from`
        int(time.time()),
        native.get("store") is not False,
        echo=echo,
    )
    return request


def _check_metadata(metadata: Any) -> None:
    """OpenAI's rule: at most 16 pairs, keys of at most 64 characters, string values of at most
    512 (echoed in every Response and stored with it; anything else, deep JSON included,
    would only fail after the backend was paid)."""
    if not isinstance(metadata, dict):
        raise invalid_request("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(metadata) > 16:
        raise invalid_request(
            f"Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
            f"but got an object with {len(metadata)} properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise invalid_request(
                f"Invalid 'metadata': a key is {len(key)} characters long; keys are at most 64.",
                "metadata",
                "string_above_max_length",
            )
        if not isinstance(value, str):
            raise invalid_request(
                f"Invalid type for 'metadata.{key[:64]}': expected a string.", f"metadata.{key[:64]}", "invalid_type"
            )
        if len(value) > 512:
            raise invalid_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length 512, "
                f"but got a string with length {len(value)} instead.",
                f"metadata.{key}",
                "string_above_max_length",
            )


def continue_from(request: ResponsesRequest, items: list[dict[str, Any]]) -> None:
    """Put the stored conversation `items` before the request's own input."""
    request.previous = items
    request.chat = _chat(request.native, items, request.echo)


def _chat(
    native: dict[str, Any], previous: list[dict[str, Any]] | None, echo: dict[str, orjson.Fragment]
) -> ChatRequest:
    """The chat request routing reads; `echo` is filled when the translation is made."""
    # OpenRouter-style `models` / `provider` / `route`: routing reads them.
    owned = owned_fields(native)  # None for the usual body: nothing copied
    fields = responses_fields(native)
    if fields is None:  # a malformed field: the translation's 400 names it
        payload = _translation(native, previous, owned, echo)
        stream = bool(payload.get("stream"))
        # Streams ask the chat backend for usage: response.completed carries it.
        return ChatRequest(payload, payload["model"], stream, stream)
    # Routed on its view: the translation is built only if a candidate is asked in chat.
    if owned is not None:
        fields.update(owned)
    stream = bool(fields.get("stream"))
    build = partial(_translation, native, previous, owned, echo)
    view = partial(responses_prompt, native, previous, fields.get("tools"))
    return ChatRequest(None, fields["model"], stream, stream, build=build, fields=fields, view=view)


def _translation(
    native: dict[str, Any],
    previous: list[dict[str, Any]] | None,
    owned: dict[str, Any] | None,
    echo: dict[str, orjson.Fragment],
) -> dict[str, Any]:
    payload = responses_to_chat(native, previous)
    if owned is not None:
        payload.update(owned)
    # A translated answer is a Response the gateway writes, echoing the request's tools and
    # instructions: encoded now, while the parse has just left them in the cache. After the
    # upstream's answer, other requests have pushed them out: the same dump measured 16.5 µs
    # there and 8.4 µs here (thread CPU time in the gateway under bench/ab.py's agent turn,
    # 15 KB, c=16).
    echo.update(encoded_echo(native))
    return payload


def native_payload(request: ResponsesRequest, upstream_model: str) -> dict[str, Any]:
    """The body for a backend serving /v1/responses: the client's, with the whole
    conversation as `input`, the backend's model id, and nothing kept upstream."""
    payload = {k: v for k, v in request.native.items() if k not in _GATEWAY_FIELDS}
    payload["model"] = upstream_model
    payload["input"] = request.previous + input_items(request.native.get("input"))
    payload["store"] = False
    return payload


class TranslatedStream:
    """Chat chunk events (already checked by the relay's accountant) in, Responses events out."""

    passthrough = False

    def __init__(self, request: ResponsesRequest) -> None:
        self._request = request
        self._stream = ResponseStream(request.native, request.response_id, request.created_at, request.echo)

    def feed(self, data: bytes) -> bytes:
        """`data` is whole events (the accountant cuts the stream), each one `data:` line."""
        out: list[dict[str, Any]] = []
        for event in data.split(b"\n\n"):
            payload = event[6:] if event.startswith(b"data: ") and event.find(b"\n") < 0 else data_of(event)
            if not payload or payload == b"[DONE]":
                continue
            out += self._stream.feed(orjson.loads(payload))
            if self._stream.malformed:
                if self._request.store:
                    self._request.response = self._stream.failed  # stored, as after a break
                raise TranslationEnded(b"".join(map(self._stream.encode, out)))
        return b"".join(map(self._stream.encode, out))

    def resume_at(
        self,
        response_id: str,
        created_at: int,
        sequence: int,
        output: list[dict[str, Any]],
        open_message: dict[str, Any] | None,
        text: str,
    ) -> None:
        """Continue a Response the client already has (`ResponseStream.resume_at`)."""
        self._stream.resume_at(response_id, created_at, sequence, output, open_message, text)

    def finish(self) -> bytes:
        events = self._stream.finish()
        # What `completed` stores: made only when it is kept (a Response rebuilt, about 5 µs);
        # the failed one when an error chunk ended the stream, as OpenAI keeps a failed Response.
        if self._request.store:
            self._request.response = self._stream.failed or self._stream.response
        return b"".join(map(self._stream.encode, events))

    def broken(self, error: UpstreamError) -> bytes:
        out = b"".join(map(encode_event, self._stream.fail(broken_error(error))))
        if self._request.store:
            self._request.response = self._stream.failed  # stored: `retrieve` says it failed, and why
        return out


class _NativeResume:
    """A native Responses stream continued after a break (`gateway.proxy.continuation`): the
    events the client got are read back (the Response's id, the items done, the message
    being written and its text, the last sequence number), and the continuation's chat
    chunks become events of the SAME Response: no second response.created, the text goes on
    in the open message item (or a new item), numbering stays gapless, and it ends with
    response.completed carrying the whole output and a usage counting every output token
    the client got. A break inside any other item (reasoning, a function call), or after a
    function call, is not continued."""

    __slots__ = ("_request", "_translator")

    def __init__(self, request: ResponsesRequest) -> None:
        self._request = request
        self._translator: TranslatedStream | None = None  # made on a break only

    def read(self, relayed: bytes) -> Partial | None:
        response_id, created_at, sequence = self._request.response_id, self._request.created_at, 0
        output: list[dict[str, Any]] = []
        open_item: dict[str, Any] | None = None
        text: list[str] = []  # the open message's
        all_text: list[str] = []
        tokens, reasoning, blocked = 0, 0, False
        for obj in json_objects(relayed):
            kind = obj.get("type")
            number = obj.get("sequence_number")
            if isinstance(number, int):
                sequence = max(sequence, number + 1)
            if kind == "response.created" and isinstance(obj.get("response"), dict):
                started = obj["response"]
                response_id = started.get("id") or response_id
                created_at = started.get("created_at") or created_at
            elif kind == "response.output_item.added" and isinstance(obj.get("item"), dict):
                open_item, text = obj["item"], []
                # After a function call: not continued (the answer was calling it). A reasoning
                # item done is not in the way: the message after it goes on (in one: below).
                blocked = blocked or open_item.get("type") not in ("message", "reasoning")
            elif kind == "response.output_item.done" and isinstance(obj.get("item"), dict):
                output.append(obj["item"])
                open_item = None
            elif kind == "response.output_text.delta":
                piece = obj.get("delta")
                if isinstance(piece, str) and piece:
                    text.append(piece)
                    all_text.append(piece)
                    tokens += 1
            elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
                if obj.get("delta"):
                    tokens += 1  # the client read it: billed, and it used up `max_output_tokens`
                    reasoning += 1
            elif kind in ("response.content_part.done", "response.output_text.done"):
                if open_item is None or open_item.get("type") == "message":
                    blocked = True  # a part closed inside the message: not one the chat path can go on with
            elif kind in ("response.completed", "response.incomplete", "response.failed", "error"):
                return None  # the Response had ended, or the upstream said why it stopped
        translator = TranslatedStream(self._request)
        translator.resume_at(response_id, created_at, sequence, output, open_item, "".join(text))
        self._translator = translator
        blocked = blocked or (open_item is not None and open_item.get("type") != "message")
        return Partial("".join(all_text), tokens, blocked, (None, None, None), reasoning=reasoning)

    def feed(self, data: bytes) -> bytes:
        assert self._translator is not None, "read() comes first"
        return self._translator.feed(data)

    def finish(self) -> bytes:
        assert self._translator is not None, "read() comes first"
        return self._translator.finish()  # keeps the final Response, for storing


def _native_broken(accountant: Any, error: UpstreamError) -> bytes:
    """The error event ending a native stream that broke off, numbered after the last event
    the client got (`ResponsesAccountant.next_sequence`), as the SDK types number every event."""
    sequence = getattr(accountant, "next_sequence", 0)
    event = {
        "type": "error",
        "sequence_number": sequence,
        "code": error.reason,
        "message": broken_error(error).message,
        "param": None,
    }
    return encode_event(event)


def _native(opened: OpenedAnswer) -> bool:
    """Whether the answer came from a backend serving /v1/responses (`native_format`)."""
    return isinstance(opened.format, ResponsesFormat)


# The longest backend `id` kept as a stored response's key (OpenAI's are about 50 characters).
MAX_STORED_ID = 256


def _unstorable(response: dict[str, Any]) -> str | None:
    """Why a native backend's Response cannot be stored, or None. Its `id` names the record,
    and its `output` items become the input of every request continuing it, which reads
    them as objects: stored, one that is not was a 500 on each continuation."""
    response_id = response.get("id")
    if type(response_id) is not str or not response_id:
        return "has no string `id`"
    if len(response_id) > MAX_STORED_ID:
        return f"has an `id` longer than {MAX_STORED_ID} characters"
    output = response.get("output")
    if type(output) is not list or not all(type(item) is dict for item in output):
        return "has output items that are not objects"
    return None


# A non-streamed chat answer to translate: checked, before it is accepted, for what
# `chat_to_response` reads.
_TRANSLATED = TranslatedChatFormat(untranslatable)


class ResponsesIngress(Ingress):
    endpoint = "responses"

    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        return parse_request(body)

    async def prepare(self, request: IngressRequest, principal: Principal, state: AppState) -> IngressRequest:
        assert isinstance(request, ResponsesRequest)
        request.owner = owner_of(principal)
        request.state = state  # where `completed` stores the answer
        previous_id = request.native.get("previous_response_id")
        if previous_id:
            record = await load(state, request.owner, previous_id, "previous_response_id")
            continue_from(request, record.items)
        items = input_items(request.native.get("input"))
        if has_references(items):
            # Resolved before routing and sent (or translated) as the items they name; stored
            # so, a conversation continued from this response holds the items themselves.
            items = await resolve_references(state, request.owner, items, request.previous)
            request.native = {**request.native, "input": items}
            request.chat = _chat(request.native, request.previous if previous_id else None, request.echo)
        # Once the conversation is known, before routing, whichever way a candidate is asked:
        # OpenAI refuses a call and an output that do not pair up too, so a native backend would.
        check_tool_outputs(request.previous, items)
        return request

    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        assert isinstance(request, ResponsesRequest)
        if "responses" in offer.apis:
            return UpstreamCall(RESPONSES, native_payload(request, offer.upstream_id), request.native_format)
        answer_format = TranslatedChatStream(partial(TranslatedStream, request)) if request.chat.stream else _TRANSLATED
        return UpstreamCall(CHAT_COMPLETIONS, self.chat_payload(request, offer), answer_format)

    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        assert isinstance(request, ResponsesRequest)
        if _native(opened):
            parsed = opened.answer  # parsed once, by the format's check, when kept
            if request.store:
                request.response = parsed if isinstance(parsed, dict) else orjson.loads(opened.body)
            echo = request.native_format.echo
            if echo is None:
                return opened.body
            patched = echo.patch(opened.body)  # by its bytes: the backend's, two members changed
            if patched is not None:
                return patched
            response = dict(parsed) if isinstance(parsed, dict) else orjson.loads(opened.body)
            echo.apply(response)
            return orjson.dumps(response)
        # Checked by `_TRANSLATED`; made when the request was taken, as a streamed one says
        # (the backend's `created` is its own clock's, and a fallback's later).
        response = chat_to_response(opened.answer, request.native, request.response_id, request.created_at)
        request.response = response
        return encode_response(response, request.native, request.echo)

    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        assert isinstance(request, ResponsesRequest)
        if _native(opened):
            # Forwarded untouched (the relay's accountant keeps its final Response, which is
            # what gets stored); a break ends it with an error event numbered after the last.
            return PassThrough(partial(_native_broken, opened.accountant))
        if opened.checked is not None:
            started: StreamTranslator = opened.checked.translator  # fed the events before the first content
            return started
        return TranslatedStream(request)

    def native_resume(self, request: IngressRequest, opened: OpenedAnswer) -> NativeResume | None:
        if not _native(opened):
            return None
        assert isinstance(request, ResponsesRequest)
        return _NativeResume(request)

    def completes_request(self, request: IngressRequest) -> bool:
        assert isinstance(request, ResponsesRequest)
        return request.store  # `store: false` keeps nothing: the stream ends in one write

    def completes_failed(self, request: IngressRequest) -> bool:
        return True  # a stream ended by response.failed left a Response the client has the id of

    async def completed(self, request: IngressRequest, opened: OpenedAnswer) -> None:
        """Store the Response the client got (with `store` true), before its last bytes go: a
        `failed` one too (a stream that broke after content), as OpenAI keeps it, so `retrieve`
        says why it failed and `previous_response_id` continues from its input."""
        assert isinstance(request, ResponsesRequest)
        if not request.store or request.state is None:
            return
        response = request.response
        if _native(opened):
            final = getattr(opened.accountant, "response", None)  # a native stream's terminal Response
            if opened.accountant is not None:
                # Its terminal Response, `failed` too (the upstream's response.failed after
                # content); else a native stream that broke and was continued: the Response the
                # continuation ended (or the failed one it ended with).
                response = final if isinstance(final, dict) else request.response
        if response is not None:
            if _native(opened):
                unfit = _unstorable(response)
                if unfit:
                    log.warning("response %s not stored: the backend's Response %s", echoed(response.get("id")), unfit)
                    return
                # The backend was sent store false and no previous_response_id (the gateway
                # keeps the conversation): the stored copy says what the gateway did with it.
                previous = request.native.get("previous_response_id")
                response = {**response, "store": True, "previous_response_id": previous}
            items = conversation_items(request.previous, request.native, response)
            await save(request.state, request.owner, StoredResponse(response, items, len(request.previous)))

    def error(self, exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
        return exc.status, exc.headers, orjson.dumps(exc.body())


INGRESS = ResponsesIngress()


def responses(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    return handle(scope, receive, send, INGRESS)
