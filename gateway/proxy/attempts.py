"""The fallback loop: try the decision's candidates in turn until one answers.

A candidate's answer is committed to the client only once it has produced content: a
non-streamed body read whole, a stream's first content event. Until then any failure
(connect error, timeout, 429, 5xx, context overflow, an error event in a 200 stream)
moves on to the next candidate, so the client never sees a backend fail that another
could serve. After that, no retry: bytes have reached the client.

Bounded: at most `max_attempts` calls and `deadline_s` for all of them. A candidate whose
failure is transient by its class (`same_candidate_retry`: a 500/502/504, a 429 or 503
with a `Retry-After`) is asked again up to `fallback.retries_per_candidate` times before the
loop moves on; never after a timeout. A backend that already failed this request (the same
candidate again, or another of its models next) is called again only after a jittered
backoff, or after its `Retry-After` when that is at most `fallback.retry_after_max_s`
(longer: it is skipped). A small explicit loop rather than tenacity: the loop
moves between candidates and must stop at the first byte, which tenacity's
retry-the-same-call model does not express. Every attempt is reported to the observers,
which is how circuit breakers and latency stats learn.

What each candidate is asked is the caller's `plan` (an `UpstreamCall`: path, payload, and
the wire format of the answer; default: the chat request as chat completions), so every
ingress API shares this loop; a candidate the plan cannot serve is skipped, using no attempt.
A 2xx answer is checked by its format as far as the relay reads it anyway (a chat body must
be a JSON object with a `choices` list, a stream's events before its first content must
parse: `gateway.proxy.formats`, `gateway.proxy.relay`); anything else is a `malformed`
failure of that backend. An
upstream that says the model does not exist (404, or a 400 in those words) is answering
for the gateway's own configuration, not the client's request: a `misconfigured` failure,
logged once per backend and model for the operator, and the next candidate is tried.
Upstream text reaching the client or the log is redacted (`gateway.protocol.redact`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.backends.base import (
    CHAT_COMPLETIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    Backend,
    UpstreamRequest,
    UpstreamResponse,
    context_figures,
)
from gateway.backends.errors import (
    AuthRejected,
    BackendMisconfigured,
    ContextTooLong,
    FeatureUnsupported,
    FirstByteTimeout,
    MalformedAnswer,
    RateLimited,
    RequestNotEncodable,
    ResponseTooLarge,
    StreamBroken,
    StreamIdleTimeout,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnreachable,
    status_error,
)
from gateway.backends.inflight import Skipped, Slot, skipped_error
from gateway.backends.pool import BackendSet
from gateway.config.schema import BackendConfig, FallbackSettings
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import ChatRequest, upstream_payload
from gateway.protocol.errors import (
    SDK_WAIT_MAX_S,
    ContextLengthExceeded,
    GatewayError,
    UpstreamOverloaded,
    retry_headers,
)
from gateway.protocol.redact import Redactor
from gateway.proxy.formats import CHAT, AnswerFormat, CheckedPrefix, StreamAccountant, UpstreamCall, error_text
from gateway.proxy.hedge import CANCELLED, HEDGE_LOST, race
from gateway.proxy.outcome import Attempt, CallOutcome, Observers, price_usd
from gateway.proxy.relay import StreamFailedEarly
from gateway.proxy.time_limit import sleep_at_least, time_limit
from gateway.proxy.usage import Usage
from gateway.routing.pipeline import PROMPT_PARAM, RoutingDecision

log = logging.getLogger("gateway.proxy")

# How upstreams say the model they were asked for does not exist, when they answer 400
# rather than 404: OpenRouter "<id> is not a valid model ID", DeepSeek "Model Not Exist",
# others "invalid model" / "unknown model" / "model ... not found". (OpenAI, vLLM, Groq,
# Anthropic answer 404: "The model `x` does not exist or you do not have access to it.",
# `model_not_found`, `not_found_error`.) Matched against the upstream's error message only.
_NO_SUCH_MODEL = re.compile(
    r"model_not_found|not a valid model|(?:invalid|unknown|no such) model"
    r"|model\b[^\n]{0,120}?\b(?:does not exist|not exist|not found|is not available)",
    re.IGNORECASE,
)


# Asked per candidate: the call that candidate gets, or None when the offer cannot serve the
# request (skipped: not an attempt). The ingress's own (`Ingress.plan`, `gateway.api.edge`).
Plan = Callable[[Offer, Backend], UpstreamCall | None]


@dataclass(slots=True)
class OpenedAnswer:
    """A candidate's answer, committed to: ready to be sent to the client."""

    offer: Offer
    response: UpstreamResponse
    upstream_s: float  # time spent waiting on upstreams so far (all attempts)
    body: bytes = b""  # non-streamed: the whole body
    usage: Usage | None = None  # non-streamed: its usage
    answer: Any = None  # non-streamed: the body parsed, when its format's check parsed it (`read_body`)
    prefix: bytes = b""  # streamed: events read before committing
    accountant: StreamAccountant | None = None
    ended: bool = False  # streamed: upstream finished while pre-reading
    # Streamed: nothing more will arrive (ended, or the answer came whole in the reads so far),
    # so the client's answer can be written at once when it is complete.
    whole: bool = False
    # The wire format the answer is in (the call's): the edge sends it as is when that is
    # its own API's, and translates it otherwise.
    format: AnswerFormat = CHAT
    # Streamed: what the format's look at `prefix` made of it (`AnswerFormat.check_prefix`).
    checked: CheckedPrefix | None = None
    attempt: Attempt | None = None  # the attempt that answered
    ttft_s: float | None = None  # its time to first content (non-streamed: to the whole body)
    # Streamed: the backend's `stream_idle_timeout_s`, the longest wait for an event once
    # content flows (the read timer sees bytes; the relay sees that comments are not events).
    idle_s: float = 0.0
    # The call it answers: what the call's bill reads (a stream continued after a break goes
    # on with another answer of the same call).
    outcome: CallOutcome | None = None


