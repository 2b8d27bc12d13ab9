"""The fallback loop against in-process scripted backends (the real adapters are covered by
the e2e tests against real HTTP upstreams)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest

from gateway.backends.base import EMBEDDINGS, Backend, UpstreamRequest, UpstreamResponse
from gateway.backends.errors import (
    ContextTooLong,
    RateLimited,
    ServerError,
    StreamBroken,
    UpstreamUnreachable,
    status_error,
)
from gateway.backends.inflight import CandidateGate
from gateway.config.schema import BackendConfig, FallbackSettings, GatewayConfig, ModelOffer
from gateway.config.snapshot import ConfigSnapshot, Offer
from gateway.protocol.chat import parse_chat_request
from gateway.protocol.embeddings import as_base64
from gateway.protocol.errors import GatewayError
from gateway.proxy import openai_formats
from gateway.proxy.attempts import client_error, open_answer, retry_wait
from gateway.proxy.formats import UpstreamCall
from gateway.proxy.openai_formats import ENCODE_ON_LOOP_MAX, EmbeddingsFormat
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


KEY = "sk-upstream-0123456789abcdefghij"

# 200 answers that are not chat completions (issue 11.6).
BODIES = {
    "truncated": OK_BODY[: len(OK_BODY) // 2],
    "not_an_object": b'["choices"]',
    "no_choices": b'{"id": "x", "object": "chat.completion"}',
    "html": b"<html><body>502 Bad Gateway</body></html>",
}
STREAMS = {
    "garbage_stream": [b"data: garbage\n\n", b"data: {also garbage\n\n", b"data: [DONE]\n\n"],
    "garbage_tail": [b"data: {not json, and never terminated"],
    "error_tail": [b'data: {"error": {"message": "overloaded", "code": 503}}'],
    "garbage_after_role": [
        b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n',
        b"event-stream? no\n\n",
    ],
}
# How upstreams say the upstream_id is wrong (issue 13.14), and a 400 that is the request's fault.
REJECTIONS = {
    "openai_404": (
        404,
        b'{"error": {"message": "The model `qwen-x` does not exist or you do not have access to it.", '
        b'"type": "invalid_request_error", "param": null, "code": "model_not_found"}}',
    ),
    "vllm_404": (
        404,
        b'{"object": "error", "message": "The model `Qwen/Qwen3-32` does not exist.", '
        b'"type": "NotFoundError", "param": null, "code": 404}',
    ),
    "openrouter_400": (400, b'{"error": {"message": "qwen/qwen-x is not a valid model ID", "code": 400}}'),
    "deepseek_400": (
        400,
        b'{"error": {"message": "Model Not Exist", "type": "invalid_request_error", "param": null, '
        b'"code": "invalid_request_error"}}',
    ),
    "dotted_id_400": (400, b'{"error": {"message": "The model `qwen2.5-7b-instruct` does not exist."}}'),
    "bad_temperature_400": (400, b'{"error": {"message": "temperature must be at most 2", "param": "temperature"}}'),
    # OpenAI on an image it cannot read: about this image, not a lack of the model.
    "unsupported_image_400": (
        400,
        b'{"error": {"message": "You uploaded an unsupported image. Please make sure your image has of one the '
        b"following formats: ['png', 'jpeg', 'gif', 'webp'].\", \"code\": \"invalid_image_format\"}}",
    ),
    "key_quoted_400": (
        400,
        b'{"error": {"message": "bad request from token=' + KEY[3:].encode() + b" (" + KEY[5:19].encode() + b')"}}',
    ),
}


class Bytes(UpstreamResponse):
    def __init__(self, parts: list[bytes], media_type: str = "application/json") -> None:
        self.parts = parts
        self.media_type = media_type
        self.closed = False

    async def aiter_bytes(self):
        for part in self.parts:
            yield part

    async def aclose(self) -> None:
        self.closed = True


class Scripted(Backend):
    """Answers each call as the next step of its script says."""

    def __init__(
        self, name: str, steps: list[str], first_byte_timeout_s: float | None = None, api_key: str | None = None
    ) -> None:
        super().__init__(
            name,
            BackendConfig(
                type="openai", base_url="http://unused/v1", first_byte_timeout_s=first_byte_timeout_s, api_key=api_key
            ),
        )
        self.steps = list(steps)
        self.calls: list[str] = []
        self.responses: list[Bytes] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.calls.append(request.offer.model)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if step == "ok":
            if request.stream:
                return Bytes(sse(CONTENT), "text/event-stream")
            return Bytes([OK_BODY])
        if step == "hang":
            await asyncio.sleep(3600)
        if step.startswith("slow_to_stop:"):  # no answer; once cancelled, that long to wind down
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(float(step.split(":")[1]))
                raise
        if step.startswith("after:"):  # an answer after that many seconds (a slow first token)
            await asyncio.sleep(float(step.split(":")[1]))
            self.responses.append(Bytes(sse(CONTENT), "text/event-stream") if request.stream else Bytes([OK_BODY]))
            return self.responses[-1]
        if step.startswith("fail_after:"):
            await asyncio.sleep(float(step.split(":")[1]))
            raise status_error("answered 503", 503, b'{"error": {"message": "down"}}')
        if step == "slow_ok":  # a non-streamed answer whose headers come only once generated
            await asyncio.sleep(0.5)
            return Bytes([OK_BODY])
        if step in BODIES:  # a 200 whose body is what the step names
            self.responses.append(Bytes([BODIES[step]]))
            return self.responses[-1]
        if step in STREAMS:
            self.responses.append(Bytes(STREAMS[step], "text/event-stream"))
            return self.responses[-1]
        if step in REJECTIONS:
            status, body = REJECTIONS[step]
            raise status_error(f"answered {status}", status, body)
        if step == "stream_error_first":
            return Bytes(sse({"error": {"message": "overloaded", "code": 503}}), "text/event-stream")
        if step == "context":
            raise ContextTooLong("too long", 400, b'{"error": {"message": "maximum context length exceeded"}}')
        if step.startswith("429"):
            after = float(step.split(":")[1])
            raise RateLimited("rate limited", 429, retry_after=after)
        if step == "connect":
            raise UpstreamUnreachable("refused")
        raise status_error(f"answered {step}", int(step), b'{"error": {"message": "nope"}}')


class Pool:
    def __init__(self, *backends: Backend) -> None:
        self.backends = {b.name: b for b in backends}
        self.gate = CandidateGate()  # no limits configured: every candidate gets its call

    def get(self, name: str):
        return self.backends.get(name)

    def __iter__(self):
        return iter(self.backends.values())


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


async def run(pool: Pool, routing: RoutingDecision, stream: bool = False, snapshot: ConfigSnapshot | None = None):
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    chat = parse_chat_request(orjson.dumps(body))
    recorder = Recorder()
    outcome = CallOutcome("req", "auto", stream)
    extra = {"snapshot": snapshot} if snapshot is not None else {}
    opened = await open_answer(chat, routing, pool, Observers([recorder]), outcome, {}, **extra)
    return opened, outcome, recorder


@pytest.mark.parametrize("failure", ["500", "503", "connect", "context", "401", "404"])
async def test_a_failing_candidate_is_skipped(failure):
    a, b = Scripted("a", [failure]), Scripted("b", ["ok"])
    opened, outcome, recorder = await run(Pool(a, b), decision(offer("a"), offer("b"), retries_per_candidate=0))
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
    # The 500 is retried once on the same candidate, and that retry counts toward max_attempts.
    assert [len(b.calls) for b in backends] == [2, 0, 0, 0]
    assert e.value.code == "upstream_error" and "a/m/x (http_500), a/m/x (http_500)" in e.value.message


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
    # Another model of the same backend (same-candidate retries off, which would ask m/x again).
    a = Scripted("a", ["429:0.05", "ok"])
    routing = decision(offer("a", "m/x"), offer("a", "m/y"), retries_per_candidate=0)
    opened, outcome, recorder = await run(Pool(a), routing)
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
    limited = RateLimited("x", 429, retry_after=1.5)
    assert retry_wait(limited, 1, policy) == 1.5
    assert retry_wait(RateLimited("x", 429, retry_after=5), 1, policy) is None
    failed = ServerError("x", 500)
    waits = [retry_wait(failed, n, policy) for n in (1, 2, 3, 4) for _ in range(50)]
    assert all(0 <= w <= 0.3 for w in waits) and len(set(waits)) > 10  # jittered, capped
    assert max(retry_wait(failed, 1, policy) for _ in range(50)) <= 0.1


# -- issue 11.6: a 200 that is not a chat completion is a failure of that backend ---------
@pytest.mark.parametrize(
    "stream, step", [(False, b) for b in BODIES] + [(True, s) for s in STREAMS if s != "error_tail"]
)
async def test_a_malformed_answer_falls_back_and_counts_against_the_backend(stream, step):
    a, b = Scripted("a", [step]), Scripted("b", ["ok"])
    opened, outcome, recorder = await run(Pool(a, b), decision(offer("a"), offer("b")), stream=stream)
    assert a.calls == ["m/x"] and b.calls == ["m/x"]
    assert opened.offer.backend == "b"
    assert (opened.body == OK_BODY) if not stream else (b'"content":"hi"' in opened.prefix)
    assert [(x.backend, x.error) for x in outcome.attempts] == [("a", "malformed"), ("b", None)]
    assert ("finished", "a", "malformed", None) in recorder.events
    assert all(r.closed for r in a.responses)  # the failed answer's connection is given back


async def test_a_stream_ending_in_an_unterminated_error_event_falls_back_and_is_closed():
    a, b = Scripted("a", ["error_tail"]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")), stream=True)
    assert opened.offer.backend == "b" and [x.error for x in outcome.attempts] == ["http_503", None]
    assert a.responses[0].closed


@pytest.mark.parametrize("stream, step", [(False, "truncated"), (True, "garbage_stream")])
async def test_only_malformed_answers_give_a_502_that_says_so(stream, step):
    a, b = Scripted("a", [step]), Scripted("b", [step])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a, b), decision(offer("a"), offer("b")), stream=stream)
    assert e.value.status == 502 and e.value.code == "upstream_malformed_response"
    assert "a/m/x (malformed), b/m/x (malformed)" in e.value.message
    assert a.calls == b.calls == ["m/x"]


# -- issue 13.14: a wrong upstream_id is the gateway's misconfiguration -------------------
@pytest.mark.parametrize("step", ["openai_404", "vllm_404", "openrouter_400", "deepseek_400", "dotted_id_400"])
async def test_a_model_the_upstream_does_not_know_is_a_misconfigured_candidate(step):
    a, b = Scripted("a", [step]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert opened.offer.backend == "b" and a.calls == ["m/x"] and b.calls == ["m/x"]
    assert [x.error for x in outcome.attempts] == ["misconfigured", None]


@pytest.mark.parametrize("step", ["openai_404", "openrouter_400"])
async def test_only_misconfigured_candidates_give_a_502_not_the_upstreams_400(step):
    a = Scripted("a", [step])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a), decision(offer("a")))
    assert e.value.status == 502 and e.value.code == "backend_misconfigured"
    assert "misconfigured" in e.value.message and "valid model" not in e.value.message
    assert "not exist" not in e.value.message


@pytest.mark.parametrize(
    "step, message",
    [
        ("bad_temperature_400", "temperature must be at most 2"),
        (
            "unsupported_image_400",
            "You uploaded an unsupported image. Please make sure your image has of one the following formats: "
            "['png', 'jpeg', 'gif', 'webp'].",
        ),
    ],
)
async def test_a_400_about_the_request_itself_is_still_the_clients_and_not_retried(step, message):
    a, b = Scripted("a", [step]), Scripted("b", ["ok"])
    with pytest.raises(GatewayError) as e:
        await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert e.value.status == 400 and e.value.code == "upstream_rejected_request"
    assert e.value.message == message and b.calls == []


def snapshot_with(*names: str) -> ConfigSnapshot:
    backends = {n: {"type": "openai", "base_url": f"http://{n}/v1", "models": {"m/x": {}}} for n in names}
    return ConfigSnapshot.build(GatewayConfig.model_validate({"backends": backends}))


async def test_a_misconfiguration_is_logged_once_per_backend_and_model_per_snapshot(caplog):
    a = Scripted("a", ["vllm_404"])
    snapshot = snapshot_with("a")
    caplog.set_level("ERROR", logger="gateway.proxy")
    for _ in range(3):
        with pytest.raises(GatewayError):
            await run(Pool(a), decision(offer("a")), snapshot=snapshot)
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway.proxy"]
    assert logged == [
        "backend 'a' is misconfigured for model m/x: asked for upstream_id 'm/x', it answered 404: "
        "The model `Qwen/Qwen3-32` does not exist."
    ]
    with pytest.raises(GatewayError):  # a reload (a new snapshot) may not have fixed it: say so again
        await run(Pool(a), decision(offer("a")), snapshot=snapshot_with("a"))
    assert len([r for r in caplog.records if r.name == "gateway.proxy"]) == 2
    assert a.calls == ["m/x"] * 4


# -- issue 11.10: a key quoted without its prefix, or in part ------------------------------
async def test_an_upstream_400_quoting_the_key_without_its_prefix_is_redacted():
    a = Scripted("a", ["key_quoted_400"], api_key=KEY)
    with pytest.raises(GatewayError) as e:
        await run(Pool(a), decision(offer("a")))
    assert e.value.status == 400
    assert e.value.message == "bad request from token=[redacted] ([redacted])"


# -- issue 12: the same candidate again, when its failure's class says it is transient ------
async def test_a_500_once_is_retried_on_the_same_candidate():
    a, b = Scripted("a", ["500", "ok"]), Scripted("b", ["ok"])
    opened, outcome, recorder = await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert opened.offer.backend == "a" and a.calls == ["m/x", "m/x"] and b.calls == []
    assert [(x.backend, x.error) for x in outcome.attempts] == [("a", "http_500"), ("a", None)]
    assert [e[0] for e in recorder.events] == ["started", "finished", "started", "finished"]


async def test_a_second_failure_moves_on():
    a, b = Scripted("a", ["502", "500", "ok"]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert opened.offer.backend == "b" and a.calls == ["m/x", "m/x"] and b.calls == ["m/x"]
    assert [x.error for x in outcome.attempts] == ["http_502", "http_500", None]


@pytest.mark.parametrize("failure", ["503", "connect", "429:30", "context", "404"])
async def test_failures_that_are_not_transient_move_on_at_once(failure):
    a, b = Scripted("a", [failure, "ok"]), Scripted("b", ["ok"])
    opened, _, _ = await run(Pool(a, b), decision(offer("a"), offer("b")))
    assert opened.offer.backend == "b" and a.calls == ["m/x"]


async def test_a_first_byte_timeout_is_never_retried_on_the_same_candidate():
    a, b = Scripted("a", ["hang", "ok"], first_byte_timeout_s=0.1), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")), stream=True)
    assert opened.offer.backend == "b" and a.calls == ["m/x"]
    assert [x.error for x in outcome.attempts] == ["timeout", None]


async def test_a_429_with_a_short_retry_after_is_waited_out_on_the_same_candidate():
    a, b = Scripted("a", ["429:0.2", "ok"]), Scripted("b", ["ok"])
    started = asyncio.get_running_loop().time()
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b"), retry_after_max_s=1.0))
    assert opened.offer.backend == "a" and a.calls == ["m/x", "m/x"] and b.calls == []
    assert asyncio.get_running_loop().time() - started >= 0.2  # the advertised wait, at least
    assert [x.error for x in outcome.attempts] == ["rate_limited", None]


async def test_a_retry_after_longer_than_allowed_moves_on():
    a, b = Scripted("a", ["429:0.5", "ok"]), Scripted("b", ["ok"])
    opened, _, _ = await run(Pool(a, b), decision(offer("a"), offer("b"), retry_after_max_s=0.2))
    assert opened.offer.backend == "b" and a.calls == ["m/x"]


async def test_retries_per_candidate_zero_turns_same_candidate_retries_off():
    a, b = Scripted("a", ["500", "ok"]), Scripted("b", ["ok"])
    opened, _, _ = await run(Pool(a, b), decision(offer("a"), offer("b"), retries_per_candidate=0))
    assert opened.offer.backend == "b" and a.calls == ["m/x"]


# -- issue 12: hedged requests --------------------------------------------------------------
def hedged_snapshot(after_ms: float) -> ConfigSnapshot:
    backends = {n: {"type": "openai", "base_url": f"http://{n}/v1", "models": {"m/x": {}}} for n in "ab"}
    route = {"strategy": "ordered", "models": ["m/x"], "hedge": {"after_ms": after_ms}}
    return ConfigSnapshot.build(GatewayConfig.model_validate({"backends": backends, "routes": {"auto": route}}))


async def test_a_slow_first_candidate_is_hedged_and_the_first_to_answer_wins():
    a, b = Scripted("a", ["after:2"]), Scripted("b", ["after:0.1"])
    started = asyncio.get_running_loop().time()
    opened, outcome, recorder = await run(
        Pool(a, b), decision(offer("a"), offer("b")), stream=True, snapshot=hedged_snapshot(200)
    )
    took = asyncio.get_running_loop().time() - started
    assert opened.offer.backend == "b" and 0.3 <= took < 1.0  # hedge at 0.2 s, answered 0.1 s later
    assert a.calls == b.calls == ["m/x"]
    # Both attempts recorded, the loser first (the ledger's final row is the winner's).
    assert [(x.backend, x.error) for x in outcome.attempts] == [("a", "hedge_lost"), ("b", None)]
    assert outcome.offer.backend == "b"
    # A stream's answering attempt is reported by the relay when the stream ends.
    assert [e for e in recorder.events if e[0] == "finished"] == [("finished", "a", "hedge_lost", None)]


async def test_a_non_streamed_call_is_never_hedged():
    # Its first content is its whole answer: hedging would pay for a second generation.
    a, b = Scripted("a", ["after:0.4"]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(Pool(a, b), decision(offer("a"), offer("b")), snapshot=hedged_snapshot(100))
    assert opened.offer.backend == "a" and b.calls == []
    assert [x.error for x in outcome.attempts] == [None]


async def test_a_first_candidate_answering_in_time_is_not_hedged():
    a, b = Scripted("a", ["after:0.05"]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(
        Pool(a, b), decision(offer("a"), offer("b")), stream=True, snapshot=hedged_snapshot(500)
    )
    assert opened.offer.backend == "a" and b.calls == []
    assert [x.error for x in outcome.attempts] == [None]


async def test_a_hedge_that_fails_leaves_the_first_to_answer():
    a, b = Scripted("a", ["after:0.4"]), Scripted("b", ["503"])
    opened, outcome, _ = await run(
        Pool(a, b), decision(offer("a"), offer("b")), stream=True, snapshot=hedged_snapshot(100)
    )
    assert opened.offer.backend == "a" and b.calls == ["m/x"]
    assert [(x.backend, x.error) for x in outcome.attempts] == [("b", "http_503"), ("a", None)]


async def test_a_hedge_judging_the_request_invalid_ends_the_race_at_once():
    """Hostile testing: the first candidate hung, the hedge answered 400 (the request is
    invalid, for any candidate), and the race waited on the first to its time limit: the
    client got a 504 ten seconds later instead of the 400. The 400 now ends the race."""
    a, b, c = Scripted("a", ["hang"]), Scripted("b", ["400"]), Scripted("c", ["ok"])
    routing = decision(offer("a"), offer("b"), offer("c"))
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    chat = parse_chat_request(orjson.dumps(body))
    outcome = CallOutcome("req", "auto", True)
    started = time.perf_counter()
    with pytest.raises(GatewayError) as refused:
        await open_answer(
            chat, routing, Pool(a, b, c), Observers([Recorder()]), outcome, {}, snapshot=hedged_snapshot(100)
        )
    assert time.perf_counter() - started < 1.0  # not the attempt's time limit
    assert refused.value.status == 400 and c.calls == []  # the loop ends on it, as without a hedge
    assert a.calls == b.calls == ["m/x"]
    assert [(x.backend, x.error) for x in outcome.attempts] == [("b", "http_400"), ("a", "hedge_lost")]


async def test_when_both_hedged_attempts_fail_the_loop_goes_on_without_asking_them_again():
    a, b, c = Scripted("a", ["fail_after:0.3"]), Scripted("b", ["503"]), Scripted("c", ["ok"])
    routing = decision(offer("a"), offer("b"), offer("c"))
    opened, outcome, _ = await run(Pool(a, b, c), routing, stream=True, snapshot=hedged_snapshot(100))
    assert opened.offer.backend == "c" and a.calls == b.calls == c.calls == ["m/x"]
    assert [(x.backend, x.error) for x in outcome.attempts] == [("b", "http_503"), ("a", "http_503"), ("c", None)]


async def test_a_first_candidate_failing_before_the_hedge_time_falls_back_as_usual():
    a, b = Scripted("a", ["503"]), Scripted("b", ["ok"])
    opened, outcome, _ = await run(
        Pool(a, b), decision(offer("a"), offer("b")), stream=True, snapshot=hedged_snapshot(500)
    )
    assert opened.offer.backend == "b" and a.calls == b.calls == ["m/x"]
    assert [x.error for x in outcome.attempts] == ["http_503", None]


async def _race_called_off(a: Scripted, b: Scripted, leave_after_s: float) -> CallOutcome:
    """A hedged stream (the hedge at 50 ms) whose client leaves `leave_after_s` in."""
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    outcome = CallOutcome("req", "auto", True)
    chat = parse_chat_request(orjson.dumps(body))
    observers = Observers([Recorder()])
    routing, snapshot = decision(offer("a"), offer("b")), hedged_snapshot(50)
    task = asyncio.create_task(open_answer(chat, routing, Pool(a, b), observers, outcome, {}, snapshot=snapshot))
    await asyncio.sleep(leave_after_s)
    assert a.calls == b.calls == ["m/x"]  # both started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return outcome


async def test_a_client_leaving_mid_race_ends_the_call_on_the_attempt_recorded_last():
    """Hostile testing: the client left while both hedged attempts were in flight, and the
    first took longer to wind down. Both were recorded cancelled, the first last, but the
    call's offer (its ledger's final row) stayed the hedge's, the last started: the ledger
    held a row of the first attempt and a final row naming the hedge's backend twice over."""
    outcome = await _race_called_off(Scripted("a", ["slow_to_stop:0.2"]), Scripted("b", ["after:5"]), 0.3)
    assert [(x.backend, x.error) for x in outcome.attempts] == [("b", "cancelled"), ("a", "cancelled")]
    assert outcome.offer is not None and outcome.offer.backend == "a"


