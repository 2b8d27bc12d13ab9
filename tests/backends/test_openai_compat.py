"""The OpenAI-compatible adapter against real local upstreams: what it sends on the wire, and
how it classifies every way a call can fail (status, connection, timeout, broken answers)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import orjson
import pytest

from gateway.backends import http1, openai_compat
from gateway.backends.base import UpstreamError
from gateway.backends.errors import (
    AuthRejected,
    ClientRejected,
    ContextTooLong,
    FeatureUnsupported,
    FirstByteTimeout,
    RateLimited,
    Redirected,
    ResponseTooLarge,
    ServerError,
    StreamBroken,
    StreamIdleTimeout,
    UpstreamProtocolError,
    UpstreamUnreachable,
)
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.config.schema import BackendConfig
from gateway.config.vendors import VENDORS
from gateway.protocol.chat import parse_chat_request, upstream_payload
from tests.backends.wire import RawUpstream, backend_at, request_for
from tests.support.ports import free_port

PAYLOAD = {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "choices": [],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
}


@pytest.fixture
def openai_at(wire, closing):
    def make(**config):
        config.setdefault("type", "openai")
        return closing(backend_at(OpenAICompatBackend, wire.url + "/v1", **config))

    return make


async def call(backend: OpenAICompatBackend, payload=PAYLOAD, **kwargs):
    response = await backend.send(request_for(payload, **kwargs))
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def test_openrouter_gets_attribution_auth_and_identity_encoding(wire, openai_at):
    wire.respond(json=COMPLETION)
    await call(openai_at(type="openrouter", api_key="sk-or-secret"), headers={"x-request-id": "req-1"})
    sent = wire.calls[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-or-secret"
    assert sent.headers["http-referer"] == VENDORS["openrouter"].headers["HTTP-Referer"]
    assert sent.headers["x-title"] == VENDORS["openrouter"].headers["X-Title"]
    assert sent.headers["accept-encoding"] == "identity"  # bytes pass through: no compression to undo
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-request-id"] == "req-1"
    assert "cookie" not in sent.headers


async def test_config_headers_override_vendor_defaults(wire, openai_at):
    wire.respond(json=COMPLETION)
    await call(openai_at(type="openrouter", api_key="k", headers={"X-Title": "my-app"}))
    assert wire.calls[-1].headers["x-title"] == "my-app"


async def test_keyless_vllm_sends_no_authorization(wire, openai_at):
    wire.respond(json=COMPLETION)
    await call(openai_at(type="vllm"))
    assert "authorization" not in wire.calls[-1].headers


def aimed_at(backend: OpenAICompatBackend, wire) -> OpenAICompatBackend:
    """The backend's own request (line, Host) delivered to the local wire server instead."""
    target = backend.client().target
    target.host, target.port = "127.0.0.1", wire.port
    backend.client().ssl_context = None
    return backend


@pytest.mark.parametrize("vendor", sorted(n for n, v in VENDORS.items() if v.adapter == "openai_compat" and v.base_url))
async def test_each_vendor_is_called_at_its_default_base_url(vendor, wire, closing):
    wire.respond(json=COMPLETION)
    backend = aimed_at(closing(OpenAICompatBackend("b", BackendConfig(type=vendor, api_key="k"))), wire)
    await call(backend)
    default = urlsplit(VENDORS[vendor].base_url)
    assert wire.calls[-1].path == f"{default.path.rstrip('/')}/chat/completions"
    assert wire.calls[-1].headers["host"] == default.netloc


async def test_a_redirect_is_not_followed_and_names_where_it_points(wire, openai_at):
    location = "https://elsewhere.example/v1/chat/completions" + "x" * 1000
    wire.respond(307, body=b"", headers={"location": location})
    with pytest.raises(Redirected) as caught:
        await call(openai_at())
    assert len(wire.calls) == 1  # the request was not sent again anywhere
    assert caught.value.status == 307 and caught.value.backend_fault and caught.value.retryable
    assert repr(location[: http1.MAX_LOCATION]) in caught.value.message and "base_url" in caught.value.message
    assert "x" * 300 not in caught.value.message  # the Location is bounded