class EventsIdle:
    """The idle limit on a started stream's events (`OpenedAnswer.idle_s`), for a relay that
    reads the rest of it. The read timer restarts at any bytes, so an upstream stuck after
    content that sends only keep-alive comments (`: ping`) would hold the client for as long
    as it waits: the relay calls `check` after feeding each chunk to the answer's accountant,
    which counts events, and the stream is cut once `idle_s` passed without one. Every relay
    of a stream (the first answer's, a continuation's) uses this one."""

    __slots__ = ("_accountant", "_at", "_backend", "_events", "_idle_s")

    def __init__(self, opened: OpenedAnswer) -> None:
        accountant = opened.accountant
        assert accountant is not None, "a streamed answer"
        self._accountant = accountant
        self._events = accountant.content_events
        self._at = time.perf_counter()
        self._idle_s = opened.idle_s
        self._backend = opened.offer.backend

    def check(self, t: float) -> None:
        """At `t` (`time.perf_counter()`), a chunk having just been fed to the accountant:
        raises `StreamIdleTimeout` once `idle_s` passed since the last event (one comparison
        while events come)."""
        events = self._accountant.content_events
        if events != self._events:
            self._events, self._at = events, t
        elif self._idle_s and t - self._at > self._idle_s:
            raise StreamIdleTimeout(
                f"{self._backend}: no event for {self._idle_s:g} s after content (keep-alives only)"
            )


