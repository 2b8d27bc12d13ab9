"""The fallback loop: try the decision's candidates in turn until one answers.

A candidate's answer is committed to the client only once it has produced content: a
non-streamed body read whole, a stream's first content event. Until then any failure
(connect error, timeout, 429, 5xx, context overflow, an error event in a 200 stream)
moves on to the next candidate, so the client never sees a backend fail that another
could serve. After that, no retry: bytes have reached the client.

Bounded: at most `max_attempts` calls and `deadline_s` for all of them. Each candidate is
called once; a backend that already failed this request (another of its models is next)
is called again only after a jittered backoff, or after its `Retry-After` when that is
short enough (`gateway.fallback`). A small explicit loop rather than tenacity: the loop
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
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from gateway.backends.base import (
    CHAT_COMPLETIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    Backend,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from gateway.backends.pool import BackendSet
from gateway.config.schema import BackendConfig, FallbackSettings
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import ChatRequest, upstream_payload
from gateway.protocol.errors import GatewayError
from gateway.protocol.redact import Redactor
from gateway.proxy.formats import CHAT, AnswerFormat, StreamAccountant, UpstreamCall, error_text
from gateway.proxy.outcome import Attempt, CallOutcome, Observers
from gateway.proxy.relay import MalformedAnswer, StreamFailedEarly
from gateway.proxy.usage import Usage
from gateway.routing.pipeline import RoutingDecision

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


class BackendMisconfigured(UpstreamError):
    """The upstream does not know the model the gateway asked for (its `upstream_id`), or
    the URL: the gateway's configuration is wrong, not the client's request. Another
    candidate may be configured right; the circuit counts it, as it will not heal alone."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__("status", error.message, status=error.status, body=error.body)

    @property
    def retryable(self) -> bool:
        return True

    @property
    def reason(self) -> str:
        return "misconfigured"


# Asked per candidate: the call that candidate gets, or None when the offer cannot serve the
# request (skipped: not an attempt). The ingress's own (`gateway.api.ingress`).
Plan = Callable[[Offer, Backend], UpstreamCall | None]


