"""The pure parts of stream continuation: what the client got, the prefill request per
vendor mode, and the splice of the continuing stream into the client's."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.backends.errors import StreamBroken
from gateway.config.schema import BackendConfig, ModelOffer
from gateway.config.snapshot import Offer
from gateway.protocol.chat import parse_chat_request
from gateway.proxy.attempts import OpenedAnswer
from gateway.proxy.continuation import (
    MAX_KEPT_BYTES,
    Partial,
    PartialRecord,
    RescueContext,
    Splice,
    StreamRescue,
    continuation_payload,
    prefill_mode,
    read_partial,
)
from gateway.proxy.outcome import Attempt, CallOutcome, Observers
from gateway.proxy.usage import Usage
from tests.proxy.test_attempts import Bytes, Pool, Recorder, Scripted, decision


def chunk(delta: dict, finish: str | None = None, *, id: str = "chatcmpl-a", model: str = "m/a", **extra) -> bytes:
    obj = {"id": id, "object": "chat.completion.chunk", "created": 7, "model": model, **extra}
    obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def events(relayed: bytes) -> list:
    return [orjson.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in relayed.split(b"\n\n") if e]


@pytest.mark.parametrize(
    "backend_type, own, expected",
    [
        ("vllm", None, "continue_final_message"),
        ("deepseek", None, "prefix"),
        ("moonshot", None, "partial"),
        ("anthropic", None, "assistant"),
        ("openai", None, None),
        ("openrouter", None, None),
        ("openai", "continue_final_message", "continue_final_message"),  # an offer says it can
        ("vllm", False, None),  # or that it cannot
    ],
)
def test_prefill_capability_is_the_offers_own_else_its_backend_types(backend_type, own, expected):
    offer = Offer("m/x", "b", "x", ModelOffer(prefill=own))
    assert prefill_mode(offer, BackendConfig(type=backend_type, base_url="http://127.0.0.1:9/v1")) == expected


def test_the_partial_answer_is_read_back_from_what_the_client_got():
    record = PartialRecord()
    record.keep(chunk({"role": "assistant", "content": ""}))
    record.keep(chunk({"content": "Hel"}) + chunk({"content": "lo"}))
    record.keep(b": keep-alive\n\n" + chunk({"content": " world"}))
    partial = record.partial()
    assert partial == Partial("Hello world", 3, False, ("chatcmpl-a", 7, "m/a"))


def test_a_started_tool_call_is_noted():
    call = {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a'}}]}
    assert read_partial(chunk({"content": "Let me look."}) + chunk(call)).tool_call


def test_the_record_is_bounded_by_bytes():
    # A few large chunks pass the byte bound long before any count of chunks would.
    record = PartialRecord()
    big = b"data: " + b"x" * (MAX_KEPT_BYTES // 4) + b"\n\n"
    for _ in range(3):
        record.keep(big)
    assert record.partial() is not None
    record.keep(big)
    assert record.chunks is None and record.partial() is None


PAYLOAD = {"model": "up-b", "messages": [{"role": "user", "content": "Count."}], "stream": True, "max_tokens": 100}
PARTIAL = Partial("t0 t1 ", 2, False, ("chatcmpl-a", 7, "m/a"))


@pytest.mark.parametrize(
    "mode, last, extra",
    [
        (
            "continue_final_message",
            {"role": "assistant", "content": "t0 t1 "},
            {"continue_final_message": True, "add_generation_prompt": False},
        ),
        ("prefix", {"role": "assistant", "content": "t0 t1 ", "prefix": True}, {}),
        ("partial", {"role": "assistant", "content": "t0 t1 ", "partial": True}, {}),
        ("assistant", {"role": "assistant", "content": "t0 t1"}, {}),  # no trailing whitespace
    ],
)
def test_the_prefill_request_per_mode(mode, last, extra):
    sent = continuation_payload(PAYLOAD, PARTIAL, mode)
    assert sent["messages"] == [PAYLOAD["messages"][0], last]
    assert {k: sent[k] for k in extra} == extra
    assert sent["max_tokens"] == 98  # what is left of the client's budget
    assert PAYLOAD["messages"] == [{"role": "user", "content": "Count."}]  # the original is untouched


@pytest.mark.parametrize("mode", ["continue_final_message", "prefix", "partial", "assistant"])
def test_a_clients_own_prefill_and_the_partial_answer_are_one_assistant_message(mode):
    """A request that ended in the client's prefill (an Anthropic last assistant turn, chat's
    `continue_final_message`) had the partial answer appended as a second assistant message:
    the continuing model saw the prefill as a finished turn, and backends that want roles to
    alternate refuse two in a row. The answer so far is the prefill and what followed it."""
    prefilled = {**PAYLOAD, "messages": [*PAYLOAD["messages"], {"role": "assistant", "content": "Sure: "}]}
    sent = continuation_payload(prefilled, PARTIAL, mode)
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant"]
    expected = "Sure: t0 t1" if mode == "assistant" else "Sure: t0 t1 "
    assert sent["messages"][-1]["content"] == expected
    assert prefilled["messages"][-1] == {"role": "assistant", "content": "Sure: "}  # the original is untouched
    # An assistant turn with tool calls is not a prefill: answered, the answer follows it.
    called = {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function"}]}
    after_calls = {**PAYLOAD, "messages": [*PAYLOAD["messages"], called, {"role": "tool", "tool_call_id": "c"}]}
    assert len(continuation_payload(after_calls, PARTIAL, mode)["messages"]) == 4


def test_the_continuation_is_spliced_into_the_clients_stream():
    splice = Splice(PARTIAL, Usage(11, 0))
    theirs = dict(id="chatcmpl-b", model="up-b")
    relayed = (
        chunk({"role": "assistant", "content": ""}, **theirs)
        + chunk({"content": "t2 "}, **theirs)
        + chunk({}, "stop", **theirs)
        + b"data: "
        + orjson.dumps({"id": "chatcmpl-b", "choices": [], "usage": {"prompt_tokens": 15, "completion_tokens": 1}})
        + b"\n\ndata: [DONE]\n\n"
    )
    out = events(splice.events(relayed))
    # No second role delta; the client's id, created and model throughout; one usage total.
    assert [e if e == "[DONE]" else e["choices"] for e in out] == [
        [{"index": 0, "delta": {"content": "t2 "}, "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        [],
        "[DONE]",
    ]
    assert all((e["id"], e["created"], e["model"]) == ("chatcmpl-a", 7, "m/a") for e in out[:-1])
    assert out[2]["usage"] == {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    assert splice.usage == Usage(15, 1)  # the continuing attempt's own, for its ledger row


# -- StreamRescue against in-process candidates ---------------------------------------------
async def rescue_run(candidates: list[Offer], pool, relayed: list[bytes], error=None, outcome=None):
    """A stream from candidates[0] that relayed `relayed` and broke with `error`: what the
    rescue forwarded and returned, and the call's outcome (`outcome`, when given)."""
    chat = parse_chat_request(
        orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    )
    outcome = outcome if outcome is not None else CallOutcome("req", "auto", True)
    broken = candidates[0]
    attempt = Attempt(broken.backend, broken.model, None, 200, 0.1)
    outcome.attempts.append(attempt)
    outcome.offer = broken
    opened = OpenedAnswer(broken, Bytes([]), 0.0, attempt=attempt)
    recorder = Recorder()
    context = RescueContext(chat, decision(*candidates), pool, Observers([recorder]), outcome, {}, None, 1 << 20)
    rescue = StreamRescue.for_stream(context, opened)
    assert rescue is not None
    for chunk in relayed:
        rescue.keep(chunk)
    forwarded: list[bytes] = []

    async def forward(body: bytes) -> None:
        forwarded.append(body)

    tail = await rescue.resume(error or StreamBroken("cut"), forward, lambda: None)  # a cancellation: the client left
    return tail, b"".join(forwarded), outcome, recorder