async def open_answer(
    chat: ChatRequest,
    decision: RoutingDecision,
    backends: BackendSet,
    observers: Observers,
    outcome: CallOutcome,
    headers: dict[str, str],
    snapshot: ConfigSnapshot | None = None,
    *,
    plan: Plan | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    past_rejections: bool = False,
    task: asyncio.Task[Any] | None = None,
) -> OpenedAnswer:
    """`backends`: the adapters of the config snapshot the request was routed with (leased
    by the caller), so a reload meanwhile changes nothing under this request. `snapshot`, that
    config, gives the redactor of every configured key (built once per snapshot); without it
    (tests) one is built from the adapters' keys. `plan` says what each candidate is asked
    (default: `chat` as chat completions); a candidate it returns None for is skipped (a
    continuation's plan asks only candidates that take a prefill). `past_rejections`: a
    request a candidate judged invalid moves on too (a continuation's prefill that one
    candidate refuses, another may take). `task`: the one awaiting this (the request's
    handler), when the caller has it at hand: each attempt's time limit cancels it."""
    redactor = snapshot.redactor if snapshot is not None else Redactor(b.config.api_key for b in backends)
    call = _Call(chat, observers, outcome, headers, snapshot, redactor, max_response_bytes, backends, plan, task)
    last_error: UpstreamError | None = None
    upstream_s = 0.0
    deadline = time.perf_counter() + decision.deadline_s
    failed_backends: dict[str, UpstreamError] = {}  # backend -> its last failure in this request
    # A failure the same request may not meet again (a backend overloaded, timing out; one
    # passed over uncalled): the client's own retry may mend it (`client_error`'s `NOT_AGAIN`).
    mendable = False
    attempts = 0
    skipped: list[Skipped] = []  # candidates passed over uncalled: backend full, model at its limit
    pending = deque(decision.candidates)
    retried: dict[tuple[str, str], int] = {}  # offer key -> times asked again in this request
    # Streams only: a non-streamed answer's "first content" is the whole answer, so nearly
    # every call would pay for a second full generation.
    hedge_after_s = _hedge_after(decision, snapshot) if chat.stream else None
    while pending:
        offer = pending.popleft()
        if attempts >= decision.max_attempts:
            break
        backend = backends.get(offer.backend)
        if backend is None:
            continue
        upstream_call = call.plan_for(offer, backend)
        if upstream_call is None:
            continue  # this offer cannot serve this request: not an attempt
        earlier = failed_backends.get(offer.backend)
        if earlier is not None:
            wait = retry_wait(earlier, attempts, decision.retry)
            if wait is None or time.perf_counter() + wait >= deadline:
                continue  # rate limited for longer than we may wait: leave this backend alone
            if wait > 0:
                waited = time.perf_counter()
                await sleep_at_least(wait)  # a Retry-After is a floor: not a millisecond less
                upstream_s += time.perf_counter() - waited  # the upstream's to answer for, not the gateway's own time
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        slot = await backends.gate.enter(offer, backend)  # backpressure and per-model limits
        if isinstance(slot, Skipped):
            skipped.append(slot)
            continue
        attempts += 1
        hedge = None
        if hedge_after_s is not None and attempts == 1 and attempts < decision.max_attempts:
            hedge = _next_candidate(pending, backends, call)
        try:
            if hedge is None:
                opened = call.committed(await call.attempt(offer, backend, upstream_call, remaining, slot, call.task))
            else:
                first = (offer, backend, upstream_call)
                opened, hedged = await _hedged(
                    call, first, hedge, remaining, hedge_after_s or 0.0, slot, past_rejections
                )
                if hedged:
                    attempts += 1
                    pending.remove(hedge[0])
        except _Failed as failed:
            upstream_s += failed.elapsed
            for error, failed_offer in failed.errors:
                last_error = error
                failed_backends[failed_offer.backend] = error
                mendable = mendable or not isinstance(error, _MET_AGAIN)
            if failed.hedged and hedge is not None:
                attempts += 1
                pending.remove(hedge[0])
            error, offer = failed.errors[-1]
            retry = len(failed.errors) == 1 and error.same_candidate_retry and not decision.probes(offer)
            if retry and retried.get(offer.key, 0) < decision.retry.retries_per_candidate:
                # Transient by its class: the same candidate first, after the wait the loop's
                # top works out (its Retry-After if short enough, else a jittered backoff).
                retried[offer.key] = retried.get(offer.key, 0) + 1
                pending.appendleft(offer)
                continue
            moves_on = all(worth_another_candidate(e) or past_rejections for e, _ in failed.errors)
            if not (decision.fallback and moves_on):
                break
            continue
        opened.upstream_s += upstream_s
        return opened
    if last_error is None and skipped:
        raise skipped_error(skipped)
    raise client_error(last_error, decision, outcome, redactor, mendable=mendable or bool(skipped))


class _Failed(Exception):
    """Every attempt of one turn of the loop failed (one, or two when hedged): each error with
    its offer, already recorded and reported."""

    def __init__(self, errors: list[tuple[UpstreamError, Offer]], elapsed: float, hedged: bool = False) -> None:
        super().__init__(errors[-1][0].message if errors else "skipped uncalled")
        self.errors = errors
        self.elapsed = elapsed
        self.hedged = hedged


def _hedge_after(decision: RoutingDecision, snapshot: ConfigSnapshot | None) -> float | None:
    """The route's `hedge.after_ms`, in seconds, when it hedges."""
    if decision.route is None or snapshot is None or len(decision.candidates) < 2:
        return None
    route = snapshot.config.routes.get(decision.route)
    return route.hedge.after_ms / 1000 if route is not None and route.hedge is not None else None


_Candidate = tuple[Offer, Backend, UpstreamCall]


