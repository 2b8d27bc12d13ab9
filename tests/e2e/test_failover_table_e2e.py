"""Issue 12's failover table, row by row: a route with a faulty model first and a healthy
model as fallback, the real gateway process, the `openai` client as the caller.

Each test asserts the conduct, not only the outcome: how many attempts each upstream saw
(from the fault upstream's own log) and how far apart, what the client got, and what the
usage ledger (the gateway's SQLite store) holds, every attempt's row included. Besides the
table's rows: retries on the same candidate, stream continuation (through chat and through
`/v1/messages` with the `anthropic` SDK) and hedged requests.
"""

from __future__ import annotations

import email.utils
import math
import sqlite3
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.support import fault_upstream as fault
from tests.support.fault_upstream import FaultUpstream
from tests.support.poll import poll
from tests.support.scrape import scrape

FULL_ANSWER = "".join(f"t{i} " for i in range(fault.TOKENS))

# Two backends on two fault upstreams; the route tries `flaky` first. `timeout_s` bounds
# the no-answer row; `cooldown_s` pins the breaker shut for the whole of a row (rows that
# count attempts after the circuit opened need no probe in the middle of them).
CONFIG = """
backends:
  flaky:
    type: openai
    base_url: {primary}
    api_key: sk-flaky-123456
    timeout_s: {timeout_s}
    {circuit}
    models:
      test/small: {{context_length: 8192, input_price: 1.0, output_price: 2.0}}
  steady:
    type: openai
    base_url: {fallback}
    api_key: sk-steady-123456
    timeout_s: 10
    models:
      test/large: {{context_length: 131072, input_price: 3.0, output_price: 4.0, {prefill}}}
routes:
  auto:
    strategy: ordered
    models: [test/small, test/large]
"""
PINNED_CIRCUIT = "circuit: {failure_threshold: 3, cooldown_s: 60}"
ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05"}


@pytest.fixture
def primary():
    server = FaultUpstream("flaky").start()
    yield server
    server.stop()


@pytest.fixture
def fallback():
    server = FaultUpstream("steady").start()
    yield server
    server.stop()


@pytest.fixture
def gateway(start_gateway, primary, fallback):
    def start(timeout_s: float = 10, circuit: str = PINNED_CIRCUIT, prefill: str = ""):
        config = CONFIG.format(
            primary=primary.base_url, fallback=fallback.base_url, timeout_s=timeout_s, circuit=circuit, prefill=prefill
        )
        return start_gateway(config, env=ENV)

    return start


def ask(client: openai.OpenAI, stream: bool, **extra):
    """One call; returns (answering backend, text, usage, finish_reason)."""
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Count."}],
        stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
        **extra,
    )
    backend = raw.headers["x-gateway-backend"]
    parsed = raw.parse()
    if not stream:
        choice = parsed.choices[0]
        return backend, choice.message.content, parsed.usage, choice.finish_reason
    text, usage, finish = [], None, None
    for chunk in parsed:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return backend, "".join(text), usage, finish


def ledger(gw, count: int) -> list[dict]:
    """The ledger's row for each call, oldest first, once it holds `count` of them.

    A ledger that also keeps a row per failed attempt (schema v1: `final` false) still has
    one final row per call; those are the rows returned, so the assertions read the same
    against either schema.
    """
    path = Path(gw.dir) / "data" / "usage.sqlite3"

    def rows() -> list[dict] | None:
        if not path.exists():
            return None
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            found = [dict(r) for r in db.execute("SELECT * FROM events ORDER BY timestamp, id")]
        calls = [r for r in found if r.get("final", 1)]
        return calls if len(calls) >= count else None

    found = poll(rows, what=f"{count} calls in the usage ledger", ignore=(sqlite3.OperationalError,))
    assert len(found) == count, found
    return found


def _answers(client, streams: list[bool]) -> list[tuple]:
    return [ask(client, stream) for stream in streams]


# -- rows whose "should" is "keep" ---------------------------------------------------------


@pytest.mark.parametrize(
    "step, label",
    [(fault.status(503), "503"), (fault.reset(), "reset")],
    ids=["503-persistent", "reset-before-headers"],
)
def test_persistent_backend_failure_opens_the_circuit_after_three_attempts(
    step, label, gateway, primary, fallback, openai_client
):
    gw = gateway()
    primary.always(step)
    client = openai_client(gw)
    streams = [False, True, False, True, False, True]
    answers = _answers(client, streams)

    # Every call answered by the fallback, whole, streamed or not.
    assert [a[0] for a in answers] == ["steady"] * 6
    assert all(a[1] == FULL_ANSWER and a[3] == "stop" for a in answers)
    assert [a[2].completion_tokens for a in answers] == [fault.TOKENS] * 6
    # The primary saw the three failures that opened its circuit, and nothing after: no
    # retry within a call, no call while the circuit is open.
    assert len(primary.seen) == 3 and [s.step for s in primary.seen] == [step.kind] * 3
    assert [s.body.get("stream", False) for s in primary.seen] == streams[:3]
    assert len(fallback.seen) == 6
    rows = ledger(gw, 6)
    assert [r["backend"] for r in rows] == ["steady"] * 6
    assert [r["status"] for r in rows] == [200] * 6
    assert [r["attempts"] for r in rows] == [2, 2, 2, 1, 1, 1]
    assert [r["completion_tokens"] for r in rows] == [fault.TOKENS] * 6
    assert [r["estimated"] for r in rows] == [0] * 6


