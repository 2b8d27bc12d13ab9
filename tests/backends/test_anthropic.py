"""The Anthropic adapter against a real local upstream: headers, translated calls and answers, errors."""

from __future__ import annotations

import orjson
import pytest

from gateway.backends.anthropic import AnthropicBackend
from gateway.backends.base import UpstreamError
from gateway.backends.errors import (
    AuthRejected,
    ClientRejected,
    ContextTooLong,
    MalformedAnswer,
    ResponseTooLarge,
    ServerError,
    StreamBroken,
    UpstreamUnreachable,
)
from gateway.backends.pool import create_backend
from tests.backends.anthropic_samples import anthropic_stream, chunks_of
from tests.backends.wire import backend_at, request_for
from tests.support.ports import free_port

PAYLOAD = {
    "model": "claude-sonnet-4-5",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hello."}],
    "stop_reason": "max_tokens",
    "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 3},
}


@pytest.fixture
def claude(wire, closing):
    def make(base_url: str | None = None, **config):
        url = base_url or wire.url + "/v1"
        return closing(backend_at(AnthropicBackend, url, type="anthropic", api_key="sk-ant-secret", **config))

    return make


async def test_default_base_url_is_anthropics(wire, closing):
    from gateway.config.schema import BackendConfig

    wire.respond(json=MESSAGE)
    backend = closing(AnthropicBackend("c", BackendConfig(type="anthropic", api_key="k")))
    target = backend.client().target  # its own request line and Host, delivered to the local server
    target.host, target.port = "127.0.0.1", wire.port
    backend.client().ssl_context = None
    response = await backend.send(request_for(PAYLOAD))
    await response.aread()
    assert wire.calls[-1].path == "/v1/messages"
    assert wire.calls[-1].headers["host"] == "api.anthropic.com"


def test_pool_builds_the_anthropic_adapter():
    from gateway.config.schema import BackendConfig

    assert isinstance(create_backend("c", BackendConfig(type="anthropic", api_key="k")), AnthropicBackend)


async def test_call_carries_key_version_and_translated_body(wire, claude):
    wire.respond(json=MESSAGE)
    response = await claude().send(request_for(PAYLOAD, max_output_tokens=2048, headers={"x-request-id": "r1"}))
    await response.aread()
    sent = wire.calls[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-request-id"] == "r1"
    assert "authorization" not in sent.headers
    assert sent.json() == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 2048,
    }


async def test_custom_base_url_and_beta_header(wire, claude):
    wire.respond(json=MESSAGE)
    backend = claude(wire.url + "/anthropic/v1", headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    await (await backend.send(request_for(PAYLOAD))).aread()
    assert wire.calls[-1].path == "/anthropic/v1/messages"
    assert wire.calls[-1].headers["anthropic-beta"] == "prompt-caching-2024-07-31"


async def test_non_streamed_answer_is_a_chat_completion(wire, claude):
    wire.respond(json=MESSAGE)
    response = await claude().send(request_for(PAYLOAD))
    assert response.media_type == "application/json"
    body = orjson.loads(await response.aread())
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello."
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


async def test_streamed_answer_is_translated_across_arbitrary_chunks(wire, claude):
    data = anthropic_stream()
    pieces = [data[i : i + 37] for i in range(0, len(data), 37)]
    wire.respond(pieces=pieces, headers={"content-type": "text/event-stream"})
    payload = {**PAYLOAD, "stream": True, "stream_options": {"include_usage": True}}
    response = await claude().send(request_for(payload, stream=True))
    assert response.media_type == "text/event-stream"
    chunks = chunks_of(await response.aread())
    assert chunks[-1]["usage"]["completion_tokens"] == 15
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Héllo there"
    sent = wire.calls[-1].json()
    assert sent["stream"] is True and "stream_options" not in sent


async def test_stream_broken_mid_answer_is_a_classified_failure(wire, claude):
    data = anthropic_stream()
    wire.respond(pieces=[data[:400]], then="cut", headers={"content-type": "text/event-stream"})
    response = await claude().send(request_for({**PAYLOAD, "stream": True}, stream=True))
    with pytest.raises(UpstreamError) as caught:
        await response.aread()
    assert isinstance(caught.value, StreamBroken) and caught.value.reason == "protocol"


async def test_non_json_answer_is_a_protocol_failure(wire, claude):
    wire.respond(200, body=b"<html>gateway</html>")
    response = await claude().send(request_for(PAYLOAD))
    with pytest.raises(UpstreamError) as caught:
        await response.aread()
    assert isinstance(caught.value, MalformedAnswer) and caught.value.reason == "malformed"


@pytest.mark.parametrize(
    "body",
    [
        {"content": "hi"},
        {**MESSAGE, "content": ["hi"]},
        {**MESSAGE, "usage": "x"},
    ],
    ids=["content-not-blocks", "block-not-object", "usage-not-object"],
)
async def test_a_body_that_is_not_a_message_is_a_malformed_answer(wire, claude, body):
    """As an OpenAI-compatible backend's 200 that is not a chat completion: `malformed`,
    not a Python exception the fallback loop could only call `protocol`."""
    wire.respond(json=body)
    response = await claude().send(request_for(PAYLOAD))
    with pytest.raises(UpstreamError) as caught:
        await response.aread()
    assert isinstance(caught.value, MalformedAnswer) and caught.value.reason == "malformed"


def anthropic_error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}