def _next_candidate(pending: deque[Offer], backends: BackendSet, call: _Call) -> _Candidate | None:
    """The next candidate that has an adapter and a plan (left in `pending`: taken only if
    the hedge starts)."""
    for offer in pending:
        backend = backends.get(offer.backend)
        if backend is None:
            continue
        upstream_call = call.plan_for(offer, backend)
        if upstream_call is not None:
            return offer, backend, upstream_call
    return None


async def _hedged(
    call: _Call,
    first: _Candidate,
    hedge: _Candidate,
    remaining: float,
    after_s: float,
    slot: Slot,
    past_rejections: bool = False,
) -> tuple[OpenedAnswer, bool]:
    """The first attempt, and past `after_s` without content the hedge too: the answer of the
    one that produced content first (and whether the hedge was started). A failure no other
    candidate would mend (the request judged invalid: `worth_another_candidate`) ends the
    race at once, as it ends the fallback loop: the other attempt, perhaps hung, was waited
    on to its time limit, and the client got a 504 in place of the upstream's 400."""

    def decisive(error: Exception) -> bool:
        return (
            not past_rejections
            and isinstance(error, _Failed)
            and not all(worth_another_candidate(e) for e, _ in error.errors)
        )

    started = time.perf_counter()
    try:
        result = await race(
            call.attempt(*first, remaining, slot),
            # The hedge takes its own slot when it starts (None: the attempt asks the gate).
            lambda: call.attempt(*hedge, remaining - (time.perf_counter() - started), None),
            after_s,
            call.discarded,
            decisive,
        )
    except BaseException:
        # Called off (the client left, shutdown): every attempt started is recorded, in the
        # order each wound down, and the call's final row is the last of them, so the call
        # ends on that attempt's offer (not on the last one started).
        _end_on_last_attempt(call.outcome, (first[0], hedge[0]))
        raise
    if result.winner is not None:
        opened = call.committed(result.winner)
        # The whole race was spent waiting on upstreams (the first one until the hedge
        # started, then both), not only the winner's own attempt: else the hedge's delay
        # reads as the gateway's own time (x-gateway-overhead-ms, gateway_overhead_seconds).
        opened.upstream_s = max(opened.upstream_s, time.perf_counter() - started)
        return opened, result.hedged
    errors = [pair for failed in result.errors if isinstance(failed, _Failed) for pair in failed.errors]
    unexpected = [e for e in result.errors if not isinstance(e, _Failed)]
    if unexpected:
        raise unexpected[0]
    # Both failed, the first started perhaps failing last: should the loop end here, the call
    # ends on the attempt recorded last.
    _end_on_last_attempt(call.outcome, (first[0], hedge[0]))
    raise _Failed(errors, time.perf_counter() - started, hedged=result.hedged)


def _end_on_last_attempt(outcome: CallOutcome, offers: tuple[Offer, ...]) -> None:
    last = outcome.attempts[-1] if outcome.attempts else None
    for offer in offers:
        if last is not None and (offer.backend, offer.model) == (last.backend, last.model):
            outcome.offer = offer
            return