def test_persistent_429_without_retry_after_moves_on_once_per_call(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.always(fault.status(429))
    client = openai_client(gw)
    streams = [False, True, False, True]
    answers = _answers(client, streams)

    assert [a[0] for a in answers] == ["steady"] * 4 and all(a[1] == FULL_ANSWER for a in answers)
    # A 429 is not the backend failing: no circuit, so every call asks the primary, once.
    assert len(primary.seen) == 4 and [s.body.get("stream", False) for s in primary.seen] == streams
    assert len(fallback.seen) == 4
    rows = ledger(gw, 4)
    assert [(r["backend"], r["status"], r["attempts"]) for r in rows] == [("steady", 200, 2)] * 4


def test_no_answer_at_all_times_out_then_falls_back(gateway, primary, fallback, openai_client):
    gw = gateway(timeout_s=1.5)
    primary.always(fault.hang())
    client = openai_client(gw)
    streams = [False, True, False, True]
    answers = _answers(client, streams)

    assert [a[0] for a in answers] == ["steady"] * 4 and all(a[1] == FULL_ANSWER for a in answers)
    # Timeouts count against the backend: three calls open its circuit, the fourth skips it.
    assert len(primary.seen) == 3 and [s.step for s in primary.seen] == ["hang"] * 3
    assert len(fallback.seen) == 4
    rows = ledger(gw, 4)
    assert [(r["backend"], r["status"], r["attempts"]) for r in rows] == [("steady", 200, 2)] * 3 + [("steady", 200, 1)]


def test_a_half_open_circuits_probe_is_one_call_not_retried_on_the_same_candidate(
    gateway, primary, fallback, openai_client
):
    """Hostile testing: a failing probe (a 500) was retried on the same candidate before the
    loop moved on, so a backend still down saw two calls per cooldown, not the one probe."""
    gw = gateway(circuit="circuit: {failure_threshold: 2, cooldown_s: 1}")
    primary.always(fault.status(500))
    client = openai_client(gw)
    assert ask(client, False)[0] == "steady"  # two 500s (the call and its retry): the circuit opens
    assert [s.step for s in primary.seen] == ["status", "status"]
    assert ask(client, False)[0] == "steady"  # open: not asked
    assert len(primary.seen) == 2
    time.sleep(1.2)  # past the cooldown: half-open, the next call probes
    assert ask(client, False)[0] == "steady"
    assert len(primary.seen) == 3  # one probe call, failed, then the fallback: no retry of it
    assert len(fallback.seen) == 3


def test_an_upstreams_400_keeps_the_field_it_names(gateway, primary, fallback, openai_client):
    """Hostile testing: the upstream's `param` was dropped (null), which SDK users read."""
    gw = gateway()
    error = {"message": "bad value for temperature", "type": "invalid_request_error", "param": "temperature"}
    primary.script(fault.Step("status", 400, error={"error": {**error, "code": None}}))
    with pytest.raises(openai.BadRequestError) as raised:
        ask(openai_client(gw), False)
    assert raised.value.param == "temperature" and raised.value.code == "upstream_rejected_request"
    assert "bad value for temperature" in raised.value.message
    assert len(primary.seen) == 1 and fallback.seen == []  # the request's own fault: not tried elsewhere


def test_context_length_exceeded_goes_to_the_larger_model_and_never_opens_the_circuit(
    gateway, primary, fallback, openai_client
):
    gw = gateway()
    primary.always(fault.context_length())
    client = openai_client(gw)
    streams = [False, True, False, True]
    answers = _answers(client, streams)

    assert [a[0] for a in answers] == ["steady"] * 4 and all(a[1] == FULL_ANSWER for a in answers)
    # The request was too long for that model, not the backend broken: every call asks it
    # again (once), and the larger model answers.
    assert len(primary.seen) == 4 and [s.step for s in primary.seen] == ["status"] * 4
    assert [s.body["model"] for s in fallback.seen] == ["test/large"] * 4
    rows = ledger(gw, 4)
    assert [(r["backend"], r["model"], r["attempts"]) for r in rows] == [("steady", "test/large", 2)] * 4


def test_content_filter_is_passed_on_as_the_answer(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.always(fault.content_filter())
    client = openai_client(gw)
    answers = _answers(client, [False, True])

    # The provider's filter decided: the client gets that answer as it was, not another model's.
    assert answers == [
        ("flaky", "t0 t1 t2 ", answers[0][2], "content_filter"),
        ("flaky", "t0 t1 t2 ", answers[1][2], "content_filter"),
    ]
    assert [a[2].completion_tokens for a in answers] == [3, 3]
    assert len(primary.seen) == 2 and fallback.seen == []
    rows = ledger(gw, 2)
    assert [(r["backend"], r["status"], r["attempts"], r["completion_tokens"]) for r in rows] == [
        ("flaky", 200, 1, 3)
    ] * 2


def test_malformed_chunk_mid_stream_does_not_break_the_client(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.always(fault.malformed(at=3))
    backend, text, usage, finish = ask(openai_client(gw), True)

    assert (backend, text, finish) == ("flaky", FULL_ANSWER, "stop")
    assert usage.completion_tokens == fault.TOKENS
    assert len(primary.seen) == 1 and fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["completion_tokens"]) == ("flaky", 200, fault.TOKENS)


def test_stream_ending_without_done_still_ends_cleanly(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.always(fault.no_done())
    backend, text, usage, finish = ask(openai_client(gw), True)

    assert (backend, text, finish) == ("flaky", FULL_ANSWER, "stop")
    assert usage.completion_tokens == fault.TOKENS
    assert len(primary.seen) == 1 and fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["completion_tokens"]) == ("flaky", 200, fault.TOKENS)


# -- recovery: back on the preferred candidate soon after it recovers ----------------------


def steady_run(client: openai.OpenAI, interval: float, until: float) -> list[tuple]:
    """Calls at a steady pace (every `interval` s, streamed and not in turn) until `until`."""
    answers: list[tuple] = []
    start = time.monotonic()
    while time.monotonic() < until:
        time.sleep(max(0.0, start + len(answers) * interval - time.monotonic()))
        answers.append(ask(client, stream=len(answers) % 2 == 1))
    return answers


def test_primary_down_then_healthy_gets_traffic_back_within_five_seconds(gateway, primary, fallback, openai_client):
    gw = gateway(circuit="")  # the gateway's own circuit settings
    client = openai_client(gw)
    # Calls every 0.5 s; the recovery falls between two of them.
    interval, outage, after = 0.5, 8.25, 7.0
    recovered = primary.down_for(outage)  # 503 to every call until then, healthy after
    answers = steady_run(client, interval, until=recovered + after)

    # Every call was answered whole, by one backend or the other.
    assert all(text == FULL_ANSWER and finish == "stop" for _, text, _, finish in answers)
    backends = [a[0] for a in answers]
    back = backends.index("flaky")  # fails the test if the primary never got traffic back
    assert backends[back:] == ["flaky"] * (len(backends) - back)  # and kept it
    assert backends[:back] == ["steady"] * back

    # From the primary's own log: the first call it answered after its recovery arrived
    # within 5 s (plus the pace of the calls) of that moment.
    failed = [s.at for s in primary.seen if s.step == "status"]
    answered = [s.at for s in primary.seen if s.step == "ok"]
    assert len(answered) == len(backends) - back
    assert all(at < recovered for at in failed) and answered[0] >= recovered
    assert answered[0] - recovered <= 5.0 + interval
    # Conduct while it was down: three calls opened the circuit; after that only one probe
    # per cooldown (2 s, then 4 s: each gap at least that long), never a burst.
    assert len(failed) >= 3
    probes = failed[3:]
    gaps = [b - a for a, b in zip(failed[2:], probes)]
    assert all(gap >= cooldown for gap, cooldown in zip(gaps, [2.0] + [4.0] * len(gaps))), gaps
    assert len(fallback.seen) == back

    rows = ledger(gw, len(answers))
    assert [r["backend"] for r in rows] == backends
    assert [r["status"] for r in rows] == [200] * len(answers)


# -- rows whose "should" changed the behaviour (issue 12): retries, idle limit, continuation --


def all_rows(gw) -> list[tuple]:
    """Every ledger row of the (one) call, attempts in order: backend, status, error, final,
    completion tokens."""
    path = Path(gw.dir) / "data" / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        query = "SELECT backend, status, error, final, completion_tokens FROM events ORDER BY attempt"
        return [(b, s, e, bool(f), t) for b, s, e, f, t in db.execute(query)]


def _completion_tokens_billed(gw) -> int:
    """Completion tokens on the rows that bill the key: the calls' final rows."""
    path = Path(gw.dir) / "data" / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COALESCE(SUM(completion_tokens), 0) FROM events WHERE final = 1").fetchone()[0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_429_with_short_retry_after_once_is_retried_on_the_same_candidate(
    stream, gateway, primary, fallback, openai_client
):
    gw = gateway()
    primary.script(fault.status(429, retry_after=2))
    backend, text, usage, _ = ask(openai_client(gw), stream)

    # Waited out on the same candidate (2 s <= fallback.retry_after_max_s), never the fallback.
    assert (backend, text) == ("flaky", FULL_ANSWER)
    assert usage.completion_tokens == fault.TOKENS
    assert [s.step for s in primary.seen] == ["status", "ok"]
    assert 2.0 <= primary.seen[1].at - primary.seen[0].at < 3.0  # the advertised wait, not much more
    assert fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["attempts"]) == ("flaky", 200, 2)
    assert all_rows(gw) == [("flaky", 429, "rate_limited", False, 0), ("flaky", 200, None, True, fault.TOKENS)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_retry_after_given_as_an_http_date_is_waited_out_on_the_same_candidate(
    stream, gateway, primary, fallback, openai_client
):
    """Hostile testing: `Retry-After` may be an HTTP-date (RFC 9110 10.2.3; what proxies and
    maintenance pages in front of a model server send). It was ignored as unreadable: the
    429 counted as one without a wait, the rate-limited candidate was left at once for the
    fallback and not put at the back of the list. Read as the seconds until that date, it is
    honoured like `Retry-After: 2`."""
    gw = gateway()
    until = math.floor(time.time()) + 2  # whole seconds: what the date can say; 1-2 s from now
    date = email.utils.formatdate(until, usegmt=True)
    limited = fault.Step("status", 429, {"retry-after": date}, {"error": {"message": "busy", "type": "rate_limited"}})
    primary.script(limited)
    started = time.time()
    backend, text, _, _ = ask(openai_client(gw), stream)

    assert (backend, text) == ("flaky", FULL_ANSWER)
    assert [s.step for s in primary.seen] == ["status", "ok"]
    assert fallback.seen == []
    waited = primary.seen[1].at - primary.seen[0].at
    assert until - started - 0.3 <= waited < until - started + 1.0, (waited, until - started)
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["attempts"]) == ("flaky", 200, 2)
    assert all_rows(gw) == [("flaky", 429, "rate_limited", False, 0), ("flaky", 200, None, True, fault.TOKENS)]


