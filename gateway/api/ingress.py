"""The one request path every ingress API shares, as a raw ASGI handler.

`handle(scope, receive, send, ingress)`: authenticate, read the body once, parse it (the
ingress's own request shape, and the chat request routing reads), route, admit through the
limits, open an answer through the fallback loop, then write it to the ASGI `send` directly:
one `http.response.start`, then the body (streams: each relayed chunk as it arrives). An
`Ingress` says what differs per API: how its body is parsed, what each candidate is asked
(native pass-through or the chat translation), how an answer becomes its own shape, and how
its errors look. Chat completions is the identity (`gateway.api.chat`); Anthropic Messages,
Responses, embeddings and completions are translations at this edge into the same pipeline.

No framework request/response objects on the way out: Starlette's response classes iterate
and watch for disconnects per chunk, which cost more than the relay itself (issue 14). A
client leaving cancels the request's work (the upstream call included): its connection
tells the handler (`gateway.api.leave`), with no task per request, and nothing is checked
per chunk. Accounting happens in the observers, off the response's critical path.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import orjson
from starlette.datastructures import Address
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway.api.leave import Watch, watch_client
from gateway.api.state import AppState
from gateway.api.usage_cost import usd_text
from gateway.api.wire import send_head_and_body
from gateway.backends.base import Backend
from gateway.backends.errors import UpstreamError, UpstreamProtocolError
from gateway.backends.pool import BackendSet
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import ChatRequest, upstream_payload
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import OpenedAnswer, open_answer
from gateway.proxy.continuation import ContinuationBroke, NativeResume, RescueContext, StreamRescue
from gateway.proxy.formats import CHAT, UpstreamCall
from gateway.proxy.outcome import CallOutcome
from gateway.proxy.usage import Usage
from gateway.routing.candidates import may_answer_natively
from gateway.routing.pipeline import RoutingDecision, decide
from gateway.tenants.principal import Principal

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


class IngressRequest(Protocol):
    """A parsed request: `chat` is what routing, limits and the classifier read (messages,
    tools, model, stream; for a translated API, the translation or a view of the body that
    builds it when read: `ChatRequest.fields`/`prompt`); `native` the client's
    body as its API defines it."""

    @property
    def chat(self) -> ChatRequest: ...

    @property
    def native(self) -> Any: ...


@dataclass(slots=True)
class Parsed:
    """The plain `IngressRequest`."""

    chat: ChatRequest
    native: Any = None


class StreamTranslator(Protocol):
    """Turns the answer's stream (in `opened.format`) into the client's API's events.

    `passthrough`: the stream is already the client's format; the handler then forwards
    the bytes untouched and never calls `feed`/`finish` (no per-chunk call on the chat path).
    `broken` is the last event when the upstream stream breaks after bytes reached the
    client, whatever `passthrough` says."""

    passthrough: bool

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...

    def broken(self, error: UpstreamError) -> bytes: ...


class PassThrough:
    """A stream already in the client's wire format, forwarded untouched (chat to chat,
    native pass-through). Only how the format says the stream broke off differs per API, so
    the client's SDK raises instead of taking a cut answer as whole: `broken`, given."""

    passthrough = True
    __slots__ = ("broken",)

    def __init__(self, broken: Callable[[UpstreamError], bytes]) -> None:
        self.broken = broken

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> bytes:
        return b""