@dataclass(slots=True)
class _Call:
    """What every attempt of one call shares."""

    chat: ChatRequest
    observers: Observers
    outcome: CallOutcome
    headers: dict[str, str]
    snapshot: ConfigSnapshot | None
    redactor: Redactor
    max_response_bytes: int
    backends: BackendSet
    plan: Plan | None = None
    task: asyncio.Task[Any] | None = None  # the caller's (None: looked up per attempt)

    def plan_for(self, offer: Offer, backend: Backend) -> UpstreamCall | None:
        if self.plan is None:
            return UpstreamCall(CHAT_COMPLETIONS, upstream_payload(self.chat, offer.upstream_id), CHAT)
        return self.plan(offer, backend)

    async def attempt(
        self,
        offer: Offer,
        backend: Backend,
        call: UpstreamCall,
        remaining: float,
        slot: Slot | None,
        task: asyncio.Task[Any] | None = None,
    ) -> OpenedAnswer:
        """One attempt, recorded on the outcome and reported to the observers; its failure
        raised as `_Failed`. A cancelled attempt is recorded as `cancelled` (or the label of
        a `_Cancel` reason) and the cancellation propagates. `slot`: its place in the
        backend's calls in flight, taken by the loop; None (a hedge): taken here, and a
        candidate that is full or at its model limit fails the hedge uncalled. `task`: the one
        running this attempt, if known (a hedge's attempts run in tasks of their own)."""
        if slot is None:
            entered = await self.backends.gate.enter(offer, backend)
            if isinstance(entered, Skipped):
                raise _Failed([], 0.0)
            slot = entered
        chat, outcome, observers = self.chat, self.outcome, self.observers
        outcome.offer = offer
        observers.attempt_started(offer)
        started = time.perf_counter()
        call_headers = self.headers if call.headers is None else {**self.headers, **call.headers}
        request = UpstreamRequest(offer, call.payload, chat.stream, call_headers, call.path, self.max_response_bytes)
        # Until its first content, a stream may take the backend's first-byte allowance; a
        # non-streamed answer (whose headers come only once it is generated) its whole
        # `timeout_s`; either within what is left of the request's deadline. Past that,
        # another candidate gets a turn.
        limit = min(remaining, first_content_timeout(backend.config) if chat.stream else backend.config.timeout_s)
        try:
            try:
                async with time_limit(limit, task):
                    response = slot.hold(await backend.send(request))  # its slot is freed when it closes
                    opened = await (
                        _pre_read_stream(
                            offer, response, chat, self.redactor, call.format, backend.config.stream_idle_timeout_s
                        )
                        if chat.stream
                        else _read_body(offer, response, call.format)
                    )
            except TimeoutError:
                raise FirstByteTimeout(f"{offer.backend}: no answer within {limit:.1f}s") from None
        except Exception as exc:
            slot.release()
            error = _as_upstream_error(exc, offer)
            error = _misconfigured(error, offer, self.redactor, self.snapshot) or error
            if isinstance(error, MalformedAnswer):
                error.expected = call.format.expected  # what the client's 502 says was expected
            elapsed = time.perf_counter() - started
            attempt = Attempt.failed(offer, error, elapsed)
            outcome.attempts.append(attempt)
            observers.attempt_finished(offer, attempt, None)
            try:
                raise _Failed([(error, offer)], elapsed) from None
            finally:
                # The error's traceback holds this frame: it must not hold the error back
                # (a reference cycle through the request's frames; see `routing.pipeline.decide`).
                del error
        except BaseException as exc:
            slot.release()
            # Cancelled (the client left, shutdown's deadline passed, a hedge won): this
            # attempt ends too, and observers pairing attempt_started with attempt_finished
            # must hear it.
            label = HEDGE_LOST if isinstance(exc, asyncio.CancelledError) and exc.args == (HEDGE_LOST,) else CANCELLED
            attempt = Attempt(offer.backend, offer.model, label, None, time.perf_counter() - started)
            if label == HEDGE_LOST:
                # The upstream read the prompt (and perhaps began): its cost is the operator's,
                # estimated for its ledger row, which is never billed to the key.
                attempt.usage = Usage(chat.all_prompt_tokens(), 0, estimated=True)
                attempt.cost_usd = price_usd(offer, attempt.usage)
            outcome.attempts.append(attempt)
            observers.attempt_finished(offer, attempt, None)
            raise
        elapsed = time.perf_counter() - started
        opened.upstream_s = elapsed
        ttft = (
            (opened.accountant.first_content_at - started)
            if opened.accountant and opened.accountant.first_content_at
            else None
        )
        attempt = Attempt(offer.backend, offer.model, None, response.status, elapsed)
        opened.attempt = attempt
        opened.ttft_s = ttft if chat.stream else elapsed
        if opened.accountant is not None:
            opened.accountant.report_to(attempt)
        return opened

    async def discarded(self, opened: OpenedAnswer, reason: str) -> None:
        """An answer of a hedged race that is not the client's: closed unread, and recorded
        under `reason` (HEDGE_LOST: it succeeded in the same instant as the winner, or as it
        was being cancelled; CANCELLED: the race was called off, the client left), so the
        observers pairing attempt_started with attempt_finished hear it and its upstream cost
        is the operator's."""
        try:
            await opened.response.aclose()
        finally:
            attempt = opened.attempt
            if attempt is not None:
                attempt.error, attempt.status = reason, None
                attempt.usage = Usage(self.chat.all_prompt_tokens(), 0, estimated=True)
                attempt.cost_usd = price_usd(opened.offer, attempt.usage)
                self.outcome.attempts.append(attempt)
                self.observers.attempt_finished(opened.offer, attempt, None)

    def committed(self, opened: OpenedAnswer) -> OpenedAnswer:
        """The answer the client gets: its attempt recorded last (the ledger's final row)."""
        outcome = self.outcome
        outcome.offer = opened.offer
        outcome.ttft_s = opened.ttft_s
        opened.outcome = outcome
        assert opened.attempt is not None
        outcome.attempts.append(opened.attempt)
        if not self.chat.stream:
            self.observers.attempt_finished(opened.offer, opened.attempt, opened.attempt.duration_s)
        return opened