async def test_the_request_carries_its_endpoint_path(wire, openai_at):
    """The client layer serves every OpenAI endpoint: the path comes with the request."""
    wire.respond(json={"object": "list", "data": []})
    backend = openai_at()
    await call(backend, {"model": "e5", "input": "hi"}, path="/embeddings")
    await call(backend)
    assert [c.path for c in wire.calls] == ["/v1/embeddings", "/v1/chat/completions"]


async def test_body_carries_upstream_id_and_every_client_field(wire, openai_at):
    wire.respond(json=COMPLETION)
    chat = parse_chat_request(
        orjson.dumps(
            {
                "model": "auto",
                "messages": [{"role": "user", "content": "hi"}],
                "seed": 7,
                "top_k": 3,
                "provider": {"x": 1},
            }
        )
    )
    await call(openai_at(), upstream_payload(chat, "Qwen/Qwen3-32B"))
    assert wire.calls[-1].json() == {
        "model": "Qwen/Qwen3-32B",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 7,
        "top_k": 3,
    }


async def test_answer_bytes_pass_through_unchanged(wire, openai_at):
    raw = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
    wire.respond(pieces=[raw[:10], raw[10:]], headers={"content-type": "text/event-stream; charset=utf-8"})
    response = await openai_at().send(request_for(PAYLOAD, stream=True))
    assert response.media_type == "text/event-stream"
    assert await response.aread() == raw
    await response.aclose()


async def test_connections_are_pooled_across_calls(wire, openai_at):
    wire.respond(json=COMPLETION)
    backend = openai_at()
    for _ in range(3):
        await call(backend)
    assert len(wire.calls) == 3
    assert len({c.peer for c in wire.calls}) == 1  # one keep-alive connection, reused


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable", "same", "fault"),
    [
        (500, b'{"error":{"message":"boom"}}', ServerError, True, True, True),
        (502, b"", ServerError, True, True, True),
        (503, b"", ServerError, True, False, True),  # unavailable: move on, unless Retry-After is short
        (529, b"", ServerError, True, False, True),
        (404, b'{"error":{"message":"no such model"}}', ClientRejected, True, False, False),
        (408, b"", ServerError, True, False, True),
        (400, b'{"error":{"message":"bad temperature"}}', ClientRejected, False, False, False),
        (401, b'{"error":{"message":"bad key"}}', AuthRejected, True, False, False),  # other backends have their keys
        (403, b"", AuthRejected, True, False, False),
        (429, b"", RateLimited, True, False, False),  # no Retry-After: not worth waiting for
        (
            400,
            b'{"error":{"message":"This model\'s maximum context length is 8192 tokens"}}',
            ContextTooLong,
            True,
            False,
            False,
        ),
        (413, b'{"error":{"code":"context_length_exceeded"}}', ContextTooLong, True, False, False),
        (  # vLLM's /v1/completions refusing fill-in-the-middle: another backend may serve it
            400,
            b'{"error":{"message":"suffix is not currently supported","type":"BadRequestError","code":400}}',
            FeatureUnsupported,
            True,
            False,
            False,
        ),
        (
            400,
            b'{"error":{"message":"Unsupported parameter: \'max_tokens\' is not supported with this model."}}',
            FeatureUnsupported,
            True,
            False,
            False,
        ),
        # Naming what this model lacks: passed on (`looks_like_unsupported_feature`).
        (
            400,
            b'{"error":{"message":"This model does not support image input."}}',
            FeatureUnsupported,
            True,
            False,
            False,
        ),
        (  # OpenRouter's lack, a 404 (evalstate/fast-agent#122): no misconfiguration either
            404,
            b'{"error":{"message":"No endpoints found that support tool use. To learn more about provider routing, '
            b'visit: https://openrouter.ai/docs/provider-routing","code":404}}',
            FeatureUnsupported,
            True,
            False,
            False,
        ),
        (  # a bare "unsupported": Groq's strict schema on a field no candidate takes
            400,
            b'{"error":{"message":"\'messages.1\' : for \'role:assistant\' the following must be satisfied'
            b'[(\'messages.1\' : property \'audio\' is unsupported)]","type":"invalid_request_error"}}',
            ClientRejected,
            False,
            False,
            False,
        ),
        (422, b'{"detail":"prompt is too long"}', ContextTooLong, True, False, False),
        (  # Hugging Face TEI's /v1/embeddings refusal: another embedding model may have the window
            413,
            b'{"message":"`inputs` must have less than 512 tokens. Given: 600","code":413,"type":"validation"}',
            ContextTooLong,
            True,
            False,
            False,
        ),
        (
            500,
            b'{"error":{"message":"maximum context length"}}',
            ServerError,
            True,
            True,
            True,
        ),  # a 5xx is not the prompt
    ],
)
async def test_status_is_classified(wire, openai_at, status, body, kind, retryable, same, fault):
    wire.respond(status, body=body)
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at())
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.retryable, error.same_candidate_retry, error.backend_fault, error.body) == (
        status,
        retryable,
        same,
        fault,
        body,
    )