def test_429_with_a_retry_after_longer_than_allowed_moves_on(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.script(fault.status(429, retry_after=5))  # past retry_after_max_s (2 s)
    backend, text, _, _ = ask(openai_client(gw), True)

    assert (backend, text) == ("steady", FULL_ANSWER)
    assert [s.step for s in primary.seen] == ["status"] and len(fallback.seen) == 1
    assert fallback.seen[0].at - primary.seen[0].at < 1.0  # no waiting for it


@pytest.mark.parametrize("retry_after", ["inf", "1e400", "nan"])
def test_an_absurd_retry_after_from_every_backend_is_a_429_with_a_bounded_wait(gateway, primary, fallback, retry_after):
    """Hostile testing: `Retry-After: inf` (or 1e400, which float() reads as infinite) from
    every candidate crashed the request (OverflowError rounding it up): a 500 with a
    traceback, which the SDKs retry. An infinite wait is taken as the longest one, 3600 s (said
    in the message, past what a client should sleep through); `nan` as no wait given."""
    gw = gateway()
    limited = fault.Step(
        "status", 429, {"retry-after": retry_after}, {"error": {"message": "slow down", "type": "rate_limited"}}
    )
    primary.script(then=limited)
    fallback.script(then=limited)
    for stream in (False, True):
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        )
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["x-request-id"]
        # The hour in words, no Retry-After (clients that honour any would sleep it through).
        assert "retry-after" not in r.headers
        assert r.headers.get("x-should-retry") == (None if retry_after == "nan" else "false")
        assert r.json()["error"]["message"].endswith("." if retry_after == "nan" else "Retry after 3600s.")
    assert len(primary.seen) == 2 and len(fallback.seen) == 2  # once each per call: no wait that long is taken
    assert "Traceback" not in gw.log()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_500_once_is_retried_once_on_the_same_candidate(stream, gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.script(fault.status(500))
    backend, text, usage, _ = ask(openai_client(gw), stream)

    assert (backend, text) == ("flaky", FULL_ANSWER)
    assert [s.step for s in primary.seen] == ["status", "ok"]
    assert primary.seen[1].at - primary.seen[0].at < 1.0  # a jittered backoff of at most 50 ms, plus the call
    assert fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["attempts"]) == ("flaky", 200, 2)
    assert all_rows(gw) == [("flaky", 500, "http_500", False, 0), ("flaky", 200, None, True, fault.TOKENS)]


def test_500_twice_moves_on_to_the_fallback(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.script(fault.status(500), fault.status(500))
    backend, text, _, _ = ask(openai_client(gw), True)

    assert (backend, text) == ("steady", FULL_ANSWER)
    assert [s.step for s in primary.seen] == ["status", "status"] and len(fallback.seen) == 1
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["attempts"]) == ("steady", 3)


def chunks_of(client: openai.OpenAI) -> list:
    """One streamed call's chunks as the SDK parsed them."""
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Count."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return list(stream)


def test_stream_cut_mid_answer_is_continued_on_the_fallback(gateway, primary, fallback, openai_client):
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    chunks = chunks_of(openai_client(gw))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FULL_ANSWER and [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # One stream as the client sees it: the first attempt's id and model throughout, one role
    # delta, one usage total (40 tokens from the primary, 20 from the fallback).
    assert {c.id for c in chunks} == {"chatcmpl-flaky"} and {c.model for c in chunks} == {"test/small"}
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == fault.TOKENS
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    sent = fallback.seen[0].body
    prefill = sent["messages"][-1]
    assert prefill == {"role": "assistant", "content": "".join(f"t{i} " for i in range(40))}
    assert (sent["continue_final_message"], sent["add_generation_prompt"]) == (True, False)
    # Each attempt its own row: the broken one's 40 delivered tokens for the operator, the
    # final row billing all 60 the client read, once (tests/e2e/test_failover_billing_e2e.py).
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 200, None, True, fault.TOKENS)]
    assert _completion_tokens_billed(gw) == fault.TOKENS


def test_a_continuation_after_a_whitespace_stripped_prefill_is_byte_exact_at_the_seam(
    gateway, primary, fallback, openai_client
):
    """`prefill: assistant` (Anthropic's default) sends the partial answer without its
    trailing whitespace, which Anthropic refuses; the model then writes that whitespace
    again (" t40 " after "... t39"). Hostile testing: the client read it twice ("t39  t40");
    the seam now drops what the client already has, and nothing else."""
    gw = gateway(prefill="prefill: assistant")
    primary.script(fault.cut(after=40))
    chunks = chunks_of(openai_client(gw))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FULL_ANSWER
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    prefill = fallback.seen[0].body["messages"][-1]
    assert prefill == {"role": "assistant", "content": "".join(f"t{i} " for i in range(40)).rstrip()}
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == fault.TOKENS
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 200, None, True, fault.TOKENS)]
    assert _completion_tokens_billed(gw) == fault.TOKENS


def _chunk(delta: dict) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": None}
    chunk = {"id": "chatcmpl-flaky", "object": "chat.completion.chunk", "created": 1, "model": "test/small"}
    return b"data: " + orjson.dumps({**chunk, "choices": [choice]}) + b"\n\n"


def test_a_continued_reasoning_answer_bills_the_reasoning_the_client_read(gateway, primary, fallback, openai_client):
    """Hostile testing: a reasoning model's stream broke after 30 reasoning deltas and 40 of
    text. Only the text was counted as delivered: the client's usage, the bill and the
    continuation's `max_tokens` left out the 30 reasoning tokens it had read (a reasoning
    model's thousands), though a stream that is not continued bills them."""
    gw = gateway(prefill="prefill: continue_final_message")
    reasoning = [_chunk({"reasoning_content": f"r{i} "}) for i in range(30)]
    text = [_chunk({"content": f"t{i} "}) for i in range(40)]
    # The answer so far, then the body's end without a finish_reason or [DONE]: broken.
    primary.script(fault.at_once(_chunk({"role": "assistant", "content": ""}), *reasoning, *text))
    stream = openai_client(gw).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Count."}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=500,
    )
    chunks = list(stream)

    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == "".join(f"r{i} " for i in range(30))
    assert "".join(d.content or "" for d in deltas) == FULL_ANSWER
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == 30 + fault.TOKENS
    assert usages[0].completion_tokens_details.reasoning_tokens == 30
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["max_tokens"] == 500 - 70  # what the client read used the budget
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 70), ("steady", 200, None, True, 30 + fault.TOKENS)]
    assert _completion_tokens_billed(gw) == 30 + fault.TOKENS


