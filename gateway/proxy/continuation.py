"""Continuing a stream that broke mid-answer on another candidate (issue 12).

A stream that breaks after content reached the client (cut, idle past
`stream_idle_timeout_s`, a run of malformed events, or the upstream's own error event of a
passing kind, below) cannot fall back the usual way: the
client has read part of an answer. Instead the original request plus the partial answer, as
an assistant prefill, goes to the next candidate that accepts one (`prefill`, defaulted per
backend type in `gateway.config.vendors`, settable per offer), and its continuation is
spliced into the same client stream: the chunk `id`/`created`/`model` the client already
saw, no second role delta, one usage total (the first attempt's prompt plus every
completion token delivered), one `[DONE]`.

A stream passed through in its ingress's own format (a native Messages stream) is continued
the same way through a `NativeResume` its ingress gives: it reads the relayed events back as
a `Partial`, and turns the continuation's (spliced) chat chunks into that format's events.

An upstream that ends a stream mid-answer with an error event (Anthropic's `event: error`,
a chat chunk carrying `error`, OpenRouter's with a choice finished `"error"`, a Responses
`error` or `response.failed`) has broken it too, when the error names a passing failure of
the backend: an HTTP status of 408, 429 or 5xx in its `code`, else a type or code among
`overloaded_error`, `api_error`, `timeout_error`, `rate_limit_error`, `server_error`,
`rate_limit_exceeded` (`relay.transient_error`). Then, when the stream could be continued
(this rescue exists), the accountant holds the event back (`hold_errors`) and the stream is
continued like a cut one, its attempt recorded as failed with `upstream_error`, the backend
at fault. Any other error (an invalid request, a content policy, a billing or unknown kind)
is the answer's end as the upstream said it: relayed, redacted, and not continued. An error
event that came in the same read as the first content is relayed too (the rescue is set up
after that read).

What is not continued: an answer that had started a tool call (a prefill cannot hold a
half-written call), and a stream broken when no candidate takes a prefill. Those end with
an error event naming the real failure, never a prefill's 400; one broken by the upstream's
held error event ends with that event, redacted, as it would have without a rescue.

The continuing stream is relayed as the first one is, and ends as it would: its own error
event (which its accountant relays, redacted: a stream is continued once) fails the call,
a 502 `upstream_error` with that backend at fault; its break ends the client's stream with
the error event of a stream that broke; a cancellation is the client leaving (a 499) or,
the client still there, shutdown's grace period running out (a 503 `shutdown`, the stream
ended with the shutdown's error event), as the first relay tells them apart (`resume`'s
`cancelled`).

The healthy path pays for this only with what `PartialRecord.keep` costs per relayed chunk
(a list append, when some other candidate could continue); everything else here runs
after a break.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from gateway.backends.base import CHAT_COMPLETIONS, Backend
from gateway.backends.errors import UpstreamError, UpstreamProtocolError
from gateway.backends.pool import BackendSet
from gateway.config.schema import BackendConfig
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.config.vendors import VENDORS, PrefillMode
from gateway.protocol.chat import ChatRequest, upstream_payload
from gateway.protocol.errors import GatewayError
from gateway.protocol.sse import data_of, json_objects, whole_events
from gateway.proxy.attempts import EventsIdle, OpenedAnswer, ended_without_its_end, open_answer
from gateway.proxy.formats import CHAT, UpstreamCall
from gateway.proxy.outcome import Attempt, CallOutcome, Observers, price_usd
from gateway.proxy.usage import Usage
from gateway.routing.pipeline import RoutingDecision

log = logging.getLogger("gateway.proxy")

# Relayed bytes kept for a possible continuation, at most: past it (a very long answer, some
# 4,000 tokens of SSE chunks) the stream is no longer continuable and the record is dropped,
# so what hundreds of concurrent streams hold stays bounded (and so does the parse at a break).
MAX_KEPT_BYTES = 1024 * 1024


def prefill_mode(offer: Offer, backend: BackendConfig) -> PrefillMode | None:
    """How `offer` continues a partial answer: its own `prefill`, else its backend type's."""
    own = offer.spec.prefill
    if own is False:
        return None
    if own is not None:
        return own
    vendor = VENDORS.get(backend.type)
    return vendor.prefill if vendor is not None else None


