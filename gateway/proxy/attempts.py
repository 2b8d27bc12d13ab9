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
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from dataclasses import dataclass

import orjson

from gateway.backends.base import (
    CHAT_COMPLETIONS,
    DEFAULT_MAX_RESPONSE_BYTES,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from gateway.backends.pool import BackendSet
from gateway.config.schema import BackendConfig, FallbackSettings
from gateway.config.snapshot import Offer
from gateway.protocol.chat import ChatRequest, upstream_payload
from gateway.protocol.errors import GatewayError
from gateway.proxy.outcome import Attempt, CallOutcome, Observers
from gateway.proxy.relay import SseAccountant, StreamFailedEarly
from gateway.proxy.usage import Usage, usage_from_json_body
from gateway.routing.pipeline import RoutingDecision

log = logging.getLogger("gateway.proxy")


@dataclass(slots=True)
class OpenedAnswer:
    """A candidate's answer, committed to: ready to be sent to the client."""

    offer: Offer
    response: UpstreamResponse
    upstream_s: float  # time spent waiting on upstreams so far (all attempts)
    body: bytes = b""  # non-streamed: the whole body
    usage: Usage | None = None  # non-streamed: its usage
    prefix: bytes = b""  # streamed: events read before committing
    accountant: SseAccountant | None = None
    ended: bool = False  # streamed: upstream finished while pre-reading


async def open_answer(
    chat: ChatRequest,
    decision: RoutingDecision,
    backends: BackendSet,
    observers: Observers,
    outcome: CallOutcome,
    headers: dict[str, str],
    *,
    path: str = CHAT_COMPLETIONS,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> OpenedAnswer:
    """`backends`: the adapters of the config snapshot the request was routed with (leased
    by the caller), so a reload meanwhile changes nothing under this request."""
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
        payload = upstream_payload(chat, offer.upstream_id)
        request = UpstreamRequest(offer, payload, chat.stream, headers, path, max_response_bytes)
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
                        _pre_read_stream(offer, response, chat) if chat.stream else _read_body(offer, response)
                    )
            except TimeoutError:
                raise UpstreamError("timeout", f"{offer.backend}: no answer within {limit:.1f}s") from None
        except Exception as exc:
            error = _as_upstream_error(exc, offer)
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
        if not chat.stream:
            observers.attempt_finished(offer, attempt, elapsed)
        return opened
    raise client_error(last_error, decision, outcome)


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


async def _read_body(offer: Offer, response: UpstreamResponse) -> OpenedAnswer:
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    if b'"error"' in body[:200] and b'"choices"' not in body:
        # Some upstreams answer 200 with an error object; treat like the status it names.
        raise StreamFailedEarly(_error_message(body), 502)
    return OpenedAnswer(offer, response, 0.0, body=body, usage=usage_from_json_body(body))


async def _pre_read_stream(offer: Offer, response: UpstreamResponse, chat: ChatRequest) -> OpenedAnswer:
    accountant = SseAccountant(strip_usage=not chat.include_usage, hold_done=chat.include_usage)
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
        parts.append(accountant.flush())
        await response.aclose()
        if not accountant.saw_done and not accountant.content_events:
            raise UpstreamError("protocol", f"{offer.backend}: stream ended before any content")
    opened = OpenedAnswer(offer, response, 0.0, prefix=b"".join(parts), accountant=accountant, ended=ended)
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


_SECRET = re.compile(r"\b(sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)


def _error_message(body: bytes) -> str:
    """The upstream's own error message, with anything shaped like a credential removed."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "upstream error"
    message = str((err.get("message") if isinstance(err, dict) else err) or "upstream error")
    return _SECRET.sub("[redacted]", message)[:2000]


def _upstream_message(error: UpstreamError) -> str:
    """The upstream's words: from its error body, else from an error event in its stream."""
    if error.body:
        return _error_message(error.body)
    return _SECRET.sub("[redacted]", error.message)[:2000] or "upstream error"


def client_error(
    error: UpstreamError | None, decision: RoutingDecision, outcome: CallOutcome | None = None
) -> GatewayError:
    """What the client sees when no candidate answered. Never echoes upstream credentials."""
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
        return GatewayError(400, _upstream_message(error), code="context_length_exceeded", param="messages")
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
        return GatewayError(status, _upstream_message(error), code="upstream_rejected_request")
    return GatewayError(502, f"The upstream failed with status {status} (tried: {tried}).", code="upstream_error")