@pytest.mark.parametrize("step", [fault.stall, fault.pinging], ids=["silent", "keep-alive-comments"])
def test_stream_stall_is_cut_by_the_idle_limit_and_continued(gateway, primary, fallback, openai_client, step):
    # timeout_s 30: the per-read limit would end the stall after 30 s; the stream's own idle
    # limit (stream_idle_timeout_s, default 10 s) comes first and continues the answer elsewhere.
    # Keep-alive comments (hostile testing): an upstream stuck after content but sending
    # `: ping` kept the stream open for as long as the client waited (the read timer restarts
    # at any bytes, and comments are not events); the relay now counts events.
    gw = gateway(timeout_s=30, prefill="prefill: continue_final_message")
    primary.script(step(after=40))
    started = time.monotonic()
    backend, text, usage, finish = ask(openai_client(gw), True)

    assert (text, finish) == (FULL_ANSWER, "stop")
    assert 10.0 <= time.monotonic() - started < 20.0
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].at - primary.seen[0].at >= 10.0  # after the idle limit, not before
    assert fallback.seen[0].body["messages"][-1] == {
        "role": "assistant",
        "content": "".join(f"t{i} " for i in range(40)),
    }
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 504, "timeout", False, 40), ("steady", 200, None, True, fault.TOKENS)]


def test_a_continuation_that_sends_only_keep_alives_is_cut_by_its_idle_limit(
    start_gateway, primary, fallback, openai_client
):
    """Hostile testing: the first stream breaks, and the backend continuing it sends a few
    tokens, then only keep-alive comments (`: ping`, every 250 ms: the read timer never
    fires). The first relay cuts such a stream after `stream_idle_timeout_s` without an
    event; the continuation's relay did not, and held the client for as long as it waited.
    Now the same limit (the continuing backend's, 1 s here) ends it with the error event of a
    stream that broke."""
    config = CONFIG.replace(
        "    api_key: sk-steady-123456\n", "    api_key: sk-steady-123456\n    stream_idle_timeout_s: 1\n"
    ).format(
        primary=primary.base_url,
        fallback=fallback.base_url,
        timeout_s=10,
        circuit=PINNED_CIRCUIT,
        prefill="prefill: continue_final_message",
    )
    gw = start_gateway(config, env=ENV)
    primary.script(fault.cut(after=40))
    fallback.script(fault.pinging(after=5))
    stream = openai_client(gw).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Count."}], stream=True
    )
    text: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            text.extend(choice.delta.content or "" for choice in chunk.choices)
    # What the client read: 40 tokens from the first stream, 5 from the continuation, then
    # the error event that ends a broken stream, naming the timeout.
    assert "".join(text) == "".join(f"t{i} " for i in range(45))
    assert raised.value.body == {
        "message": "The upstream stream broke off.",
        "type": "upstream_error",
        "param": None,
        "code": "timeout",
    }
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    # The continuation sent no usage: its part is estimated from its events, 6 (its role
    # delta, which the splice kept from the client, counted with the 5 tokens).
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 502, "timeout", True, 40 + 6)]


def test_a_run_of_malformed_events_mid_stream_is_continued(gateway, primary, fallback, openai_client):
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.malformed_run(at=40))
    backend, text, usage, finish = ask(openai_client(gw), True)

    assert (text, finish) == (FULL_ANSWER, "stop") and usage.completion_tokens == fault.TOKENS
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["messages"][-1]["content"] == "".join(f"t{i} " for i in range(40))
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "malformed", False, 40), ("steady", 200, None, True, fault.TOKENS)]


def test_a_stream_cut_after_its_finish_is_a_whole_answer_not_continued(gateway, primary, fallback, openai_client):
    """Hostile testing: a stream cut after its finish_reason was continued (a second call, a
    second finish_reason, text after the end); later it ended with an error event after a
    whole answer. The answer had ended: the client gets it as it came, no error, and nothing
    is continued elsewhere (tests/e2e/test_stream_end_break_e2e.py has the other APIs)."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut_after_finish())
    stream = openai_client(gw).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Count."}], stream=True
    )
    received = list(stream)
    assert len(primary.seen) == 1 and fallback.seen == []  # never asked to continue
    finishes = [c.choices[0].finish_reason for c in received if c.choices and c.choices[0].finish_reason]
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == FULL_ANSWER and finishes == ["stop"]
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) or None, what="the call in the ledger")
    assert len(rows) == 1 and rows[0][:4] == ("flaky", 200, None, True)  # one attempt, a success


def test_one_of_n_answers_cut_is_not_continued_as_one(gateway, primary, fallback, openai_client):
    """Hostile testing: one of n=2 answers was continued with both choices' text interleaved
    in one prefill. It is not continued now: the client has what was relayed and the error event."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=20))
    received = []
    with pytest.raises(openai.APIError) as caught:
        stream = openai_client(gw).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Count."}], stream=True, n=2
        )
        for chunk in stream:
            received.append(chunk)
    assert "broke off" in str(caught.value)
    assert len(primary.seen) == 1 and fallback.seen == []  # never asked to continue
    finishes = [c.choices[0].finish_reason for c in received if c.choices and c.choices[0].finish_reason]
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "".join(f"t{i} " for i in range(20)) and finishes == []


def test_a_broken_stream_nobody_can_continue_ends_with_the_real_failure(gateway, primary, fallback, openai_client):
    gw = gateway()  # `openai`-type backends take no prefill by default
    primary.script(fault.cut(after=40))
    with pytest.raises(openai.APIError) as caught:
        ask(openai_client(gw), True)
    assert "broke off" in str(caught.value)
    assert len(primary.seen) == 1 and fallback.seen == []


# -- the upstream's own error event mid-stream -----------------------------------------------

FIRST_40 = "".join(f"t{i} " for i in range(40))


def raw_chat_stream(gw) -> list:
    """A streamed chat call's events as the client got them: each `data:` payload parsed,
    `[DONE]` as the string."""
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Count."}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        raw = b"".join(response.iter_bytes())
    events = [event.removeprefix(b"data: ") for event in raw.split(b"\n\n") if event]
    return ["[DONE]" if event == b"[DONE]" else orjson.loads(event) for event in events]


def _chunks(events: list) -> tuple[str, list, list]:
    """The text, the finish reasons and the error events among a chat stream's events."""
    chunks = [e for e in events if e != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    finishes = [
        c["choices"][0]["finish_reason"] for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]
    ]
    return text, finishes, [c for c in chunks if "error" in c]