@dataclass(slots=True)
class Partial:
    """What the client received of a broken stream, read back from the relayed bytes."""

    text: str  # the answer's content so far
    # Content and reasoning deltas delivered (the broken attempt's completion tokens: the
    # client read both, and both used up its `max_tokens`).
    tokens: int
    tool_call: bool  # a tool call had started: not continuable
    meta: tuple[Any, Any, Any]  # id, created, model of the chunks the client saw
    # The answer had ended (a finish_reason relayed) and only its usage chunk or [DONE] was
    # lost: there is nothing to continue, and a continuation would write past its end.
    finished: bool = False
    reasoning: int = 0  # of `tokens`, the reasoning (thinking) deltas


class PartialRecord:
    """The chunks relayed to the client, kept while a continuation is possible."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] | None = []
        self.size = 0

    def keep(self, out: bytes) -> None:
        chunks = self.chunks
        if chunks is not None:
            chunks.append(out)
            self.size += len(out)
            if self.size > MAX_KEPT_BYTES:
                self.chunks = None

    def partial(self, reader: Callable[[bytes], Partial | None] | None = None) -> Partial | None:
        """The partial answer (read by `reader`, chat chunks by default), or None when too
        much was relayed to keep it."""
        if self.chunks is None:
            return None
        return (reader or read_partial)(b"".join(self.chunks))


class NativeResume(Protocol):
    """How a stream passed through in its ingress's own format (not chat) is continued: the
    relayed events read back as a `Partial` (None, or `tool_call`, when the break came where
    a prefill cannot continue), then the continuation's chat chunks (as `Splice` makes them)
    turned into events that continue the same answer, and its closing events."""

    def read(self, relayed: bytes) -> Partial | None: ...

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def read_partial(relayed: bytes) -> Partial:
    text: list[str] = []
    tokens = reasoning = 0
    tool_call = finished = False
    meta: tuple[Any, Any, Any] | None = None
    for obj in json_objects(relayed):
        if meta is None and "id" in obj:
            meta = (obj.get("id"), obj.get("created"), obj.get("model"))
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if choice.get("finish_reason"):
                finished = True
            if delta.get("tool_calls") or delta.get("function_call"):
                tool_call = True
            content = delta.get("content")
            if isinstance(content, str) and content:
                text.append(content)
                tokens += 1
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                tokens += 1
                reasoning += 1
    return Partial("".join(text), tokens, tool_call, meta or (None, None, None), finished, reasoning)


def continuation_payload(payload: dict[str, Any], partial: Partial, mode: PrefillMode) -> dict[str, Any]:
    """The request for the continuing candidate: `payload` (the original request as sent
    upstream, with that candidate's model id) plus the partial answer as a prefill."""
    out = dict(payload)
    messages = list(payload.get("messages", ()))
    text = partial.text
    last = messages[-1] if messages else None
    if (
        type(last) is dict
        and last.get("role") == "assistant"
        and type(last.get("content")) is str
        and not last.get("tool_calls")
    ):
        # The client's own prefill, which the answer went on from: one assistant message,
        # not a finished turn and a second one (roles must alternate for many backends).
        text = last["content"] + text
        messages.pop()
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if mode == "continue_final_message":
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    elif mode == "prefix":
        message["prefix"] = True
    elif mode == "partial":
        message["partial"] = True
    else:  # "assistant": Anthropic refuses a prefill ending in whitespace (see `unsent_tail`)
        message["content"] = text.rstrip()
    out["messages"] = [*messages, message]
    # What is left of the client's output budget.
    for field in ("max_tokens", "max_completion_tokens"):
        limit = out.get(field)
        if isinstance(limit, int) and not isinstance(limit, bool):
            out[field] = max(1, limit - partial.tokens)
    return out


def unsent_tail(partial: Partial, mode: PrefillMode) -> str:
    """The end of the client's text that a prefill in `mode` leaves out: the trailing
    whitespace of an `assistant` prefill. The model writes it again (" t40" after "t39"),
    and the client has it already."""
    if mode != "assistant":
        return ""
    return partial.text[len(partial.text.rstrip()) :]


class Splice:
    """Rewrites the continuing stream's events into the client's stream."""

    __slots__ = ("_delivered", "_delivered_reasoning", "_first", "_meta", "_seam", "usage")

    def __init__(self, partial: Partial, first: Usage | None, seam: str = "") -> None:
        self._meta = partial.meta
        self._delivered = partial.tokens
        self._delivered_reasoning = partial.reasoning
        # What the client was billed for before the break (`outcome.carried`), when known: its
        # prompt, and what of it the upstream read from and wrote to its cache, is the total's.
        self._first = first
        # Text the client already read that the continuation writes again at its start (the
        # whitespace a prefill left out, `unsent_tail`): dropped as far as it matches.
        self._seam = seam
        self.usage: Usage | None = None  # the continuing attempt's own, as it reported it

    def events(self, relayed: bytes) -> bytes:
        """Events as the continuing candidate's accountant relayed them, made the client's."""
        out: list[bytes] = []
        for event in whole_events(relayed):
            payload = data_of(event)
            if payload is None or payload == b"[DONE]":
                out.append(event + b"\n\n")
                continue
            rewritten = self._event(payload)
            if rewritten is not None:
                out.append(b"data: " + rewritten + b"\n\n")
        return b"".join(out)

    def _event(self, payload: bytes) -> bytes | None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict):
            return None
        if "error" in obj and not obj.get("choices"):
            return payload  # already redacted and shaped by the accountant
        chunk_id, created, model = self._meta
        obj["id"], obj["created"], obj["model"] = chunk_id, created, model
        choices = []
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and ("role" in delta or (self._seam and _writes(delta))):
                delta = {k: v for k, v in delta.items() if k != "role"}  # the client saw the role once
                if self._seam:
                    delta = self._past_seam(delta)
                choice = {**choice, "delta": delta}
                if not any(delta.values()) and not choice.get("finish_reason"):
                    continue
            choices.append(choice)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            own = Usage.from_openai(usage)
            if own is not None:
                self.usage = own
                total = self.total(own)
                obj["usage"] = {
                    "prompt_tokens": total.prompt_tokens,
                    "completion_tokens": total.completion_tokens,
                    "total_tokens": total.total_tokens,
                }
                if total.reasoning_tokens:
                    obj["usage"]["completion_tokens_details"] = {"reasoning_tokens": total.reasoning_tokens}
                if total.cached_tokens or total.cache_write_tokens:
                    obj["usage"]["prompt_tokens_details"] = {
                        "cached_tokens": total.cached_tokens,
                        "cache_write_tokens": total.cache_write_tokens,
                    }
        elif not choices and obj.get("choices"):
            return None  # only a role delta: nothing for the client
        obj["choices"] = choices
        return orjson.dumps(obj)

    def _past_seam(self, delta: dict[str, Any]) -> dict[str, Any]:
        """`delta` without the start of the seam's text it repeats; the seam is done at the
        first text (or tool call) that is not the seam's."""
        content = delta.get("content")
        if not isinstance(content, str) or not content:
            if delta.get("tool_calls") or delta.get("function_call"):
                self._seam = ""
            return delta
        seam, same = self._seam, 0
        while same < min(len(seam), len(content)) and seam[same] == content[same]:
            same += 1
        self._seam = seam[same:] if same == len(content) else ""
        return {**delta, "content": content[same:]}

    def total(self, own: Usage) -> Usage:
        """What the client is told: the first prompt, every completion token it received."""
        completion = self._delivered + own.completion_tokens
        reasoning = self._delivered_reasoning + own.reasoning_tokens
        first = self._first
        if first is None:
            return Usage(own.prompt_tokens, completion, 0, reasoning, estimated=own.estimated)
        return Usage(
            first.prompt_tokens,
            completion,
            first.cached_tokens,
            reasoning,
            estimated=own.estimated,
            cache_write_tokens=first.cache_write_tokens,
        )


