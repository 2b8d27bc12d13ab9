"""The one request path every ingress API shares, as a raw ASGI handler.

`handle(scope, receive, send, ingress)`: authenticate, read the body once, parse it (the
ingress's own request shape, and the chat request routing reads), route, admit through the
limits, open an answer through the fallback loop, then write it to the ASGI `send` directly:
one `http.response.start`, then the body (streams: each relayed chunk as it arrives, by
`gateway.api.stream_relay`). An `Ingress` (`gateway.api.edge`) says what differs per API: how
its body is parsed, what each candidate is asked (native pass-through or the chat
translation), how an answer becomes its own shape, and how its errors look. Chat completions
is the identity (`gateway.api.chat`); Anthropic Messages, Responses, embeddings and
completions are translations at this edge into the same pipeline.

No framework request/response objects on the way out: Starlette's response classes iterate
and watch for disconnects per chunk, which cost more than the relay itself (issue 14). A
client leaving cancels the request's work (the upstream call included): its connection
tells the handler (`gateway.api.leave`), with no task per request, and nothing is checked
per chunk. Accounting happens in the observers, off the response's critical path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from functools import partial
from typing import Any

from starlette.datastructures import Address
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.api.auth import NotYetKnown
from gateway.api.edge import Ingress, IngressRequest, ShuttingDown, broken_error
from gateway.api.leave import watch_client
from gateway.api.state import AppState
from gateway.api.stream_relay import relay_stream, run_completed, settle
from gateway.api.usage_cost import usd_text
from gateway.api.wire import send_head_and_body
from gateway.backends.base import Backend
from gateway.backends.pool import BackendSet
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import ChatRequest
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer, open_answer
from gateway.proxy.continuation import RescueContext, StreamRescue
from gateway.proxy.formats import ChatFormat, UpstreamCall
from gateway.proxy.outcome import CallOutcome
from gateway.proxy.usage import Usage
from gateway.routing.candidates import may_answer_natively
from gateway.routing.pipeline import RoutingDecision, decide

log = logging.getLogger("gateway.proxy")

# A client's own x-request-id is kept only if it is short and plain: it is echoed, sent
# upstream and stored in the ledger, so anything else is replaced by a fresh id.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    # Proxies in front (nginx ingress) must not buffer or cache an event stream.
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def client_request_id(value: str | None) -> str | None:
    """The client's x-request-id if it is at most 128 characters of [A-Za-z0-9._:-], else None."""
    if value and len(value) <= 128 and _CLIENT_REQUEST_ID.fullmatch(value):
        return value
    return None


class HeadersOnly:
    """What authentication reads of a request: its headers, and the peer's address (failed
    authentications are throttled per client address)."""

    __slots__ = ("_peer", "headers")

    def __init__(self, headers: dict[str, str], client: tuple[str, int] | None) -> None:
        self.headers = headers
        self._peer = client

    @property
    def client(self) -> Address | None:
        """Built when read: only a failed authentication reads it (about 0.5 us a request)."""
        peer = self._peer
        return Address(*peer) if peer else None


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a request other routes read the same way (explain)."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit)