@pytest.mark.parametrize(
    "step",
    [
        # OpenRouter's mid-stream error as its docs show it: beside a choice finished "error".
        fault.error_event(
            40, {"code": "server_error", "message": "Provider disconnected unexpectedly"}, openrouter=True
        ),
        # OpenAI's shape (an error object alone), a 503 in its code.
        fault.error_event(40, {"message": "The engine is currently overloaded", "type": "server_error", "code": 503}),
    ],
    ids=["openrouter", "openai"],
)
def test_an_upstream_error_event_mid_stream_is_continued_on_the_fallback(gateway, primary, fallback, step):
    """The upstream said it failed mid-answer (overloaded, a provider dropped): the very
    failure continuation is for. It was relayed and the stream ended there; now the error is
    held back and the answer continued: one coherent stream, no error event."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(step)
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    assert (text, finishes, errors) == (FULL_ANSWER, ["stop"], [])
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
    chunks = [e for e in events if e != "[DONE]"]
    assert {c["id"] for c in chunks} == {"chatcmpl-flaky"}
    assert sum(1 for c in chunks if c["choices"] and "role" in c["choices"][0]["delta"]) == 1
    assert [c["usage"]["completion_tokens"] for c in chunks if c.get("usage")] == [fault.TOKENS]
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["messages"][-1] == {"role": "assistant", "content": FIRST_40}
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "upstream_error", False, 40), ("steady", 200, None, True, fault.TOKENS)]


@pytest.mark.parametrize("openrouter", [True, False], ids=["openrouter", "openai"])
def test_an_invalid_request_error_mid_stream_is_relayed_not_continued(gateway, primary, fallback, openrouter):
    """An error that judges the request, not the backend's health, ends the answer as the
    upstream said: another backend would be asked the same request. (OpenRouter's shape,
    beside a choice finished "error", was relayed as a content chunk, unredacted, and the
    call recorded as a success.)"""
    gw = gateway(prefill="prefill: continue_final_message")
    error = {"message": "tool schema rejected", "type": "invalid_request_error", "code": 400}
    primary.script(fault.error_event(40, error, openrouter=openrouter))
    text, finishes, errors = _chunks(raw_chat_stream(gw))

    assert (text, finishes) == (FIRST_40, [])
    assert errors == [{"error": {**error, "param": None}}]
    assert len(primary.seen) == 1 and fallback.seen == []
    ledger(gw, 1)
    assert [row[:4] for row in all_rows(gw)] == [("flaky", 502, "upstream_error", True)]


@pytest.mark.parametrize(
    "error",
    [
        {"message": "tool schema rejected", "type": "invalid_request_error", "code": 400},
        # A passing kind, relayed too: no candidate here takes a prefill to continue it.
        {"message": "The engine is currently overloaded", "type": "server_error", "code": 503},
    ],
    ids=["invalid-request", "overloaded"],
)
def test_an_upstream_holding_its_body_open_after_an_error_event_does_not_hold_the_client(
    gateway, primary, fallback, error
):
    """An error event after content ends the answer, as `[DONE]` does: the upstream gets the
    same short grace to end its body. One that sent its error event and then held the body
    open held the client's stream until its idle limit (10 s); and what an upstream sends after
    the error (its `[DONE]`) is not the client's: the error event is the stream's last."""
    gw = gateway()
    primary.script(fault.error_event(40, error, then_hold=True))
    started = time.monotonic()
    events = raw_chat_stream(gw)
    elapsed = time.monotonic() - started

    assert elapsed < 5, elapsed  # not the 10 s idle limit
    relayed = {"error": {**error, "param": None}}
    assert _chunks(events) == (FIRST_40, [], [relayed]) and events[-1] == relayed
    assert len(primary.seen) == 1 and fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["error"]) == ("flaky", 502, "upstream_error")
    assert [row[:4] for row in all_rows(gw)] == [("flaky", 502, "upstream_error", True)]


def test_an_error_event_nobody_continues_ends_the_stream_as_the_upstream_sent_it(gateway, primary, fallback):
    """The continuation was tried and refused (the fallback answers the prefill with a 400):
    the client gets the upstream's own error event, redacted, not the gateway's "broke off"."""
    gw = gateway(prefill="prefill: continue_final_message")
    error = {"message": "Overloaded (key sk-flaky-123456)", "type": "overloaded_error", "code": 529}
    primary.script(fault.error_event(40, error))
    fallback.always(fault.rejects_prefill())
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    assert (text, finishes) == (FIRST_40, [])
    expected = {"message": "Overloaded (key [redacted])", "type": "overloaded_error", "param": None, "code": 529}
    assert errors == [{"error": expected}] and events[-1] == {"error": expected}
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["messages"][-1] == {"role": "assistant", "content": FIRST_40}
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows[-1][:4] == ("flaky", 502, "upstream_error", True)  # the call ended where it broke
    assert rows[0][:2] == ("steady", 400) and not rows[0][3]


FIRST_45 = "".join(f"t{i} " for i in range(45))


@pytest.mark.parametrize(
    "error, relayed",
    [
        # A passing failure: not continued a second time (the continuing stream's own error
        # events are relayed), the client gets it redacted.
        (
            {"message": "Overloaded (key sk-steady-123456)", "type": "overloaded_error", "code": 529},
            {"message": "Overloaded (key [redacted])", "type": "overloaded_error", "param": None, "code": 529},
        ),
        (
            {"message": "tool schema rejected", "type": "invalid_request_error", "code": 400},
            {"message": "tool schema rejected", "type": "invalid_request_error", "param": None, "code": 400},
        ),
    ],
    ids=["overloaded", "invalid-request"],
)
def test_an_error_event_in_the_continuing_stream_fails_the_call(gateway, primary, fallback, error, relayed):
    """Review: the stream continuing a broken one ended with the upstream's error event, which
    the client got, yet the call was recorded a success (a 200, in the ledger and the metrics):
    only the first stream's error event was read. Now the call is what the first relay makes
    of its own stream's error event: a 502 `upstream_error`, the continuing backend at fault;
    the client gets the same events as from the first relay: the upstream's redacted error
    event, which ends the stream (the `[DONE]` the upstream sent after it is dropped)."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    fallback.script(fault.error_event(5, error))
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    assert (text, finishes, errors) == (FIRST_45, [], [{"error": relayed}]) and events[-1] == {"error": relayed}
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    assert fallback.seen[0].body["messages"][-1] == {"role": "assistant", "content": FIRST_40}
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    # The continuation sent no usage: its part estimated from its events (its role delta, its
    # 5 tokens), with the 40 the first stream delivered.
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 502, "upstream_error", True, 40 + 6)]
    metrics = scrape(gw.url)
    assert metrics.total("gateway_requests_total", backend="steady", status="502") == 1
    assert metrics.total("gateway_requests_total", status="200") == 0
    assert "Traceback" not in gw.log()


def test_a_continuing_stream_cut_after_its_own_error_event_ends_with_that_event_alone(gateway, primary, fallback):
    """Review: a continuing upstream that sent its own error event and then closed the
    connection got a second error event after it ("The upstream stream broke off"), and the
    call was recorded as the cut's (`protocol`); the first relay ends its stream at such an
    event, and records the error's. Now the continuation does too."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    error = {"message": "tool schema rejected", "type": "invalid_request_error", "code": 400}
    fallback.script(fault.error_event(5, error, then_cut=True))
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    relayed = {"message": "tool schema rejected", "type": "invalid_request_error", "param": None, "code": 400}
    assert (text, finishes, errors) == (FIRST_45, [], [{"error": relayed}]) and events[-1] == {"error": relayed}
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 502, "upstream_error", True, 40 + 6)]
    assert "Traceback" not in gw.log()


def test_a_continuing_stream_that_breaks_too_is_logged(gateway, primary, fallback):
    """Review: the first break and its continuation were logged, and the continuing stream's
    own break was not: the operator read a continuation that seemed to go on. One warning
    names its backend and why, as the first stream's does."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    fallback.script(fault.cut(after=5))
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    broke = {"message": "The upstream stream broke off.", "type": "upstream_error", "param": None, "code": "protocol"}
    assert (text, finishes, errors) == (FIRST_45, [], [{"error": broke}]) and events[-1] == {"error": broke}
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 502, "protocol", True, 40 + 6)]
    warnings = [line.split(" WARNING ", 1)[1] for line in gw.log().splitlines() if " WARNING gateway.proxy: " in line]
    assert [w.split(": ", 2)[1] for w in warnings] == [
        "stream from flaky broke mid-answer",
        "stream from flaky broke after 40 tokens (protocol)",
        "stream continued on steady broke mid-answer too (protocol)",
    ], warnings


