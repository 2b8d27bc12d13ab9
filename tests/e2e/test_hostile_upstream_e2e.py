"""Upstreams whose answers are not what they claim, as apps meet them: a real gateway
process, real HTTP fake upstreams sending broken output, the real openai SDK as the caller.

Issue 11 items 6 (malformed output), 8 (a usage chunk with an empty choice), 9 and 10
(keys quoted in upstream text); issue 13 item 14 (a wrong upstream_id).
"""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import gateway_cli
from tests.support.poll import poll
from tests.support.scrape import scrape

KEY_A = "sk-upstream-a-0123456789abcdefghijklmnop"
KEY_B = "sk-upstream-b-zyxwvutsrqponmlkjihgfedcba"

# Two backends, tried in the order listed. `threshold` consecutive failures open a's circuit.
POLICY = """
backends:
  a:
    type: openai
    base_url: {a}
    api_key: {key_a}
    timeout_s: 5
    circuit: {{failure_threshold: {threshold}, cooldown_s: 600}}
    models:
      m/first: {{upstream_id: {upstream_id}}}
  b:
    type: openai
    base_url: {b}
    api_key: {key_b}
    timeout_s: 5
    models:
      m/second: {{}}
routes:
  auto:
    strategy: ordered
    models: {models}
"""
ENV = {"GATEWAY_USAGE_FLUSH_S": "0.05"}
MESSAGES = [{"role": "user", "content": "Say hello."}]
CONTENT = "Hello from the fake upstream."


def policy(a, b, *, threshold: int = 100, upstream_id: str = "First-1", models=("m/first", "m/second")) -> str:
    return POLICY.format(
        a=a.base_url,
        b=b.base_url,
        key_a=KEY_A,
        key_b=KEY_B,
        threshold=threshold,
        upstream_id=upstream_id,
        models=json.dumps(list(models)),
    )


def ledger(gw, count: int, failed: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """The final rows of the gateway's usage ledger once it holds `count` calls, oldest first.

    A call that fell back also has a row per failed attempt (`final` false): `failed` is
    exactly those rows' (backend, error), in order, and nothing else may be in the ledger.
    """
    day = today_utc().isoformat()
    seen: dict = {}
    total = count + len(failed)

    def export() -> list[dict] | None:
        done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(gw.dir / "data"))
        assert done.returncode == 0, done.stderr
        seen["events"] = [json.loads(line) for line in done.stdout.splitlines()]
        return seen["events"] if len(seen["events"]) >= total else None

    events = sorted(poll(export, what=f"{total} events in the ledger", timeout=30), key=lambda e: e["timestamp"])
    assert len(events) == total, events
    attempts = [e for e in events if not e.get("final", True)]
    assert [(e["backend"], e["error"]) for e in attempts] == list(failed)
    return [e for e in events if e.get("final", True)]


def raw_stream(gw, **extra) -> tuple[int, bytes]:
    body = {"model": "auto", "messages": MESSAGES, "stream": True, **extra}
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=30) as r:
        return r.status_code, r.read()


def events_of(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e]


# -- item 6: malformed output ---------------------------------------------------------------
def test_a_truncated_json_body_falls_back_and_opens_the_circuit(start_gateway, upstream, upstream_b, openai_client):
    upstream.reset(truncate_body=True)
    gw = start_gateway(policy(upstream, upstream_b, threshold=2), env=ENV)
    client = openai_client(gw)
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == CONTENT
        assert raw.headers["x-gateway-backend"] == "b"
    # Two calls reached a (then its circuit opened), every call reached b once.
    assert len(upstream.received) == 2 and len(upstream_b.received) == 3
    metrics = scrape(gw.url)
    assert metrics.value("gateway_backend_attempts_total", backend="a", model="m/first", result="malformed") == 2
    assert metrics.value("gateway_backend_attempts_total", backend="b", model="m/second", result="ok") == 3
    assert metrics.value("gateway_fallbacks_total", route="auto", from_backend="a", reason="malformed") == 2
    assert [(e["status"], e["backend"], e["attempts"]) for e in ledger(gw, 3, failed=(("a", "malformed"),) * 2)] == [
        (200, "b", 2)
    ] * 2 + [(200, "b", 1)]
    # The gauge is copied from the circuits once a second.
    poll(
        lambda: scrape(gw.url).value("gateway_backend_circuit_state", backend="a", model="m/first") == 2,
        what="a's circuit reported open",
        timeout=10,
    )