@dataclass(slots=True)
class RescueContext:
    """What a continuation needs of the call it rescues (from the edge that relays it)."""

    chat: ChatRequest
    decision: RoutingDecision
    backends: BackendSet
    observers: Observers
    outcome: CallOutcome
    headers: dict[str, str]
    snapshot: ConfigSnapshot | None
    max_response_bytes: int
    # The chat payload a candidate is asked, before the prefill is added: the ingress's own
    # (a Messages request caps its `max_tokens` per candidate); None: the chat request as is.
    payload_for: Callable[[Offer], dict[str, Any]] | None = None


class StreamRescue:
    """One relayed stream's way out of a break: the relay keeps what it sends (`keep`) and,
    when the stream breaks after content, asks `resume` to continue it elsewhere."""

    __slots__ = ("_context", "_opened", "_started", "native", "record", "took_over")

    def __init__(self, context: RescueContext, opened: OpenedAnswer, native: NativeResume | None = None) -> None:
        self._context = context
        self._opened = opened
        self.native = native  # set when the relayed stream is not chat (a native pass-through)
        self._started = time.perf_counter() - (opened.attempt.duration_s if opened.attempt else 0.0)
        self.record = PartialRecord()
        self.took_over = False  # the broken attempt's accounting was done here, not by the relay

    @classmethod
    def for_stream(
        cls, context: RescueContext, opened: OpenedAnswer, native: NativeResume | None = None
    ) -> StreamRescue | None:
        """A rescue when some other candidate could continue this stream, else None (the
        relay then keeps nothing: no cost on the healthy path)."""
        return cls(context, opened, native) if _continuers(context, opened.offer) else None

    def keep(self, out: bytes) -> None:
        self.record.keep(out)

    async def resume(
        self,
        error: UpstreamError,
        forward: Callable[[bytes], Awaitable[None]],
        cancelled: Callable[[], UpstreamError | None],
    ) -> bytes | None:
        """Continue the broken stream on a candidate that takes a prefill, relaying its events
        through `forward`; returns the bytes to end the client's stream with. None when it
        cannot be continued (a tool call had started, nothing to continue, no candidate took
        it): the relay ends the stream with its error event, naming `error`. Raises
        `ContinuationBroke` when the continuing stream breaks too.

        `cancelled` says what a cancellation of the request meanwhile is, as the relay knows
        it: None when the client left (a 499, the cancellation raised on), else the error the
        client's stream ends with (the gateway's shutdown), raised as `ContinuationBroke`
        once the cancellation is handled."""
        context, broken = self._context, self._opened
        partial = self.record.partial(self.native.read if self.native is not None else None)
        if partial is None or partial.tool_call or partial.finished or not partial.text:
            return None
        outcome, chat = context.outcome, context.chat
        copies = chat.fields.get("n")
        if type(copies) is int and copies > 1:
            return None  # n answers interleaved in one stream: one prefill cannot continue them
        remaining = context.decision.max_attempts - len(outcome.attempts)
        continuers = _continuers(context, broken.offer)
        if remaining <= 0 or not continuers:
            return None  # the relay accounts the broken attempt as the call's end
        broken_attempt = self._account_broken(error, partial)
        first_ttft = outcome.ttft_s
        decision = replace(context.decision, route=None, candidates=continuers, max_attempts=remaining)

        def plan(offer: Offer, backend: Backend) -> UpstreamCall | None:
            mode = prefill_mode(offer, backend.config)
            if mode is None:
                return None
            base = context.payload_for(offer) if context.payload_for else upstream_payload(chat, offer.upstream_id)
            payload = continuation_payload(base, partial, mode)
            return UpstreamCall(CHAT_COMPLETIONS, payload, CHAT)

        try:
            # Within: a cancellation while the broken answer closes (an adapter's close may
            # await) is accounted as one while the candidates are asked, not left to the relay.
            await broken.response.aclose()
            log.warning(
                "stream from %s broke after %d tokens (%s): continuing it elsewhere",
                broken.offer.backend,
                partial.tokens,
                error.reason,
            )
            opened = await open_answer(
                chat,
                decision,
                context.backends,
                context.observers,
                outcome,
                context.headers,
                context.snapshot,
                plan=plan,
                max_response_bytes=context.max_response_bytes,
                past_rejections=True,  # a candidate refusing the prefill (a 400) is not the end
            )
        except asyncio.CancelledError:
            # Called off while candidates were asked, or the broken answer closed: the call
            # ended where it broke (each attempt set outcome.offer as it started), and its
            # broken attempt is the final row.
            outcome.offer = broken.offer
            outcome.attempts[:] = [a for a in outcome.attempts if a is not broken_attempt] + [broken_attempt]
            cut = cancelled()
            if cut is None:  # the client left
                outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
                raise
            raise _cut_off(outcome, broken.offer, cut) from None
        except GatewayError:
            log.warning("no candidate continued the stream broken on %s", broken.offer.backend)
            outcome.offer = broken.offer  # the call ended where it broke
            # ...so its attempt is the call's final row (the bill: what it delivered), after the
            # candidates that failed to continue it, each a row of its own.
            outcome.attempts[:] = [a for a in outcome.attempts if a is not broken_attempt] + [broken_attempt]
            return None
        outcome.ttft_s = first_ttft  # the client's first token came from the first attempt
        outcome.status, outcome.error = 200, None
        return await self._relay(opened, partial, forward, cancelled)

    def _account_broken(self, error: UpstreamError, partial: Partial) -> Attempt:
        """The broken attempt's row: its failure, and the tokens it delivered (its prompt
        and the content the client read), billed to the key with the call's final row."""
        context, broken = self._context, self._opened
        attempt = broken.attempt or context.outcome.attempts[-1]
        attempt.duration_s = time.perf_counter() - self._started
        attempt.error, attempt.backend_fault = error.reason, error.backend_fault
        reported = broken.accountant.usage if broken.accountant is not None else None
        attempt.usage = delivered_usage(context.chat, partial, reported)
        attempt.cost_usd = price_usd(broken.offer, attempt.usage)
        context.outcome.carry(attempt.usage, broken.offer)  # the client read them: billed with the call
        context.observers.attempt_finished(broken.offer, attempt, context.outcome.ttft_s)
        self.took_over = True
        return attempt

    async def _read_rest(
        self, opened: OpenedAnswer, splice: Splice, forward: Callable[[bytes], Awaitable[None]]
    ) -> bytes:
        """The continuing stream's events after its first ones, handed on as they come; returns
        what ends them. It ends as a first stream does (`relay_stream`): an answer that had
        ended (its finish_reason, its usage chunk) and lost only `[DONE]` or its connection's
        clean close is whole, and gets `[DONE]` (and the estimated usage, when none came); a
        body that ended cleanly before its answer's end is a break (`StreamBroken`)."""
        accountant = opened.accountant
        assert accountant is not None
        relayed = opened.prefix  # the last events handed on, as the upstream sent them
        idle = EventsIdle(opened)  # the first relay's limit: keep-alives alone do not hold the client
        try:
            async for chunk in opened.response.aiter_bytes():
                out = accountant.feed(chunk)
                idle.check(time.perf_counter())
                if out:
                    relayed = out
                    try:
                        await forward(splice.events(out))
                    except Exception as exc:
                        raise _NotSent(exc) from exc
            tail = accountant.flush()
            if not accountant.saw_done and not tail:  # an unterminated last event ends it as it came
                tail = ended_without_its_end(accountant, opened.offer, relayed, self._context.chat)
            return tail
        except _NotSent as failed:
            raise failed.error from None
        except Exception as exc:
            ending = accountant.end_after_break(relayed, single_choice=True)  # n > 1 is never continued
            if ending is None:
                raise
            log.log(
                logging.DEBUG if accountant.saw_done else logging.WARNING,  # as `stream_relay` says why
                "stream continued on %s broke after its answer's end (%s); ended it there",
                opened.offer.backend,
                exc.reason if isinstance(exc, UpstreamError) else type(exc).__name__,
            )
            return ending

    async def _relay(
        self,
        opened: OpenedAnswer,
        partial: Partial,
        forward: Callable[[bytes], Awaitable[None]],
        cancelled: Callable[[], UpstreamError | None],
    ) -> bytes:
        """The continuing stream into the client's; its attempt accounted when it ends."""
        context, outcome = self._context, self._context.outcome
        accountant = opened.accountant
        assert accountant is not None and opened.attempt is not None
        attempt, started = opened.attempt, time.perf_counter() - opened.attempt.duration_s
        carried = context.outcome.carried
        # The client's usage total is what it is billed: the first prompt, every token it read.
        backend = context.backends.get(opened.offer.backend)
        mode = prefill_mode(opened.offer, backend.config) if backend is not None else None
        seam = unsent_tail(partial, mode) if mode is not None else ""
        splice = Splice(partial, carried, seam)
        tail = b""
        try:
            if opened.prefix:
                await forward(splice.events(opened.prefix))
            if not opened.ended:
                tail = splice.events(await self._read_rest(opened, splice, forward))
            if accountant.done_held:
                own = Usage(context.chat.all_prompt_tokens(), accountant.content_events, estimated=True)
                tail += splice.events(accountant.closing_events(own))
        except asyncio.CancelledError:
            if accountant.saw_done and not accountant.done_held:  # the client had the whole answer
                raise
            cut = cancelled()
            if cut is None:  # the client left
                outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
                raise
            raise _cut_off(outcome, opened.offer, cut) from None
        except Exception as exc:
            failure = exc if isinstance(exc, UpstreamError) else UpstreamProtocolError(type(exc).__name__)
            outcome.status, outcome.error = 502, failure.reason
            attempt.backend_fault = failure.backend_fault
            log.warning(
                "stream continued on %s broke mid-answer too (%s): %s",
                opened.offer.backend,
                failure.reason,
                failure.message,
            )
            if accountant.failed_midway:
                # Its own error event reached the client already and says why the stream
                # ends: the call is that error's, and no second error event follows (as the
                # first relay ends its stream after a break that follows one).
                outcome.error, attempt.backend_fault = "upstream_error", True
                raise ContinuationBroke(failure, said=True) from None
            raise ContinuationBroke(failure) from None
        finally:
            await opened.response.aclose()
            if accountant.failed_midway and outcome.status < 400:
                # The upstream's own error event after content, relayed to the client (its
                # accountant holds none back: not continued again): the call failed, as the
                # first relay accounts its stream's, and the backend is at fault.
                outcome.status, outcome.error = 502, "upstream_error"
                attempt.backend_fault = True
            attempt.duration_s = time.perf_counter() - started
            if outcome.status >= 400:
                attempt.error = outcome.error
            context.observers.attempt_finished(opened.offer, attempt, None)
            outcome.usage = accountant.usage or Usage(
                context.chat.all_prompt_tokens(), accountant.content_events, estimated=True
            )
        return tail


