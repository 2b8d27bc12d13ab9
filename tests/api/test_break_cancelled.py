"""A relayed stream whose request is cancelled while its break is being handled (the events
held back sent, the stream continued elsewhere) ends as one cancelled anywhere else does:
the client left, a 499; shutdown's grace period ran out with the client there, a 503
`shutdown` and the client's stream ended with the shutdown's error event, the cancellation
handled (the server is not handed one to log as a crash). Review: both were accounted as the
break (a 502), and a shutdown's cancellation went on to the server.

In-process through the real app and its lifespan, to real HTTP upstreams, with a client
whose `send` holds the relay where the cancellation must land: the server's write of the
head waiting (uvicorn waits for a paused transport to drain before it writes: a client not
reading), or the broken upstream answer's close."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from gateway.backends.http1 import Http1Response
from tests.api.test_accounting_order import running
from tests.api.test_stream_writes import JUNK, POLICY, ROLE, TWO_BACKENDS, _chat, _delta
from tests.e2e.test_shutdown_e2e import chunks_before_the_shutdown_event
from tests.support.fake_upstream import FakeUpstream
from tests.support.fault_upstream import FaultUpstream, at_once
from tests.support.inprocess import post_scope
from tests.support.poll import apoll

CONTENT = _delta({"content": "t0 "})
# The upstream's whole answer in one read: the role, one token, then a run of malformed
# events that breaks the stream before the client was sent a byte.
WHOLE_AND_BROKEN = at_once(ROLE, CONTENT, *[JUNK] * 6)
SHUTDOWN = "Task cancelled, timeout graceful shutdown exceeded"  # uvicorn's cancel message


def _chat_call(app, state, hold_head: bool) -> tuple[Client, asyncio.Task]:
    """A streamed chat request to the app, as the server would run it, and its client."""
    client = Client(_chat(), hold_head=hold_head)
    task = asyncio.create_task(app(post_scope("/v1/chat/completions", _chat(), state), client.receive, client.send))
    return client, task


class Client:
    """The client and its server's `send`: the request, then the answer's messages as they
    are written. `hold_head`: the head's write waits (set `held` then) until the task is
    cancelled, as uvicorn's does for a transport whose writes are paused; the next writes go
    through (the client reads again). `leave()`: the connection is lost (`http.disconnect`)."""

    def __init__(self, body: bytes, hold_head: bool) -> None:
        self.sent: list[dict] = []
        self.held = asyncio.Event()
        self._gone = asyncio.Event()
        self._pending = [{"type": "http.request", "body": body, "more_body": False}]
        self._hold = hold_head

    def leave(self) -> None:
        self._gone.set()

    async def receive(self) -> dict:
        if self._pending:
            return self._pending.pop()
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if self._hold and message["type"] == "http.response.start":
            self._hold = False
            self.held.set()
            await asyncio.Event().wait()  # never drains: only a cancellation ends the wait
        self.sent.append(message)


def _chunks(body: bytes) -> list[dict]:
    events = [e for e in body.split(b"\n\n") if e and e != b"data: [DONE]"]
    return [orjson.loads(e.removeprefix(b"data: ")) for e in events]


def _proxy_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.proxy" and r.levelno == logging.WARNING]


def _no_crash_logged(caplog) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("cancelled_by", ["shutdown", "client"])
async def test_a_cancellation_while_the_events_before_a_break_are_sent_is_not_the_break(tmp_path, caplog, cancelled_by):
    caplog.set_level(logging.DEBUG)
    upstream = FaultUpstream("up").start()
    upstream.always(WHOLE_AND_BROKEN)
    try:
        async with running(tmp_path, POLICY.format(url=upstream.base_url)) as (app, state, recorder):
            client, task = _chat_call(app, state, hold_head=True)
            await asyncio.wait_for(client.held.wait(), 10)  # the relay, past the break, writes the head
            if cancelled_by == "shutdown":
                task.cancel(msg=SHUTDOWN)
            else:
                client.leave()
            await asyncio.wait_for(task, 10)  # handled: not raised on to the server
    finally:
        upstream.stop()

    assert len(upstream.seen) == 1
    [outcome] = recorder.outcomes  # accounted once
    [attempt] = outcome.attempts
    assert recorder.attempts == [attempt]
    # The upstream did break the stream before the cancellation: its attempt says so.
    assert attempt.backend_fault
    # The upstream sent no usage: estimated, one token per event read (the role's, "t0 ").
    assert (outcome.usage.completion_tokens, outcome.usage.estimated) == (2, True)
    broke = "stream from up broke mid-answer: the upstream stream sent 5 malformed events in a row after content"
    if cancelled_by == "shutdown":
        assert (outcome.status, outcome.error, outcome.client_disconnected) == (503, "shutdown", False)
        assert attempt.error == "shutdown"
        # The head had not gone out: the client gets it with the events read before the
        # break, then the shutdown's error event, in one answer.
        assert [(m["type"], bool(m.get("more_body"))) for m in client.sent] == [
            ("http.response.start", False),
            ("http.response.body", False),
        ]
        assert client.sent[0]["status"] == 200
        chunks = chunks_before_the_shutdown_event(client.sent[1]["body"])
        assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}, {"content": "t0 "}]
        assert _proxy_warnings(caplog) == [broke, "stream from up cut mid-answer: The gateway is shutting down."]
    else:
        assert (outcome.status, outcome.error, outcome.client_disconnected) == (499, "client_disconnected", True)
        assert attempt.error == "client_disconnected"
        assert client.sent == []  # gone before its head was written
        assert _proxy_warnings(caplog) == [broke]
    _no_crash_logged(caplog)


@pytest.mark.parametrize("cancelled_by", ["shutdown", "client"])
async def test_a_cancellation_while_a_broken_answer_closes_before_its_continuation_is_not_the_break(
    tmp_path, caplog, monkeypatch, cancelled_by
):
    """The broken upstream answer is closed before the continuation's candidates are asked.
    No adapter's close awaits today (each drops its connection at once), but the interface's
    is a coroutine: one that does (as `test_accounting_order`'s slow close) is cancellable
    there, and the cancellation is the continuation's to account, as while it asks."""
    caplog.set_level(logging.DEBUG)
    closing = asyncio.Event()
    close = Http1Response.aclose

    async def slow_close(self) -> None:
        if not closing.is_set():  # the first close: the broken answer's, by the continuation
            closing.set()
            await asyncio.Event().wait()  # only a cancellation ends it
        await close(self)

    monkeypatch.setattr(Http1Response, "aclose", slow_close)
    first, second = FaultUpstream("first").start(), FaultUpstream("second").start()
    first.always(WHOLE_AND_BROKEN)
    try:
        async with running(tmp_path, TWO_BACKENDS.format(first=first.base_url, second=second.base_url)) as (
            app,
            state,
            recorder,
        ):
            client, task = _chat_call(app, state, hold_head=False)
            await asyncio.wait_for(closing.wait(), 10)
            if cancelled_by == "shutdown":
                task.cancel(msg=SHUTDOWN)
            else:
                client.leave()
            await asyncio.wait_for(task, 10)  # handled: not raised on to the server
    finally:
        first.stop()
        second.stop()

    assert (len(first.seen), len(second.seen)) == (1, 0)  # nothing continued
    [outcome] = recorder.outcomes
    assert outcome.offer.backend == "first"
    # One row: the broken attempt, accounted by the continuation (its break, at the backend's
    # fault), as the call's final row.
    [attempt] = outcome.attempts
    assert recorder.attempts == [attempt]
    assert (attempt.backend, attempt.error, attempt.backend_fault) == ("first", "malformed", True)
    assert (attempt.usage.completion_tokens, attempt.usage.estimated) == (1, True)
    # The client had the head and the events read before the break...
    kinds = [(m["type"], bool(m.get("more_body"))) for m in client.sent]
    assert kinds[:2] == [("http.response.start", False), ("http.response.body", True)]
    assert client.sent[1]["body"] == ROLE + CONTENT
    broke = "stream from first broke mid-answer: the upstream stream sent 5 malformed events in a row after content"
    if cancelled_by == "shutdown":
        assert (outcome.status, outcome.error, outcome.client_disconnected) == (503, "shutdown", False)
        # ...then the shutdown's error event, its stream's end.
        assert kinds[2:] == [("http.response.body", False)]
        assert chunks_before_the_shutdown_event(client.sent[2]["body"]) == []
        assert _proxy_warnings(caplog) == [broke, "stream from first cut mid-answer: The gateway is shutting down."]
    else:
        assert (outcome.status, outcome.error, outcome.client_disconnected) == (499, "client_disconnected", True)
        assert kinds[2:] == []  # ...and no end: it was gone
        assert _proxy_warnings(caplog) == [broke]
    _no_crash_logged(caplog)


async def test_a_client_leaving_once_the_continuation_ended_its_stream_got_the_whole_answer(tmp_path, caplog):
    """The other side of the line the relay draws: a cancellation while the stream is being
    continued is the continuation's to account, not re-told by the relay. The continuing
    upstream keeps its connection open a moment after `[DONE]`, and the client, having read
    it, closes its end (as the openai SDK does): a complete call, not a client leaving."""
    caplog.set_level(logging.DEBUG)
    first = FaultUpstream("first").start()
    first.always(WHOLE_AND_BROKEN)
    second = FakeUpstream().start()
    second.reset(content="t1 t2", linger_after_stream_s=30)
    try:
        async with running(tmp_path, TWO_BACKENDS.format(first=first.base_url, second=second.base_url)) as (
            app,
            state,
            recorder,
        ):
            client, task = _chat_call(app, state, hold_head=False)
            await apoll(lambda: any(b"data: [DONE]" in m.get("body", b"") for m in client.sent), what="[DONE] read")
            client.leave()
            await asyncio.wait_for(task, 10)
    finally:
        first.stop()
        second.stop()

    assert (len(first.seen), len(second.received)) == (1, 1)
    [outcome] = recorder.outcomes
    assert (outcome.status, outcome.error, outcome.client_disconnected) == (200, None, False)
    assert [(a.backend, a.error) for a in outcome.attempts] == [("first", "malformed"), ("second", None)]
    body = b"".join(m.get("body", b"") for m in client.sent)
    assert body.endswith(b"data: [DONE]\n\n")  # nothing after it
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in _chunks(body)) == "t0 t1 t2 "
    _no_crash_logged(caplog)