def prefilled(backend: str, mode="continue_final_message") -> Offer:
    return Offer("m/x", backend, "m/x", ModelOffer(prefill=mode))


RELAYED = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"})]


async def test_a_rescue_continues_on_the_next_candidate_that_takes_a_prefill():
    a, b = Scripted("a", ["ok"]), Scripted("b", ["ok"])
    tail, forwarded, outcome, recorder = await rescue_run([prefilled("a"), prefilled("b")], Pool(a, b), RELAYED)
    assert a.calls == [] and b.calls == ["m/x"]
    out = events(forwarded + tail)
    assert [e["choices"][0]["delta"] for e in out if e != "[DONE]" and e["choices"]] == [{"content": "hi"}]
    assert all(e["id"] == "chatcmpl-a" for e in out if e != "[DONE]") and out[-1] == "[DONE]"
    broken, answered = outcome.attempts
    assert (broken.error, broken.backend_fault, broken.usage.completion_tokens) == ("protocol", True, 2)
    assert (answered.backend, answered.error, outcome.offer.backend, outcome.status) == ("b", None, "b", 200)
    assert [e[:3] for e in recorder.events] == [
        ("finished", "a", "protocol"),
        ("started", "b", "m/x"),
        ("finished", "b", None),
    ]


async def test_a_started_tool_call_is_not_continued():
    call = {"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}]}
    b = Scripted("b", ["ok"])
    tail, forwarded, outcome, _ = await rescue_run([prefilled("a"), prefilled("b")], Pool(b), [*RELAYED, chunk(call)])
    assert tail is None and forwarded == b"" and b.calls == []


async def test_a_candidate_refusing_the_prefill_is_passed_over_and_never_named():
    b, c = Scripted("b", ["400"]), Scripted("c", ["ok"])
    routing = [prefilled("a"), prefilled("b", "assistant"), prefilled("c")]
    tail, forwarded, outcome, _ = await rescue_run(routing, Pool(b, c), RELAYED)
    assert b.calls == c.calls == ["m/x"] and tail is not None
    assert [x.error for x in outcome.attempts] == ["protocol", "http_400", None]


async def test_when_every_prefill_is_refused_the_stream_ends_with_the_real_failure():
    b = Scripted("b", ["400"])
    tail, forwarded, outcome, _ = await rescue_run([prefilled("a"), prefilled("b")], Pool(b), RELAYED)
    assert tail is None and forwarded == b""  # the relay then sends its error event for the cut
    assert outcome.offer.backend == "a"


async def test_no_attempt_left_leaves_the_broken_attempt_to_the_relay():
    b = Scripted("b", ["ok"])
    candidates = [prefilled("a"), prefilled("b")]
    chat = parse_chat_request(
        orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    )
    outcome = CallOutcome("req", "auto", True)
    attempt = Attempt("a", "m/x", None, 200, 0.1)
    outcome.attempts.append(attempt)
    context = RescueContext(
        chat, decision(*candidates, max_attempts=1), Pool(b), Observers([]), outcome, {}, None, 1024
    )
    rescue = StreamRescue.for_stream(context, OpenedAnswer(candidates[0], Bytes([]), 0.0, attempt=attempt))
    for c in RELAYED:
        rescue.keep(c)

    async def forward(body: bytes) -> None:
        raise AssertionError("nothing to forward")

    assert await rescue.resume(StreamBroken("cut"), forward, lambda: None) is None
    assert not rescue.took_over and attempt.error is None and b.calls == []  # the relay's to account


async def test_a_client_leaving_while_a_continuer_is_asked_ends_the_call_where_it_broke():
    # The continuing candidate is slow to answer and the client leaves meanwhile: the call's
    # final row is the broken attempt (what the client got), not the candidate that had just
    # been asked and delivered nothing.
    b = Scripted("b", ["after:5"])
    outcome = CallOutcome("req", "auto", True)
    task = asyncio.ensure_future(rescue_run([prefilled("a"), prefilled("b")], Pool(b), RELAYED, outcome=outcome))
    await asyncio.sleep(0.2)
    assert b.calls == ["m/x"] and outcome.offer.backend == "b"  # asked: the attempt is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (outcome.offer.backend, outcome.status) == ("a", 499)
    assert [(x.backend, x.error) for x in outcome.attempts] == [("b", "cancelled"), ("a", "protocol")]