@pytest.mark.parametrize(
    "step",
    [fault.cut_after_finish(), fault.no_done()],
    ids=["cut-after-its-finish", "ended-cleanly-without-done"],
)
def test_a_continuing_stream_that_loses_only_its_end_completes_the_answer(gateway, primary, fallback, step):
    """A continuing stream whose answer had ended (its finish_reason, its usage) when it broke
    or ended without `[DONE]` is whole, as a first stream would be: the client gets the usage
    total and one `[DONE]`, not an error event, and the call is a 200 on the fallback."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    fallback.script(step)
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    assert (text, finishes, errors) == (FULL_ANSWER, ["stop"], [])
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    usages = [e["usage"] for e in events if e != "[DONE]" and e.get("usage")]
    # The fallback's own usage (20 tokens, after the 40 delivered), or, when none came, the
    # estimate from the events it sent (its role and finish chunks too): billed as the client read.
    billed = fault.TOKENS if step.kind == "no_done" else 40 + 20 + 2
    assert [u["completion_tokens"] for u in usages] == [billed]
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 200, None, True, billed)]


def test_a_continuing_stream_that_ends_cleanly_mid_answer_is_a_broken_one(gateway, primary, fallback):
    """A continuing stream whose body ended cleanly before its answer's end (no finish_reason,
    no `[DONE]`) is cut short, as a first stream would be: the error event, a 502, not a
    truncated answer passed off as whole."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    fallback.script(
        fault.at_once(chunk({"role": "assistant", "content": ""}) + b"\n\n", chunk({"content": " t40"}) + b"\n\n")
    )
    events = raw_chat_stream(gw)

    text, finishes, errors = _chunks(events)
    assert (text, finishes) == (FIRST_40 + " t40", [])
    assert "[DONE]" not in events and errors == [events[-1]] and events[-1]["error"]["code"] == "protocol"
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    # The continuing attempt's tokens are estimated from its events: the role chunk and " t40".
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 502, "protocol", True, 40 + 2)]


HELD_OPEN_ENDS = {
    "/v1/chat/completions": b"data: [DONE]\n\n",
    "/v1/messages": b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    "/v1/responses": b"event: response.completed\n",
}


@pytest.mark.parametrize("at_once", [False, True], ids=["streamed", "read-whole-at-once"])
@pytest.mark.parametrize("path", list(HELD_OPEN_ENDS))
def test_an_upstream_holding_its_body_open_after_done_does_not_hold_the_client(
    gateway, primary, fallback, path, at_once
):
    """Hostile testing: an upstream that sent its whole answer and `[DONE]` but left its body
    open held the client's stream open until its idle limit (10 s): a client reading to the
    end waited that long, and a Messages client its `message_stop`. The upstream now has a
    short grace to end its body; the client's stream ends whole, the call is one success. So
    too when the whole answer came in the first read (its grace was then overwritten by the
    idle limit a stream's first content sets)."""
    gw = gateway()
    primary.script(fault.held_open(at_once=at_once))
    body: dict = {"model": "auto", "stream": True}
    if path == "/v1/responses":
        body["input"] = "Count."
    else:
        body["messages"] = [{"role": "user", "content": "Count."}]
        body["max_tokens"] = 500
    started = time.monotonic()
    with httpx.stream("POST", gw.url + path, json=body, timeout=30) as response:
        raw = b"".join(response.iter_bytes())
    elapsed = time.monotonic() - started

    assert elapsed < 5, elapsed  # not the 10 s idle limit
    assert raw.count(HELD_OPEN_ENDS[path]) == 1
    assert b'{"error":{' not in raw and b"event: error" not in raw and b"response.failed" not in raw
    assert raw.endswith(b"\n\n") and (path != "/v1/chat/completions" or raw.endswith(b"data: [DONE]\n\n"))
    assert len(primary.seen) == 1 and fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["error"]) == ("flaky", 200, None)
    assert [r[:4] for r in all_rows(gw)] == [("flaky", 200, None, True)]
    # A whole answer: nothing to warn an operator of on every such call (review).
    assert "broke after its answer's end" not in gw.log()


def test_nothing_after_an_upstreams_done_reaches_the_client(gateway, primary, fallback):
    """Hostile testing: what an upstream sent after its `[DONE]` (more text, a second
    `[DONE]`) was relayed: a client reading past the first `[DONE]` read text after the
    answer's end, and a Messages client a second text block after it. The answer ends at
    `[DONE]`."""
    gw = gateway()
    head = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    answer = (chunk({"role": "assistant", "content": ""}), chunk({"content": "a"}), chunk({}, "stop"))
    after = (b"data: [DONE]\n\n", chunk({"content": "AFTER"}), b"data: [DONE]\n\n")
    primary.script(fault.at_once(*answer, *after), fault.at_once(*answer, *after))
    events = raw_chat_stream(gw)
    assert _chunks(events) == ("a", ["stop"], []) and events.count("[DONE]") == 1 and events[-1] == "[DONE]"

    body = {"model": "auto", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, timeout=30) as response:
        raw = b"".join(response.iter_bytes())
    names = [e.split(b"\n", 1)[0] for e in raw.split(b"\n\n") if e]
    assert b"AFTER" not in raw and names.count(b"event: content_block_start") == 1
    assert names[-1] == b"event: message_stop" and names.count(b"event: message_stop") == 1
    assert len(primary.seen) == 2 and fallback.seen == []
    rows = ledger(gw, 2)
    assert [(r["backend"], r["status"]) for r in rows] == [("flaky", 200), ("flaky", 200)]


def test_an_upstream_sending_its_usage_chunk_twice_gets_it_to_the_client_once(gateway, primary, fallback):
    """An upstream that sent its usage chunk twice (an early count, then the final one) had
    both relayed: OpenAI sends exactly one (`stream_options.include_usage`: "an additional
    chunk ... before the data: [DONE] message"), and a client adding up the usage it reads
    counted the call's tokens twice. The client gets one, the last, just before `[DONE]`, and
    the ledger holds the same counts, once."""
    gw = gateway()
    primary.script(fault.usage_twice())
    events = raw_chat_stream(gw)

    assert _chunks(events) == (FULL_ANSWER, ["stop"], [])
    usages = [e["usage"] for e in events if e != "[DONE]" and e.get("usage")]
    assert usages == [{"prompt_tokens": fault.PROMPT_TOKENS, "completion_tokens": fault.TOKENS,
                       "total_tokens": fault.PROMPT_TOKENS + fault.TOKENS}]  # fmt: skip
    assert events[-2]["choices"] == [] and events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert len(primary.seen) == 1 and fallback.seen == []
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"]) == ("flaky", 200)
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (fault.PROMPT_TOKENS, fault.TOKENS)
    assert [r[:4] for r in all_rows(gw)] == [("flaky", 200, None, True)]


