"""A streamed answer relayed to the client, and the two ends every answer shares.

`relay_stream`: the upstream's events, through the stream's accountant (and the ingress's
translation), written to the ASGI `send` as they come: the head with the events read so
far in one write, or the whole answer in one write when it came whole; a stream that breaks
after bytes reached the client is continued elsewhere when it can be
(`gateway.proxy.continuation`), else ended with the API's own error event. So is one the
upstream ended with an error event of a passing kind (overloaded, a server error): held back
by the accountant, and relayed only when the stream is not continued. `settle` fixes a
call's latency, usage and price before the observers record it; `run_completed` calls the
ingress's `completed` hook (storing a Response) without letting it cost the client its
answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

from starlette.types import Scope, Send

from gateway.api.edge import Ingress, IngressRequest, ShuttingDown, StreamTranslator, TranslationEnded
from gateway.api.leave import Watch
from gateway.api.state import AppState
from gateway.api.wire import send_head_and_body
from gateway.backends.errors import UpstreamError, UpstreamProtocolError
from gateway.config.snapshot import Offer
from gateway.protocol.chat import ChatRequest
from gateway.proxy.attempts import EventsIdle, OpenedAnswer, ended_without_its_end
from gateway.proxy.continuation import ContinuationBroke, StreamRescue, shutdown_cut
from gateway.proxy.hedge import CANCELLED
from gateway.proxy.outcome import CallOutcome
from gateway.proxy.relay import ErrorEventMidway
from gateway.proxy.usage import Usage

log = logging.getLogger("gateway.proxy")


class OwnFault(Exception):
    """Relaying a stream, a fault on the gateway's side of it: the answer could not be handed
    on (the server's `send`, or an operator's middleware wrapping it, raised) or the ingress's
    translation of the upstream's events raised. Not the backend's doing: the call is a 500,
    the backend is not blamed, and nothing is continued elsewhere."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def relay_stream(
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
                accountant.hold_errors = True  # an upstream's passing error event breaks the stream: continued
                rescue.keep(opened.prefix)
            prefix = opened.prefix
            checked = opened.checked
            if checked is not None:  # translated by the loop's look before it committed (`TranslatedChatStream`)
                if checked.fault is not None:  # nothing sent yet: the front door answers a plain 500
                    raise OwnFault(checked.fault) from checked.fault
                prefix = checked.events
            elif translate is not None and prefix:
                try:
                    prefix = translate(prefix)
                except TranslationEnded:
                    raise  # the upstream's malformed chunk: its events end the stream (below)
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
                relayed = opened.prefix  # the last events handed on, as the upstream sent them
                # An upstream stuck after content that sends only keep-alive comments is cut
                # here, where events are counted (the read timer restarts at any bytes).
                idle = EventsIdle(opened)
                try:
                    async for chunk in opened.response.aiter_bytes():
                        t = time.perf_counter()
                        out = accountant.feed(chunk)
                        idle.check(t)
                        if out:
                            relayed = out
                            if rescue is not None:
                                rescue.keep(out)  # what the client got, should the stream break (a list append)
                            if translate is not None:
                                try:
                                    out = translate(out)
                                except TranslationEnded:
                                    raise
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
                    # An unterminated last event (`tail`) is handed on and read by the translation
                    # first (its malformed chunk ends the stream with the translation's own error
                    # event): the end is judged without it then, as before.
                    if not accountant.saw_done and not tail:
                        tail = ended_without_its_end(accountant, opened.offer, relayed, chat)
                except (OwnFault, TranslationEnded):
                    raise
                except Exception as exc:
                    # The upstream's answer had ended (its last chunk, its usage) and only the
                    # end marker or the connection's clean close was lost: the client gets the
                    # answer's end, not an error after it, and the call is a success. Not so
                    # after the upstream's own error event: it said the answer failed.
                    if isinstance(exc, ErrorEventMidway):
                        raise
                    ending = accountant.end_after_break(relayed, chat.fields.get("n") in (None, 1))
                    if ending is None:
                        raise
                    # After the end event itself (more sent after it, a body held open past
                    # its grace: upstreams that ping or linger) the answer was whole: no warning
                    # on every such call, only when the end event was what was lost.
                    log.log(
                        logging.DEBUG if accountant.saw_done else logging.WARNING,
                        "stream from %s broke after its answer's end (%s); ended it there",
                        opened.offer.backend,
                        exc if not isinstance(exc, UpstreamError) else exc.reason,
                    )
                    tail = ending
            if accountant.done_held:
                # The client asked for usage and the upstream sent none: estimate it, say so in
                # the ledger, and still end the stream the way OpenAI does.
                outcome.usage = Usage(chat.all_prompt_tokens(), accountant.content_events, estimated=True)
                tail += accountant.closing_events(outcome.usage)
            if translate is not None:
                # The chat bytes are let go of first: a tail the translation ends at (its
                # `TranslationEnded`, below) is replaced by its events, never sent with them.
                chat_tail, tail = tail, b""
                try:
                    tail = translate(chat_tail) if chat_tail else b""
                    tail += translator.finish()
                except TranslationEnded:
                    raise
                except Exception as exc:
                    raise OwnFault(exc) from exc
        except asyncio.CancelledError:
            # A client that leaves once it has read `[DONE]` (the openai SDK closes right then)
            # got the whole answer, even if the upstream had not closed its end yet.
            if pending is None and accountant.saw_done and not accountant.done_held:
                raise
            ending = _cancelled(watch, outcome, opened.offer, translator)
            if ending is None:
                raise
            tail = ending
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
            try:
                if pending is not None:  # the events read so far, before what ends or continues them
                    await _open_stream(scope, send, out_headers, pending)
                    pending = None
            except asyncio.CancelledError:
                # Cancelled while the head went out (a server's write waits for a client that
                # is not reading): as a cancellation of the stream itself (above), not the
                # break; nothing is continued after it.
                ending = _cancelled(watch, outcome, opened.offer, translator)
                if ending is None:
                    raise
                tail = ending
            else:
                if isinstance(error, TranslationEnded):
                    # The translation ended the client's stream at a chunk it cannot read, with
                    # its own error event: that is the stream's end, nothing is continued after it.
                    tail += error.events
                elif accountant.failed_midway:
                    # The upstream's own error event reached the client already and says why the
                    # stream ends: nothing is continued after it, and no second error event follows.
                    outcome.error, last.backend_fault = "upstream_error", True
                else:
                    # A cancellation meanwhile is the continuation's to account (`resume`'s
                    # `cancelled`, as `_cancelled` tells them apart): raised on once it has.
                    tail += await _end_broken_stream(send, watch, translator, translate, rescue, error)
            finally:
                # Its traceback holds this frame: not held back by it, else a reference cycle
                # keeps the request's frames for the collector (see `routing.pipeline.decide`).
                del error
        finally:
            try:
                await opened.response.aclose()
            finally:
                if accountant.failed_midway and outcome.status < 400:
                    # The upstream's own error event after content, relayed to the client: the
                    # call failed, as a stream that broke did, and the backend is at fault.
                    outcome.status, outcome.error = 502, "upstream_error"
                    last.backend_fault = True
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
                        outcome.usage = Usage(chat.all_prompt_tokens(), accountant.content_events, estimated=True)
                settle(outcome, chat, t0, overhead_s)
        watch.stop()  # before the last message: past it, receive() reports a disconnect
        if (
            ingress.completes
            and (outcome.status < 400 or (outcome.status >= 500 and ingress.completes_failed(request)))
            and ingress.completes_request(request)
        ):
            if pending is not None:  # the client has its answer before the hook's work; only its end waits
                await send_head_and_body(scope, send, 200, out_headers, pending + tail, more_body=True)
                pending, tail = None, b""
            await run_completed(ingress, request, opened)
        if pending is None:
            await send({"type": "http.response.body", "body": tail})
        else:  # the whole answer, head to end, in one write
            await send_head_and_body(scope, send, 200, out_headers, pending + tail if tail else pending)
    finally:
        # Accounted once the stream's end is on its way (as in `_answer`), and whichever way
        # it ended (a client that left, a cancellation).
        state.observers.call_finished(outcome)


