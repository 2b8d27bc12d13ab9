"""The fallback loop against in-process scripted backends (the real adapters are covered by
the e2e tests against real HTTP upstreams)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.backends.base import Backend, UpstreamError, UpstreamRequest, UpstreamResponse
from gateway.config.schema import BackendConfig, FallbackSettings, ModelOffer
from gateway.config.snapshot import Offer
from gateway.protocol.chat import parse_chat_request
from gateway.protocol.errors import GatewayError
from gateway.proxy.attempts import open_answer, retry_wait
from gateway.proxy.outcome import CallOutcome, Observers
from gateway.routing.pipeline import RoutingDecision

OK_BODY = orjson.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
)


def sse(*events: dict) -> list[bytes]:
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


CONTENT = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}


class Bytes(UpstreamResponse):
    def __init__(self, parts: list[bytes], media_type: str = "application/json") -> None:
        self.parts = parts
        self.media_type = media_type

    async def aiter_bytes(self):
        for part in self.parts:
            yield part


class Scripted(Backend):
    """Answers each call as the next step of its script says."""

    def __init__(self, name: str, steps: list[str], first_byte_timeout_s: float | None = None) -> None:
        super().__init__(
            name, BackendConfig(type="openai", base_url="http://unused/v1", first_byte_timeout_s=first_byte_timeout_s)
        )
        self.steps = list(steps)
        self.calls: list[str] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.calls.append(request.offer.model)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if step == "ok":
            if request.stream:
                return Bytes(sse(CONTENT), "text/event-stream")
            return Bytes([OK_BODY])
        if step == "hang":
            await asyncio.sleep(3600)
        if step == "slow_ok":  # a non-streamed answer whose headers come only once generated
            await asyncio.sleep(0.5)
            return Bytes([OK_BODY])
        if step == "stream_error_first":
            return Bytes(sse({"error": {"message": "overloaded", "code": 503}}), "text/event-stream")
        if step == "context":
            raise UpstreamError(
                "context_length",
                "too long",
                status=400,
                body=b'{"error": {"message": "maximum context length exceeded"}}',
            )
        if step.startswith("429"):
            after = float(step.split(":")[1])
            raise UpstreamError("status", "rate limited", status=429, retry_after=after)
        if step == "connect":
            raise UpstreamError("connect", "refused")
        raise UpstreamError("status", f"answered {step}", status=int(step), body=b'{"error": {"message": "nope"}}')


class Pool:
    def __init__(self, *backends: Backend) -> None:
        self.backends = {b.name: b for b in backends}

    def get(self, name: str):
        return self.backends.get(name)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def attempt_started(self, offer):
        self.events.append(("started", offer.backend, offer.model))

    def attempt_finished(self, offer, attempt, ttft_s):
        self.events.append(("finished", offer.backend, attempt.error, attempt.retry_after_s))

    def call_finished(self, outcome):
        pass


def offer(backend: str, model: str = "m/x") -> Offer:
    return Offer(model, backend, model, ModelOffer())


def decision(
    *offers: Offer, max_attempts: int = 3, deadline_s: float = 30.0, fallback: bool = True, **retry
) -> RoutingDecision:
    policy = FallbackSettings(**{"backoff_base_s": 0.0, **retry})
    return RoutingDecision("auto", "chat", offers, max_attempts, deadline_s, fallback, retry=policy)


async def run(pool: Pool, routing: RoutingDecision, stream: bool = False):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    chat = parse_chat_request(orjson.dumps(body))
    recorder = Recorder()
    outcome = CallOutcome("req", "auto", stream)
    opened = await open_answer(chat, routing, pool, Observers([recorder]), outcome, {})
    return opened, outcome, recorder


@pytest.mark.parametrize("failure", ["500", "503", "connect", "context", "401", "404"])
async def test_a_failing_candidate_is_skipped(failure):
    a, b = Scripted("a", [failure]), Scripted("b", ["ok"])
    opened, outcome, recorder = await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert opened.offer.backend == "b" and opened.body == OK_BODY
    assert [x.backend for x in outcome.attempts] == ["a", "b"] and outcome.attempts[0].error
    assert recorder.events[0] == ("started", "a", "m/x") and recorder.events[1][:2] == ("finished", "a")
    assert recorder.events[-1] == ("finished", "b", None, None)


async def test_a_request_the_upstream_judges_invalid_is_not_retried():
    a, b = Scripted("a", ["400"]), Scripted("b", ["ok"])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert e.value.status == 400 and e.value.message == "nope" and b.calls == []


async def test_fallback_false_stops_at_the_first_failure():
    a, b = Scripted("a", ["500"]), Scripted("b", ["ok"])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a, b), decision(offer("a"), offer("b"), fallback=False))
    assert e.value.status == 502 and b.calls == []


async def test_attempts_are_bounded():
    backends = [Scripted(n, ["500"]) for n in "abcd"]
    with pytest.raises(GatewayError) as e:
        await run(Pool(*backends), decision(*(offer(n) for n in "abcd"), max_attempts=2))
    assert [len(b.calls) for b in backends] == [1, 1, 0, 0]
    assert e.value.code == "upstream_error" and "a/m/x (http_500), b/m/x (http_500)" in e.value.message


async def test_candidates_without_an_adapter_do_not_use_up_attempts():
    b = Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(b), decision(offer("gone"), offer("b"), max_attempts=1))
    assert opened.offer.backend == "b" and len(outcome.attempts) == 1


async def test_the_deadline_bounds_all_attempts():
    a, b = Scripted("a", ["hang"]), Scripted("b", ["ok"])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a, b), decision(offer("a"), offer("b"), deadline_s=0.3))
    assert e.value.status == 504 and e.value.code == "upstream_timeout" and b.calls == []


async def test_a_stream_that_hangs_before_content_gives_way_after_the_first_byte_allowance():
    a, b = Scripted("a", ["hang"], first_byte_timeout_s=0.2), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")), stream=True)
    assert opened.offer.backend == "b" and outcome.attempts[0].error == "timeout"
    assert b'"content":"hi"' in opened.prefix


async def test_a_non_streamed_answer_may_take_longer_than_the_first_byte_allowance():
    a, b = Scripted("a", ["slow_ok"], first_byte_timeout_s=0.1), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert opened.offer.backend == "a" and b.calls == []


async def test_a_stream_whose_first_event_is_an_error_falls_back():
    a, b = Scripted("a", ["stream_error_first"]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")), stream=True)
    assert opened.offer.backend == "b" and outcome.attempts[0].error == "http_503"


async def test_a_short_retry_after_is_honoured_before_calling_that_backend_again():
    a = Scripted("a", ["429:0.05", "ok"])
    opened, outcome, recorder = await run(Pool(a), decision(offer("a", "m/x"), offer("a", "m/y")))
    assert a.calls == ["m/x", "m/y"] and opened.offer.model == "m/y"
    assert recorder.events[1] == ("finished", "a", "rate_limited", 0.05)


async def test_a_long_retry_after_skips_that_backend_and_is_passed_on():
    a, b = Scripted("a", ["429:30"]), Scripted("b", ["429:30"])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a, b), decision(offer("a", "m/x"), offer("b", "m/x"), offer("a", "m/y")))
    assert a.calls == ["m/x"] and b.calls == ["m/x"]
    assert e.value.status == 429 and e.value.headers == {"retry-after": "30"}


def test_retry_wait_policy():
    policy = FallbackSettings(backoff_base_s=0.1, backoff_max_s=0.3, retry_after_max_s=2.0)
    limited = UpstreamError("status", "x", status=429, retry_after=1.5)
    assert retry_wait(limited, 1, policy) == 1.5
    assert retry_wait(UpstreamError("status", "x", status=429, retry_after=5), 1, policy) is None
    failed = UpstreamError("status", "x", status=500)
    waits = [retry_wait(failed, n, policy) for n in (1, 2, 3, 4) for _ in range(50)]
    assert all(0 <= w <= 0.3 for w in waits) and len(set(waits)) > 10  # jittered, capped
    assert max(retry_wait(failed, 1, policy) for _ in range(50)) <= 0.1
