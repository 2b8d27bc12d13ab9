"""Relaying an upstream SSE stream to the client, reading only what accounting needs.

Events are forwarded as the upstream sent them. The relay looks inside an event only when
it mentions `usage` or `error`, or while it still waits for the first content: that is
where usage is read, where the usage chunk the gateway asked for is stripped again if the
client did not ask for it (else held back to go out once, the last one the upstream sent, at
the answer's end: OpenAI sends exactly one, and clients add up what they get), and where an
upstream that fails before producing anything is caught early enough to fall back.

Malformed output (an event that is not SSE, or whose data is not a JSON object) before the
first content fails the attempt (`MalformedAnswer`: another candidate is tried, and the
circuit counts it). After content has flowed the client must not see it either: every
event gets a structural check (`data: {...}` on one line, `[DONE]`, comments and the
other SSE fields; not a JSON parse), a malformed one is dropped and counted, and
`MAX_MALFORMED_RUN` of them in a row end the stream as broken.

Error events are relayed with their text redacted (`gateway.protocol.redact`). One after
content that names a passing failure of the backend (`transient_error`) is held back instead
when the relay could continue the stream elsewhere (`hold_errors`): raised as
`ErrorEventMidway`, it breaks the stream as a cut connection does, and carries the event for
the client should no continuation come. An error chunk is OpenAI's (`error` and no choices)
or OpenRouter's mid-stream one (`error` beside a choice finished with `"error"`).

The answer ends at `[DONE]`, or at an error event relayed after content (`failed_midway`):
what an upstream sends after it is dropped, and the upstream has `END_GRACE_S` to end its
body (`give_end_grace`, which the Messages and Responses accountants call at their own end
events), so one that holds it open holds no client.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends.errors import MalformedAnswer as MalformedAnswer  # raised here; re-exported
from gateway.backends.errors import StreamBroken, UpstreamError
from gateway.protocol.redact import Redactor
from gateway.protocol.sse import EventCutter, data_of, whole_events
from gateway.proxy.outcome import Attempt
from gateway.proxy.usage import Usage

if TYPE_CHECKING:
    from gateway.backends.base import UpstreamResponse

DONE = b"data: [DONE]"
# How long an upstream has, after its `[DONE]`, to end its body: a healthy one ends it at
# once (its connection is then reused); one that holds it open does not hold the client's
# stream (or a translated stream's closing events) for its idle limit.
END_GRACE_S = 0.5
# Malformed events in a row after content, past which the stream counts as broken: small,
# since a healthy upstream sends none, yet more than one so a single corrupt event (a proxy
# in between mangling one line) costs only that event.
MAX_MALFORMED_RUN = 5
_FIELDS = (b":", b"data:", b"event:", b"id:", b"retry:")
_NO_REDACTION = Redactor(())
# Error types and codes that name a passing failure of the backend (Anthropic's `type`,
# OpenAI's and OpenRouter's `type` or `code`, a Response's `code`): another backend may well
# go on where it stopped. A request judged invalid, a content policy, a billing or an unknown
# kind is not among them: relayed as it came.
_TRANSIENT_KINDS = frozenset(
    {"overloaded_error", "api_error", "timeout_error", "rate_limit_error", "server_error", "rate_limit_exceeded"}
)


class StreamFailedEarly(Exception):
    """The upstream sent an error event before any content: safe to try another backend."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ErrorEventMidway(UpstreamError):
    """The upstream's own error event after content, of a passing kind, held back from the
    client (`hold_errors`): the stream broke with it, and the relay continues it elsewhere.
    `event` is what the client gets instead when it is not continued: the upstream's error
    event, redacted, as it would have been relayed (terminated)."""

    def __init__(self, message: str, event: bytes) -> None:
        super().__init__(message)
        self.event = event


def transient_error(status: Any, *kinds: Any) -> bool:
    """Whether an upstream's error event names a passing failure of the backend: by its HTTP
    status when it gives one (408, 429, 5xx), else by its type or code (`_TRANSIENT_KINDS`)."""
    if isinstance(status, int) and not isinstance(status, bool):
        return status in (408, 429) or status >= 500
    return any(isinstance(kind, str) and kind in _TRANSIENT_KINDS for kind in kinds)