@dataclass(slots=True)
class OpenedAnswer:
    """A candidate's answer, committed to: ready to be sent to the client."""

    offer: Offer
    response: UpstreamResponse
    upstream_s: float  # time spent waiting on upstreams so far (all attempts)
    body: bytes = b""  # non-streamed: the whole body
    usage: Usage | None = None  # non-streamed: its usage
    prefix: bytes = b""  # streamed: events read before committing
    accountant: StreamAccountant | None = None
    ended: bool = False  # streamed: upstream finished while pre-reading
    # The wire format the answer is in (the call's): the edge sends it as is when that is
    # its own API's, and translates it otherwise.
    format: AnswerFormat = CHAT


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
) -> OpenedAnswer:
    """`backends`: the adapters of the config snapshot the request was routed with (leased
    by the caller), so a reload meanwhile changes nothing under this request. `snapshot`, that
    config, gives the redactor of every configured key (built once per snapshot); without it
    (tests) one is built from the adapters' keys. `plan` says what each candidate is asked
    (default: `chat` as chat completions); a candidate it returns None for is skipped."""
    redactor = snapshot.redactor if snapshot is not None else Redactor(b.config.api_key for b in backends)
    last_error: UpstreamError | None = None
    upstream_s = 0.0
    deadline = time.perf_counter() + decision.deadline_s
    failed_backends: dict[str, UpstreamError] = {}  # backend -> its last failure in this request
    attempts = 0
    for offer in decision.candidates:
        if attempts >= decision.max_attempts:
            break
        backend = backends.get(offer.backend)
        if backend is None:
            continue
        if plan is None:
            call = UpstreamCall(CHAT_COMPLETIONS, upstream_payload(chat, offer.upstream_id), CHAT)
        else:
            planned = plan(offer, backend)
            if planned is None:
                continue  # this offer cannot serve this request: not an attempt
            call = planned
        earlier = failed_backends.get(offer.backend)
        if earlier is not None:
            wait = retry_wait(earlier, attempts, decision.retry)
            if wait is None or time.perf_counter() + wait >= deadline:
                continue  # rate limited for longer than we may wait: leave this backend alone
            if wait > 0:
                await asyncio.sleep(wait)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        attempts += 1
        outcome.offer = offer
        observers.attempt_started(offer)
        started = time.perf_counter()
        call_headers = headers if call.headers is None else {**headers, **call.headers}
        request = UpstreamRequest(offer, call.payload, chat.stream, call_headers, call.path, max_response_bytes)
        # Until its first content, a stream may take the backend's first-byte allowance; a
        # non-streamed answer (whose headers come only once it is generated) its whole
        # `timeout_s`; either within what is left of the request's deadline. Past that,
        # another candidate gets a turn.
        limit = min(remaining, first_content_timeout(backend.config) if chat.stream else backend.config.timeout_s)
        try:
            try:
                async with asyncio.timeout(limit):
                    response = await backend.send(request)
                    opened = await (
                        _pre_read_stream(offer, response, chat, redactor, call.format)
                        if chat.stream
                        else _read_body(offer, response, call.format)
                    )
            except TimeoutError:
                raise UpstreamError("timeout", f"{offer.backend}: no answer within {limit:.1f}s") from None
        except Exception as exc:
            error = _as_upstream_error(exc, offer)
            error = _misconfigured(error, offer, redactor, snapshot) or error
            elapsed = time.perf_counter() - started
            upstream_s += elapsed
            attempt = Attempt(offer.backend, offer.model, error.reason, error.status, elapsed, error.retry_after)
            outcome.attempts.append(attempt)
            observers.attempt_finished(offer, attempt, None)
            last_error = error
            failed_backends[offer.backend] = error
            if not (decision.fallback and worth_another_candidate(error)):
                break
            continue
        except BaseException:
            # Cancelled (the client left, or shutdown's deadline passed): this attempt ends
            # too, and observers pairing attempt_started with attempt_finished must hear it.
            attempt = Attempt(offer.backend, offer.model, "cancelled", None, time.perf_counter() - started)
            outcome.attempts.append(attempt)
            observers.attempt_finished(offer, attempt, None)
            raise
        elapsed = time.perf_counter() - started
        opened.upstream_s = upstream_s + elapsed
        ttft = (
            (opened.accountant.first_content_at - started)
            if opened.accountant and opened.accountant.first_content_at
            else None
        )
        outcome.ttft_s = ttft if chat.stream else elapsed
        attempt = Attempt(offer.backend, offer.model, None, response.status, elapsed)
        outcome.attempts.append(attempt)
        if opened.accountant is not None:
            opened.accountant.report_to(attempt)
        if not chat.stream:
            observers.attempt_finished(offer, attempt, elapsed)
        return opened
    raise client_error(last_error, decision, outcome, redactor)