async def test_a_call_whose_hedged_attempts_both_fail_ends_on_the_one_that_failed_last():
    """Review: the hedge (b) fails at once, the first (a) 0.3 s in, and the loop may try no
    more (max_attempts 2): the call's offer stayed the hedge's, the last started, so its
    final row named b again and a's failure had no row."""
    a, b = Scripted("a", ["fail_after:0.3"]), Scripted("b", ["503"])
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    outcome = CallOutcome("req", "auto", True)
    with pytest.raises(GatewayError):
        await open_answer(
            parse_chat_request(orjson.dumps(body)),
            decision(offer("a"), offer("b"), max_attempts=2),
            Pool(a, b),
            Observers([Recorder()]),
            outcome,
            {},
            snapshot=hedged_snapshot(50),
        )
    assert [(x.backend, x.error) for x in outcome.attempts] == [("b", "http_503"), ("a", "http_503")]
    assert outcome.offer is not None and outcome.offer.backend == "a"


async def test_an_answer_won_as_the_client_left_is_recorded_cancelled_not_lost():
    # The hedge (b) answers first; the first attempt takes 0.5 s to stop; the client leaves
    # meanwhile: b's answer is closed unread. It lost to nothing: the call was called off
    # (as was the first, cancelled again while it wound down), and b was recorded last.
    outcome = await _race_called_off(Scripted("a", ["slow_to_stop:0.5"]), Scripted("b", ["after:0.1"]), 0.3)
    assert [(x.backend, x.error) for x in outcome.attempts] == [("a", "cancelled"), ("b", "cancelled")]
    assert outcome.offer is not None and outcome.offer.backend == "b"


