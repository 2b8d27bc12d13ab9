"""Reading answers in OpenAI's Responses wire format, for native pass-through.

A backend that serves `/v1/responses` itself (vLLM, OpenRouter) is asked in that format and
its answer goes to the client as it came. The fallback loop and the relay still need to know
what they read, as `SseAccountant` tells them for chat: whether a non-streamed body is a
Response (`check_body`: a JSON object with `"object": "response"` and an `output` list; one
whose status is `failed` is the backend failing), and, for a stream, where content begins
(no fallback past it), where usage is (`response.completed` / `response.incomplete`, and
`response.failed`), and whether the upstream failed before any content (`response.failed` or
an `error` event then: `StreamFailedEarly`, so the next candidate is tried).

Content is the first delta of output text, refusal, reasoning or function/custom-tool
arguments, or an output item that is a call (some servers send a call's arguments whole in
`output_item.done`), or a terminal event. After content, each event gets a structural check
(`event:` / `data: {...}` lines, as the chat relay's); malformed ones are dropped and counted,
`MAX_MALFORMED_RUN` in a row break the stream. Error events after content are relayed with
their message redacted (one of a passing kind held back when the stream could be continued,
as `gateway.proxy.relay` says). The final Response of a stream is kept (`response`) because the
gateway stores what the client got.

Events that echo the whole Response (tens of kilobytes: instructions, tools, output) are
the stream's dear parses, so they are read by their bytes where that is enough:
`response.created` / `response.in_progress` carry nothing the gateway reads and are checked
by their shape; once content came, a terminal event's usage is read from its end and its
Response parsed only if asked for (`store` true). Errors and failures are always parsed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.errors import UpstreamError
from gateway.config.snapshot import Offer
from gateway.protocol.redact import Redactor
from gateway.protocol.sse import EventCutter, data_of, whole_events
from gateway.proxy.formats import AnswerFormat, StreamAccountant
from gateway.proxy.outcome import Attempt
from gateway.proxy.relay import (
    MAX_MALFORMED_RUN,
    ErrorEventMidway,
    MalformedAnswer,
    StreamFailedEarly,
    give_end_grace,
    held_error,
    transient_error,
)
from gateway.proxy.usage import Usage, token_count

if TYPE_CHECKING:
    from gateway.backends.base import UpstreamResponse

_FIELDS = (b":", b"data:", b"event:", b"id:", b"retry:")
_NO_REDACTION = Redactor(())
# Events that are content: past the first of them the answer is committed to.
_CONTENT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
    }
)
_CALL_ITEMS = frozenset({"function_call", "custom_tool_call"})
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Events that announce the Response before any output: read by their first bytes, never parsed.
_ANNOUNCEMENTS = (b'{"type":"response.created",', b'{"type":"response.in_progress",')
# Terminal events whose usage is read from their end when content came before them.
_ENDINGS = (b'{"type":"response.completed",', b'{"type":"response.incomplete",')
_USAGE_KEY = b'"usage":{'
_ERROR_KEY = b'"error":'
_MAX_TAIL = 4096  # the Response's members from `usage` on: its usage, user and metadata
# Markers of the events the fast path must not pass unread: usage, errors and the end.
_LOOK_INSIDE = (b'"usage"', b'"error"', b"response.completed", b"response.incomplete", b"response.failed")


_PREVIOUS_KEY = b'"previous_response_id":'
_STORE_KEY = b'"store":'
# The events whose `response` the client reads as the Response it asked for.
_CARRIERS = frozenset({"response.created", "response.in_progress", "response.queued", *_TERMINAL})


class ClientEcho:
    """The Response's `store` and `previous_response_id` as the client asked them, put in
    place of what a native backend echoes of the stateless call it was sent."""

    __slots__ = ("_last", "_previous", "_store", "previous_response_id", "store")

    def __init__(self, store: bool, previous_response_id: str | None) -> None:
        self.store = store
        self.previous_response_id = previous_response_id
        self._store = _STORE_KEY + (b"true" if store else b"false")
        self._previous = _PREVIOUS_KEY + orjson.dumps(previous_response_id)
        self._last: tuple[bytes, bytes] | None = None  # the last event's Response, as it came and patched

    def patch_event(self, event: bytes) -> bytes | None:
        """`patch` for an event carrying a Response: `response.in_progress` repeats the
        Response of `response.created` byte for byte (OpenAI, vLLM), so that one's patch is
        reused after a comparison (a scan of the Response is about 5 µs per 15 KB key)."""
        at = event.find(b'"response":{')
        if at >= 0 and self._last is not None:
            came, patched = self._last
            if len(event) - at == len(came) and event.endswith(came):
                return event[:at] + patched
        out = self.patch(event)
        if out is not None and at >= 0:
            self._last = (event[at:], out[at:])
        return out

    def apply(self, response: dict[str, Any]) -> None:
        response["store"] = self.store
        response["previous_response_id"] = self.previous_response_id

    def patch(self, text: bytes) -> bytes | None:
        """`text` (a Response, or an event carrying one, compact JSON) with the two members
        set by their bytes, or None when that is not sure (the caller parses). A key's bytes
        `"name":` occur only as a key (a string's quotes are escaped), so one
        `previous_response_id` key in the text is the Response's: vLLM's, OpenAI's and
        OpenRouter's Responses carry it. `store` is the Response's when it is the only
        `store` key with a boolean (vLLM writes none: then it is added beside the other).
        What this takes for the Response's and is not: a tool's JSON schema holding a
        `"store":true|false` member when the Response has none, or a `previous_response_id`
        key when the Response has none."""
        # One key each: `find` from the start and `rfind` from the end meet (a scan of the
        # text in all, about 2 µs per 15 KB; `count` took 12 µs for `"store":`).
        at = text.find(_PREVIOUS_KEY)
        if at < 0 or text.rfind(_PREVIOUS_KEY) != at:
            return None
        value = at + len(_PREVIOUS_KEY)
        if text.startswith(b"null", value):
            previous_end = value + 4
        elif text.startswith(b'"', value):
            previous_end = text.find(b'"', value + 1) + 1
            if previous_end == 0 or text.find(b"\\", value, previous_end) >= 0:
                return None
        else:
            return None
        store_at = text.find(_STORE_KEY)
        if store_at < 0:
            return b"".join((text[:at], self._previous, b",", self._store, text[previous_end:]))
        if text.rfind(_STORE_KEY) != store_at:
            return None
        value = store_at + len(_STORE_KEY)
        if text.startswith(b"false", value):
            store_end = value + 5
        elif text.startswith(b"true", value):
            store_end = value + 4
        else:
            return None
        if store_at < at:
            parts = (text[:store_at], self._store, text[store_end:at], self._previous, text[previous_end:])
        else:
            parts = (text[:at], self._previous, text[previous_end:store_at], self._store, text[store_end:])
        return b"".join(parts)


def _single_data(event: bytes) -> bytes | None:
    """The payload of an event that is one `data: {` line, perhaps after one `event:` line,
    without splitting it into lines (a Response-carrying event is tens of kilobytes); None
    for any other shape, which the caller checks line by line."""
    start = 0
    if event.startswith(b"event: "):
        start = event.find(b"\n") + 1
        if start == 0:
            return None
    if not event.startswith(b"data: {", start) or event.find(b"\n", start) >= 0:
        return None
    return event[start + 6 :]


def _usage_at_the_end(payload: bytes) -> dict[str, Any] | None:
    """The `usage` of a terminal event's Response, read from the event's end without parsing
    the Response (tens of kilobytes: instructions, tools and output echoed); None when it is
    not there (the caller parses the whole event). `usage` is among the Response's last
    members (OpenAI's and vLLM's order): `{` + the payload from the last `"usage":{` to before
    its final `}` is a JSON object only when that key is a member of the object closed by the
    second-to-last brace, the Response, never a deeper one (a tool schema's property)."""
    at = payload.rfind(_USAGE_KEY)
    if at < 1 or len(payload) - at > _MAX_TAIL or payload[at - 1] not in b",{" or not payload.endswith(b"}}"):
        return None
    try:
        members = orjson.loads(b"{" + payload[at:-1])
    except orjson.JSONDecodeError:
        return None
    usage = members.get("usage") if isinstance(members, dict) else None
    return usage if isinstance(usage, dict) else None


def usage_of_response(usage: Any) -> Usage | None:
    """A Response's `usage` (input/output tokens and their details) as the ledger's Usage;
    None when it has no usable count (the caller estimates, as `Usage.from_openai`)."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage.get("input_tokens"))
    output = token_count(usage.get("output_tokens"))
    if prompt is None and output is None:
        return None
    prompt = prompt or 0
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = min(token_count(details.get("cached_tokens")) or 0, prompt)
    written = min(token_count(details.get("cache_write_tokens")) or 0, prompt - cached)
    out_details = usage.get("output_tokens_details")
    reasoning = (token_count(out_details.get("reasoning_tokens")) or 0) if isinstance(out_details, dict) else 0
    return Usage(prompt, output or 0, cached, reasoning, cache_write_tokens=written)


def error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "upstream error")
    return str(error or "upstream error")


def check_response_body(offer: Offer, body: bytes) -> tuple[dict[str, Any], Usage | None]:
    """A non-streamed 2xx body as a Response and its usage; raises `MalformedAnswer` when it
    is not a Response, `StreamFailedEarly` when it is a failed one (or an error object)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedAnswer(f"{offer.backend}: the upstream's 200 body is not JSON") from None
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"{offer.backend}: the upstream's 200 body is not a JSON object")
    if answer.get("status") == "failed" or (answer.get("error") and not answer.get("output")):
        raise StreamFailedEarly(error_message(answer.get("error")), 502)
    if answer.get("object") != "response" or not isinstance(answer.get("output"), list):
        raise MalformedAnswer(f"{offer.backend}: the upstream's 200 body is not a Response (no `output` list)")
    return answer, usage_of_response(answer.get("usage"))


class ResponsesAccountant:
    """Feeds upstream Responses SSE bytes through; returns what to forward to the client.
    The surface of `SseAccountant`, so the fallback loop and the relay drive it the same way."""

    __slots__ = (
        "_attempt",
        "_broken",
        "_echo",
        "_events",
        "_last",
        "_malformed_run",
        "_response",
        "_started",
        "_terminal",
        "content_events",
        "done_held",
        "failed_midway",
        "first_content_at",
        "hold_errors",
        "malformed_events",
        "redactor",
        "saw_done",
        "upstream",
        "usage",
    )

    def __init__(self, redactor: Redactor | None = None, echo: ClientEcho | None = None) -> None:
        self.redactor = redactor or _NO_REDACTION
        self._echo = echo  # set: the Responses the client reads say what it asked
        self.usage: Usage | None = None
        self._response: dict[str, Any] | None = None  # the Response of the terminal event
        self._terminal: bytes | None = None  # its payload, until `response` is asked for
        self.content_events = 0
        self.first_content_at: float | None = None
        self.saw_done = False  # a terminal event (completed, incomplete, failed) was read
        self.done_held = False  # never: the upstream's terminal event always carries usage
        self.malformed_events = 0
        self.failed_midway = False  # an error event or response.failed after content (relayed)
        self.hold_errors = False  # `SseAccountant.hold_errors`
        self._malformed_run = 0
        self.upstream: UpstreamResponse | None = None  # `SseAccountant.upstream`
        self._broken: UpstreamError | None = None
        self._attempt: Attempt | None = None
        self._events = EventCutter()
        self._last = b""  # the last bytes handed on: where the numbering stands
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    @property
    def next_sequence(self) -> int:
        """The `sequence_number` an event added after what was handed on takes (an error event
        when the stream breaks): one past the last event's, read (rarely: on a break) from the
        last bytes handed on; 0 before any."""
        for event in reversed(whole_events(self._last)):
            payload = _single_data(event) or data_of(event)
            try:
                number = orjson.loads(payload).get("sequence_number") if payload else None
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if type(number) is int:
                return number + 1
        return 0

    @property
    def response(self) -> dict[str, Any] | None:
        """The Response of the terminal event (what the gateway stores), parsed when first
        asked for: a stream nobody stores never parses it."""
        if self._terminal is not None:
            payload, self._terminal = self._terminal, None
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                obj = None
            response = obj.get("response") if isinstance(obj, dict) else None
            self._response = response if isinstance(response, dict) else None
        return self._response

    def report_to(self, attempt: Attempt) -> None:
        attempt.malformed_events = self.malformed_events
        self._attempt = attempt

    def feed(self, chunk: bytes) -> bytes:
        self._raise_if_broken()
        complete = self._events.complete(chunk)
        if not complete:
            return b""
        if self._started and all(complete.find(marker) < 0 for marker in _LOOK_INSIDE):  # not `in`: see relay.py
            # Deltas in flight: every event a `data: {...}` line, perhaps after an `event:` line.
            events = complete.count(b"\n\n")
            if (
                complete.count(b"data: {") == events
                and complete.count(b"}\n\n") == events
                and complete.count(b"\n") == 2 * events + complete.count(b"event: ")
            ):
                self.content_events += events
                self._malformed_run = 0
                self._last = complete
                return complete
        out = []
        cut = whole_events(complete)
        unchanged = True  # every event handed on as it came
        for event in cut:
            kept = self._inspect(event)
            if kept is not event:
                unchanged = False
            if kept is not None:
                out.append(kept)
                out.append(b"\n\n")
            if self._broken is not None:
                break
        if not out and isinstance(self._broken, ErrorEventMidway):
            raise self._broken  # nothing to hand on first: broken now, not at a next chunk that may never come
        if unchanged and len(out) == 2 * len(cut) and sum(map(len, cut)) + len(out) == len(complete):
            # Each event as it came, each followed by one blank line and nothing else between:
            # the chunk itself, not a copy of its tens of kilobytes joined again.
            handed = complete
        else:
            handed = b"".join(out)
        if handed.find(b'"sequence_number"') >= 0:  # not a keep-alive comment alone: numbering goes on from it
            self._last = handed
        return handed

    def flush(self) -> bytes:
        self._raise_if_broken()
        tail = self._events.rest().strip(b"\n")
        if not tail:
            return b""
        kept = self._inspect(tail)
        if kept is not None and kept.find(b'"sequence_number"') >= 0:
            self._last = kept
        self._raise_if_broken()
        return kept + b"\n\n" if kept is not None else b""

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise self._broken

    def closing_events(self, usage: Usage) -> bytes:
        return b""  # nothing is ever held back (done_held stays False)

    def end_after_break(self, relayed: bytes, single_choice: bool) -> bytes | None:
        """`SseAccountant.end_after_break`: the Response had ended when its terminal event was
        read (response.completed, incomplete or failed)."""
        return b"" if self.saw_done else None

    def _inspect(self, event: bytes) -> bytes | None:
        payload = _single_data(event)
        if payload is None:
            # Not the usual `event: NAME\ndata: {...}` shape: every line checked, data joined.
            if not all(line.startswith(_FIELDS) for line in event.split(b"\n")):
                return self._malformed()
            payload = data_of(event)
        if payload is None:
            return event  # comments, keep-alives
        if payload.startswith(_ANNOUNCEMENTS) and payload.endswith(b"}"):
            # response.created / response.in_progress: the whole Response echoed (instructions,
            # tools: tens of kilobytes, the dearest parse of the stream), carrying no content,
            # usage or error. Checked by their shape, as deltas are once content flows.
            self._malformed_run = 0
            if self._started:
                self.content_events += 1
            return event if self._echo is None else self._echoed(event, payload)
        if self._started and payload.startswith(_ENDINGS):
            usage = _usage_at_the_end(payload)
            if usage is not None:  # the end of an answer: its usage read, its Response kept unparsed
                self._malformed_run = 0
                self._terminal, self._response = payload, None
                self.usage = usage_of_response(usage) or self.usage
                self.saw_done = True
                give_end_grace(self.upstream)
                self.content_events += 1
                return event if self._echo is None else self._echoed(event, payload)
        try:
            obj: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._malformed()
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return self._malformed()
        self._malformed_run = 0
        kind = obj["type"]
        if kind == "error" or kind == "response.failed":
            response = obj.get("response")
            error = response.get("error") if isinstance(response, dict) else obj
            code = error.get("code") if isinstance(error, dict) else None
            if isinstance(response, dict) and self._echo is not None:
                self._echo.apply(response)  # written by `_redacted`, held back or not
            if self._started and self.hold_errors and transient_error(code, code):
                # Not the stream's end (the Response the client gets, stored, is the
                # continuation's), but its usage is the attempt's.
                if isinstance(response, dict):
                    self.usage = usage_of_response(response.get("usage")) or self.usage
                out = self._redacted(event, obj, kind)
                self._broken = held_error(code, error_message(error), out + b"\n\n", self.redactor)
                return None
            if isinstance(response, dict):
                self._end(response)
            if not self._started:
                raise StreamFailedEarly(error_message(error), 502)
            self.failed_midway = True
            self.saw_done = kind == "response.failed"
            if self.saw_done:  # a terminal event: the upstream's grace to end its body, as after response.completed
                give_end_grace(self.upstream)
            return self._redacted(event, obj, kind)
        if kind in _TERMINAL:
            response = obj.get("response")
            if isinstance(response, dict):
                self._end(response)
            self.saw_done = True
            give_end_grace(self.upstream)
            self._start()
        elif kind in _CONTENT_DELTAS or (
            kind == "response.output_item.done"
            and isinstance(obj.get("item"), dict)
            and obj["item"].get("type") in _CALL_ITEMS
        ):
            self._start()
        if self._echo is not None and kind in _CARRIERS and isinstance(obj.get("response"), dict):
            self._echo.apply(obj["response"])  # `_end` kept it: the stored Response says the same
            event = _event(event, orjson.dumps(obj))
        if self._started:
            self.content_events += 1  # events from the first content on (an estimate's basis)
        return event

    def _echoed(self, event: bytes, payload: bytes) -> bytes:
        """A Response-carrying event with the client's `store` and `previous_response_id`."""
        assert self._echo is not None
        patched = self._echo.patch_event(event)
        if patched is not None:
            return patched
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event  # checked by its shape only, as without an echo
        response = obj.get("response") if isinstance(obj, dict) else None
        if not isinstance(response, dict):
            return event
        self._echo.apply(response)
        return _event(event, orjson.dumps(obj))

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self.first_content_at = time.perf_counter()

    def _end(self, response: dict[str, Any]) -> None:
        self._response, self._terminal = response, None
        self.usage = usage_of_response(response.get("usage")) or self.usage

    def _redacted(self, event: bytes, obj: dict[str, Any], kind: str) -> bytes:
        """An error after content, relayed with its message redacted."""
        redact = self.redactor.text
        if kind == "error":
            obj["message"] = redact(str(obj.get("message") or "upstream error")[:2000])
        else:
            error = obj["response"].get("error") if isinstance(obj.get("response"), dict) else None
            if isinstance(error, dict):
                error["message"] = redact(str(error.get("message") or "upstream error")[:2000])
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj)

    def _malformed(self) -> bytes | None:
        if not self._started:
            raise MalformedAnswer("the upstream stream is not well-formed SSE with JSON Responses events")
        self.malformed_events += 1
        if self._attempt is not None:
            self._attempt.malformed_events += 1
        self._malformed_run += 1
        if self._malformed_run >= MAX_MALFORMED_RUN:
            self._broken = MalformedAnswer(
                f"the upstream stream sent {self._malformed_run} malformed events in a row after content"
            )
        return None


