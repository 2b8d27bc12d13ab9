"""The gateway as app developers meet it: the real server, a real upstream, the openai client."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.policies import one_backend_policy

CONFIG = """
backends:
  up:
    type: openai
    base_url: {base_url}
    api_key: sk-upstream-secret-123456
    timeout_s: {timeout}
    models:
      qwen/qwen3-32b: {{upstream_id: Qwen/Qwen3-32B, context_length: 32768, input_price: 1.0, output_price: 2.0}}
routes:
  auto:
    models: [qwen/qwen3-32b]
gateway:
  max_body_bytes: 20000
"""


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(CONFIG.format(base_url=upstream.base_url, timeout=2))


def ask(**extra):
    return {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], **extra}


def test_non_streaming_passes_through_and_tags_headers(gw, upstream, openai_client):
    client = openai_client(gw)
    raw = client.chat.completions.with_raw_response.create(**ask(temperature=0.3, seed=7, extra_body={"top_k": 5}))
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert completion.usage.prompt_tokens == 11 and completion.usage.completion_tokens == 7
    assert raw.headers["x-gateway-backend"] == "up"
    assert raw.headers["x-gateway-model"] == "qwen/qwen3-32b"
    assert raw.headers["x-request-id"]
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0
    sent = upstream.received[-1]
    assert sent.body["model"] == "Qwen/Qwen3-32B"
    assert sent.body["temperature"] == 0.3 and sent.body["seed"] == 7 and sent.body["top_k"] == 5
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret-123456"


def test_canonical_model_id_is_accepted(gw, openai_client):
    completion = openai_client(gw).chat.completions.create(**{**ask(), "model": "qwen/qwen3-32b"})
    assert completion.choices[0].message.content


def test_stream_without_include_usage_has_no_usage_chunk(gw, upstream, openai_client):
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "Hello from the fake upstream."
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    # The gateway asked the upstream for usage anyway, to account the call.
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}


def test_stream_with_include_usage_ends_with_usage_chunk(gw, openai_client):
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 18
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_headers_present(gw):
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask(stream=True)) as r:
        body = r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-gateway-backend"] == "up"
    assert body.rstrip().endswith(b"data: [DONE]")


def test_tools_pass_through_both_ways(gw, upstream, openai_client):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    upstream.reset(tool_call=call)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = openai_client(gw).chat.completions.create(
        **ask(tools=tools, tool_choice="auto", response_format={"type": "text"})
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert upstream.received[-1].body["tools"] == tools
    assert upstream.received[-1].body["tool_choice"] == "auto"


def test_models_lists_routes_and_canonical_ids(gw, openai_client):
    ids = [m.id for m in openai_client(gw).models.list()]
    assert "auto" in ids and "qwen/qwen3-32b" in ids


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (b'{"model": "auto"}', "messages"),
        (b'{"model": "auto", "messages": "hi"}', "messages"),
        (b'{"model": 3, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    ],
)
def test_bad_requests_get_400_naming_the_field(gw, body, param):
    r = httpx.post(gw.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_sdk_maps_errors_to_its_exceptions(gw, upstream, openai_client):
    client = openai_client(gw)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(**{**ask(), "model": "nobody/nothing"})
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**ask(messages=[{"role": "user", "content": "x" * 30000}]))
    assert e.value.status_code == 413

    upstream.reset(status=429, headers={"retry-after": "7"})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(**ask())
    assert e.value.response.headers["retry-after"] == "7"

    upstream.reset(
        status=401, error_body={"error": {"message": "Incorrect API key provided: sk-upstream-secret-123456"}}
    )
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(**ask())
    assert e.value.status_code == 502
    assert "sk-upstream-secret" not in e.value.response.text

    # Last: a 500 is asked twice (retried once on the same candidate) and a timeout once,
    # three failures that open the circuit for whatever comes next.
    upstream.reset(status=500)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(**ask())
    assert e.value.status_code == 502

    upstream.reset(delay_s=5)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(**ask())
    assert e.value.status_code == 504


def test_unreachable_upstream_is_502(start_gateway, openai_client):
    from tests.support.ports import free_port

    gw = start_gateway(CONFIG.format(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=2))
    with pytest.raises(openai.InternalServerError) as e:
        openai_client(gw).chat.completions.create(**ask())
    assert e.value.status_code == 502
    assert e.value.code == "upstream_unreachable"


def test_api_keys_are_enforced_when_configured(start_gateway, upstream, openai_client):
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url, timeout=2), env={"GATEWAY_API_KEYS": "team-a:sk-good"})
    with pytest.raises(openai.AuthenticationError):
        openai_client(gw, api_key="sk-bad").chat.completions.create(**ask())
    assert openai_client(gw, api_key="sk-good").chat.completions.create(**ask()).choices


def test_unknown_upstream_400_is_passed_on(gw, upstream, openai_client):
    upstream.reset(
        status=400, error_body={"error": {"message": "logprobs is not supported", "type": "invalid_request_error"}}
    )
    with pytest.raises(openai.BadRequestError) as e:
        openai_client(gw).chat.completions.create(**ask(logprobs=True))
    assert "logprobs is not supported" in e.value.message


def _poll(predicate, timeout: float = 10.0) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_client_disconnect_cancels_the_upstream_stream(gw, upstream):
    upstream.reset(chunk_delay_s=0.5, content="one two three four five six seven eight nine ten")
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask(stream=True), timeout=10) as r:
        for line in r.iter_lines():
            if '"content":"one' in line:
                break  # leave after the first word: the context manager closes the connection
    assert _poll(lambda: upstream.streams_aborted == 1), "the gateway kept reading an abandoned stream"
    assert upstream.streams_completed == 0


def test_mid_stream_upstream_break_reaches_the_client_as_an_error(gw, upstream, openai_client):
    upstream.reset(break_after_events=3, content="one two three four five")
    with pytest.raises(openai.APIError):
        for _ in openai_client(gw).chat.completions.create(**ask(stream=True)):
            pass


def test_several_workers_serve(start_gateway, upstream, openai_client):
    gw = start_gateway(CONFIG.format(base_url=upstream.base_url, timeout=5), workers=2)
    client = openai_client(gw)
    for _ in range(6):
        assert client.chat.completions.create(**ask()).choices[0].message.content
    assert len(upstream.received) == 6


def test_include_usage_is_honoured_even_when_the_upstream_sends_none(gw, upstream, openai_client):
    upstream.reset(send_usage=False, content="one two three")
    chunks = list(openai_client(gw).chat.completions.create(**ask(stream=True, stream_options={"include_usage": True})))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (
        last.usage.completion_tokens > 0
        and last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    )
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "one two three"


def test_streams_tell_proxies_not_to_buffer_and_errors_carry_overhead(gw, upstream):
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json=ask(stream=True)) as r:
        r.read()
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    upstream.reset(status=500)
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask())
    assert r.status_code == 502 and float(r.headers["x-gateway-overhead-ms"]) >= 0


def test_reasoning_sent_back_in_both_spellings_counts_once_toward_the_context(start_gateway, upstream, openai_client):
    """vLLM (and mlx-vlm) answer with the reasoning in both `reasoning` and `reasoning_content`,
    the same text, and a chat client that sends its history back as it came sends both; the
    backend reads one. Counted twice, a conversation that fits a model's context was refused
    400 `context_length_exceeded` without any backend asked. Reasoning still counts: one past
    the context in a single spelling is refused."""
    gw = start_gateway(one_backend_policy(upstream.base_url, models={"qwen/qwen3-32b": {"context_length": 1200}}))
    client = openai_client(gw)

    def history(thought: str, *spellings: str) -> list[dict]:
        answered = {"role": "assistant", "content": "Done.", **{field: thought for field in spellings}}
        return [{"role": "user", "content": "Fix calc.py"}, answered, {"role": "user", "content": "Thanks."}]

    # 3 + (4 + 4) + (4 + 2 + 800) + (4 + 3) = 824 prompt tokens and 200 to answer fit 1200;
    # counted twice, 1624 did not.
    both = history("x" * 2400, "reasoning", "reasoning_content")
    answer = client.chat.completions.create(model="auto", messages=both, max_tokens=200)
    assert answer.choices[0].message.content == "Hello from the fake upstream."
    assert [m.get("reasoning") for m in upstream.received[0].body["messages"]] == [None, "x" * 2400, None]
    with pytest.raises(openai.BadRequestError) as refused:  # 1124 + 200: past 1200
        client.chat.completions.create(model="auto", messages=history("x" * 3300, "reasoning"), max_tokens=200)
    assert refused.value.code == "context_length_exceeded"
    assert len(upstream.received) == 1