async def test_error_body_quoting_the_key_is_redacted(wire, openai_at):
    wire.respond(401, json={"error": {"message": "Incorrect API key provided: sk-upstream-secret-123"}})
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at(api_key="sk-upstream-secret-123"))
    assert b"sk-upstream-secret" not in caught.value.body and b"[redacted]" in caught.value.body


@pytest.mark.parametrize("offset", [1, 5, 22])
async def test_a_key_quoted_across_the_error_body_bound_is_redacted(wire, openai_at, offset):
    key = "sk-upstream-secret-123"  # 22 characters: placed to start `offset` before the 64 KiB cut
    bound = openai_compat.MAX_ERROR_BODY
    wire.respond(401, body=b"e" * (bound - offset) + key.encode() + b"e" * 100)
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at(api_key=key))
    body = caught.value.body
    assert body == b"e" * (bound - offset) + (b"[redacted]" + b"e" * 100)[:offset]  # no head of the key


@pytest.mark.parametrize(
    ("header", "seconds"),
    # An HTTP-date passed asks for no wait; one to come is read in tests/e2e/test_failover_table_e2e.py.
    [("12", 12.0), ("0.5", 0.5), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("-3", 0.0), ("soon", None)],
)
async def test_rate_limit_carries_retry_after(wire, openai_at, header, seconds):
    wire.respond(429, json={"error": {"message": "slow"}}, headers={"retry-after": header})
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at())
    assert caught.value.status == 429 and caught.value.reason == "rate_limited" and caught.value.retryable
    assert caught.value.retry_after == seconds
    # A wait the upstream advertised makes asking it again worth it (the loop bounds the wait).
    assert isinstance(caught.value, RateLimited) and caught.value.same_candidate_retry is (seconds is not None)


async def test_error_body_is_bounded(wire, openai_at):
    wire.respond(500, body=b"x" * 200_000)
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at())
    assert len(caught.value.body) == 64 * 1024


async def test_unreachable_upstream_is_a_connect_failure(closing):
    backend = closing(backend_at(OpenAICompatBackend, f"http://127.0.0.1:{free_port()}/v1", type="openai"))
    with pytest.raises(UpstreamError) as caught:
        await call(backend)
    assert isinstance(caught.value, UpstreamUnreachable) and caught.value.retryable
    assert caught.value.reason == "connect" and not caught.value.same_candidate_retry


async def test_no_answer_within_timeout_s_is_a_timeout(wire, openai_at):
    wire.respond(json=COMPLETION, delay_s=2.0)
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at(timeout_s=0.2))
    assert isinstance(caught.value, FirstByteTimeout) and caught.value.retryable
    assert caught.value.reason == "timeout" and not caught.value.same_candidate_retry


