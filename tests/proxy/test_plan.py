"""What each candidate is asked (`open_answer(..., plan=)`) and in which wire format its
answer is read (`gateway.proxy.formats`): the seam every ingress API plugs into."""

from __future__ import annotations

import orjson
import pytest

from gateway.backends.base import UpstreamRequest, UpstreamResponse
from gateway.protocol.chat import parse_chat_request
from gateway.protocol.errors import GatewayError
from gateway.protocol.redact import Redactor
from gateway.proxy.attempts import open_answer
from gateway.proxy.formats import CHAT, AnswerFormat, StreamAccountant, UpstreamCall, json_object
from gateway.proxy.outcome import CallOutcome, Observers
from gateway.proxy.relay import MalformedAnswer, SseAccountant
from gateway.proxy.usage import Usage
from tests.proxy.test_attempts import OK_BODY, Bytes, Pool, Recorder, Scripted, decision, offer

NATIVE = b'{"type": "message", "content": [{"type": "text", "text": "hi"}], "usage": {"output_tokens": 2}}'


class Native(AnswerFormat):
    """A format whose answers are `{"type": "message"}` objects (a stand-in for a native API)."""

    name = "native"

    def __init__(self) -> None:
        self.accountants: list[SseAccountant] = []

    def check_body(self, offer, body: bytes) -> Usage | None:
        answer = json_object(offer, body)
        if answer.get("type") != "message":
            raise MalformedAnswer(f"{offer.backend}: not a message")
        return Usage(0, answer["usage"]["output_tokens"])

    def accountant(self, *, include_usage: bool, redactor: Redactor) -> StreamAccountant:
        self.accountants.append(SseAccountant(strip_usage=False, redactor=redactor))
        return self.accountants[-1]


class Recording(Scripted):
    """A scripted backend that keeps every request, and answers `native` steps natively."""

    def __init__(self, name: str, steps: list[str]) -> None:
        super().__init__(name, steps)
        self.requests: list[UpstreamRequest] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.requests.append(request)
        if self.steps[0] == "native":
            self.calls.append(request.offer.model)
            return Bytes([NATIVE])
        return await super().send(request)


async def run(pool: Pool, routing, plan, stream: bool = False):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    chat = parse_chat_request(orjson.dumps(body))
    recorder = Recorder()
    outcome = CallOutcome("req", "auto", stream)
    opened = await open_answer(chat, routing, pool, Observers([recorder]), outcome, {}, plan=plan)
    return opened, outcome, recorder


async def test_a_candidate_the_plan_cannot_serve_is_skipped_without_an_attempt():
    a, b = Recording("a", ["ok"]), Recording("b", ["ok"])

    def plan(o, backend):
        return None if backend.name == "a" else UpstreamCall("/chat/completions", {"model": o.upstream_id}, CHAT)

    opened, outcome, recorder = await run(Pool(a, b), decision(offer("a"), offer("b"), max_attempts=1), plan)
    assert opened.offer.backend == "b" and opened.format is CHAT
    assert a.requests == [] and len(b.requests) == 1
    assert [x.backend for x in outcome.attempts] == ["b"]  # the skip used no attempt
    assert [e[:2] for e in recorder.events] == [("started", "b"), ("finished", "b")]


async def test_when_the_plan_skips_every_candidate_the_client_hears_no_backend_could_take_it():
    a = Recording("a", ["ok"])
    with pytest.raises(GatewayError) as caught:
        await run(Pool(a), decision(offer("a")), lambda o, backend: None)
    assert caught.value.status == 503 and caught.value.code == "no_backend_available"
    assert a.requests == []


async def test_the_planned_path_and_payload_reach_the_adapter_per_candidate():
    a, b = Recording("a", ["500"]), Recording("b", ["native"])
    native = Native()

    def plan(o, backend):
        if backend.name == "a":
            return UpstreamCall("/chat/completions", {"model": o.upstream_id, "messages": []}, CHAT)
        return UpstreamCall("/messages", {"model": o.upstream_id, "max_tokens": 5}, native)

    opened, outcome, _ = await run(Pool(a, b), decision(offer("a", "m/a"), offer("b", "m/b")), plan)
    assert [(r.path, r.payload) for r in a.requests] == [("/chat/completions", {"model": "m/a", "messages": []})]
    assert [(r.path, r.payload) for r in b.requests] == [("/messages", {"model": "m/b", "max_tokens": 5})]
    # Read in the format it was asked in: checked by it, its usage, and recorded on the answer.
    assert opened.format is native and opened.body == NATIVE and opened.usage == Usage(0, 2)
    assert [x.error for x in outcome.attempts] == ["http_500", None]


async def test_an_answer_its_format_rejects_fails_over_as_malformed():
    """A chat completion where a native message was asked for is not an answer."""
    a, b = Recording("a", ["ok"]), Recording("b", ["native"])
    native = Native()
    opened, outcome, _ = await run(
        Pool(a, b), decision(offer("a"), offer("b")), lambda o, backend: UpstreamCall("/messages", {}, native)
    )
    assert opened.offer.backend == "b" and opened.body == NATIVE
    assert [x.error for x in outcome.attempts] == ["malformed", None]


async def test_a_stream_is_read_by_its_formats_accountant():
    a = Recording("a", ["ok"])
    native = Native()
    opened, _, _ = await run(Pool(a), decision(offer("a")), lambda o, backend: UpstreamCall("/x", {}, native), True)
    assert opened.format is native and native.accountants == [opened.accountant]
    assert b'"content":"hi"' in opened.prefix


async def test_without_a_plan_each_candidate_is_asked_chat_completions_with_its_upstream_id():
    a = Recording("a", ["ok"])
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "route": "x"}
    chat = parse_chat_request(orjson.dumps(body))
    opened = await open_answer(
        chat, decision(offer("a", "m/a")), Pool(a), Observers([]), CallOutcome("r", "auto", False), {}
    )
    [request] = a.requests
    assert request.path == "/chat/completions" and opened.format is CHAT and opened.body == OK_BODY
    assert request.payload == {
        "model": "m/a",
        "messages": [{"role": "user", "content": "hi"}],
    }  # `route` is the gateway's