def held_error(kind: Any, message: Any, event: bytes, redactor: Redactor) -> ErrorEventMidway:
    """The `ErrorEventMidway` for an upstream error event (`event`, as relayed, redacted); its
    message (logged) redacted too."""
    said = redactor.text(f"{str(kind)[:100]}: {str(message)[:200]}")
    return ErrorEventMidway(f"the upstream's error event after content ({said})", event)


def give_end_grace(upstream: UpstreamResponse | None) -> None:
    """The answer's end event was read (`[DONE]`, message_stop, a terminal Responses event):
    `upstream` has `END_GRACE_S` to end its body, unless it has already."""
    if upstream is not None and not upstream.exhausted:
        upstream.stream_started(END_GRACE_S)


class EventsAfterDone(StreamBroken):
    """The upstream went on after its `[DONE]`: nothing after it reaches the client, and the
    relay ends there, as after a break past the answer's end. Raised as the class (made only
    when raised: a stream's `[DONE]` costs no exception object)."""

    def __init__(self) -> None:
        super().__init__("the upstream sent more after its [DONE]")


class SseAccountant:
    """Feeds upstream bytes through; returns what to forward to the client."""

    __slots__ = (
        "_attempt",
        "_broken",
        "_events",
        "_malformed_run",
        "_started",
        "_usage_event",
        "content_events",
        "done_held",
        "failed_midway",
        "first_content_at",
        "hold_done",
        "hold_errors",
        "malformed_events",
        "meta",
        "redactor",
        "saw_done",
        "strip_usage",
        "upstream",
        "usage",
        "usage_chunk_read",
    )

    def __init__(self, strip_usage: bool, hold_done: bool = False, redactor: Redactor | None = None) -> None:
        self.strip_usage = strip_usage
        # The client asked for usage: if the upstream ends without any, `[DONE]` is held back
        # so the relay can send an estimated usage chunk first, as OpenAI always sends one.
        self.hold_done = hold_done
        self.done_held = False
        self.meta: tuple[Any, Any, Any] | None = None  # id, created, model of the stream
        self.usage: Usage | None = None
        self.usage_chunk_read = False  # the usage-only chunk that follows every choice's end
        # The usage chunk the client gets, held until the answer's end (`_answer_over`): one,
        # the last the upstream sent, whose counts are the ones billed.
        self._usage_event: bytes | None = None
        self.content_events = 0
        self.first_content_at: float | None = None
        self.saw_done = False  # the answer's end was read: `[DONE]`, or an error event after content
        self.redactor = redactor or _NO_REDACTION
        self.malformed_events = 0  # dropped after content had flowed
        self.failed_midway = False  # an error event after content (relayed, redacted): the answer's end
        # Set by the relay when the stream could be continued elsewhere: an error event of a
        # passing kind after content is then held back and raised (`ErrorEventMidway`).
        self.hold_errors = False
        self._malformed_run = 0
        # Raised at the next feed/flush (after `[DONE]`: the class `EventsAfterDone`, at the next feed).
        self._broken: UpstreamError | type[UpstreamError] | None = None
        # The answer being read, when the caller says (`attempts._pre_read_stream`): given
        # `END_GRACE_S` to end its body once its `[DONE]` is read.
        self.upstream: UpstreamResponse | None = None
        self._attempt: Attempt | None = None
        self._events = EventCutter()
        self._started = False

    @property
    def started(self) -> bool:
        """Whether content has been produced (past which no fallback is possible)."""
        return self._started

    def report_to(self, attempt: Attempt) -> None:
        """Count dropped malformed events on the answering attempt too (the observers read it
        there when the stream ends)."""
        attempt.malformed_events = self.malformed_events
        self._attempt = attempt

    def feed(self, chunk: bytes) -> bytes:
        """Raises `MalformedAnswer` for malformed output before content, or once
        `MAX_MALFORMED_RUN` malformed events in a row were seen (at this call when it has
        nothing else to return, else at the next: the events before them are returned first)."""
        # Read through a local: narrowing `self._broken` here would hide from the type checker
        # that the events inspected below may set it.
        broken = self._broken
        if broken is not None:
            if broken is EventsAfterDone and not chunk.strip():
                return b""  # no more after [DONE]: an empty read, the blank line's last byte
            raise broken
        complete = self._events.complete(chunk)
        if not complete:
            return b""
        # Fast path: nothing to inspect once content flows and no usage/error is mentioned.
        # Searches here and on every per-chunk path are `find() < 0`, not `not in`: CPython
        # 3.11's `bytes.__contains__` first tries its operand as an integer and builds a
        # TypeError it then discards (2,400 instructions, 50 ns, each; 17 per streamed call).
        if (
            self._started
            and complete.find(b'"usage"') < 0  # any spacing around its colon (JSON allows it)
            and complete.find(b'"error"') < 0
            and not (self.hold_done and self.usage is None and complete.find(DONE) >= 0)
        ):
            # The structural check: every event is one `data: {...}` line. Usually a chunk is
            # one event, whose only newlines are its last two; several are checked by
            # counting (each newline part of a blank line after an event, each event
            # starting `data: {` and ending `}`). Anchored at line starts: content text may
            # itself contain "data: {" or "[DONE]" (JSON strings cannot hold a raw newline,
            # so "\ndata:" is always a field). Anything else takes the event-by-event path.
            last = len(complete) - 2
            if complete.find(b"\n") == last and complete[last - 1] == 125 and complete.startswith(b"data: {"):  # }
                self.content_events += 1
                if self._malformed_run:
                    self._malformed_run = 0
                return complete
            if complete == b"data: [DONE]\n\n":
                return self._answer_over() + complete
            events = complete.count(b"\n\n")
            data_events = complete.count(b"\ndata: {") + complete.startswith(b"data: {")
            if data_events == events and complete.count(b"\n") == 2 * events and complete.count(b"}\n\n") == events:
                self.content_events += events
                self._malformed_run = 0
                return complete
        out = []
        # Runs of more than one blank line are empty lines, not part of any event (SSE
        # dispatches nothing for them): `whole_events` leaves them out.
        for event in whole_events(complete):
            if (
                self._started
                # One `data: {...}` line that mentions neither usage nor an error (spelled
                # out here: a function call per event cost 2% of the accountant's instructions).
                and event.startswith(b"data: {")
                and event.endswith(b"}")
                and event.find(b"\n") < 0
                and event.find(b'"usage"') < 0
                and event.find(b'"error"') < 0
            ):
                # The fast path's structural check, per event: a chunk that began before the
                # first content (a whole short answer often comes as one) is not parsed past it.
                self.content_events += 1
                self._malformed_run = 0
                out.append(event)
                out.append(b"\n\n")
                continue
            kept = self._inspect(event)
            if kept is not None:
                out.append(kept)
                out.append(b"\n\n")
            if self._broken is not None:
                break
        broken = self._broken
        if broken is not None and not out and broken is not EventsAfterDone:
            raise broken  # nothing to hand on first: broken now, not at a next chunk that may never come
        return b"".join(out)

    def _answer_over(self) -> bytes:
        """`[DONE]` read (or an error event after content, which ends the answer too): the
        answer is whole. What the upstream sends after it is dropped (the next feed raises
        `EventsAfterDone`, the rest of this one is left out), and it has `END_GRACE_S` to end
        its body. Returns the held usage chunk, terminated, to go out before the end (else b"")."""
        self.saw_done = True
        self._broken = EventsAfterDone
        give_end_grace(self.upstream)
        return self._held_usage()

    def _held_usage(self) -> bytes:
        """The usage chunk held back for the answer's end (terminated), once; else b""."""
        held = self._usage_event
        if held is None:
            return b""
        self._usage_event = None
        return held + b"\n\n"

    def flush(self) -> bytes:
        """Whatever the upstream left unterminated at the end of the stream, if it is a
        well-formed event (then terminated); a malformed tail is handled like any event.
        Nothing after `[DONE]`: the answer had ended there."""
        if self.saw_done:
            return b""
        broken = self._broken  # through a local: `_inspect` below may set it
        if broken is not None:
            raise broken
        tail = self._events.rest().strip(b"\n")
        if not tail:
            return b""
        kept = self._inspect(tail)
        broken = self._broken
        if broken is not None and broken is not EventsAfterDone:  # a `[DONE]` ends it whole
            raise broken
        return kept + b"\n\n" if kept is not None else b""

    def end_after_break(self, relayed: bytes, single_choice: bool) -> bytes | None:
        """Whether the stream had ended its answer before it broke: `[DONE]` or the usage-only
        chunk that follows every choice's end was read (stripped or not), or the last events
        handed on (`relayed`) end a single choice with its `finish_reason`. Then what completes
        it for the client, as the stream's own end would have: the estimated usage chunk if
        the client asked for usage and none came (`done_held`, which the relay fills in), and
        `[DONE]`, which the gateway sends since it ends the stream itself. None when the
        answer was cut short. Nothing after `[DONE]` or an error event after content (the
        relayed error is the stream's end: the call failed, `failed_midway`). Read only on a
        break."""
        if self.saw_done:
            return b""
        if not self.usage_chunk_read and not (single_choice and _ends_a_choice(relayed)):
            return None
        if self.hold_done and self.usage is None:
            self.done_held = True  # the relay adds the estimate, then [DONE] (`closing_events`)
            return b""
        return self._held_usage() + DONE + b"\n\n"

    def closing_events(self, usage: Usage) -> bytes:
        """The usage chunk the upstream did not send (estimated), then the held `[DONE]`."""
        chunk_id, created, model = self.meta or (None, None, None)
        counts = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        event: dict[str, Any] = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": counts,
        }
        return b"data: " + orjson.dumps(event) + b"\n\ndata: [DONE]\n\n"

    def _inspect(self, event: bytes) -> bytes | None:
        """Account one event; return what to forward in its place, or None to drop it."""
        if event == DONE:  # every stream's last event, spelled as OpenAI does: `data_of`'s answer
            payload: bytes | None = b"[DONE]"
        elif event.startswith(b"data: {") and event.find(b"\n") < 0:
            payload = event[6:]  # the usual event, one data line: `data_of`'s answer
        elif _fields_only(event):
            payload = data_of(event)
        else:
            self._malformed()
            return None
        if payload is None:
            return event  # comments, keep-alives, retry: fields
        if payload == b"[DONE]":
            held = self._answer_over()
            self._malformed_run = 0
            if self.hold_done and self.usage is None:
                self.done_held = True
                return None
            return held + event if held else event
        try:
            obj: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._malformed()
            return None
        if not isinstance(obj, dict):
            self._malformed()
            return None
        self._malformed_run = 0
        if self.meta is None:
            self.meta = (obj.get("id"), obj.get("created"), obj.get("model"))
        choices = obj.get("choices")
        error = obj.get("error")
        if error is not None and (not choices or _failed(choices)):  # `"error": null` is no error
            err = error if isinstance(error, dict) else {}
            message = err.get("message") if isinstance(error, dict) else str(error)
            if not self._started:
                status = err.get("code") if isinstance(err.get("code"), int) else None
                raise StreamFailedEarly(str(message or "error event before any content"), status)
            out = self._error_event(error)
            if self.hold_errors and transient_error(err.get("code"), err.get("type"), err.get("code")):
                kind = err.get("type") or err.get("code")
                self._broken = held_error(kind, message, out + b"\n\n", self.redactor)
                return None
            # The answer ends here, as at `[DONE]`: what follows (its `[DONE]`, anything) is
            # dropped, and an upstream that holds its body open has `END_GRACE_S` to end it.
            self.failed_midway = True
            return self._answer_over() + out
        reported = obj.get("usage")
        if reported is not None:
            usage = Usage.from_openai(reported)
            if usage is not None:
                self.usage = usage  # the last counts read are billed
            if not choices:
                self.usage_chunk_read = True
            # The usage chunk: OpenAI's has no choices; LiteLLM's proxy sends an empty choice
            # with it. Either way it carries nothing but usage. Not asked for by this client
            # (the gateway asked on its behalf), it is stripped; one with no usable count gives
            # way to the estimate the stream's end sends in its place. Asked for, the client
            # gets one, as from OpenAI: an upstream that repeats it (or sends a later count)
            # would have it count the tokens twice. The last is held back and goes out at the
            # answer's end (`_answer_over`, `end_after_break`): the counts the call is billed.
            if not choices or not self._carries_content(choices):
                if not self.strip_usage and usage is not None:
                    self._usage_event = event
                return None
        if choices:
            self.content_events += 1
            if not self._started and _has_content(choices):
                self._started = True
                self.first_content_at = time.perf_counter()
        return event

    @staticmethod
    def _carries_content(choices: Any) -> bool:
        """Whether a chunk's choices hold any of the answer, so that the chunk is relayed even
        when it also carries usage to strip (vLLM's `continuous_usage_stats` puts usage on
        every chunk). Chat's content is in `delta`, and its opening `role` counts too (it
        starts the message, content or not); other formats say their own."""
        return _has_content(choices) or _opens_a_message(choices)

    def _malformed(self) -> None:
        """Before content: fail the attempt. After: drop the event, count it, and after
        `MAX_MALFORMED_RUN` in a row give up on the stream."""
        if not self._started:
            raise MalformedAnswer("the upstream stream is not well-formed SSE with JSON events")
        self.malformed_events += 1
        if self._attempt is not None:
            self._attempt.malformed_events += 1
        self._malformed_run += 1
        if self._malformed_run >= MAX_MALFORMED_RUN:
            self._broken = MalformedAnswer(
                f"the upstream stream sent {self._malformed_run} malformed events in a row after content"
            )
        return None

    def _error_event(self, error: Any) -> bytes:
        """An error event in OpenAI's shape, rebuilt from the upstream's with its text
        redacted and bounded (other fields, which may quote anything, are left out)."""
        if isinstance(error, dict):
            message, kind, code = error.get("message"), error.get("type"), error.get("code")
        else:
            message, kind, code = error, None, None
        redact = self.redactor.text
        clean = {
            "message": redact(str(message or "upstream error")[:4000])[:2000],
            "type": redact(kind[:100]) if isinstance(kind, str) else "upstream_error",
            "param": None,
            "code": code if isinstance(code, int) and not isinstance(code, bool) else None,
        }
        if isinstance(code, str):
            clean["code"] = redact(code[:100])
        return b"data: " + orjson.dumps({"error": clean})