def _event(event: bytes, payload: bytes) -> bytes:
    """`event` with its data replaced by `payload` (its `event:` line kept)."""
    if event.startswith(b"event: "):
        return event[: event.find(b"\n") + 1] + b"data: " + payload
    return b"data: " + payload


def unparsed_usage(body: bytes) -> Usage | None:
    """The usage of a non-streamed 2xx Response read without parsing it whole (it echoes the
    request's instructions and tools: about 15 KB for an agent's turn, 40 µs to parse), when
    the gateway does not keep it (`store` false). None unless the body is plainly a Response
    that did not fail: a JSON object with `"object":"response"` and an `output` list, no
    `"status":"failed"` and no error object or text anywhere (none is possible inside a JSON
    string: its quotes are escaped), and its `usage` a member of the top-level object, read
    from the end as a stream's terminal event's is (`_usage_at_the_end`). The caller then
    parses it whole (`check_response_body`), which says what is wrong if anything is.

    What is not checked: that the middle is JSON. A 200 with its start, end, `object`,
    `output` and trailing `usage` intact but garbage between goes to the client as it came
    (and is billed) instead of failing over; a body cut short is still caught by its framing
    (content-length or chunked, `backends.http1`). Upstreams do not write such bodies; the
    40 µs on every agent turn was judged worth more than failing over on one."""
    if not (body.startswith(b"{") and body.endswith(b"}")):
        return None
    if body.find(b'"object":"response"') < 0 or body.find(b'"output":[') < 0:
        return None
    if body.find(b'"status":"failed"') >= 0:
        return None
    at = body.find(_ERROR_KEY)  # one pass for every `"error":` member: each must be null
    while at >= 0:
        if not body.startswith(b"null", at + len(_ERROR_KEY)):
            return None
        at = body.find(_ERROR_KEY, at + len(_ERROR_KEY))
    at = body.rfind(_USAGE_KEY)
    if at < 1 or len(body) - at > _MAX_TAIL or body[at - 1] not in b",{":
        return None
    try:
        members = orjson.loads(b"{" + body[at:])
    except orjson.JSONDecodeError:
        return None  # `usage` is not the Response's own member
    usage = members.get("usage") if isinstance(members, dict) else None
    return usage_of_response(usage) if isinstance(usage, dict) else None


class ResponsesFormat(AnswerFormat):
    """OpenAI Responses: a Response object, or its typed SSE events. `kept`: the edge keeps
    the Response (`store` true), so a body is parsed whole, once, and handed over; else its
    usage is read from its end when that is plainly enough (`unparsed_usage`)."""

    name = "responses"
    expected = "a Responses `response` object"

    def __init__(self, kept: bool = True, echo: ClientEcho | None = None) -> None:
        self.kept = kept
        self.echo = echo  # the client's `store` and `previous_response_id`, for its stream

    def check_body(self, offer: Offer, body: bytes) -> Usage | None:
        return self.read_body(offer, body)[0]

    def read_body(self, offer: Offer, body: bytes) -> tuple[Usage | None, Any]:
        if not self.kept:
            usage = unparsed_usage(body)
            if usage is not None:
                return usage, None
        answer, usage = check_response_body(offer, body)
        return usage, answer  # the Response, which the edge stores: parsed once

    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        return ResponsesAccountant(redactor, self.echo)  # a Response's terminal event always carries usage


RESPONSES = ResponsesFormat()
RESPONSES_UNKEPT = ResponsesFormat(kept=False)  # `store: false`: nothing parsed that is not read