@pytest.mark.parametrize(
    ("status", "kind", "message", "failure", "retryable"),
    [
        (529, "overloaded_error", "Overloaded", ServerError, True),
        (500, "api_error", "Internal server error", ServerError, True),
        (401, "authentication_error", "invalid x-api-key", AuthRejected, True),  # another backend has its key
        (400, "invalid_request_error", "temperature: must be <= 1", ClientRejected, False),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", ContextTooLong, True),
        (
            400,
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
            ContextTooLong,
            True,
        ),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", ClientRejected, False),
    ],
)
async def test_errors_are_classified_and_reshaped(wire, claude, status, kind, message, failure, retryable):
    wire.respond(status, json=anthropic_error(kind, message))
    with pytest.raises(UpstreamError) as caught:
        await claude().send(request_for(PAYLOAD))
    error = caught.value
    assert (type(error), error.status, error.retryable) == (failure, status, retryable)
    assert orjson.loads(error.body) == {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def test_rate_limit_keeps_retry_after(wire, claude):
    wire.respond(429, json=anthropic_error("rate_limit_error", "slow down"), headers={"retry-after": "17"})
    with pytest.raises(UpstreamError) as caught:
        await claude().send(request_for(PAYLOAD))
    assert caught.value.reason == "rate_limited" and caught.value.retry_after == 17.0 and caught.value.retryable


async def test_unreachable_upstream_is_a_connect_failure(claude):
    with pytest.raises(UpstreamError) as caught:
        await claude(f"http://127.0.0.1:{free_port()}/v1").send(request_for(PAYLOAD))
    assert isinstance(caught.value, UpstreamUnreachable)


async def test_untranslatable_request_is_refused_without_calling_upstream(wire, claude):
    wire.respond(json=MESSAGE)
    with pytest.raises(UpstreamError) as caught:
        await claude().send(request_for({**PAYLOAD, "n": 3}))
    assert caught.value.status == 400 and not caught.value.retryable
    assert orjson.loads(caught.value.body)["error"]["param"] == "n"
    assert wire.calls == []


async def test_an_endpoint_without_translation_is_refused_without_calling_upstream(wire, claude):
    wire.respond(json=MESSAGE)
    with pytest.raises(UpstreamError) as caught:
        await claude().send(request_for({"model": "claude-sonnet-4-5", "input": "hi"}, path="/embeddings"))
    assert caught.value.status == 404 and caught.value.retryable  # another backend may serve it
    assert wire.calls == []


async def test_translated_answer_over_the_cap_fails(wire, claude):
    wire.respond(json={**MESSAGE, "content": [{"type": "text", "text": "x" * 5000}]})
    response = await claude().send(request_for(PAYLOAD, max_response_bytes=1000))
    with pytest.raises(UpstreamError) as caught:
        await response.aread()
    await response.aclose()
    assert isinstance(caught.value, ResponseTooLarge)