def _cancelled(watch: Watch, outcome: CallOutcome, offer: Offer, translator: StreamTranslator) -> bytes | None:
    """A relayed stream's request cancelled: the client left (None: accounted as a 499, the
    caller raises on), or the server cancelled it, shutdown's grace period having run out
    mid-stream. The client is still there: its stream ends with the same error event as after
    a break, saying why (returned), rather than just stopping (which an SDK cannot tell from an
    answer's end), and the server is not handed a cancellation to log as a crash."""
    cut = _cut(watch)
    if cut is None:
        outcome.status, outcome.error, outcome.client_disconnected = 499, "client_disconnected", True
        return None
    shutdown_cut(outcome, offer, cut)
    return translator.broken(cut)


def _cut(watch: Watch) -> ShuttingDown | None:
    """What a cancellation of a relayed stream is: None when the client left, else the
    server's own (shutdown's grace period ran out), as the client's stream is told."""
    return None if watch.left else ShuttingDown()


async def _end_broken_stream(
    send: Send,
    watch: Watch,
    translator: StreamTranslator,
    translate: Callable[[bytes], bytes] | None,
    rescue: StreamRescue | None,
    error: UpstreamError,
) -> bytes:
    """The end of a stream that broke mid-answer: continued on a candidate that takes a
    prefill, when one does (`gateway.proxy.continuation`), else the API's own error event."""
    resumed = None
    native = rescue.native if rescue is not None else None
    if rescue is not None:
        try:
            forward = _forward(send, native.feed if native is not None else translate)
            resumed = await rescue.resume(error, forward, partial(_cut, watch))
        except ContinuationBroke as broke:
            if broke.said:
                return b""  # the continuing upstream's own error event ended the client's stream
            if isinstance(broke.error, TranslationEnded):
                return broke.error.events  # the continuation's malformed chunk: its error event ends it
            error = broke.error
    if resumed is None:
        if isinstance(error, ErrorEventMidway):
            # The upstream's own error event, held back for a continuation that did not come:
            # the client gets it as it would have without one, the stream's end.
            try:
                return translate(error.event) + translator.finish() if translate is not None else error.event
            except TranslationEnded as ended:
                return ended.events
        return translator.broken(error)
    if native is None and translate is None:
        return resumed
    # The continuation's chat chunks, as the native stream's events or the translation's.
    feed, finish = (native.feed, native.finish) if native is not None else (translate, translator.finish)
    assert feed is not None
    out = b""
    try:
        out = feed(resumed) if resumed else b""
        return out + finish()
    except TranslationEnded as ended:  # the continuation's malformed chunk: its error event ends it
        return out + ended.events


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