# Refusals naming a feature or parameter the backend lacks (another candidate may have it),
# as the servers send them: passed on to the next candidate.
LACKS = {
    # vLLM's /v1/completions without fill-in-the-middle (its serving_completion's words).
    "vllm-suffix": (400, {"object": "error", "message": "suffix is not currently supported",
                          "type": "BadRequestError", "param": None, "code": 400}),
    # vLLM started without tool calling (its serving_chat.py, vllm-project/vllm#30613):
    # langchain4j/langchain4j#3475, vllm-project/vllm#9986.
    "vllm-tool-choice": (400, {"object": "error",
                               "message": '"auto" tool choice requires --enable-auto-tool-choice and '
                                          "--tool-call-parser to be set",
                               "type": "BadRequestError", "param": None, "code": 400}),
    # Groq on logprobs (groq/groq-python#25), in Groq's error shape (gptme/gptme#375).
    "groq-logprobs": (400, {"error": {"message": "`logprobs` is not supported with this model",
                                      "type": "invalid_request_error"}}),
    # OpenAI-compatible servers on a parameter a model lacks (ATH-MaaS/ComfyUI-Copilot#145).
    "unsupported-parameter": (400, {"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                   "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}}),
    "no-image-input": (400, {"error": {"message": "This model does not support image input."}}),
    # OpenRouter, when no provider of the model takes what the request uses: a 404
    # (evalstate/fast-agent#122, Routstr/routstr-core#554), not the model missing.
    "openrouter-tools": (404, {"error": {
        "message": "No endpoints found that support tool use. To learn more about provider routing, "
                   "visit: https://openrouter.ai/docs/provider-routing", "code": 404}}),
}  # fmt: skip
# Refusals of the request itself, which every candidate would refuse alike: the client's, at once.
INVALID = {
    # Groq's strict schema on a field it does not know (the "is unsupported" that earlier
    # passed for a lack, and tried every candidate).
    "groq-strict-field": (400, {"error": {
        "message": "'messages.1' : for 'role:assistant' the following must be satisfied"
                   "[('messages.1' : property 'audio' is unsupported)]", "type": "invalid_request_error"}}),
    # OpenAI on an image it cannot decode (a bare "unsupported", about this image, not the model).
    "unsupported-image": (400, {"error": {
        "message": "You uploaded an unsupported image. Please make sure your image has of one the "
                   "following formats: ['png', 'jpeg', 'gif', 'webp'].",
        "type": "invalid_request_error", "code": "invalid_image_format"}}),
    "bad-temperature": (400, {"error": {"message": "temperature must be at most 2", "type": "BadRequestError",
                                        "param": "temperature", "code": 400}}),
}  # fmt: skip


@pytest.mark.parametrize(("refusal", "passed_on"), [*((k, True) for k in LACKS), *((k, False) for k in INVALID)])
def test_a_refusal_is_passed_to_the_next_candidate_only_when_it_names_what_the_backend_lacks(
    gateway, primary, fallback, openai_client, refusal, passed_on
):
    """A 400 naming a feature or parameter this backend lacks is its lack, as a context overflow
    is: the next candidate is asked, no circuit counts it. Any other 400 judges the request
    itself: the client's at once. (A bare "unsupported" made requests invalid everywhere try
    every candidate, while "does not support image input" stayed the client's.)"""
    status, body = {**LACKS, **INVALID}[refusal]
    gw = gateway()
    primary.always(fault.Step("status", status, error=body))
    client = openai_client(gw)
    if passed_on:
        backend, text, _, _ = ask(client, False)
        assert (backend, text) == ("steady", FULL_ANSWER)
    else:
        with pytest.raises(openai.BadRequestError) as caught:
            ask(client, False)
        assert caught.value.status_code == 400 and caught.value.code == "upstream_rejected_request"
    assert (len(primary.seen), len(fallback.seen)) == (1, 1 if passed_on else 0)
    ledger(gw, 1)
    rows = all_rows(gw)
    # The refusing backend's row: its own status, not a misconfiguration (a 404 would be).
    assert [r[:3] for r in rows] == (
        [("flaky", status, f"http_{status}"), ("steady", 200, None)]
        if passed_on
        else [("flaky", status, "upstream_rejected_request")]
    )


PREFILL_CONFIG = """
backends:
  flaky:
    type: openai
    base_url: {primary}
    api_key: sk-flaky-123456
    models: {{test/small: {{}}}}
  steady:
    type: openai
    base_url: {fallback}
    api_key: sk-steady-123456
    models: {{test/large: {{}}}}
  local:
    type: vllm
    base_url: {local}
    models: {{test/local: {{}}}}
routes:
  auto:
    strategy: ordered
    models: [test/small, test/large, test/local]
"""


def test_a_continuation_skips_candidates_without_prefill_support(start_gateway, primary, fallback, openai_client):
    local = FaultUpstream("local").start()
    try:
        gw = start_gateway(
            PREFILL_CONFIG.format(primary=primary.base_url, fallback=fallback.base_url, local=local.base_url), env=ENV
        )
        primary.script(fault.cut(after=40))
        fallback.always(fault.rejects_prefill())
        _, text, usage, finish = ask(openai_client(gw), True)

        assert (text, finish) == (FULL_ANSWER, "stop") and usage.completion_tokens == fault.TOKENS
        assert fallback.seen == []  # `openai`-type offers take no prefill by default
        assert len(local.seen) == 1 and local.seen[0].body["messages"][-1]["role"] == "assistant"
    finally:
        local.stop()


# -- hostile upstreams (issue 11, item 6): answers that are not what they claim -------------


def test_truncated_json_200_fails_over(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.always(fault.truncated_json())
    backend, text, _, _ = ask(openai_client(gw), False)

    assert (backend, text) == ("steady", FULL_ANSWER)
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["attempts"]) == ("steady", 200, 2)


@pytest.mark.parametrize(
    "choices",
    [[], [{"index": 0, "finish_reason": "stop"}], [None], [{"index": 0, "message": "hi", "finish_reason": "stop"}]],
    ids=["empty", "no-message", "null", "message-not-object"],
)
def test_a_200_without_a_choice_message_fails_over(gateway, primary, fallback, openai_client, choices):
    """Hostile testing: a 200 whose `choices` was empty, or whose choice had no `message`,
    was relayed as a success (billed, the circuit untouched, the next candidate never asked),
    and the SDK then crashed in the caller's code on `choices[0].message.content`."""
    gw = gateway()
    usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    primary.always(fault.body({"id": "c", "object": "chat.completion", "choices": choices, "usage": usage}))
    backend, text, _, _ = ask(openai_client(gw), False)

    assert (backend, text) == ("steady", FULL_ANSWER)
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    rows = ledger(gw, 1)
    assert (rows[0]["backend"], rows[0]["status"], rows[0]["attempts"]) == ("steady", 200, 2)
    assert all_rows(gw) == [("flaky", 502, "malformed", False, 0), ("steady", 200, None, True, fault.TOKENS)]


def test_garbage_only_stream_fails_over(gateway, primary, fallback, openai_client):
    gw = gateway()
    primary.always(fault.garbage_sse())
    backend, text, _, _ = ask(openai_client(gw), True)

    assert (backend, text) == ("steady", FULL_ANSWER)
    assert len(primary.seen) == 1 and len(fallback.seen) == 1


def test_a_passing_health_check_brings_the_primary_back_before_its_cooldown_ends(
    gateway, primary, fallback, openai_client
):
    # A 30 s cooldown: only the health check (every 0.5 s) can end it within the run.
    checked = "circuit: {failure_threshold: 1, cooldown_s: 30}\n    health_check: {enabled: true, interval_s: 0.5}"
    gw = gateway(circuit=checked)
    client = openai_client(gw)
    interval = 0.5
    recovered = primary.down_for(4.0)  # chat calls and health checks fail until then
    answers = steady_run(client, interval, until=recovered + 6.0)

    assert all(text == FULL_ANSWER for _, text, _, _ in answers)
    backends = [a[0] for a in answers]
    back = backends.index("flaky")
    assert backends == ["steady"] * back + ["flaky"] * (len(backends) - back)
    failed = [s.at for s in primary.seen if s.step == "status"]
    answered = [s.at for s in primary.seen if s.step == "ok"]
    # One failed call opened the circuit; the cooldown kept every other call away from it.
    assert len(failed) == 1 and all(at >= recovered for at in answered)
    assert answered[0] - recovered <= 5.0 + interval
    assert primary.health_checks >= 2