def _as_upstream_error(exc: Exception, offer: Offer) -> UpstreamError:
    """Any failure of an attempt is the backend's: counted against it, and the next candidate tried."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, StreamFailedEarly):
        return status_error(str(exc), exc.status or 502)
    # Adapters classify their own failures; anything else escaping one (an HTTP client's
    # exception it did not map, a bug) still fails only this attempt.
    log.warning("%s: attempt failed with %s: %s", offer.backend, type(exc).__name__, exc)
    return UpstreamProtocolError(f"{offer.backend}: {type(exc).__name__}")


def first_content_timeout(config: BackendConfig) -> float:
    return config.first_byte_timeout_s or config.timeout_s


def worth_another_candidate(error: UpstreamError) -> bool:
    """Another candidate may succeed: the failure was the backend's, not the request's
    (the error's class says so: `gateway.backends.errors`)."""
    return error.retryable


def retry_wait(earlier: UpstreamError, attempts: int, policy: FallbackSettings) -> float | None:
    """How long to wait before calling a backend that already failed this request.

    A `Retry-After` is honoured up to `retry_after_max_s`; longer ones skip the backend (None).
    Otherwise a full-jitter exponential backoff, so retries from many requests do not align.
    """
    if earlier.retry_after is not None:
        return earlier.retry_after if earlier.retry_after <= policy.retry_after_max_s else None
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * (2 ** max(attempts - 1, 0)))
    return random.uniform(0, ceiling) if ceiling > 0 else 0.0


async def _read_body(offer: Offer, response: UpstreamResponse, format: AnswerFormat) -> OpenedAnswer:
    """The whole body, once `format` has checked it is an answer (and read its usage)."""
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    usage, answer = format.read_body(offer, body)
    if format.finishes_answers and answer is not None:
        answer = await format.finish_answer(offer, answer)
    return OpenedAnswer(offer, response, 0.0, body=body, usage=usage, format=format, answer=answer)


async def _pre_read_stream(
    offer: Offer,
    response: UpstreamResponse,
    chat: ChatRequest,
    redactor: Redactor,
    format: AnswerFormat,
    idle_s: float,
) -> OpenedAnswer:
    accountant = format.accountant(include_usage=chat.include_usage, redactor=redactor)
    accountant.upstream = response  # given a grace to end its body once its answer ended
    parts: list[bytes] = []
    iterator = response.aiter_bytes()
    ended = True
    try:
        async for chunk in iterator:
            parts.append(accountant.feed(chunk))
            if accountant.started:
                ended = False
                if not accountant.saw_done:  # else its grace to end the body is set (`relay.give_end_grace`)
                    response.stream_started(idle_s)
                break
    except BaseException:
        await response.aclose()
        raise
    if ended:
        try:
            parts.append(accountant.flush())  # may fail the attempt: a malformed tail, an error event
        finally:
            await response.aclose()
        if not accountant.saw_done:
            if not accountant.content_events:
                raise UpstreamProtocolError(f"{offer.backend}: stream ended before any content")
            # Nothing went out yet: a cut answer fails the attempt (the next candidate is asked).
            parts.append(ended_without_its_end(accountant, offer, b"".join(parts), chat))
    prefix = b"".join(parts)
    try:
        checked = format.check_prefix(offer, prefix)  # may fail the attempt: events its edge cannot read
    except BaseException:
        if not ended:
            await response.aclose()
        raise
    opened = OpenedAnswer(
        offer,
        response,
        0.0,
        prefix=prefix,
        accountant=accountant,
        ended=ended,
        whole=ended or response.exhausted,
        format=format,
        checked=checked,
        idle_s=idle_s,
    )
    opened.response = _Continuation(response, iterator) if not ended else response
    return opened