def openai_broken(error: UpstreamError) -> bytes:
    """OpenAI's error event for a chat or completions stream that broke off."""
    event = {
        "error": {
            "message": "The upstream stream broke off.",
            "type": "upstream_error",
            "param": None,
            "code": error.reason,
        }
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


OPENAI_PASSTHROUGH = PassThrough(openai_broken)  # stateless: one for every request


class Ingress(abc.ABC):
    """One API at the edge (see the module docstring). Stateless: one instance serves every
    request of its route, per-request state lives in the `IngressRequest` and translators."""

    endpoint: str = "chat"  # the ledger's `endpoint` (`CallOutcome.endpoint`)
    # Whether a subclass overrides `prepare` / `completed` (set per class below): the
    # handler awaits them only then, so an ingress without them (chat) pays nothing.
    _prepares: bool = False
    _completes: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._prepares = cls.prepare is not Ingress.prepare
        cls._completes = cls.completed is not Ingress.completed

    @abc.abstractmethod
    def parse(self, body: bytes, headers: dict[str, str]) -> IngressRequest:
        """The request, or a `GatewayError` (400) naming what is wrong."""

    async def prepare(self, request: IngressRequest, principal: Principal, state: AppState) -> IngressRequest:
        """Async work between parsing and routing (loading stored state the request refers
        to, which routing must see: e.g. `previous_response_id`). May raise `GatewayError`."""
        return request

    async def completed(self, request: IngressRequest, opened: OpenedAnswer) -> None:
        """Called once the client's whole answer is ready, before its last bytes are sent
        (non-streamed: after `body`; streamed: after the translator's `finish`, not for a
        stream that broke), so a follow-up request the client makes next can rely on it."""
        return None

    def chat_payload(self, request: IngressRequest, offer: Offer) -> dict[str, Any]:
        """The chat completions payload this candidate is asked when the request goes to it
        translated (and what a continuation of a broken stream starts from)."""
        return upstream_payload(request.chat, offer.upstream_id)

    def native_resume(self, request: IngressRequest, opened: OpenedAnswer) -> NativeResume | None:
        """How this answer's stream is continued should it break, when it is passed through
        in a format other than chat (chat streams are continued as they are); None: not
        continued (the stream ends with its error event)."""
        return None

    @abc.abstractmethod
    def plan(self, request: IngressRequest, offer: Offer, backend: Backend) -> UpstreamCall | None:
        """What this candidate is asked: native pass-through when its backend serves the
        API, else the chat translation; None if it can serve neither (skipped)."""

    @abc.abstractmethod
    def body(self, request: IngressRequest, opened: OpenedAnswer) -> bytes:
        """The non-streamed answer for the client, from `opened.body` (in `opened.format`)."""

    @abc.abstractmethod
    def stream(self, request: IngressRequest, opened: OpenedAnswer) -> StreamTranslator:
        """The translator for this streamed answer."""

    @abc.abstractmethod
    def error(self, exc: GatewayError) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and JSON body of an error in this API's own shape."""


class OwnFault(Exception):
    """Relaying a stream, a fault on the gateway's side of it: the answer could not be handed
    on (the server's `send`, or an operator's middleware wrapping it, raised) or the ingress's
    translation of the upstream's events raised. Not the backend's doing: the call is a 500,
    the backend is not blamed, and nothing is continued elsewhere."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
    out_headers = [(b"x-request-id", request_id.encode())]
    decision = None
    backends: BackendSet | None = None
    try:
        try:
            principal = state.auth.authenticate(HeadersOnly(headers, scope.get("client")))
            snapshot = state.config.current  # this request's config, whatever reloads happen meanwhile
            backends = state.backends.acquire()  # and its adapters, taken in the same step
            body = await receive_body(receive, headers.get("content-length"), snapshot.config.gateway.max_body_bytes)
            request = ingress.parse(body, headers)
            if ingress._prepares:
                request = await ingress.prepare(request, principal, state)
            chat = request.chat
            if not chat.translated and not may_answer_natively(chat.fields, chat.model, snapshot, ingress.endpoint):
                # Every candidate will be asked in chat: translate now, and route on that
                # rather than on a view of the body (which would cost its count as well).
                chat.translate()
            decision = decide(chat, headers, snapshot, state.stats, ingress.endpoint)
            # Key, team and model limits on what routing resolved: 403 / 429, or the ticket to settle.
            ticket = await state.limiter.admit(principal, chat, decision, snapshot)
        except GatewayError as exc:
            state.metrics.request_rejected(exc.status, decision.route if decision else None)
            await send_error(send, ingress, exc, out_headers)
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
        limit = snapshot.config.gateway.max_response_bytes
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
            await send_error(send, ingress, exc, out_headers)
            return
        offer = opened.offer
        out_headers.append((b"x-gateway-backend", offer.backend.encode()))
        out_headers.append((b"x-gateway-model", offer.model.encode()))
        overhead_s = time.perf_counter() - t0 - opened.upstream_s
        out_headers.append((b"x-gateway-overhead-ms", f"{max(overhead_s, 0.0) * 1000:.2f}".encode()))
        if not chat.stream:
            watch.stop()
            outcome.usage = opened.usage
            try:
                body = ingress.body(request, opened)
            except GatewayError as exc:
                outcome.status, outcome.error = exc.status, exc.code or exc.type
                _finish(state, outcome, chat, t0, overhead_s)
                await send_error(send, ingress, exc, out_headers)
                return
            _settle(outcome, chat, t0, overhead_s)
            out_headers.append((b"x-gateway-cost-usd", usd_text(outcome.cost_usd).encode()))
            try:
                if ingress._completes:
                    await _completed(ingress, request, opened)
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
            opened.format is CHAT or (native := ingress.native_resume(request, opened)) is not None
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
        await _relay(state, scope, send, watch, ingress, request, opened, outcome, t0, out_headers, rescue)
    except asyncio.CancelledError:
        if not watch.left:
            # Shutdown's grace period ran out, not the client: still accounted (a ledger row,
            # the key's concurrency ticket settled at once rather than at its deadline), then
            # propagated.
            if not outcome.latency_s:
                outcome.status, outcome.error = 503, "shutdown"
                _finish(state, outcome, chat, t0, _own_time(t0, outcome))
            raise
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


async def _completed(ingress: Ingress, request: IngressRequest, opened: OpenedAnswer) -> None:
    """The ingress's `completed` hook; its failure is logged, and the client still gets the
    answer it was about to (the hook's work, e.g. storing it, is what is lost)."""
    try:
        await ingress.completed(request, opened)
    except Exception:
        log.exception("%s: the completed hook failed", ingress.endpoint)


def _own_time(t0: float, outcome: CallOutcome) -> float:
    return time.perf_counter() - t0 - sum(a.duration_s for a in outcome.attempts)


async def send_error(send: Send, ingress: Ingress, exc: GatewayError, out_headers: list[tuple[bytes, bytes]]) -> None:
    status, error_headers, body = ingress.error(exc)
    headers = [(k.lower().encode(), v.encode()) for k, v in error_headers.items()]
    headers += out_headers
    headers += [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _relay(
    state: AppState,
    scope: Scope,
    send: Send,
    watch: Watch,
    ingress: Ingress,
    request: IngressRequest,
    opened: OpenedAnswer,
    outcome: CallOutcome,
    t0: float,
    out_headers: list[tuple[bytes, bytes]],
    rescue: StreamRescue | None = None,
) -> None:
    chat = request.chat
    translator = ingress.stream(request, opened)
    accountant = opened.accountant
    assert accountant is not None
    translate = None if translator.passthrough else translator.feed
    # The gateway's own time: routing and setup before the headers, then per-chunk accounting.
    overhead_s = time.perf_counter() - t0 - opened.upstream_s
    last = outcome.attempts[-1]
    attempt_started = time.perf_counter() - last.duration_s
    tail = b""
    # What the client has not been sent yet, the head with it (None once the head is out).
    pending: bytes | None = b""
    try:
        try:
            if rescue is not None:
                rescue.keep(opened.prefix)
            prefix = opened.prefix
            if translate is not None and prefix:
                try:
                    prefix = translate(prefix)
                except Exception as exc:  # nothing sent yet: the front door answers a plain 500
                    raise OwnFault(exc) from exc
            # The upstream's answer came whole (a short answer, a fast upstream): the client's
            # goes out in one write at the end. Else the head and the events read so far go
            # now, in one write.
            pending = prefix
            if not opened.whole:
                await _open_stream(scope, send, out_headers, prefix)
                pending = None
            if not opened.ended:
                async for chunk in opened.response.aiter_bytes():
                    t = time.perf_counter()
                    out = accountant.feed(chunk)
                    if rescue is not None and out:
                        rescue.keep(out)  # what the client got, should the stream break (a list append)
                    if translate is not None and out:
                        try:
                            out = translate(out)
                        except Exception as exc:
                            raise OwnFault(exc) from exc
                    overhead_s += time.perf_counter() - t
                    if out:
                        if pending is not None:  # more after all: the head goes first
                            await _open_stream(scope, send, out_headers, pending + out)
                            pending = None
                            continue
                        try:
                            await send({"type": "http.response.body", "body": out, "more_body": True})
                        except Exception as exc:
                            raise OwnFault(exc) from exc
                tail = accountant.flush()
            if accountant.done_held:
                # The client asked for usage and the upstream sent none: estimate it, say so in
                # the ledger, and still end the stream the way OpenAI does.
                outcome.usage = Usage(chat.prompt_tokens(), accountant.content_events, estimated=True)
                tail += accountant.closing_events(outcome.usage)
            if translate is not None:
                try:
                    tail = (translate(tail) if tail else b"") + translator.finish()
                except Exception as exc:
                    raise OwnFault(exc) from exc
        except asyncio.CancelledError:
            # A client that leaves once it has read `[DONE]` (the openai SDK closes right then)
            # got the whole answer, even if the upstream had not closed its end yet.
            if pending is not None or not (accountant.saw_done and not accountant.done_held):
                if watch.left:
                    outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
                else:  # not the client: shutdown's grace period ran out mid-stream
                    outcome.status, outcome.error = 503, "shutdown"
            raise
        except OwnFault as failed:
            # Not the upstream's doing: neither its fault nor a reason to continue elsewhere.
            # Raised on: the front door logs it, and the server ends the answer it started.
            outcome.status, outcome.error = 500, "internal_error"
            raise failed.error from None
        except Exception as exc:
            # Bytes already reached the client: no fallback. Tell the SDK the stream broke, and
            # account the call as failed. Adapters raise UpstreamError; anything else is mapped.
            error = exc if isinstance(exc, UpstreamError) else UpstreamProtocolError(type(exc).__name__)
            outcome.status, outcome.error = 502, error.reason
            last.backend_fault = error.backend_fault
            log.warning("stream from %s broke mid-answer: %s", opened.offer.backend, error.message)
            if pending is not None:  # the events read so far, before what ends or continues them
                await _open_stream(scope, send, out_headers, pending)
                pending = None
            # Continued on a candidate that takes a prefill, when one does (gateway.proxy.continuation).
            resumed = None
            native = rescue.native if rescue is not None else None
            if rescue is not None:
                try:
                    resumed = await rescue.resume(
                        error, _forward(send, native.feed if native is not None else translate)
                    )
                except ContinuationBroke as broke:
                    error = broke.error
            if resumed is None:
                tail += translator.broken(error)
            elif native is not None:  # the continuation's chat chunks, as the native stream's events
                tail += (native.feed(resumed) if resumed else b"") + native.finish()
            elif translate is not None:
                tail += (translate(resumed) if resumed else b"") + translator.finish()
            else:
                tail += resumed
        finally:
            try:
                await opened.response.aclose()
            finally:
                # Settled even when a second cancellation lands while the close awaits: an
                # unsettled outcome would be accounted twice (here, and by `_answer`).
                if rescue is None or not rescue.took_over:  # else the rescue accounted its attempts
                    last.duration_s = time.perf_counter() - attempt_started
                    if outcome.status >= 400:
                        last.error = outcome.error
                    state.observers.attempt_finished(opened.offer, last, outcome.ttft_s)
                    outcome.usage = accountant.usage or outcome.usage
                    if outcome.usage is None:
                        # The upstream sent no usage: estimate and say so.
                        outcome.usage = Usage(chat.prompt_tokens(), accountant.content_events, estimated=True)
                _settle(outcome, chat, t0, overhead_s)
        watch.stop()  # before the last message: past it, receive() reports a disconnect
        if ingress._completes and outcome.status < 400:
            if pending is not None:  # the client has its answer before the hook's work; only its end waits
                await send_head_and_body(scope, send, 200, out_headers, pending + tail, more_body=True)
                pending, tail = None, b""
            await _completed(ingress, request, opened)
        if pending is None:
            await send({"type": "http.response.body", "body": tail})
        else:  # the whole answer, head to end, in one write
            await send_head_and_body(scope, send, 200, out_headers, pending + tail if tail else pending)
    finally:
        # Accounted once the stream's end is on its way (as in `_answer`), and whichever way
        # it ended (a client that left, a cancellation).
        state.observers.call_finished(outcome)


async def _open_stream(scope: Scope, send: Send, headers: list[tuple[bytes, bytes]], events: bytes) -> None:
    """Start the client's stream: the head and the events so far, in one write when there
    are any. A failure to send is the gateway's side (`OwnFault`), not the upstream's."""
    try:
        if events:
            await send_head_and_body(scope, send, 200, headers, events, more_body=True)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
    except Exception as exc:
        raise OwnFault(exc) from exc


def _forward(send: Send, translate: Callable[[bytes], bytes] | None) -> Callable[[bytes], Awaitable[None]]:
    """How a continuation's chat chunks reach the client: through the ingress's translation."""

    async def forward(body: bytes) -> None:
        out = translate(body) if translate is not None and body else body
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})

    return forward


def _finish(state: AppState, outcome: CallOutcome, chat: ChatRequest, t0: float, overhead_s: float) -> None:
    _settle(outcome, chat, t0, overhead_s)
    state.observers.call_finished(outcome)


def _settle(outcome: CallOutcome, chat: ChatRequest, t0: float, overhead_s: float) -> None:
    """The call's latency, usage and price, fixed: what the answer's headers report and the
    observers (`Observers.call_finished`, called next) record."""
    outcome.latency_s = time.perf_counter() - t0
    outcome.overhead_s = max(overhead_s, 0.0)
    if outcome.offer is not None and outcome.status < 400 and outcome.usage is None:
        outcome.usage = Usage(chat.prompt_tokens(), 0, estimated=True)
    outcome.bill()
