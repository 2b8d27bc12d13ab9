"""When and how a call is accounted relative to its answer: once the answer is on its way,
not before (the observers' work, metrics, live stats, the limiter and the ledger's buffer,
is off the client's wait), exactly once, whichever way the call ended, and blaming the
backend only for what the backend did. Driven in-process through the real app and its
lifespan, with the built-in mock backend, and a recording observer beside the gateway's own."""

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
from tests.support.inprocess import MOCK_POLICY, lifespan, post

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


class Recorder:
    """An observer noting each attempt, and at each finished call what the client had been
    sent by then (`sent`: the list the test's client fills)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.finished: list[tuple[int, list[tuple[str, bool]]]] = []
        self.attempts: list = []
        self.outcomes: list = []

    async def track(self, sent: list[dict]) -> None:
        self.sent = sent

    def attempt_started(self, offer) -> None:
        pass

    def attempt_finished(self, offer, attempt, ttft_s) -> None:
        self.attempts.append(attempt)

    def call_finished(self, outcome) -> None:
        seen = [(m["type"], bool(m.get("more_body"))) for m in self.sent]
        self.finished.append((outcome.status, seen))
        self.outcomes.append(outcome)


def _framework_app(app):
    """The framework app behind the front door, whose state the lifespan fills."""
    inner = app
    while not hasattr(inner, "state"):
        inner = inner.app
    return inner


@asynccontextmanager
async def running(tmp_path, policy: str = MOCK_POLICY, middleware=()):
    """The app with its lifespan, and a `Recorder` among its observers."""
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    app = create_app(Settings(config=path, data_dir=tmp_path / "data", usage_recording=False), middleware)
    async with lifespan(app) as state:
        recorder = Recorder()
        _framework_app(app).state.gateway.observers.add(recorder)
        yield app, state, recorder


def _chat(content: str, stream: bool, **fields) -> bytes:
    return orjson.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": content}], "stream": stream, **fields}
    )


LONG = "Repeat after me: " + " ".join(["word"] * 400)  # the mock answers one event per word


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_is_accounted_once_its_whole_answer_was_sent(tmp_path, stream):
    async with running(tmp_path) as (app, state, recorder):
        sent = await post(app, state, _chat("Say hello.", stream), on_send=recorder.track)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body")
    # Accounted exactly once, and by then the client had been sent everything, its end included.
    assert len(recorder.finished) == 1
    status, seen_then = recorder.finished[0]
    assert status == 200
    assert seen_then == [(m["type"], bool(m.get("more_body"))) for m in sent]


async def test_a_stream_the_client_leaves_is_accounted_once_as_499(tmp_path):
    async with running(tmp_path) as (app, state, recorder):
        left = asyncio.Event()

        async def leave_after_two_bodies(sent: list[dict]) -> None:
            recorder.sent = sent
            if sum(m["type"] == "http.response.body" for m in sent) == 2:
                left.set()  # the client goes away mid-stream
            await asyncio.sleep(0)

        await post(app, state, _chat(LONG, True, max_tokens=2000), on_send=leave_after_two_bodies, left=left)

    assert [status for status, _ in recorder.finished] == [499]
    assert all(more for kind, more in recorder.finished[0][1] if kind == "http.response.body")  # no end was sent


async def test_a_stream_cancelled_again_while_its_upstream_closes_is_accounted_once(tmp_path, monkeypatch):
    """Shutdown's grace period runs out mid-stream, and a second cancellation lands while the
    upstream answer is being closed (an adapter whose close awaits): still one account, as
    a call cut by shutdown."""
    from gateway.backends import mock

    closing = asyncio.Event()

    async def slow_close(self) -> None:
        closing.set()
        await asyncio.sleep(0.05)

    monkeypatch.setattr(mock.MockResponse, "aclose", slow_close)
    async with running(tmp_path) as (app, state, recorder):

        async def yielding(sent: list[dict]) -> None:
            recorder.sent = sent
            await asyncio.sleep(0)

        task = asyncio.create_task(post(app, state, _chat(LONG, True, max_tokens=2000), on_send=yielding))
        while sum(m["type"] == "http.response.body" for m in recorder.sent) < 3:
            await asyncio.sleep(0)
        task.cancel()  # shutdown's grace period ran out
        await asyncio.wait_for(closing.wait(), 5)
        task.cancel()  # and again, while the upstream answer closes
        with pytest.raises(asyncio.CancelledError):
            await task

    assert [(o.status, o.error) for o in recorder.outcomes] == [(503, "shutdown")]


class Faulty(ChatIngress):
    """Chat, with a fault of the gateway's own once the answer is open: its translation of a
    non-streamed answer, or the setup of a streamed one, raises."""

    def body(self, request, opened):
        raise RuntimeError("a bug in the answer's translation")

    def stream(self, request, opened):
        raise RuntimeError("a bug in the stream's setup")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fault_past_the_answers_opening_is_accounted_once_as_500(tmp_path, stream):
    async with running(tmp_path) as (app, state, recorder):
        ingress = Faulty()

        async def route(scope, receive, send):
            await handle(scope, receive, send, ingress)

        front = FastPathApp(_framework_app(app), {"/v1/faulty": route})
        sent = await post(front, state, _chat("Say hello.", stream), path="/v1/faulty", on_send=recorder.track)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 500  # the front door's answer
    assert [(o.status, o.error) for o in recorder.outcomes] == [(500, "internal_error")]


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
    async with running(tmp_path, TWO_CANDIDATES, [FailingSend]) as (app, state, recorder):
        words = " ".join(["word"] * 50)
        await post(app, state, _chat(f"Repeat after me: {words}", True), on_send=recorder.track)

    assert [(o.status, o.error) for o in recorder.outcomes] == [(500, "internal_error")]
    # One attempt (no continuation on the other candidate), not counted against its backend.
    assert [(a.backend, a.status, a.backend_fault) for a in recorder.attempts] == [("mock", 200, False)]


class FaultyTranslation(ChatIngress):
    """Chat, translated by a stream translator with a bug: it raises on its `fails_at`th
    chunk (the first is the events read before the answer was committed to)."""

    def __init__(self, fails_at: int) -> None:
        self.fails_at = fails_at

    def stream(self, request, opened):
        fails_at = self.fails_at

        class Translator:
            passthrough = False
            fed = 0

            def feed(self, data: bytes) -> bytes:
                self.fed += 1
                if self.fed == fails_at:
                    raise RuntimeError("a bug in the stream's translation")
                return data

            def finish(self) -> bytes:
                return b""

            def broken(self, error) -> bytes:
                return b""

        return Translator()


@pytest.mark.parametrize("fails_at", [1, 3])
async def test_a_stream_the_gateway_fails_to_translate_is_its_own_500_not_the_backends_fault(tmp_path, fails_at):
    async with running(tmp_path, TWO_CANDIDATES) as (app, state, recorder):
        ingress = FaultyTranslation(fails_at)

        async def route(scope, receive, send):
            await handle(scope, receive, send, ingress)

        front = FastPathApp(_framework_app(app), {"/v1/faulty": route})
        words = " ".join(["word"] * 50)
        sent = await post(
            front, state, _chat(f"Repeat after me: {words}", True), path="/v1/faulty", on_send=recorder.track
        )

    # Failing on what was read before the commitment, nothing had been sent: the front door's
    # plain 500. Later, the stream had begun (and ends there).
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == (500 if fails_at == 1 else 200)
    assert [(o.status, o.error) for o in recorder.outcomes] == [(500, "internal_error")]
    # One attempt (no continuation on the other candidate), not counted against its backend.
    assert [(a.backend, a.status, a.backend_fault) for a in recorder.attempts] == [("mock", 200, False)]