def ended_without_its_end(accountant: StreamAccountant, offer: Offer, last: bytes, chat: ChatRequest) -> bytes:
    """A stream whose body ended cleanly without its end event (`[DONE]`, message_stop, a
    terminal Response event), `last` its last events: what completes an answer that had
    ended, as after a break (`end_after_break`), else `StreamBroken`, handled as a break (the
    next candidate before the answer's head went out; after, a continuation or the API's
    error event). The end of the body is not the end of the answer: taken for it, a reply cut
    mid-sentence went to the client as a success, billed and never continued."""
    ending = accountant.end_after_break(last, chat.fields.get("n") in (None, 1))
    if ending is None:
        raise StreamBroken(f"{offer.backend}: the stream ended before its answer's end")
    return ending


class _Continuation(UpstreamResponse):
    """The rest of a stream whose first events were already read."""

    def __init__(self, response: UpstreamResponse, iterator: AsyncIterator[bytes]) -> None:
        self._response = response
        self._iterator = iterator
        self.media_type = response.media_type

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._iterator  # the same iterator, not a generator around it: one layer less per chunk

    @property
    def exhausted(self) -> bool:
        return self._response.exhausted

    def stream_started(self, idle_s: float) -> None:
        self._response.stream_started(idle_s)

    async def aclose(self) -> None:
        await self._response.aclose()


def _misconfigured(
    error: UpstreamError, offer: Offer, redactor: Redactor, snapshot: ConfigSnapshot | None
) -> BackendMisconfigured | None:
    """The failure as a misconfiguration of the gateway, if the upstream says so; logged
    (with the upstream's words, redacted) once per backend and model per config snapshot."""
    if not isinstance(error, UpstreamStatusError) or error.status not in (400, 404, 422):
        return None
    if isinstance(error, ContextTooLong | BackendMisconfigured | FeatureUnsupported):
        return None  # its own words say why: no misconfiguration (OpenRouter's lack is a 404)
    detail = _upstream_message(error, redactor)
    if error.status != 404 and not _NO_SUCH_MODEL.search(detail):
        return None
    logged: set[tuple[str, str]] | None = (
        snapshot.memo.setdefault("misconfigured_logged", set()) if snapshot is not None else None
    )
    if logged is None or offer.key not in logged:
        if logged is not None:
            logged.add(offer.key)
        log.error(
            "backend %r is misconfigured for model %s: asked for upstream_id %r, it answered %s: %s",
            offer.backend,
            offer.model,
            offer.upstream_id,
            error.status,
            detail,
        )
    return BackendMisconfigured.of(error)


def _error_message(body: bytes, redactor: Redactor) -> str:
    """The upstream's own error message, with every credential removed."""
    try:
        message = error_text(orjson.loads(body))
    except orjson.JSONDecodeError:
        return "upstream error"
    return redactor.text((message or "upstream error")[:4000])[:2000]


def _upstream_message(error: UpstreamError, redactor: Redactor) -> str:
    """The upstream's words: from its error body, else from an error event in its stream."""
    if error.body:
        return _error_message(error.body, redactor)
    return redactor.text(error.message[:4000])[:2000] or "upstream error"


_PARAM = re.compile(r"[A-Za-z0-9_.\[\]-]{1,100}")  # a field path: `messages[2].content`, `tools.0.type`


def _upstream_param(error: UpstreamError, redactor: Redactor) -> str | None:
    """The request field the upstream's error names (`param`, OpenAI's spelling, at the top
    or under `error`), when it reads as a field path: SDK users read `e.param`."""
    try:
        body = orjson.loads(error.body) if error.body else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    param = (inner if isinstance(inner, dict) else body).get("param")
    return redactor.text(param) if isinstance(param, str) and _PARAM.fullmatch(param) else None


# On a 502 that the same request would meet again however soon it came back (the gateway's
# own configuration or credentials, an answer too large to relay): the openai and anthropic
# SDKs read `x-should-retry` before their status rule, which retries every 5xx twice by
# default, each retry another round of the fallback loop against the same upstreams.
NOT_AGAIN: Final = {"x-should-retry": "false"}
# The failures of that kind. The header goes only when every failure of the call was one of
# them (`mendable` false): after a backend's passing failure (a 503, a timeout) the client's
# retry may well find that backend recovered, whichever failure came last.
_MET_AGAIN = (BackendMisconfigured, AuthRejected, ResponseTooLarge)