class _NotSent(Exception):
    """Handing the continuation's events on to the client failed: the gateway's side (or the
    translation's end), raised on as it came, never read as the upstream's break."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def delivered_usage(chat: ChatRequest, partial: Partial, reported: Usage | None) -> Usage:
    """A broken attempt's usage: the completion tokens the client read (counted, reasoning
    included), and its prompt as its upstream reported it before the break (Anthropic's
    message_start: input, cache reads and writes; a provider sending usage with every
    chunk), else estimated. The estimate knows nothing of a prompt cache: a long cached
    prompt billed at the full input price, were it used when the upstream had said."""
    if reported is None or reported.prompt_tokens <= 0:
        return Usage(chat.all_prompt_tokens(), partial.tokens, 0, partial.reasoning, estimated=True)
    return Usage(
        reported.prompt_tokens,
        partial.tokens,
        reported.cached_tokens,
        partial.reasoning,
        estimated=True,
        cache_write_tokens=reported.cache_write_tokens,
    )


class ContinuationBroke(Exception):
    """The continuing stream broke too, or the gateway's shutdown cut it: the relay ends the
    client's stream naming `error` (both attempts are already accounted). `said`: the
    continuing upstream's own error event, relayed before the break, already ended it."""

    def __init__(self, error: UpstreamError, said: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.said = said


def shutdown_cut(outcome: CallOutcome, offer: Offer, cut: UpstreamError) -> None:
    """A stream the gateway called off (its shutdown's grace period ran out) with the client
    still there, whichever relay was writing it: accounted as `cut` says (a 503: the gateway
    is unavailable, not the backend at fault), logged in one line, and the cancellation
    handled (not carried on to the request's later awaits, nor to the server as a crash).
    The caller ends the client's stream with the error event naming `cut`."""
    outcome.status, outcome.error = 503, cut.reason
    log.warning("stream from %s cut mid-answer: %s", offer.backend, cut.message)
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _cut_off(outcome: CallOutcome, offer: Offer, cut: UpstreamError) -> ContinuationBroke:
    """`shutdown_cut` during a continuation: the relay ends the client's stream naming `cut`."""
    shutdown_cut(outcome, offer, cut)
    return ContinuationBroke(cut)


def _writes(delta: dict[str, Any]) -> bool:
    """Whether a chat delta carries the answer's text or a tool call (not only reasoning)."""
    return bool(delta.get("content") or delta.get("tool_calls") or delta.get("function_call"))


def _continuers(context: RescueContext, broken: Offer) -> tuple[Offer, ...]:
    """The candidates other than the broken one that take a prefill, in the decision's order."""
    out = []
    for offer in context.decision.candidates:
        if offer.key == broken.key:
            continue
        backend = context.backends.get(offer.backend)
        if backend is not None and prefill_mode(offer, backend.config) is not None:
            out.append(offer)
    return tuple(out)