# -- hedged requests (issue 12): opt-in per route ---------------------------------------------
HEDGED_CONFIG = CONFIG.replace(
    "    models: [test/small, test/large]", "    models: [test/small, test/large]\n    hedge: {{after_ms: 300}}"
)


def test_a_slow_first_candidate_is_hedged_and_the_faster_answer_wins(start_gateway, primary, fallback, openai_client):
    stream = True  # streams only: a non-streamed call is never hedged (next test)
    config = HEDGED_CONFIG.format(
        primary=primary.base_url, fallback=fallback.base_url, timeout_s=10, circuit=PINNED_CIRCUIT, prefill=""
    )
    gw = start_gateway(config, env=ENV)
    primary.script(fault.slow(3.0))
    started = time.monotonic()
    backend, text, usage, finish = ask(openai_client(gw), stream)
    took = time.monotonic() - started

    assert (backend, text, finish) == ("steady", FULL_ANSWER, "stop") and took < 2.0
    # The hedge started 300 ms into the primary's attempt, not before; each upstream asked once.
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    # (the upstream logs arrivals, a few ms after the gateway's attempt started its clock)
    assert 0.25 <= fallback.seen[0].at - primary.seen[0].at < 1.0
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    # The loser has its row, called off by the gateway (499), no completion: never billed.
    assert rows == [("flaky", 499, "hedge_lost", False, 0), ("steady", 200, None, True, fault.TOKENS)]


def test_a_hedged_calls_overhead_is_the_gateways_own_time_not_the_race(start_gateway, primary, fallback):
    """Hostile testing: x-gateway-overhead-ms (and gateway_overhead_seconds) of a hedged call
    counted the 300 ms the first candidate was waited on before the hedge started, as the
    gateway's own time: every hedged call landed past the histogram's last bucket."""
    config = HEDGED_CONFIG.format(
        primary=primary.base_url, fallback=fallback.base_url, timeout_s=10, circuit=PINNED_CIRCUIT, prefill=""
    )
    gw = start_gateway(config, env=ENV)
    primary.script(fault.slow(3.0))
    body = {"model": "auto", "messages": [{"role": "user", "content": "Count."}], "stream": True}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.headers["x-gateway-backend"] == "steady"
        overhead_ms = float(response.headers["x-gateway-overhead-ms"])
        response.read()
    assert len(fallback.seen) == 1 and fallback.seen[0].at - primary.seen[0].at >= 0.25  # it was hedged
    assert overhead_ms < 150, overhead_ms  # the gateway's own few milliseconds, not the 300 ms hedge delay


def test_a_non_streamed_call_is_not_hedged(start_gateway, primary, fallback, openai_client):
    # Its first content is its whole answer: hedging it would pay for a second generation.
    config = HEDGED_CONFIG.format(
        primary=primary.base_url, fallback=fallback.base_url, timeout_s=10, circuit=PINNED_CIRCUIT, prefill=""
    )
    gw = start_gateway(config, env=ENV)
    primary.script(fault.slow(1.0))
    backend, text, _, _ = ask(openai_client(gw), False)
    assert (backend, text) == ("flaky", FULL_ANSWER)
    assert len(primary.seen) == 1 and fallback.seen == []


def test_a_first_candidate_answering_before_the_hedge_time_is_not_hedged(
    start_gateway, primary, fallback, openai_client
):
    config = HEDGED_CONFIG.format(
        primary=primary.base_url, fallback=fallback.base_url, timeout_s=10, circuit=PINNED_CIRCUIT, prefill=""
    )
    gw = start_gateway(config, env=ENV)
    backend, text, _, _ = ask(openai_client(gw), True)
    assert (backend, text) == ("flaky", FULL_ANSWER)
    assert len(primary.seen) == 1 and fallback.seen == []


def test_a_messages_stream_cut_mid_answer_is_continued_below_its_translation(gateway, primary, fallback):
    """Issue 12 through `/v1/messages` with the `anthropic` SDK: the Messages stream is the
    translation of chat chunks, so the chat stream's continuation reaches it whole."""
    import anthropic

    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0, timeout=30)
    with client.messages.stream(model="auto", max_tokens=500, messages=[{"role": "user", "content": "Count."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()

    assert text == FULL_ANSWER and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == fault.TOKENS  # 40 + 20, one total
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    sent = fallback.seen[0].body
    assert sent["messages"][-1] == {"role": "assistant", "content": "".join(f"t{i} " for i in range(40))}
    assert sent["max_tokens"] == 500 - 40  # what was left of the client's budget
    ledger(gw, 1)
    rows = poll(lambda: all_rows(gw) if len(all_rows(gw)) == 2 else None, what="both attempts in the ledger")
    assert rows == [("flaky", 502, "protocol", False, 40), ("steady", 200, None, True, fault.TOKENS)]


def test_a_messages_stream_translated_from_chat_gets_the_upstreams_error_when_nobody_continues(
    gateway, primary, fallback
):
    """Through `/v1/messages` translated from chat: the held error chunk, when the
    continuation is refused, reaches the client as the translation makes it: Anthropic's
    `event: error` with the upstream's message, once."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.error_event(40, {"message": "Overloaded", "type": "overloaded_error", "code": 529}))
    fallback.always(fault.rejects_prefill())
    body = {"model": "auto", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "Count."}]}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, timeout=30) as response:
        raw = b"".join(response.iter_bytes())
    events = [dict(line.split(b": ", 1) for line in e.split(b"\n")) for e in raw.split(b"\n\n") if e]
    names = [e[b"event"] for e in events]
    assert names.count(b"error") == 1 and names[-1] == b"error"
    assert orjson.loads(events[-1][b"data"])["error"]["message"] == "Overloaded"  # the upstream's, not "broke off"
    text = "".join(
        orjson.loads(e[b"data"])["delta"].get("text", "") for e in events if e[b"event"] == b"content_block_delta"
    )
    assert text == FIRST_40
    assert len(primary.seen) == 1 and len(fallback.seen) == 1


def test_a_continued_chat_stream_sends_the_clients_messages_as_it_sent_them(gateway, primary, fallback, openai_client):
    """A chat client's own `reasoning_content` (DeepSeek's tool loops want it back) reaches the
    continuing candidate as it reached the first: only translated requests have reasoning
    adjusted per backend (`reasoning_history`), and a continuation once stripped it."""
    gw = gateway(prefill="prefill: continue_final_message")
    primary.script(fault.cut(after=40))
    call = {"id": "call_1", "type": "function", "function": {"name": "count", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "Count."},
        {"role": "assistant", "content": None, "tool_calls": [call], "reasoning_content": "Use the tool."},
        {"role": "tool", "tool_call_id": "call_1", "content": "60"},
    ]
    stream = openai_client(gw).chat.completions.create(model="auto", messages=history, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == FULL_ANSWER
    (first,), (continued,) = primary.seen, fallback.seen
    assert first.body["messages"] == history
    assert continued.body["messages"][:3] == history and continued.body["messages"][3]["role"] == "assistant"