async def receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"Request body is {declared} bytes; the limit is {limit}.", code="request_too_large")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError(400, "The client went away while sending the body.", code="client_disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"Request body exceeds the limit of {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def handle(scope: Scope, receive: Receive, send: Send, ingress: Ingress) -> None:
    t0 = time.perf_counter()
    # This request's task, looked up once: the client watch and each attempt's time limit
    # cancel it (`asyncio.current_task` is a Python function on 3.11).
    task = asyncio.current_task()
    state: AppState = scope["app"].state.gateway
    # Decoded once into a plain dict (ASGI names are lower-case already): auth, routing and
    # accounting each read a few headers, and a framework Headers object scans the raw list
    # on every lookup.
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    request_id = client_request_id(headers.get("x-request-id")) or state.request_ids.next()
    named = request_id.encode()
    out_headers = [(b"x-request-id", named)]
    if ingress.request_id_header is not None:  # Messages: Anthropic's `request-id` too
        out_headers.append((ingress.request_id_header, named))
    decision = None
    backends: BackendSet | None = None
    try:
        try:
            caller = HeadersOnly(headers, scope.get("client"))
            try:
                principal = state.auth.authenticate(caller, settled=False)
            except NotYetKnown:  # perhaps made a moment ago on another replica: look again
                principal = await state.auth.after_catch_up(caller)
            snapshot = state.config.current  # this request's config, whatever reloads happen meanwhile
            backends = state.backends.acquire()  # and its adapters, taken in the same step
            body = await receive_body(receive, headers.get("content-length"), snapshot.config.gateway.max_body_bytes)
            request = ingress.parse(body, headers)
            if ingress.prepares:
                request = await ingress.prepare(request, principal, state)
            chat = request.chat
            if not chat.translated and not may_answer_natively(chat.fields, chat.model, snapshot, ingress.endpoint):
                # Every candidate will be asked in chat: translate now, and route on that
                # rather than on a view of the body (which would cost its count as well).
                chat.translate()
            decision = decide(chat, headers, snapshot, state.stats, ingress.endpoint)
            if (
                ingress.may_need_native
                and ingress.native_only(request)
                and not any(ingress.endpoint in o.apis for o in decision.candidates)
            ):
                chat.translate()  # no candidate takes it natively: the translation's own 400
            # Key, team and model limits on what routing resolved: 403 / 429, or the ticket to settle.
            ticket = await state.limiter.admit(principal, chat, decision, snapshot)
        except GatewayError as exc:
            state.metrics.request_rejected(exc.status, decision.route if decision else None)
            await send_error(send, ingress, exc, request_id, out_headers)
            return
        except Exception:
            # A fault of the gateway's own before any backend was asked (parsing, routing,
            # limits): logged with its traceback and counted as a 500, answered in the
            # ingress's own error shape with the request's id, as every other error here.
            log.exception("internal error on %s before any backend was asked (request %s)", scope["path"], request_id)
            state.metrics.request_rejected(500, decision.route if decision else None)
            internal = GatewayError(500, "Internal gateway error.", code="internal_error")
            await send_error(send, ingress, internal, request_id, out_headers)
            return
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
            endpoint=ingress.endpoint,
        )
        state.limiter.track(outcome, ticket)  # settled by the limiter's call_finished
        if ticket is not None:
            out_headers.extend((k.encode(), v.encode()) for k, v in ticket.headers.items())  # x-ratelimit-*
        out_headers.append((b"x-gateway-task", decision.task.encode()))
        if decision.route:
            out_headers.append((b"x-gateway-route", decision.route.encode()))
        limit = ingress.answer_bound(request, snapshot.config.gateway.max_response_bytes)
        await _answer(
            state,
            scope,
            send,
            receive,
            ingress,
            request,
            decision,
            backends,
            outcome,
            out_headers,
            t0,
            limit,
            snapshot,
            task,
        )
    finally:
        if backends is not None:
            backends.release()


async def _answer(
    state: AppState,
    scope: Scope,
    send: Send,
    receive: Receive,
    ingress: Ingress,
    request: IngressRequest,
    decision: RoutingDecision,
    backends: BackendSet,
    outcome: CallOutcome,
    out_headers: list[tuple[bytes, bytes]],
    t0: float,
    max_response_bytes: int,
    snapshot: ConfigSnapshot,
    task: asyncio.Task[Any] | None,
) -> None:
    chat = request.chat
    watch = watch_client(scope, receive, task)
    plan = ingress.plan

    def plan_for(offer: Offer, backend: Backend) -> UpstreamCall | None:
        return plan(request, offer, backend)

    opened: OpenedAnswer | None = None
    try:
        try:
            opened = await open_answer(
                chat,
                decision,
                backends,
                state.observers,
                outcome,
                {"x-request-id": outcome.request_id},
                snapshot,
                plan=plan_for,
                max_response_bytes=max_response_bytes,
                task=task,
            )
        except GatewayError as exc:
            watch.stop()
            outcome.status, outcome.error = exc.status, exc.code or exc.type
            _finish(state, outcome, chat, t0, _own_time(t0, outcome))
            if outcome.offer:
                out_headers.append((b"x-gateway-backend", outcome.offer.backend.encode()))
                out_headers.append((b"x-gateway-model", outcome.offer.model.encode()))
            out_headers.append((b"x-gateway-overhead-ms", f"{outcome.overhead_s * 1000:.2f}".encode()))
            await send_error(send, ingress, exc, outcome.request_id, out_headers)
            return
        offer = opened.offer
        out_headers.append((b"x-gateway-backend", offer.backend.encode()))
        out_headers.append((b"x-gateway-model", offer.model.encode()))
        overhead_s = time.perf_counter() - t0 - opened.upstream_s
        out_headers.append((b"x-gateway-overhead-ms", f"{max(overhead_s, 0.0) * 1000:.2f}".encode()))
        if not chat.stream:
            watch.stop()
            outcome.usage = opened.usage
            if outcome.usage is None:
                # No usage reported: the prompt estimated as `settle` would, and the answer's
                # own text counted (left at nothing, a backend that omits usage gave every
                # non-streamed answer free, past budgets; a stream counts its content). Fixed
                # here, before the body is written: a client that asked for its cost reads it.
                answer = opened.answer
                generated = opened.format.generated_tokens(answer) if answer is not None else 0
                outcome.usage = Usage(chat.all_prompt_tokens(), generated, estimated=True)
            try:
                body = ingress.body(request, opened)
            except GatewayError as exc:
                outcome.status, outcome.error = exc.status, exc.code or exc.type
                _finish(state, outcome, chat, t0, overhead_s)
                await send_error(send, ingress, exc, outcome.request_id, out_headers)
                return
            settle(outcome, chat, t0, overhead_s)
            out_headers.append((b"x-gateway-cost-usd", usd_text(outcome.cost_usd).encode()))
            try:
                if ingress.completes:
                    await run_completed(ingress, request, opened)
                out_headers.append(_JSON)
                out_headers.append((b"content-length", str(len(body)).encode()))
                await send_head_and_body(scope, send, 200, out_headers, body)
            finally:
                # Accounted once the answer is on its way, not before: the observers' work
                # (metrics, live stats, the limiter, the ledger's buffer) is off the client's
                # wait. Nothing awaits in between, so no other request runs before it.
                state.observers.call_finished(outcome)
            return
        out_headers.extend(_SSE_HEADERS)
        rescue = None
        # Chat chunks (translated ingresses read them too) are continuable; a native stream
        # when its ingress knows how to continue it in its own events. Only on another of the
        # decision's candidates: with one (a route of one model, a pinned offer) nothing is
        # built for it.
        native = None
        if len(decision.candidates) > 1 and (
            isinstance(opened.format, ChatFormat)  # chat chunks, relayed or translated
            or (native := ingress.native_resume(request, opened)) is not None
        ):
            headers = {"x-request-id": outcome.request_id}
            context = RescueContext(
                chat,
                decision,
                backends,
                state.observers,
                outcome,
                headers,
                snapshot,
                max_response_bytes,
                partial(ingress.chat_payload, request),
            )
            rescue = StreamRescue.for_stream(context, opened, native)
        await relay_stream(state, scope, send, watch, ingress, request, opened, outcome, t0, out_headers, rescue)
    except asyncio.CancelledError:
        if not watch.left:
            # Shutdown's grace period ran out, not the client: still accounted (a ledger row,
            # the key's concurrency ticket settled at once rather than at its deadline).
            waiting = opened is None and not outcome.latency_s  # nothing sent: no answer had begun
            if not outcome.latency_s:
                outcome.status, outcome.error = 503, "shutdown"
                _finish(state, outcome, chat, t0, _own_time(t0, outcome))
            if not waiting:
                raise  # the answer had begun (the relay ends a stream it cut itself)
            # Still waiting for an upstream: the client is told why in its API's error, as a
            # stream shutdown cuts is, not with the server's plain-text 500, and the server is
            # not handed a cancellation to log as a crash.
            if task is not None:
                task.uncancel()
            log.warning("request %s cut by the shutdown before its answer: answered 503", outcome.request_id)
            await send_error(send, ingress, broken_error(ShuttingDown()), outcome.request_id, out_headers)
            return
        # The client left: normal, not an error. Accounted as 499 (by the relay for streams
        # that had started), logged without a traceback, and not re-raised to the server.
        if task is not None:
            task.uncancel()
        if not outcome.latency_s:  # not accounted yet (_finish sets the latency)
            outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
            _finish(state, outcome, chat, t0, _own_time(t0, outcome))
        log.debug("client left before the answer was complete (request %s)", outcome.request_id)
    except Exception:
        # A fault of the gateway's own past the opening of the answer (an ingress's translation,
        # the stream's setup): the upstream answer is closed and the call accounted as a 500
        # (else its key's concurrency ticket would wait for its deadline), then raised on; the
        # front door logs it and answers 500 if nothing was sent yet.
        if opened is not None:
            await opened.response.aclose()
        if not outcome.latency_s:
            outcome.status, outcome.error = 500, "internal_error"
            _finish(state, outcome, chat, t0, _own_time(t0, outcome))
        raise
    finally:
        watch.stop()


def _own_time(t0: float, outcome: CallOutcome) -> float:
    return time.perf_counter() - t0 - sum(a.duration_s for a in outcome.attempts)


async def send_error(
    send: Send, ingress: Ingress, exc: GatewayError, request_id: str, out_headers: list[tuple[bytes, bytes]]
) -> None:
    status, error_headers, body = ingress.error(exc, request_id)
    headers = [(k.lower().encode(), v.encode()) for k, v in error_headers.items()]
    headers += out_headers
    headers += [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _finish(state: AppState, outcome: CallOutcome, chat: ChatRequest, t0: float, overhead_s: float) -> None:
    settle(outcome, chat, t0, overhead_s)
    state.observers.call_finished(outcome)
