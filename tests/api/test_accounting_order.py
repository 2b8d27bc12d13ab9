"""When a call is accounted relative to its answer: once the answer is on its way, not
before (the observers' work, metrics, live stats, the limiter and the ledger's buffer, is
off the client's wait), exactly once, and whichever way the call ended. Driven in-process
through the real app and its lifespan, with the built-in mock backend, and a recording
observer beside the gateway's own."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import orjson
import pytest

from gateway.api.app import create_app
from gateway.api.chat import ChatIngress
from gateway.api.fastpath import FastPathApp
from gateway.api.ingress import handle
from gateway.settings import Settings

POLICY = """
backends:
  mock:
    type: mock
    models:
      mock/mock-small: {context_length: 8192}
routes:
  auto: {models: [mock/mock-small]}
"""


class Recorder:
    """An observer noting, at each finished call, what the client had been sent by then."""

    def __init__(self, sent: list[dict]) -> None:
        self.sent = sent
        self.finished: list[tuple[int, list[tuple[str, bool]]]] = []
        self.attempts: list = []
        self.outcomes: list = []

    def attempt_started(self, offer) -> None:
        pass

    def attempt_finished(self, offer, attempt, ttft_s) -> None:
        self.attempts.append(attempt)

    def call_finished(self, outcome) -> None:
        seen = [(m["type"], bool(m.get("more_body"))) for m in self.sent if m["type"].startswith("http.")]
        self.finished.append((outcome.status, seen))
        self.outcomes.append(outcome)


@asynccontextmanager
async def running(tmp_path, text: str = POLICY, middleware=()):
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    app = create_app(Settings(config=policy, data_dir=tmp_path / "data", usage_recording=False), middleware)
    queue: asyncio.Queue = asyncio.Queue()
    lifespan_sent: list[dict] = []
    await queue.put({"type": "lifespan.startup"})

    async def lifespan_send(message):
        lifespan_sent.append(message)

    scope_state: dict = {}
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": scope_state}, queue.get, lifespan_send)
    )
    while not any(m["type"].startswith("lifespan.startup.") for m in lifespan_sent):
        await asyncio.sleep(0.01)
    assert lifespan_sent[-1]["type"] == "lifespan.startup.complete", lifespan_sent
    try:
        yield app, scope_state
    finally:
        await queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(lifespan, 10)


def _scope(app, scope_state: dict, body: bytes) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": dict(scope_state),
    }


def _gateway_app(app):
    """The framework app behind the front door, whose state the lifespan fills."""
    inner = app
    while not hasattr(inner, "state"):
        inner = inner.app
    return inner


def _gateway(app):
    """The app's state, as the lifespan built it (the fast routes read it the same way)."""
    return _gateway_app(app).state.gateway


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_is_accounted_once_its_whole_answer_was_sent(tmp_path, stream):
    async with running(tmp_path) as (app, scope_state):
        sent: list[dict] = []
        recorder = Recorder(sent)
        _gateway(app).observers.add(recorder)
        body = orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], "stream": stream}
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(30)  # the client stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(_scope(app, scope_state, body), receive, send)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body")
    # Accounted exactly once, and by then the client had been sent everything, its end included.
    assert len(recorder.finished) == 1
    status, seen_then = recorder.finished[0]
    assert status == 200
    assert seen_then == [(m["type"], bool(m.get("more_body"))) for m in sent]


async def test_a_stream_the_client_leaves_is_accounted_once_as_499(tmp_path):
    async with running(tmp_path) as (app, scope_state):
        sent: list[dict] = []
        recorder = Recorder(sent)
        _gateway(app).observers.add(recorder)
        # A long answer from the mock (one event per word), left after its first events.
        words = " ".join(["word"] * 400)
        body = orjson.dumps(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": f"Repeat after me: {words}"}],
                "stream": True,
                "max_tokens": 2000,
            }
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        left = asyncio.Event()

        async def receive():
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            bodies = [m for m in sent if m["type"] == "http.response.body"]
            if len(bodies) == 2:
                left.set()  # the client goes away mid-stream
            await asyncio.sleep(0)

        await app(_scope(app, scope_state, body), receive, send)

    assert [status for status, _ in recorder.finished] == [499]
    assert all(more for kind, more in recorder.finished[0][1] if kind == "http.response.body")  # no end was sent