def _as_upstream_error(exc: Exception, offer: Offer) -> UpstreamError:
    """Any failure of an attempt is the backend's: counted against it, and the next candidate tried."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, StreamFailedEarly):
        return UpstreamError("status", str(exc), status=exc.status or 502)
    # Adapters classify their own failures; anything else escaping one (an HTTP client's
    # exception it did not map, a bug) still fails only this attempt.
    log.warning("%s: attempt failed with %s: %s", offer.backend, type(exc).__name__, exc)
    return UpstreamError("protocol", f"{offer.backend}: {type(exc).__name__}")


def first_content_timeout(config: BackendConfig) -> float:
    return config.first_byte_timeout_s or config.timeout_s


def worth_another_candidate(error: UpstreamError) -> bool:
    """Another candidate may succeed: the failure was the backend's, not the request's.

    401/403 mean the gateway's own key for that backend is wrong; other backends have theirs.
    """
    return error.retryable or error.status in (401, 403)


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
    return OpenedAnswer(offer, response, 0.0, body=body, usage=format.check_body(offer, body), format=format)


async def _pre_read_stream(
    offer: Offer, response: UpstreamResponse, chat: ChatRequest, redactor: Redactor, format: AnswerFormat
) -> OpenedAnswer:
    accountant = format.accountant(include_usage=chat.include_usage, redactor=redactor)
    parts: list[bytes] = []
    iterator = response.aiter_bytes()
    ended = True
    try:
        async for chunk in iterator:
            parts.append(accountant.feed(chunk))
            if accountant.started:
                ended = False
                break
    except BaseException:
        await response.aclose()
        raise
    if ended:
        try:
            parts.append(accountant.flush())  # may fail the attempt: a malformed tail, an error event
        finally:
            await response.aclose()
        if not accountant.saw_done and not accountant.content_events:
            raise UpstreamError("protocol", f"{offer.backend}: stream ended before any content")
    opened = OpenedAnswer(
        offer, response, 0.0, prefix=b"".join(parts), accountant=accountant, ended=ended, format=format
    )
    opened.response = _Continuation(response, iterator) if not ended else response
    return opened


class _Continuation(UpstreamResponse):
    """The rest of a stream whose first events were already read."""

    def __init__(self, response: UpstreamResponse, iterator) -> None:
        self._response = response
        self._iterator = iterator
        self.media_type = response.media_type

    def aiter_bytes(self):
        return self._iterator  # the same iterator, not a generator around it: one layer less per chunk

    async def aclose(self) -> None:
        await self._response.aclose()


def _misconfigured(
    error: UpstreamError, offer: Offer, redactor: Redactor, snapshot: ConfigSnapshot | None
) -> BackendMisconfigured | None:
    """The failure as a misconfiguration of the gateway, if the upstream says so; logged
    (with the upstream's words, redacted) once per backend and model per config snapshot."""
    if error.kind != "status" or error.status not in (400, 404, 422):
        return None
    detail = _upstream_message(error, redactor)
    if error.status != 404 and not _NO_SUCH_MODEL.search(detail):
        return None
    logged: set | None = snapshot.memo.setdefault("misconfigured_logged", set()) if snapshot is not None else None
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
    return BackendMisconfigured(error)


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


def client_error(
    error: UpstreamError | None,
    decision: RoutingDecision,
    outcome: CallOutcome | None = None,
    redactor: Redactor | None = None,
) -> GatewayError:
    """What the client sees when no candidate answered. Never echoes upstream credentials."""
    redactor = redactor or Redactor(())
    if outcome is not None:
        tried = ", ".join(f"{a.backend}/{a.model} ({a.error})" for a in outcome.attempts)
    else:
        tried = ", ".join(f"{o.backend}/{o.model}" for o in decision.candidates[: decision.max_attempts])
    if error is None:
        return GatewayError(
            503, f"No backend could take the request (tried: {tried or 'none'}).", code="no_backend_available"
        )
    if error.kind == "timeout":
        return GatewayError(504, f"The upstream timed out (tried: {tried}).", code="upstream_timeout")
    if error.kind == "connect":
        return GatewayError(502, f"The upstream could not be reached (tried: {tried}).", code="upstream_unreachable")
    if error.kind == "context_length":
        return GatewayError(400, _upstream_message(error, redactor), code="context_length_exceeded", param="messages")
    if isinstance(error, BackendMisconfigured):
        # Not the client's mistake: the upstream does not know what the gateway asked it for.
        return GatewayError(
            502,
            f"The gateway's backend for this model is misconfigured; its operators can see why in "
            f"the gateway's log (tried: {tried}).",
            code="backend_misconfigured",
        )
    if isinstance(error, MalformedAnswer):
        return GatewayError(
            502,
            f"The upstream answered with output that is not a valid chat completion (tried: {tried}).",
            code="upstream_malformed_response",
        )
    status = error.status or 502
    if status == 429:
        headers = {"retry-after": str(int(error.retry_after))} if error.retry_after is not None else None
        return GatewayError(
            429, f"Every backend is rate limited (tried: {tried}).", code="rate_limit_exceeded", headers=headers
        )
    if status in (401, 403):
        return GatewayError(
            502, f"A backend rejected the gateway's own credentials (tried: {tried}).", code="upstream_auth_failed"
        )
    if 400 <= status < 500:
        # The upstream judged the request itself invalid: pass its message on, as OpenAI would.
        return GatewayError(status, _upstream_message(error, redactor), code="upstream_rejected_request")
    return GatewayError(502, f"The upstream failed with status {status} (tried: {tried}).", code="upstream_error")