def test_a_failure_without_a_status_is_not_called_a_502_from_the_upstream():
    """An answer that broke off was reported as "The upstream failed with status 502", a status
    no upstream had sent (wire-exactness testing)."""
    error = client_error(StreamBroken("a: upstream broke off mid-answer"), decision(offer("a")))
    assert error.status == 502 and error.code == "upstream_error"
    assert error.message == "The upstream's answer failed (tried: a/m/x)."  # no status none sent
    assert "status 500" in client_error(status_error("a: 500", 500), decision(offer("a"))).message


# -- embeddings: float lists encoded as the base64 the client asked for --------------------


class FloatEmbeddings(Backend):
    """An embeddings server answering float lists whatever encoding was asked (as several
    OpenAI-compatible servers do): `count` vectors of `dims` values (whole numbers: quick to
    parse, as quick to encode as any)."""

    def __init__(self, count: int, dims: int) -> None:
        super().__init__("emb", BackendConfig(type="openai", base_url="http://unused/v1"))
        data = [{"object": "embedding", "index": i, "embedding": [1] * dims} for i in range(count)]
        self.body = orjson.dumps({"object": "list", "data": data, "usage": {"prompt_tokens": count}})

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return Bytes([self.body])


async def _answer(backend: FloatEmbeddings, format: EmbeddingsFormat, count: int) -> Any:
    """The answer the fallback loop reads from `backend` in `format`."""

    def plan(offer: Offer, backend: Backend) -> UpstreamCall:
        return UpstreamCall(EMBEDDINGS, {"model": offer.upstream_id, "input": ["x"] * count}, format)

    chat = parse_chat_request(orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
    outcome = CallOutcome("req", "auto", False)
    opened = await open_answer(
        chat, decision(offer("emb")), Pool(backend), Observers([Recorder()]), outcome, {}, plan=plan
    )
    assert [a.error for a in outcome.attempts] == [None]
    return opened.answer


@pytest.mark.parametrize("count, off_the_loop", [(2, False), (ENCODE_ON_LOOP_MAX // 3072 + 1, True)])
async def test_a_large_batch_of_floats_is_encoded_as_base64_off_the_event_loop(count, off_the_loop, monkeypatch):
    """Encoding float lists as the base64 a client asked for ran on the event loop: a large
    batch (2,048 x 3,072 floats: about 270 ms) stalled every other request the process served.
    Past `ENCODE_ON_LOOP_MAX` values it runs in a worker thread; a small batch is not worth
    the thread's hop. Where it ran is recorded, not timed."""
    backend = FloatEmbeddings(count, 3072)
    threads: list[int] = []

    def recorded(data: list[dict[str, Any]]) -> None:
        threads.append(threading.get_ident())
        as_base64(data)

    monkeypatch.setattr(openai_formats, "as_base64", recorded)
    answer = await _answer(backend, EmbeddingsFormat(vectors=count, base64=True), count)
    assert len(threads) == 1 and (threads[0] != threading.get_ident()) is off_the_loop
    expected = orjson.loads(backend.body)["data"]
    as_base64(expected)
    assert [d["embedding"] for d in answer["data"]] == [d["embedding"] for d in expected]  # base64, as asked