async def test_a_stream_cancelled_again_while_its_upstream_closes_is_accounted_once(tmp_path, monkeypatch):
    """Shutdown's grace period runs out mid-stream, and a second cancellation lands while the
    upstream answer is being closed (an adapter whose close awaits): still one account."""
    from gateway.backends import mock

    closing = asyncio.Event()

    async def slow_close(self) -> None:
        closing.set()
        await asyncio.sleep(0.05)

    monkeypatch.setattr(mock.MockResponse, "aclose", slow_close)
    async with running(tmp_path) as (app, scope_state):
        sent: list[dict] = []
        recorder = Recorder(sent)
        _gateway(app).observers.add(recorder)
        words = " ".join(["word"] * 400)
        body = orjson.dumps(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": f"Repeat after me: {words}"}],
                "stream": True,
                "max_tokens": 2000,
            }
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            await asyncio.sleep(0)

        task = asyncio.create_task(app(_scope(app, scope_state, body), receive, send))
        while sum(m["type"] == "http.response.body" for m in sent) < 3:
            await asyncio.sleep(0)
        task.cancel()  # shutdown's grace period ran out
        await asyncio.wait_for(closing.wait(), 5)
        task.cancel()  # and again, while the upstream answer closes
        with pytest.raises(asyncio.CancelledError):
            await task

    assert [status for status, _ in recorder.finished] == [503]


class Faulty(ChatIngress):
    """Chat, with a fault of the gateway's own once the answer is open: its translation of a
    non-streamed answer, or the setup of a streamed one, raises."""

    def body(self, request, opened):
        raise RuntimeError("a bug in the answer's translation")

    def stream(self, request, opened):
        raise RuntimeError("a bug in the stream's setup")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fault_past_the_answers_opening_is_accounted_once_as_500(tmp_path, stream):
    async with running(tmp_path) as (app, scope_state):
        sent: list[dict] = []
        recorder = Recorder(sent)
        _gateway(app).observers.add(recorder)
        ingress = Faulty()

        async def route(scope, receive, send):
            await handle(scope, receive, send, ingress)

        front = FastPathApp(_gateway_app(app), {"/v1/faulty": route})
        body = orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], "stream": stream}
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = _scope(app, scope_state, body)
        scope["path"], scope["raw_path"] = "/v1/faulty", b"/v1/faulty"
        await front(scope, receive, send)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 500  # the front door's answer
    assert [status for status, _ in recorder.finished] == [500]


TWO_CANDIDATES = """
backends:
  mock:
    type: mock
    models:
      mock/mock-small: {context_length: 8192}
      mock/mock-large: {context_length: 8192}
routes:
  auto: {models: [mock/mock-small, mock/mock-large]}
"""


class FailingSend:
    """An operator's middleware whose `send` breaks on the answer's third body message."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        bodies = 0

        async def failing(message) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies == 3:
                    raise RuntimeError("the middleware broke")
            await send(message)

        await self.app(scope, receive, failing if scope["type"] == "http" else send)


async def test_a_stream_the_gateway_cannot_hand_on_is_its_own_500_not_the_backends_fault(tmp_path):
    async with running(tmp_path, TWO_CANDIDATES, [FailingSend]) as (app, scope_state):
        sent: list[dict] = []
        recorder = Recorder(sent)
        _gateway(app).observers.add(recorder)
        words = " ".join(["word"] * 50)
        body = orjson.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": f"Repeat after me: {words}"}], "stream": True}
        )
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            if messages:
                return messages.pop()
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(_scope(app, scope_state, body), receive, send)

    assert [status for status, _ in recorder.finished] == [500]
    assert recorder.outcomes[0].error == "internal_error"
    # One attempt (no continuation on the other candidate), not counted against its backend.
    assert [(a.backend, a.status, a.backend_fault) for a in recorder.attempts] == [("mock", 200, False)]