def test_only_malformed_bodies_answer_502_in_openai_shape(start_gateway, upstream, upstream_b, openai_client):
    upstream.reset(truncate_body=True)
    upstream_b.reset(truncate_body=True)
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(gw).chat.completions.create(model="auto", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_malformed_response"
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1
    assert [(e["status"], e["attempts"]) for e in ledger(gw, 1, failed=(("a", "malformed"),))] == [(502, 2)]


GARBAGE_ONLY = [b"data: {garbage\n\n", b"not sse at all\n\n", b"data: [DONE]\n\n"]


def test_a_garbage_only_stream_falls_back_before_anything_is_sent(start_gateway, upstream, upstream_b, openai_client):
    upstream.reset(raw_stream=GARBAGE_ONLY)
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    chunks = list(openai_client(gw).chat.completions.create(model="auto", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == CONTENT
    assert {c.id for c in chunks} == {"chatcmpl-b"}  # nothing of a's stream reached the client
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1
    metrics = scrape(gw.url)
    assert metrics.value("gateway_backend_attempts_total", backend="a", model="m/first", result="malformed") == 1
    assert [(e["status"], e["backend"]) for e in ledger(gw, 1, failed=(("a", "malformed"),))] == [(200, "b")]


def test_a_malformed_event_after_content_is_dropped_and_counted(start_gateway, upstream, upstream_b, openai_client):
    # Events: 0 role, 1.. words, then finish, [DONE]; junk between the 2nd and 3rd word.
    junk = b'data: {"choices": [{"index": 0, "delta": {"content": "cut\n\n'
    upstream.reset(inject_before_event={3: junk})
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    # The SDK parses every event it gets (a malformed one would raise here).
    chunks = list(openai_client(gw).chat.completions.create(model="auto", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == CONTENT
    status, body = raw_stream(gw)
    assert status == 200 and b"cut" not in body
    assert all(e.startswith(b"data: {") and e.endswith(b"}") for e in events_of(body)[:-1])
    assert events_of(body)[-1] == b"data: [DONE]"
    assert len(upstream.received) == 2 and upstream_b.received == []
    assert scrape(gw.url).value("gateway_upstream_malformed_events_total", backend="a") == 2
    assert [(e["status"], e["backend"]) for e in ledger(gw, 2)] == [(200, "a")] * 2


def test_a_stream_that_turns_to_junk_ends_with_a_clean_error_event(start_gateway, upstream, upstream_b, openai_client):
    upstream.reset(inject_before_event={2: b"data: {junk\n\n" * 5})
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    status, body = raw_stream(gw)
    events = events_of(body)
    assert status == 200
    # The role chunk and the first word, then the error event; no junk, no [DONE].
    assert [orjson_loads(e[6:]).get("choices", [{}])[0].get("delta") for e in events[:2]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello "},
    ]
    assert orjson_loads(events[2][6:]) == {
        "error": {
            "message": "The upstream stream broke off.",
            "type": "upstream_error",
            "param": None,
            "code": "malformed",
        }
    }
    assert len(events) == 3
    with pytest.raises(openai.APIError):
        list(openai_client(gw).chat.completions.create(model="auto", messages=MESSAGES, stream=True))
    assert len(upstream.received) == 2 and upstream_b.received == []
    metrics = scrape(gw.url)
    assert metrics.value("gateway_upstream_malformed_events_total", backend="a") == 10
    assert metrics.value("gateway_backend_attempts_total", backend="a", model="m/first", result="malformed") == 2
    assert [(e["status"], e["backend"], e["attempts"]) for e in ledger(gw, 2)] == [(502, "a", 1)] * 2


def orjson_loads(data: bytes):
    return json.loads(data)


# -- item 8: the usage chunk with an empty choice ------------------------------------------
def test_a_usage_chunk_with_an_empty_choice_reaches_only_clients_that_asked(
    start_gateway, upstream, upstream_b, openai_client
):
    upstream.reset(usage_with_empty_choice=True)
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    client = openai_client(gw)
    chunks = list(client.chat.completions.create(model="auto", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    asked = list(
        client.chat.completions.create(
            model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].usage.total_tokens == 18 and asked[-1].choices[0].delta.content is None
    assert all(c.usage is None for c in asked[:-1])
    # Both calls were accounted from the upstream's usage, not estimated.
    events = ledger(gw, 2)
    assert [(e["prompt_tokens"], e["completion_tokens"]) for e in events] == [(11, 7), (11, 7)]
    assert not any(e.get("estimated") for e in events)


# -- items 9 and 10: keys quoted by upstreams ------------------------------------------------
def test_an_error_event_after_content_quoting_the_key_is_redacted(start_gateway, upstream, upstream_b):
    quoting = {"error": {"message": f"upstream auth Bearer {KEY_A} (key {KEY_A[3:30]})", "code": 500}}
    upstream.reset(inject_before_event={2: b"data: " + json.dumps(quoting).encode() + b"\n\n"})
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    status, body = raw_stream(gw)
    assert status == 200
    error = [e for e in events_of(body) if b'"error"' in e]
    assert [json.loads(e[6:]) for e in error] == [
        {
            "error": {
                "message": "upstream auth Bearer [redacted] (key [redacted])",
                "type": "upstream_error",
                "param": None,
                "code": 500,
            }
        }
    ]
    assert KEY_A[14:26].encode() not in body
    assert KEY_A[14:26] not in gw.log()


def test_an_upstream_400_quoting_the_key_without_its_prefix_is_redacted(
    start_gateway, upstream, upstream_b, openai_client
):
    message = f"invalid credentials: token={KEY_A.removeprefix('sk-')}; also saw {KEY_B[8:24]}"
    upstream.reset(status=400, error_body={"error": {"message": message, "type": "invalid_request_error"}})
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gw).chat.completions.create(model="auto", messages=MESSAGES)
    assert caught.value.body["message"] == "invalid credentials: token=[redacted]; also saw [redacted]"
    assert len(upstream.received) == 1 and upstream_b.received == []
    assert KEY_A[14:26] not in gw.log() and KEY_B[8:20] not in gw.log()


# -- issue 13 item 14: a wrong upstream_id ---------------------------------------------------
VLLM_404 = {"object": "error", "message": "The model `First-1` does not exist.", "type": "NotFoundError", "code": 404}
OPENROUTER_400 = {"error": {"message": "First-1 is not a valid model ID", "code": 400}}


@pytest.mark.parametrize("status, body", [(404, VLLM_404), (400, OPENROUTER_400)])
def test_a_wrong_upstream_id_falls_back_and_is_counted(
    status, body, start_gateway, upstream, upstream_b, openai_client
):
    upstream.reset(status=status, error_body=body)
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    client = openai_client(gw)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == CONTENT and raw.headers["x-gateway-backend"] == "b"
    assert len(upstream.received) == 2 and len(upstream_b.received) == 2
    metrics = scrape(gw.url)
    assert metrics.value("gateway_backend_misconfigured_total", backend="a", model="m/first") == 2
    assert metrics.value("gateway_backend_misconfigured_total", backend="b", model="m/second") == 0
    # The operator hears of it once, in the upstream's words.
    said = [line for line in gw.log().splitlines() if "misconfigured" in line]
    assert len(said) == 1 and "'First-1'" in said[0] and body_message(body) in said[0]


def body_message(body: dict) -> str:
    return body.get("message") or body["error"]["message"]


def test_only_a_wrong_upstream_id_answers_502_backend_misconfigured(start_gateway, upstream, upstream_b, openai_client):
    upstream.reset(status=404, error_body=VLLM_404)
    gw = start_gateway(policy(upstream, upstream_b, models=("m/first",)), env=ENV)
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(gw).chat.completions.create(model="auto", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "backend_misconfigured"
    assert "does not exist" not in caught.value.body["message"]
    assert len(upstream.received) == 1 and upstream_b.received == []
    assert scrape(gw.url).value("gateway_backend_misconfigured_total", backend="a", model="m/first") == 1
    assert [(e["status"], e["attempts"]) for e in ledger(gw, 1)] == [(502, 1)]


@pytest.mark.parametrize("stream", [False, True])
def test_usage_counts_as_floats_are_read_and_a_usage_without_counts_is_estimated(
    start_gateway, upstream, upstream_b, openai_client, stream
):
    """Counts written as floats (1000000.0) were read as no tokens, and a usage object with
    none of the usual counts as zero tokens, not estimated: every call billed at nothing."""
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    client = openai_client(gw)
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    upstream.reset(usage={"prompt_tokens": 1000.0, "completion_tokens": 20.0, "total_tokens": 1020.0})
    answer = client.chat.completions.create(model="auto", messages=MESSAGES, **extra)
    if stream:
        chunks = list(answer)
        usage = chunks[-1].usage
        assert [c.usage is not None for c in chunks].count(True) == 1  # the upstream's, relayed
    else:
        usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (1000, 20)
    upstream.reset(usage={"total_tokens": 5000})
    answer = client.chat.completions.create(model="auto", messages=MESSAGES, **extra)
    if stream:
        chunks = list(answer)
        # The upstream's usage chunk, which no count could be read from, gives way to the
        # gateway's estimate: one usage chunk, as OpenAI sends.
        assert [c.usage is not None for c in chunks].count(True) == 1
        estimate = chunks[-1].usage
    else:  # a whole answer is passed on as the upstream wrote it
        assert answer.usage.total_tokens == 5000 and answer.usage.prompt_tokens is None
    rows = ledger(gw, 2)
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"], rows[0]["estimated"]) == (1000, 20, False)
    assert rows[1]["estimated"] is True and rows[1]["prompt_tokens"] > 0
    if stream:  # the estimate the client got is what the ledger holds
        assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == (
            estimate.prompt_tokens,
            estimate.completion_tokens,
        )


@pytest.mark.parametrize("stream", [False, True])
def test_usage_past_the_bound_is_taken_at_it_counted_and_logged(
    start_gateway, upstream, upstream_b, openai_client, stream
):
    """An upstream reporting 10^14 prompt tokens was read as 10^9 (the bound) without a word:
    the operator could not tell which backend sent it. Now each such call is counted per
    backend and logged with its request id; a call within the bound is neither."""
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    client = openai_client(gw)
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    upstream.reset(usage={"prompt_tokens": 10**14, "completion_tokens": 7, "total_tokens": 10**14 + 7})
    answer = client.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, **extra)
    request_id = answer.headers["x-request-id"]
    if stream:
        list(answer.parse())
    upstream.reset()
    client.chat.completions.create(model="auto", messages=MESSAGES)
    rows = ledger(gw, 2)
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (10**9, 7)
    assert rows[1]["prompt_tokens"] < 10**9
    metrics = scrape(gw.url)
    assert metrics.value("gateway_upstream_usage_out_of_bounds_total", backend="a") == 1
    said = [line for line in gw.log().splitlines() if "past the bound" in line]
    assert len(said) == 1 and "backend a " in said[0] and request_id in said[0], said


# -- a 502 the same request would meet again: the SDKs' own retries are told not to --------
@pytest.mark.parametrize(
    "status, body, code",
    [(404, VLLM_404, "backend_misconfigured"), (401, {"error": {"message": "bad key"}}, "upstream_auth_failed")],
)
def test_a_502_no_retry_would_mend_tells_the_sdks_not_to_retry(
    status, body, code, start_gateway, upstream, upstream_b, openai_client
):
    import anthropic

    upstream.reset(status=status, error_body=body)
    gw = start_gateway(policy(upstream, upstream_b, models=("m/first",)), env=ENV)
    # The SDKs' default: two retries of every 5xx, each another round of the fallback loop.
    openai_sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=2, timeout=30)
    with pytest.raises(openai.APIStatusError) as caught:
        openai_sdk.chat.completions.create(model="auto", messages=MESSAGES)
    assert (caught.value.status_code, caught.value.body["code"]) == (502, code)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.received) == 1 and upstream_b.received == []
    claude = anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=2, timeout=30)
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.create(model="auto", max_tokens=16, messages=MESSAGES)
    assert refused.value.status_code == 502 and refused.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.received) == 2 and upstream_b.received == []
    assert [(e["status"], e["attempts"]) for e in ledger(gw, 2)] == [(502, 1), (502, 1)]


def test_a_502_after_a_failure_a_retry_may_mend_lets_the_sdks_retry(start_gateway, upstream, upstream_b):
    """`x-should-retry: false` went on the 502 of the loop's last failure (here b's 401) even
    when an earlier candidate had failed in passing (a's 503): the SDK gave up at once, though
    its own retry would have found a again, recovered. Now the header goes only when every
    failure was one a retry meets again."""
    upstream.reset(status=503, error_body={"error": {"message": "overloaded"}})
    upstream_b.reset(status=401, error_body={"error": {"message": "bad key"}})
    gw = start_gateway(policy(upstream, upstream_b), env=ENV)
    once = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as caught:
        once.chat.completions.create(model="auto", messages=MESSAGES)
    assert (caught.value.status_code, caught.value.body["code"]) == (502, "upstream_auth_failed")
    assert "x-should-retry" not in caught.value.response.headers
    assert (len(upstream.received), len(upstream_b.received)) == (1, 1)
    # The SDK's default retries (two): a has recovered by the first, which it answers.
    upstream.reset(status=503, error_body={"error": {"message": "overloaded"}})
    upstream_b.reset(status=401, error_body={"error": {"message": "bad key"}})
    recovered = threading.Thread(target=lambda: (poll(lambda: upstream_b.received), upstream.reset()))
    recovered.start()
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=2, timeout=30)
    answer = sdk.chat.completions.create(model="auto", messages=MESSAGES)
    recovered.join()
    assert answer.choices[0].message.content == CONTENT
    assert len(upstream.received) == 1 and len(upstream_b.received) == 1  # since a's reset: the retry's one call
    failed = (("a", "http_503"), ("a", "http_503"))  # each 502 fell back from a to b
    assert [e["status"] for e in ledger(gw, 3, failed)] == [502, 502, 200]