def client_error(
    error: UpstreamError | None,
    decision: RoutingDecision,
    outcome: CallOutcome | None = None,
    redactor: Redactor | None = None,
    *,
    mendable: bool = False,
) -> GatewayError:
    """What the client sees when no candidate answered. Never echoes upstream credentials.
    `mendable`: a failure of the call other than `error` may pass (a backend overloaded, one
    passed over uncalled), so the client is not told never to retry (`NOT_AGAIN`)."""
    redactor = redactor or Redactor(())
    not_again = None if mendable else NOT_AGAIN
    if outcome is not None:
        tried = ", ".join(f"{a.backend}/{a.model} ({a.error})" for a in outcome.attempts)
    else:
        tried = ", ".join(f"{o.backend}/{o.model}" for o in decision.candidates[: decision.max_attempts])
    if error is None:
        return GatewayError(
            503, f"No backend could take the request (tried: {tried or 'none'}).", code="no_backend_available"
        )
    if isinstance(error, UpstreamTimeout):
        return GatewayError(504, f"The upstream timed out (tried: {tried}).", code="upstream_timeout")
    if isinstance(error, UpstreamUnreachable):
        return GatewayError(502, f"The upstream could not be reached (tried: {tried}).", code="upstream_unreachable")
    if isinstance(error, ContextTooLong):
        param = PROMPT_PARAM.get(outcome.endpoint, "messages") if outcome is not None else "messages"
        message = _upstream_message(error, redactor)
        prompt_tokens, maximum = context_figures(message) or (None, None)
        return ContextLengthExceeded(message, param=param, prompt_tokens=prompt_tokens, maximum=maximum)
    if isinstance(error, BackendMisconfigured):
        # Not the client's mistake: the upstream does not know what the gateway asked it for.
        return GatewayError(
            502,
            f"The gateway's backend for this model is misconfigured; its operators can see why in "
            f"the gateway's log (tried: {tried}).",
            code="backend_misconfigured",
            headers=dict(not_again) if not_again else None,
        )
    if isinstance(error, RequestNotEncodable):  # the client's body, never sent: its own words
        return GatewayError(400, error.message, code="request_not_encodable")
    if isinstance(error, ResponseTooLarge):
        # The request's doing, most often (a large batch of float embeddings): named as such,
        # so the ledger's row says so and the rankings' uptime leaves it out.
        return GatewayError(
            502,
            f"The upstream's answer is too large to relay ({error.message}); ask for less in one request "
            f"(tried: {tried}).",
            code=error.reason,
            headers=dict(not_again) if not_again else None,
        )
    if isinstance(error, MalformedAnswer):
        return GatewayError(
            502,
            f"The upstream answered with output that is not {error.expected} (tried: {tried}).",
            code="upstream_malformed_response",
        )
    status = error.status or 502
    if isinstance(error, RateLimited):
        message, headers = f"Every backend is rate limited (tried: {tried}).", None
        if error.retry_after is not None:
            # Rounded up: `Retry-After: 0.5` from every backend is not "retry now" (int() said 0).
            seconds = math.ceil(error.retry_after)
            headers = retry_headers(seconds)  # an upstream's hour, in words only (SDK_WAIT_MAX_S)
            if seconds > SDK_WAIT_MAX_S:
                message += f" Retry after {seconds}s."
        return GatewayError(429, message, code="rate_limit_exceeded", headers=headers)
    if isinstance(error, AuthRejected):
        return GatewayError(
            502,
            f"A backend rejected the gateway's own credentials (tried: {tried}).",
            code="upstream_auth_failed",
            headers=dict(not_again) if not_again else None,
        )
    if 400 <= status < 500:
        # The upstream judged the request itself invalid: pass its message on, as OpenAI would.
        return GatewayError(
            status,
            _upstream_message(error, redactor),
            code="upstream_rejected_request",
            param=_upstream_param(error, redactor),
        )
    if error.status is None:  # no status to name: its answer broke off, or was not HTTP
        return GatewayError(502, f"The upstream's answer failed (tried: {tried}).", code="upstream_error")
    message = f"The upstream failed with status {status} (tried: {tried})."
    if status in _OVERLOADED and (outcome is None or all(a.status in _OVERLOADED for a in outcome.attempts if a.error)):
        return UpstreamOverloaded(message)
    return GatewayError(502, message, code="upstream_error")


# An upstream's "overloaded": 503, and Anthropic's own 529 (also its stream's `overloaded_error`).
_OVERLOADED = frozenset({503, 529})