async def run_completed(ingress: Ingress, request: IngressRequest, opened: OpenedAnswer) -> None:
    """The ingress's `completed` hook; its failure is logged, and the client still gets the
    answer it was about to (the hook's work, e.g. storing it, is what is lost)."""
    try:
        await ingress.completed(request, opened)
    except Exception:
        log.exception("%s: the completed hook failed", ingress.endpoint)


def settle(outcome: CallOutcome, chat: ChatRequest, t0: float, overhead_s: float) -> None:
    """The call's latency, usage and price, fixed: what the answer's headers report and the
    observers (`Observers.call_finished`, called next) record.

    A call the client left while an upstream had it (its last attempt called off) is billed
    that upstream's prompt, estimated: the upstream read it, and a hosted API bills the
    operator for it whether or not the answer is read. Billed nothing, a key could run up
    upstream cost past its budget by sending and leaving. One left between attempts (a
    backoff) or before any was made pays nothing."""
    outcome.latency_s = time.perf_counter() - t0
    outcome.overhead_s = max(overhead_s, 0.0)
    if outcome.offer is not None and outcome.usage is None and (outcome.status < 400 or _left_mid_call(outcome)):
        outcome.usage = Usage(chat.all_prompt_tokens(), 0, estimated=True)
    outcome.bill()


def _left_mid_call(outcome: CallOutcome) -> bool:
    attempts = outcome.attempts
    return outcome.client_disconnected and bool(attempts) and attempts[-1].error == CANCELLED
