"""POST /v1/chat/completions: the hot path.

Read the body once, route, open an answer through the fallback loop, then relay bytes.
A plain Starlette route (no FastAPI dependency solving) because every microsecond here is
paid on every call. Accounting happens in the observers, off the response's critical path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson
from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from gateway.api.state import AppState
from gateway.backends.base import UpstreamError
from gateway.protocol.chat import ChatRequest, parse_chat_request
from gateway.protocol.errors import GatewayError
from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.proxy.attempts import OpenedAnswer, open_answer
from gateway.proxy.outcome import CallOutcome, price_usd
from gateway.proxy.usage import Usage
from gateway.routing.pipeline import decide

log = logging.getLogger("gateway.proxy")


def register(app: FastAPI) -> None:
    for path in FAST_ROUTES:
        app.router.add_route(path, chat_completions, methods=["POST"])


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"Request body is {declared} bytes; the limit is {limit}.", code="request_too_large")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise GatewayError(400, "The client went away while sending the body.", code="client_disconnected") from None
    return b"".join(chunks)


async def chat_completions(request: Request) -> Response:
    t0 = time.perf_counter()
    state: AppState = request.app.state.gateway
    request_id = request.headers.get("x-request-id") or state.request_ids.next()
    base_headers = {"x-request-id": request_id}
    decision = None
    try:
        principal = state.auth.authenticate(request)
        snapshot = state.config.current  # this request's config, whatever reloads happen meanwhile
        chat = parse_chat_request(await read_body(request, snapshot.config.gateway.max_body_bytes))
        decision = decide(chat, request.headers, snapshot, state.stats)
        # Key, team and model limits on what routing resolved: 403 / 429, or the ticket to settle.
        ticket = await state.limiter.admit(principal, chat, decision, snapshot)
    except GatewayError as exc:
        state.metrics.request_rejected(exc.status, decision.route if decision else None)
        return exc.to_response(base_headers)

    headers = request.headers
    outcome = CallOutcome(
        request_id=request_id,
        requested_model=chat.model,
        stream=chat.stream,
        route=decision.route,
        task=decision.task,
        app=headers.get("http-referer") or headers.get("referer"),
        app_title=headers.get("x-openrouter-title") or headers.get("x-title"),
        api_key_name=principal.key_name,
        team=principal.team,
    )
    state.limiter.track(outcome, ticket)  # settled by the limiter's call_finished
    if ticket is not None:
        base_headers.update(ticket.headers)  # x-ratelimit-*
    base_headers["x-gateway-task"] = decision.task
    if decision.route:
        base_headers["x-gateway-route"] = decision.route
    try:
        opened = await _open_cancellable(
            request, chat, decision, state, outcome, {"x-request-id": request_id}, snapshot
        )
    except GatewayError as exc:
        outcome.status, outcome.error = exc.status, exc.code or exc.type
        _finish(state, outcome, chat, t0, _own_time(t0, outcome))
        if outcome.offer:
            base_headers["x-gateway-backend"] = outcome.offer.backend
            base_headers["x-gateway-model"] = outcome.offer.model
        base_headers["x-gateway-overhead-ms"] = f"{outcome.overhead_s * 1000:.2f}"
        return exc.to_response(base_headers)
    except asyncio.CancelledError:
        outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
        _finish(state, outcome, chat, t0, _own_time(t0, outcome))
        raise

    offer = opened.offer
    base_headers["x-gateway-backend"] = offer.backend
    base_headers["x-gateway-model"] = offer.model
    overhead_s = time.perf_counter() - t0 - opened.upstream_s
    base_headers["x-gateway-overhead-ms"] = f"{max(overhead_s, 0.0) * 1000:.2f}"
    if not chat.stream:
        outcome.usage = opened.usage
        _finish(state, outcome, chat, t0, overhead_s)
        return Response(opened.body, status_code=200, media_type="application/json", headers=base_headers)
    # Proxies in front (nginx ingress) must not buffer or cache an event stream.
    base_headers["cache-control"] = "no-cache"
    base_headers["x-accel-buffering"] = "no"
    return _RelayResponse(state, opened, outcome, chat, t0, headers=base_headers)


def _own_time(t0: float, outcome: CallOutcome) -> float:
    return time.perf_counter() - t0 - sum(a.duration_s for a in outcome.attempts)


async def _open_cancellable(
    request: Request, chat: ChatRequest, decision, state: AppState, outcome: CallOutcome, headers, snapshot
) -> OpenedAnswer:
    """Run the fallback loop, cancelling upstream work if the client disconnects meanwhile."""
    task = asyncio.current_task()
    receive = request.receive

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if task is not None:
                    task.cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await open_answer(chat, decision, state.backends, state.observers, outcome, headers, snapshot)
    finally:
        watcher.cancel()


class _RelayResponse(StreamingResponse):
    """The SSE answer. If the client leaves before the relay's first step (Starlette then
    cancels a generator that never started, so its `finally` never runs), the upstream is
    still closed and the call still accounted, here."""

    def __init__(
        self,
        state: AppState,
        opened: OpenedAnswer,
        outcome: CallOutcome,
        chat: ChatRequest,
        t0: float,
        headers: dict[str, str],
    ) -> None:
        self._relay_args = (state, opened, outcome, chat, t0)
        self._relay_started = False
        super().__init__(self._body(), media_type="text/event-stream", headers=headers)

    async def _body(self) -> AsyncIterator[bytes]:
        self._relay_started = True
        async for part in _relay(*self._relay_args):
            yield part

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._relay_started:
                state, opened, outcome, chat, t0 = self._relay_args
                outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
                await opened.response.aclose()
                state.observers.attempt_finished(opened.offer, outcome.attempts[-1], outcome.ttft_s)
                _finish(state, outcome, chat, t0, time.perf_counter() - t0 - opened.upstream_s)


async def _relay(
    state: AppState, opened: OpenedAnswer, outcome: CallOutcome, chat: ChatRequest, t0: float
) -> AsyncIterator[bytes]:
    accountant = opened.accountant
    assert accountant is not None
    # The gateway's own time: routing and setup before the headers, then per-chunk accounting.
    overhead_s = time.perf_counter() - t0 - opened.upstream_s
    last = outcome.attempts[-1]
    attempt_started = time.perf_counter() - last.duration_s
    try:
        if opened.prefix:
            yield opened.prefix
        if not opened.ended:
            async for chunk in opened.response.aiter_bytes():
                t = time.perf_counter()
                out = accountant.feed(chunk)
                overhead_s += time.perf_counter() - t
                if out:
                    yield out
            tail = accountant.flush()
            if tail:
                yield tail
        if accountant.done_held:
            # The client asked for usage and the upstream sent none: estimate it, say so in
            # the ledger, and still end the stream the way OpenAI does.
            outcome.usage = Usage(estimate_prompt_tokens(chat.payload), accountant.content_events, estimated=True)
            yield accountant.closing_events(outcome.usage)
    except UpstreamError as exc:
        # Bytes already reached the client: no fallback. Tell the SDK the stream broke.
        outcome.status, outcome.error = 502, exc.reason
        log.warning("stream from %s broke mid-answer: %s", opened.offer.backend, exc.message)
        error = {
            "error": {
                "message": "The upstream stream broke off.",
                "type": "upstream_error",
                "param": None,
                "code": exc.reason,
            }
        }
        yield b"data: " + orjson.dumps(error) + b"\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
        raise
    finally:
        await opened.response.aclose()
        last.duration_s = time.perf_counter() - attempt_started
        if outcome.status >= 400:
            last.error = outcome.error
        state.observers.attempt_finished(opened.offer, last, outcome.ttft_s)
        outcome.usage = accountant.usage or outcome.usage
        if outcome.usage is None:
            # The upstream sent no usage: estimate and say so.
            outcome.usage = Usage(estimate_prompt_tokens(chat.payload), accountant.content_events, estimated=True)
        _finish(state, outcome, chat, t0, overhead_s)


def _finish(state: AppState, outcome: CallOutcome, chat: ChatRequest, t0: float, overhead_s: float) -> None:
    outcome.latency_s = time.perf_counter() - t0
    outcome.overhead_s = max(overhead_s, 0.0)
    if outcome.offer is not None and outcome.status < 400 and outcome.usage is None:
        outcome.usage = Usage(estimate_prompt_tokens(chat.payload), 0, estimated=True)
    if outcome.offer is not None and outcome.usage is not None:
        outcome.cost_usd = price_usd(outcome.offer, outcome.usage)
    state.observers.call_finished(outcome)


# Served by gateway.api.fastpath ahead of FastAPI's middleware (also registered on the
# FastAPI router, so the paths are listed and reachable however the app is mounted).
FAST_ROUTES = {"/v1/chat/completions": chat_completions, "/chat/completions": chat_completions}
