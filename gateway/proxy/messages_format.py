"""Anthropic Messages answers, as the fallback loop and the relay read them (`MESSAGES`).

Used when a Messages request is passed through natively (`type: anthropic` backends, and
servers that declare `messages` in their `apis`): the answer goes back to the client byte
for byte, and is read only for what the gateway needs. A non-streamed body must be a
`message` object (an `error` object in a 2xx body fails the attempt); its usage is read once.
A stream is cut into events by their `event:` line: before the first content block, every
event is parsed (an `event: error` there fails the attempt, and the next candidate is
tried); after it, a read of deltas, block starts and stops and pings is checked structurally
and forwarded, and a read that holds a `message_delta` (the output count), `message_stop` or
`error` event (relayed with its text redacted; one of a passing kind held back when the
stream could be continued, as `gateway.proxy.relay` says) has each of its events parsed.

Usage in Anthropic's terms, in the ledger's: `input_tokens` excludes cache reads and writes,
so the prompt count is `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`,
with the reads as `cached_tokens` and the writes as `cache_write_tokens`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.errors import UpstreamError
from gateway.config.snapshot import Offer
from gateway.protocol.messages_answer import ERROR_STATUS
from gateway.protocol.redact import Redactor
from gateway.protocol.sse import EventCutter, data_of, whole_events
from gateway.proxy.formats import AnswerFormat, StreamAccountant, json_object
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


def usage_from_anthropic(usage: Any, previous: Usage | None = None) -> Usage | None:
    """The ledger's usage for an Anthropic `usage` object; counts it lacks (a message_delta
    carries only `output_tokens` in older API versions, or a null one) are kept from `previous`."""
    if not isinstance(usage, dict):
        return previous
    if (
        previous is None
        and token_count(usage.get("input_tokens")) is None
        and token_count(usage.get("output_tokens")) is None
    ):
        return None  # no usable count: estimated, not billed at nothing (`Usage.from_openai`)
    base = previous or Usage()
    read = _int(usage.get("cache_read_input_tokens"), base.cached_tokens)
    written = _int(usage.get("cache_creation_input_tokens"), base.cache_write_tokens)
    fresh = _int(usage.get("input_tokens"), base.prompt_tokens - base.cached_tokens - base.cache_write_tokens)
    output = _int(usage.get("output_tokens"), base.completion_tokens)
    return Usage(fresh + read + written, output, read, cache_write_tokens=written)


MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def _int(value: Any, default: int) -> int:
    count = token_count(value)
    return default if count is None else count


def _error_of(obj: dict[str, Any]) -> tuple[str, int]:
    error = obj.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        status = ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502
        return str(error.get("message") or kind or "upstream error"), status
    return str(error or "upstream error"), 502


class MessagesAccountant:
    """Feeds Anthropic SSE bytes through; returns what to forward (`SseAccountant`'s surface)."""

    __slots__ = (
        "_attempt",
        "_broken",
        "_events",
        "_malformed_run",
        "_started",
        "content_events",
        "done_held",
        "failed_midway",
        "first_content_at",
        "hold_errors",
        "malformed_events",
        "redactor",
        "saw_done",
        "stop_reason_read",
        "upstream",
        "usage",
    )

    def __init__(self, redactor: Redactor | None = None) -> None:
        self.usage: Usage | None = None
        self.stop_reason_read = False  # a message_delta with its stop_reason: all but message_stop came
        self.content_events = 0
        self.first_content_at: float | None = None
        self.saw_done = False  # message_stop
        self.failed_midway = False  # an error event after content (relayed, redacted)
        self.done_held = False  # never: Anthropic always sends its usage
        self.hold_errors = False  # `SseAccountant.hold_errors`
        self.malformed_events = 0
        self.redactor = redactor or _NO_REDACTION
        self.upstream: UpstreamResponse | None = None  # `SseAccountant.upstream`
        self._malformed_run = 0
        self._broken: UpstreamError | None = None
        self._attempt: Attempt | None = None
        self._events = EventCutter()
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def report_to(self, attempt: Attempt) -> None:
        attempt.malformed_events = self.malformed_events
        self._attempt = attempt

    def closing_events(self, usage: Usage) -> bytes:
        return b""  # nothing is ever held back

    def end_after_break(self, relayed: bytes, single_choice: bool) -> bytes | None:
        """`SseAccountant.end_after_break`: the message had ended when message_stop was read,
        or the message_delta carrying its stop_reason (then message_stop, which carries
        nothing, is what completes it)."""
        if self.saw_done:
            return b""
        if self.stop_reason_read and not self.failed_midway:
            return MESSAGE_STOP
        return None

    def feed(self, chunk: bytes) -> bytes:
        # Read through a local: narrowing `self._broken` here would hide from the type checker
        # that the events inspected below may set it.
        broken = self._broken
        if broken is not None:
            raise broken
        complete = self._events.complete(chunk)
        if not complete:
            return b""
        # Fast path once content flows: events that carry nothing to read (deltas, block
        # starts and stops, pings), checked structurally by counting: each is exactly
        # `event: NAME\ndata: {...}\n\n`. JSON strings hold no raw newline, so a line start is
        # always a field. Anything else (usage, errors, the end) takes the event-by-event path.
        if (
            self._started
            and complete.startswith(b"event: content_block_delta\ndata: {")
            and complete.count(b"\n") == 3
            and complete.endswith(b"}\n\n")
        ):
            self.content_events += 1  # the usual chunk: one delta
            self._malformed_run = 0
            return complete
        if self._started and complete.find(b"event: message_") < 0 and complete.find(b"event: error") < 0:
            events = complete.count(b"\n\n")
            if (
                complete.startswith(b"event: ")
                and complete.count(b"\nevent: ") == events - 1
                and complete.count(b"\ndata: {") == events
                and complete.count(b"}\n\n") == events
                and complete.count(b"\n") == 3 * events
            ):
                self.content_events += complete.count(b"event: content_block_delta") + complete.count(
                    b"event: content_block_start"
                )
                self._malformed_run = 0
                return complete
        out = []
        for event in whole_events(complete):
            kept = self._inspect(event)
            if kept is not None:
                out.append(kept)
                out.append(b"\n\n")
            if self._broken is not None:
                break
        if not out and isinstance(self._broken, ErrorEventMidway):
            raise self._broken  # nothing to hand on first: broken now, not at a next chunk that may never come
        return b"".join(out)

    def flush(self) -> bytes:
        if self._broken is not None:
            raise self._broken
        tail = self._events.rest().strip(b"\n")
        if not tail:
            return b""
        kept = self._inspect(tail)
        if self._broken is not None:
            raise self._broken
        return kept + b"\n\n" if kept is not None else b""

    def _inspect(self, event: bytes) -> bytes | None:
        name = b""
        if event.startswith(b"event: "):
            end = event.find(b"\n")
            name = event[7:end] if end > 0 else b""
        # The common case once content flows: a delta, forwarded after a structural check.
        if self._started and name == b"content_block_delta":
            if event.count(b"\n") == 1 and event.endswith(b"}") and event.find(b"\ndata: {") >= 0:
                self.content_events += 1
                self._malformed_run = 0
                return event
            self._malformed()
            return None
        # The usual event, `event: NAME\ndata: {...}`: its payload is `data_of`'s answer,
        # without splitting it into lines and checking each.
        nl = event.find(b"\n")
        if name and event.startswith(b"data: {", nl + 1) and event.find(b"\n", nl + 1) < 0:
            payload: bytes | None = event[nl + 7 :]
        elif all(line.startswith(_FIELDS) for line in event.split(b"\n")):
            payload = data_of(event)
        else:
            self._malformed()
            return None
        if payload is None:
            return event  # comments, keep-alives
        try:
            obj: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._malformed()
            return None
        if not isinstance(obj, dict):
            self._malformed()
            return None
        self._malformed_run = 0
        kind = obj.get("type")
        if kind == "error":
            message, status = _error_of(obj)
            if not self._started:
                raise StreamFailedEarly(message, status)
            out = self._error_event(obj)
            error = obj.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            if self.hold_errors and transient_error(None, kind):
                self._broken = held_error(kind, message, out + b"\n\n", self.redactor)
                return None
            # Anthropic's stream ends at its error event (no message_stop follows): the answer's
            # end, as at message_stop, and the upstream has `END_GRACE_S` to end its body.
            self.failed_midway = self.saw_done = True
            give_end_grace(self.upstream)
            return out
        if kind == "message_start":
            start = obj.get("message")
            if isinstance(start, dict):
                self.usage = usage_from_anthropic(start.get("usage"), self.usage)
        elif kind == "message_delta":
            self.usage = usage_from_anthropic(obj.get("usage"), self.usage)
            delta = obj.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason_read = True
        elif kind == "message_stop":
            self.saw_done = True
            give_end_grace(self.upstream)
        elif kind in ("content_block_start", "content_block_delta"):
            self.content_events += 1
            if not self._started:
                self._started = True
                self.first_content_at = time.perf_counter()
        return event

    def _malformed(self) -> None:
        if not self._started:
            raise MalformedAnswer("the upstream stream is not well-formed Anthropic SSE")
        self.malformed_events += 1
        if self._attempt is not None:
            self._attempt.malformed_events += 1
        self._malformed_run += 1
        if self._malformed_run >= MAX_MALFORMED_RUN:
            self._broken = MalformedAnswer(
                f"the upstream stream sent {self._malformed_run} malformed events in a row after content"
            )
        return None

    def _error_event(self, obj: dict[str, Any]) -> bytes:
        """The upstream's error event, rebuilt with its text redacted and bounded."""
        given = obj.get("error")
        error: dict[str, Any] = given if isinstance(given, dict) else {}
        given_kind = error.get("type")
        kind = given_kind if isinstance(given_kind, str) else "api_error"
        message = self.redactor.text(str(error.get("message") or "upstream error")[:4000])[:2000]
        clean = {"type": "error", "error": {"type": self.redactor.text(kind[:100]), "message": message}}
        return b"event: error\ndata: " + orjson.dumps(clean)


class MessagesFormat(AnswerFormat):
    name = "messages"
    expected = "a Messages `message` object"

    def check_body(self, offer: Offer, body: bytes) -> Usage | None:
        answer = json_object(offer, body)
        if answer.get("type") == "error" or ("error" in answer and "content" not in answer):
            message, status = _error_of(answer)
            raise StreamFailedEarly(message, status)
        if answer.get("type") != "message" or not isinstance(answer.get("content"), list):
            raise MalformedAnswer(f"{offer.backend}: the upstream's 200 body is not a Message (no `content` list)")
        return usage_from_anthropic(answer.get("usage"))

    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        return MessagesAccountant(redactor)


MESSAGES: AnswerFormat = MessagesFormat()
