"""Wire formats of upstream answers, as the fallback loop and the relay read them.

One candidate is asked one `UpstreamCall`: a path under its base_url, a payload, and the
`AnswerFormat` its answer comes back in. The format says how much of that answer to read
before committing to it: `check_body` validates a non-streamed 2xx body (and reads its
usage) once; `accountant` builds the per-stream reader that forwards a stream's bytes,
accounts its usage and content, and fails the attempt on an error or malformed output before
the first content (`gateway.proxy.relay`). Chat completions (`CHAT`) is the format every
adapter can answer in; other formats are added beside it (Anthropic Messages, Responses,
completions, embeddings) by the ingress that passes them through natively.

What is not here: translation between formats (`gateway.protocol`), and the HTTP edge that
decides which call each candidate gets (`Ingress.plan`, `gateway.api.edge`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from gateway.config.snapshot import Offer
from gateway.protocol.redact import Redactor
from gateway.protocol.tokens import estimate_answer_tokens
from gateway.proxy.outcome import Attempt
from gateway.proxy.relay import MalformedAnswer, SseAccountant, StreamFailedEarly
from gateway.proxy.usage import Usage

if TYPE_CHECKING:
    from gateway.backends.base import UpstreamResponse


class StreamAccountant(Protocol):
    """What the fallback loop and the relay read of a stream (`SseAccountant`'s surface)."""

    usage: Usage | None
    content_events: int
    first_content_at: float | None
    saw_done: bool
    done_held: bool
    malformed_events: int
    # The upstream's own error event (or failed Response) came after content: relayed to the
    # client, redacted, and the call recorded as failed, not as a 200.
    failed_midway: bool
    # Set by the relay when the stream could be continued elsewhere: an error event of a passing
    # kind after content is then held back and raised (`relay.ErrorEventMidway`), not relayed.
    hold_errors: bool
    # The answer being read: an accountant that reads its end gives it a grace to end its body
    # (`relay.END_GRACE_S`).
    upstream: UpstreamResponse | None

    @property
    def started(self) -> bool: ...

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def report_to(self, attempt: Attempt) -> None: ...

    def closing_events(self, usage: Usage) -> bytes: ...

    def end_after_break(self, relayed: bytes, single_choice: bool) -> bytes | None: ...


class AnswerFormat(abc.ABC):
    """How answers of one wire format are checked and accounted."""

    name: str = ""
    # What an answer of this format is, as a 502 for a malformed one names it (`MalformedAnswer.expected`).
    expected: str = "a valid chat completion"

    @abc.abstractmethod
    def check_body(self, offer: Offer, body: bytes) -> Usage | None:
        """The usage of a non-streamed 2xx body, once it is known to be an answer of this
        format. Raises `MalformedAnswer` (not this format) or `StreamFailedEarly` (an error
        object in a 2xx body): either fails the attempt, and the next candidate is tried."""

    def read_body(self, offer: Offer, body: bytes) -> tuple[Usage | None, Any]:
        """`check_body`'s usage, and the parsed answer when the format's check parses it
        whole anyway (None otherwise): an edge that needs the answer as an object reads it
        from `OpenedAnswer.answer` instead of parsing the body a second time."""
        return self.check_body(offer, body), None

    def generated_tokens(self, answer: Any) -> int:
        """The completion tokens of a non-streamed answer whose upstream reported no usage,
        estimated from its text (`answer`: the body `read_body` parsed): billed with the
        estimated prompt, as a stream's content is, rather than the answer given for free.
        Here: none known."""
        return 0

    # Whether the fallback loop awaits `finish_answer` on the answer `read_body` parsed: read
    # once per non-streamed answer; set by the formats that have such work (embeddings asked
    # for as base64), else nothing more is called.
    finishes_answers: bool = False

    async def finish_answer(self, offer: Offer, answer: Any) -> Any:
        """The answer `read_body` parsed (not None), finished with work too long for the
        event loop to do in one stretch (in a worker thread when large), before the attempt
        counts as answered; raises as `read_body` does (the next candidate is tried). Here:
        the answer as it is."""
        return answer

    @abc.abstractmethod
    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        """A reader for one stream of this format. `include_usage`: the client asked for
        the stream's usage (formats that always carry it ignore this)."""

    def check_prefix(self, offer: Offer, prefix: bytes) -> CheckedPrefix | None:
        """A stream's events up to its first content (`prefix`, as the accountant handed them
        on), looked at before the answer is committed to: raises `MalformedAnswer` when the
        edge could not use them (the next candidate is tried, nothing billed), else returns
        what the look made of them for the edge (`OpenedAnswer.checked`). Here: nothing."""
        return None

    def __repr__(self) -> str:
        return f"<AnswerFormat {self.name}>"


class ChatFormat(AnswerFormat):
    """OpenAI chat completions: a JSON object with a `choices` list, or `data:` chunk events."""

    name = "chat"

    def check_body(self, offer: Offer, body: bytes) -> Usage | None:
        return self.read_body(offer, body)[0]

    def read_body(self, offer: Offer, body: bytes) -> tuple[Usage | None, Any]:
        # Parsed once, for its usage and its shape together (orjson: about 1 µs for a 1 KB
        # body, 30 µs for 100 KB).
        answer = json_object(offer, body)
        choices = answer.get("choices")
        if "error" in answer and not choices:
            # Some upstreams answer 200 with an error object; treat like the status it names.
            raise StreamFailedEarly(error_text(answer) or "upstream error", 502)
        # At least one choice, each with its message: the SDKs index `choices[0].message`
        # (an empty list or a choice without one reached the client's code as a crash).
        if (
            not isinstance(choices, list)
            or not choices
            or not all(type(c) is dict and type(c.get("message")) is dict for c in choices)
        ):
            raise MalformedAnswer(
                f"{offer.backend}: the upstream's 200 body is not a chat completion "
                "(no `choices` list with a `message` in each)"
            )
        return Usage.from_openai(answer.get("usage")), answer

    def generated_tokens(self, answer: Any) -> int:
        return sum(estimate_answer_tokens(choice.get("message")) for choice in answer["choices"])

    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        return SseAccountant(strip_usage=not include_usage, hold_done=include_usage, redactor=redactor)


class TranslatedChatFormat(ChatFormat):
    """A non-streamed chat completion that an ingress translates (Messages, Responses): checked
    also for what the translation reads (`problem`: why it cannot be translated, or None), so
    an answer the chat endpoint would relay as it is, but the translation cannot read, fails
    its attempt here (the next candidate is asked, nothing billed) rather than once accepted.
    Its parsed answer is kept (`OpenedAnswer.answer`): the translation does not parse it again."""

    def __init__(self, problem: Callable[[dict[str, Any]], str | None]) -> None:
        self._problem = problem

    def read_body(self, offer: Offer, body: bytes) -> tuple[Usage | None, Any]:
        usage, answer = super().read_body(offer, body)
        problem = self._problem(answer)
        if problem is not None:
            raise MalformedAnswer(f"{offer.backend}: the upstream's chat completion cannot be translated: {problem}")
        return usage, answer


class TranslatedChatStream(ChatFormat):
    """A chat stream that an ingress translates (Messages, Responses): its translation starts
    while the loop still reads the events before the first content, so a chunk there that
    the translation cannot read (a choice or a delta that is not an object) fails the
    attempt (`TranslationEnded` is a `MalformedAnswer`) while another candidate can still
    answer, instead of ending a stream the client has been promised. The translator and what
    it made of those events go to the edge (`OpenedAnswer.checked`): nothing is translated
    twice. One per call (`Ingress.plan`): `start` makes the request's translator."""

    def __init__(self, start: Callable[[], Any]) -> None:
        self._start = start

    def check_prefix(self, offer: Offer, prefix: bytes) -> CheckedPrefix:
        translator = self._start()
        try:
            events = translator.feed(prefix) if prefix else b""
        except MalformedAnswer:
            raise  # the upstream's chunk: this attempt fails, and the next candidate answers
        except Exception as exc:
            # The translation's own fault, not the backend's: handed to the edge, which
            # answers it as a 500 without blaming the backend, as it did translating these itself.
            return CheckedPrefix(translator, b"", exc)
        return CheckedPrefix(translator, events)


@dataclass(slots=True)
class CheckedPrefix:
    """A translated stream's translator, already fed the events before the first content,
    and the events it made of them (`TranslatedChatStream.check_prefix`); `fault`: what the
    translation raised of its own doing instead."""

    translator: Any
    events: bytes
    fault: Exception | None = None


def json_object(offer: Offer, body: bytes) -> dict[str, Any]:
    """A 2xx body parsed as the JSON object every format's answer is, or `MalformedAnswer`."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedAnswer(f"{offer.backend}: the upstream's 200 body is not JSON") from None
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"{offer.backend}: the upstream's 200 body is not a JSON object")
    return answer


def error_text(answer: object) -> str | None:
    """The message of an upstream error body: `{"error": {"message"}}`, `{"error": "..."}`,
    vLLM's older `{"object": "error", "message": ...}`, or FastAPI's `{"detail": ...}` (the
    servers built on it, Infinity's embeddings among them: a string, or its validation
    errors' list of `{"loc", "msg"}`)."""
    if not isinstance(answer, dict):
        return None
    err = answer.get("error")
    message = err.get("message") if isinstance(err, dict) else err
    if message is None:
        message = answer.get("message")
    if message is None:
        message = _fastapi_detail(answer.get("detail"))
    return str(message) if message else None


def _fastapi_detail(detail: object) -> str | None:
    """FastAPI's `detail`: its text, or each validation error as `field: msg` (the field's
    path without FastAPI's leading `body`)."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return None
    parts = []
    for item in detail[:20]:
        if not isinstance(item, dict) or not isinstance(item.get("msg"), str):
            continue
        loc = item.get("loc")
        path = [str(p) for p in loc if isinstance(p, str | int)] if isinstance(loc, list) else []
        if path[:1] == ["body"]:
            path = path[1:]
        parts.append(f"{'.'.join(path)}: {item['msg']}" if path else item["msg"])
    return "; ".join(parts) or None


CHAT: AnswerFormat = ChatFormat()


@dataclass(slots=True)
class UpstreamCall:
    """What one candidate is asked: `payload` (its model already the upstream's id) posted to
    `path` under its base_url, answered in `format`; `headers`: extra request headers for this
    call (a native pass-through forwards the client's API headers, e.g. `anthropic-beta`).

    Not changed once made; plain slots rather than frozen, as one is built per attempt (a
    frozen dataclass's __init__ sets each field through object.__setattr__: 1.1 us, not 0.3)."""

    path: str
    payload: dict[str, Any]
    format: AnswerFormat = CHAT
    headers: dict[str, str] | None = None