@pytest.mark.parametrize(
    "reply",
    [
        b"this is not HTTP at all\r\n\r\n",  # garbage status line: the parser's error
        b"",  # closed without a word
        b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"id"',  # cut short
    ],
)
async def test_every_transport_exception_is_an_upstream_failure(closing, reply):
    """Issue 11, item 16: no transport or parser exception escapes the adapter, before or
    after the status line; each is a retryable failure with a reason."""
    server = await RawUpstream(reply).start()
    try:
        backend = closing(backend_at(OpenAICompatBackend, server.url + "/v1", type="openai"))
        with pytest.raises(UpstreamError) as caught:
            await call(backend)
    finally:
        await server.stop()
    assert isinstance(caught.value, UpstreamProtocolError | UpstreamUnreachable) and caught.value.retryable
    assert caught.value.reason in ("protocol", "connect")
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(("then", "kind"), [("stall", StreamIdleTimeout), ("cut", StreamBroken)])
async def test_failure_mid_answer_is_classified(wire, openai_at, then, kind):
    wire.respond(pieces=[b"data: {}\n\n"], then=then, headers={"content-type": "text/event-stream"})
    response = await openai_at(timeout_s=0.3).send(request_for(PAYLOAD, stream=True))
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in response.aiter_bytes():
            received.append(chunk)
    await response.aclose()
    assert received == [b"data: {}\n\n"]
    assert type(caught.value) is kind


async def test_answer_over_the_cap_fails_unread_when_its_length_is_declared(wire, openai_at):
    wire.respond(body=b"x" * 300_000)
    with pytest.raises(UpstreamError) as caught:
        await call(openai_at(), max_response_bytes=100_000)
    assert isinstance(caught.value, ResponseTooLarge)
    assert (caught.value.reason, caught.value.retryable) == ("response_too_large", True)


async def test_chunked_answer_over_the_cap_fails_once_past_it(wire, openai_at):
    wire.respond(pieces=[b"x" * 50_000] * 6, then="stall")  # never ends: the cap, not the end, stops the read
    with pytest.raises(UpstreamError) as caught:
        await asyncio.wait_for(call(openai_at(), max_response_bytes=100_000), 10)
    assert isinstance(caught.value, ResponseTooLarge)


async def test_answer_under_the_cap_is_read_whole(wire, openai_at):
    wire.respond(body=b"y" * 99_999)
    assert await call(openai_at(), max_response_bytes=100_000) == b"y" * 99_999


@pytest.mark.parametrize(
    ("vendor", "path", "expected"),
    [("vllm", "/v1", "/health"), ("openai", "/v1", "/v1/models")],
)
async def test_health_probe_url(wire, closing, vendor, path, expected):
    backend = closing(backend_at(OpenAICompatBackend, wire.url + path, type=vendor))
    assert backend.health_url == wire.url + expected
    wire.respond(200, body=b"ok")
    assert await backend.check_health() is True
    assert wire.calls[-1].path == expected
    wire.respond(503, body=b"")
    assert await backend.check_health() is False
    down = closing(backend_at(OpenAICompatBackend, f"http://127.0.0.1:{free_port()}/v1", type=vendor))
    assert await down.check_health() is False


async def test_a_started_stream_is_held_to_its_idle_limit_not_timeout_s(wire, openai_at):
    # Issue 12: a stall once content flowed is caught after `stream_idle_timeout_s`, not after
    # the (long) per-read `timeout_s` that bounds non-streamed answers.
    wire.respond(pieces=[b"data: {}\n\n"], then="stall", headers={"content-type": "text/event-stream"})
    response = await openai_at(timeout_s=30).send(request_for(PAYLOAD, stream=True))
    chunks = response.aiter_bytes()
    assert await anext(chunks) == b"data: {}\n\n"
    response.stream_started(0.3)
    started = time.perf_counter()
    with pytest.raises(StreamIdleTimeout):
        await asyncio.wait_for(anext(chunks), 10)
    await response.aclose()
    assert 0.25 <= time.perf_counter() - started < 2.0
