"""The OpenAI-compatible adapter against respx: what it sends, and how it classifies failures."""

from __future__ import annotations

import httpx
import orjson
import pytest
import respx

from gateway.backends.base import UpstreamError
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.backends.registry import VENDORS
from gateway.protocol.chat import parse_chat_request, upstream_payload
from tests.backends.respx_support import ChunkedStream, backend_over, request_for

BASE = "http://upstream.test/v1"
PAYLOAD = {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "choices": [],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
}


@pytest.fixture
def router():
    return respx.Router(assert_all_called=False)


async def call(backend: OpenAICompatBackend, payload=PAYLOAD, **kwargs):
    response = await backend.send(request_for(payload, **kwargs))
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def test_openrouter_gets_attribution_auth_and_identity_encoding(router):
    route = router.post("https://openrouter.ai/api/v1/chat/completions").respond(json=COMPLETION)
    backend = backend_over(OpenAICompatBackend, router, type="openrouter", api_key="sk-or-secret")
    await call(backend, headers={"x-request-id": "req-1"})
    sent = route.calls.last.request.headers
    assert sent["authorization"] == "Bearer sk-or-secret"
    assert sent["http-referer"] == VENDORS["openrouter"].headers["HTTP-Referer"]
    assert sent["x-title"] == VENDORS["openrouter"].headers["X-Title"]
    assert sent["accept-encoding"] == "identity"  # bytes pass through: no compression to undo
    assert sent["content-type"] == "application/json"
    assert sent["x-request-id"] == "req-1"
    await backend.aclose()


async def test_config_headers_override_vendor_defaults(router):
    route = router.post("https://openrouter.ai/api/v1/chat/completions").respond(json=COMPLETION)
    backend = backend_over(OpenAICompatBackend, router, type="openrouter", api_key="k", headers={"X-Title": "my-app"})
    await call(backend)
    assert route.calls.last.request.headers["x-title"] == "my-app"


async def test_keyless_vllm_sends_no_authorization(router):
    route = router.post("http://127.0.0.1:8000/v1/chat/completions").respond(json=COMPLETION)
    await call(backend_over(OpenAICompatBackend, router, type="vllm"))
    assert "authorization" not in route.calls.last.request.headers


@pytest.mark.parametrize("vendor", sorted(n for n, v in VENDORS.items() if v.adapter == "openai_compat" and v.base_url))
async def test_each_vendor_is_called_at_its_default_base_url(router, vendor):
    route = router.post(f"{VENDORS[vendor].base_url}/chat/completions").respond(json=COMPLETION)
    await call(backend_over(OpenAICompatBackend, router, type=vendor, api_key="k"))
    assert route.called


async def test_body_carries_upstream_id_and_every_client_field(router):
    route = router.post(f"{BASE}/chat/completions").respond(json=COMPLETION)
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
    payload = upstream_payload(chat, "Qwen/Qwen3-32B")
    await call(backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE), payload)
    sent = orjson.loads(route.calls.last.request.content)
    assert sent == {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}], "seed": 7, "top_k": 3}


async def test_answer_bytes_pass_through_unchanged(router):
    raw = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n'
    router.post(f"{BASE}/chat/completions").respond(
        200, stream=ChunkedStream([raw[:10], raw[10:]]), headers={"content-type": "text/event-stream; charset=utf-8"}
    )
    backend = backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE)
    response = await backend.send(request_for(PAYLOAD, stream=True))
    assert response.media_type == "text/event-stream"
    assert await response.aread() == raw


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (500, b'{"error":{"message":"boom"}}', "status", True),
        (503, b"", "status", True),
        (529, b"", "status", True),
        (404, b'{"error":{"message":"no such model"}}', "status", True),
        (408, b"", "status", True),
        (400, b'{"error":{"message":"bad temperature"}}', "status", False),
        (401, b'{"error":{"message":"bad key"}}', "status", False),
        (403, b"", "status", False),
        (400, b'{"error":{"message":"This model\'s maximum context length is 8192 tokens"}}', "context_length", True),
        (413, b'{"error":{"code":"context_length_exceeded"}}', "context_length", True),
        (422, b'{"detail":"prompt is too long"}', "context_length", True),
        (500, b'{"error":{"message":"maximum context length"}}', "status", True),  # a 5xx is not the client's prompt
    ],
)
async def test_status_is_classified(router, status, body, kind, retryable):
    router.post(f"{BASE}/chat/completions").respond(status, content=body)
    with pytest.raises(UpstreamError) as caught:
        await call(backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE))
    error = caught.value
    assert (error.kind, error.status, error.retryable, error.body) == (kind, status, retryable, body)


@pytest.mark.parametrize(
    ("header", "seconds"), [("12", 12.0), ("0.5", 0.5), ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("-3", 0.0)]
)
async def test_rate_limit_carries_retry_after(router, header, seconds):
    router.post(f"{BASE}/chat/completions").respond(
        429, json={"error": {"message": "slow"}}, headers={"retry-after": header}
    )
    with pytest.raises(UpstreamError) as caught:
        await call(backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE))
    assert caught.value.status == 429 and caught.value.reason == "rate_limited" and caught.value.retryable
    assert caught.value.retry_after == seconds


async def test_error_body_is_bounded(router):
    router.post(f"{BASE}/chat/completions").respond(500, content=b"x" * 200_000)
    with pytest.raises(UpstreamError) as caught:
        await call(backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE))
    assert len(caught.value.body) == 64 * 1024


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectTimeout("refused"), "connect"),
        (httpx.ConnectError("refused"), "connect"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("garbage"), "connect"),
    ],
)
async def test_transport_failures_are_classified(router, exc, kind):
    router.post(f"{BASE}/chat/completions").mock(side_effect=exc)
    with pytest.raises(UpstreamError) as caught:
        await call(backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE))
    assert caught.value.kind == kind and caught.value.retryable


@pytest.mark.parametrize(
    ("exc", "kind"), [(httpx.ReadTimeout("stalled"), "timeout"), (httpx.ReadError("reset"), "protocol")]
)
async def test_failure_mid_answer_is_classified(router, exc, kind):
    router.post(f"{BASE}/chat/completions").respond(200, stream=ChunkedStream([b"data: {}\n\n"], then_raise=exc))
    backend = backend_over(OpenAICompatBackend, router, type="openai", base_url=BASE)
    response = await backend.send(request_for(PAYLOAD, stream=True))
    received = []
    with pytest.raises(UpstreamError) as caught:
        async for chunk in response.aiter_bytes():
            received.append(chunk)
    assert received == [b"data: {}\n\n"]
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    ("vendor", "base_url", "expected"),
    [
        ("vllm", "http://gpu:8000/v1", "http://gpu:8000/health"),
        ("openai", "http://x.test/v1", "http://x.test/v1/models"),
    ],
)
async def test_health_probe_url(router, vendor, base_url, expected):
    route = router.get(expected).respond(200)
    backend = backend_over(OpenAICompatBackend, router, type=vendor, base_url=base_url)
    assert await backend.check_health() is True
    assert route.called
    route.respond(503)
    assert await backend.check_health() is False
    route.mock(side_effect=httpx.ConnectError("down"))
    assert await backend.check_health() is False