def _ends_a_choice(relayed: bytes) -> bool:
    """Whether the last data event in `relayed` ends its (one) choice with a finish_reason."""
    for event in reversed(whole_events(relayed)):
        payload = data_of(event) if _fields_only(event) else None
        if payload is None:
            continue  # a comment or keep-alive after the last event
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        choices = obj.get("choices") if isinstance(obj, dict) else None
        return (
            isinstance(choices, list)
            and len(choices) == 1
            and isinstance(choices[0], dict)
            and bool(choices[0].get("finish_reason"))
        )
    return False


def _failed(choices: Any) -> bool:
    """Whether every choice ended with `"error"`: OpenRouter's mid-stream error chunk."""
    return isinstance(choices, list) and all(type(c) is dict and c.get("finish_reason") == "error" for c in choices)


def _fields_only(event: bytes) -> bool:
    """Whether every line of the event is an SSE field or comment (no stray text)."""
    return all(line.startswith(_FIELDS) for line in event.split(b"\n"))


def _opens_a_message(choices: Any) -> bool:
    """Whether a choice's delta names its `role`: the chunk that opens a chat message."""
    return any(type(c) is dict and type(c.get("delta")) is dict and "role" in c["delta"] for c in choices)


def _has_content(choices: Any) -> bool:
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta") or {}
        if isinstance(delta, dict) and (
            delta.get("content")
            or delta.get("tool_calls")
            or delta.get("function_call")
            or delta.get("reasoning_content")
            or delta.get("reasoning")
        ):
            return True
    return False
