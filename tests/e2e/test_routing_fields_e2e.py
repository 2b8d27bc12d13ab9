"""OpenRouter's `models` / `provider` routing fields in a Messages or Responses body, as the
SDKs send them (`extra_body`): the real gateway process, real fake upstreams. Each endpoint
routes the body the way `POST /v1/route/explain?endpoint=...` explains it, whether the
answering candidate is asked natively or in chat, and no upstream ever receives the fields."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

KEY = "sk-ant-test-key-123456"
# `m/shared` on two backends, `m/chat` on two that do not serve Messages; by cost the first
# tried is not the one the tests name in `provider.order`. `m/down`'s upstream answers 503
# when a test says so, so a `models` list must move on.
MESSAGES_POLICY = """
backends:
  claude:
    type: anthropic
    base_url: {claude}
    api_key: {key}
    timeout_s: 5
    models:
      m/shared: {{upstream_id: claude-shared, context_length: 32768, input_price: 3.0, output_price: 6.0}}
  compat:
    type: openai
    base_url: {compat}
    timeout_s: 5
    models:
      m/shared: {{upstream_id: compat-shared, context_length: 32768, input_price: 1.0, output_price: 2.0}}
      m/chat: {{upstream_id: compat-chat, context_length: 32768, input_price: 1.0, output_price: 2.0}}
  down:
    type: openai
    base_url: {down}
    timeout_s: 5
    models:
      m/down: {{context_length: 32768, input_price: 0.1, output_price: 0.2}}
      m/chat: {{upstream_id: down-chat, context_length: 32768, input_price: 3.0, output_price: 6.0}}
"""
RESPONSES_POLICY = """
backends:
  native:
    type: openai
    base_url: {native}
    api_key: sk-fake-responses-123456
    timeout_s: 5
    apis: [responses]
    models:
      m/shared: {{upstream_id: native-shared, context_length: 32768, input_price: 1.0, output_price: 2.0}}
  chat-up:
    type: openai
    base_url: {chat}
    timeout_s: 5
    models:
      m/shared: {{upstream_id: chat-shared, context_length: 32768, input_price: 3.0, output_price: 6.0}}
  down:
    type: openai
    base_url: {down}
    timeout_s: 5
    models:
      m/down: {{context_length: 32768, input_price: 0.1, output_price: 0.2}}
"""
HELLO = [{"role": "user", "content": "Say hello."}]
OWNED = {"models", "provider", "route"}


@pytest.fixture
def messages_gw(start_gateway, claude, upstream, upstream_b):
    return start_gateway(
        MESSAGES_POLICY.format(claude=claude.base_url, key=KEY, compat=upstream.base_url, down=upstream_b.base_url)
    )


@pytest.fixture
def responses_gw(start_gateway, native, upstream, upstream_b):
    return start_gateway(
        RESPONSES_POLICY.format(native=native.base_url, chat=upstream.base_url, down=upstream_b.base_url)
    )


@pytest.fixture
def claude_client(messages_gw):
    made = anthropic.Anthropic(base_url=messages_gw.url, api_key="sk-test", max_retries=0, timeout=30)
    yield made
    made.close()


def explained(gw, endpoint: str, body: dict) -> list[tuple[str, str]]:
    response = httpx.post(gw.url + "/v1/route/explain", params={"endpoint": endpoint}, json=body, timeout=10)
    assert response.status_code == 200, response.text
    return [(c["backend"], c["model"]) for c in response.json()["try_order"]]


def served_by(headers) -> tuple[str, str]:
    return headers["x-gateway-backend"], headers["x-gateway-model"]


# -- Messages ----------------------------------------------------------------------------------


def test_provider_order_steers_a_messages_request_passed_through_natively(messages_gw, claude_client, claude, upstream):
    body = {"model": "m/shared", "max_tokens": 100, "messages": HELLO}
    assert explained(messages_gw, "messages", body)[0] == ("compat", "m/shared")  # the cheaper, unasked
    steered = {**body, "provider": {"order": ["claude"]}, "route": "fallback"}
    assert explained(messages_gw, "messages", steered) == [("claude", "m/shared"), ("compat", "m/shared")]
    raw = claude_client.messages.with_raw_response.create(
        **body, extra_body={"provider": {"order": ["claude"]}, "route": "fallback"}
    )
    assert served_by(raw.headers) == ("claude", "m/shared")
    assert raw.parse().content[0].text == "Hello from the fake Anthropic."
    assert (len(claude.received), len(upstream.received)) == (1, 0)
    sent = claude.received[0].body  # the client's body passed through: the gateway's fields left out
    assert sent["model"] == "claude-shared" and not OWNED & set(sent)
    # Streamed, the same.
    with claude_client.messages.stream(**body, extra_body={"provider": {"order": ["claude"]}}) as stream:
        assert stream.get_final_text() == "Hello from the fake Anthropic."
    assert (len(claude.received), len(upstream.received)) == (2, 0)
    assert claude.received[1].body["stream"] is True and not OWNED & set(claude.received[1].body)


def test_a_models_list_steers_a_messages_request_translated_to_chat(
    messages_gw, claude_client, claude, upstream, upstream_b
):
    # `m/chat` has no backend serving Messages: the request is translated up front and routed
    # on its translation, which carries `provider`.
    body = {"model": "m/chat", "max_tokens": 100, "messages": HELLO}
    assert explained(messages_gw, "messages", body)[0] == ("compat", "m/chat")
    steered = {**body, "provider": {"order": ["down"]}}
    assert explained(messages_gw, "messages", steered) == [("down", "m/chat"), ("compat", "m/chat")]
    raw = claude_client.messages.with_raw_response.create(**body, extra_body={"provider": {"order": ["down"]}})
    assert served_by(raw.headers) == ("down", "m/chat")
    assert (len(upstream_b.received), len(upstream.received), len(claude.received)) == (1, 0, 0)
    assert upstream_b.received[0].body["model"] == "down-chat" and not OWNED & set(upstream_b.received[0].body)

    upstream_b.reset(status=503)
    body = {"model": "m/down", "max_tokens": 100, "messages": HELLO}
    fields = {"models": ["m/down", "m/shared"], "provider": {"ignore": ["claude"]}}
    assert explained(messages_gw, "messages", {**body, **fields}) == [("down", "m/down"), ("compat", "m/shared")]
    raw = claude_client.messages.with_raw_response.create(**body, extra_body=fields)
    assert served_by(raw.headers) == ("compat", "m/shared")
    assert raw.parse().content[0].text == "Hello from the fake upstream."
    assert (len(upstream_b.received), len(upstream.received), len(claude.received)) == (1, 1, 0)
    for received in (upstream_b.received[0], upstream.received[0]):  # the chat translation, both times
        assert received.body["messages"] == [{"role": "user", "content": "Say hello."}]
        assert not OWNED & set(received.body)


def test_a_malformed_routing_field_is_an_anthropic_shaped_400(messages_gw, claude_client, claude, upstream):
    body = {"model": "m/shared", "max_tokens": 100, "messages": HELLO}
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude_client.messages.create(**body, extra_body={"provider": "claude"})
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "`provider` must be an object."},
        "request_id": caught.value.request_id,
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude_client.messages.create(**body, extra_body={"models": "m/shared"})
    assert caught.value.body["error"]["message"] == "`models` must be an array of model names."
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude_client.messages.create(**body, extra_body={"provider": {"order": "claude"}})
    assert caught.value.body["type"] == "error" and "provider.order" in caught.value.body["error"]["message"]
    assert (len(claude.received), len(upstream.received)) == (0, 0)


# -- Responses ---------------------------------------------------------------------------------


def test_provider_order_steers_a_responses_request_translated_to_chat(responses_gw, openai_client, native, upstream):
    client = openai_client(responses_gw)
    body = {"model": "m/shared", "input": "Say hello."}
    assert explained(responses_gw, "responses", body)[0] == ("native", "m/shared")
    fields = {"provider": {"order": ["chat-up"]}, "models": ["m/shared"]}
    assert explained(responses_gw, "responses", {**body, **fields}) == [("chat-up", "m/shared"), ("native", "m/shared")]
    raw = client.responses.with_raw_response.create(**body, extra_body=fields)
    assert served_by(raw.headers) == ("chat-up", "m/shared")
    assert raw.parse().output_text == "Hello from the fake upstream."
    assert (len(upstream.received), len(native.received)) == (1, 0)
    sent = upstream.received[0].body
    assert sent["model"] == "chat-shared" and not OWNED & set(sent)


def test_a_models_list_steers_a_responses_request_passed_through_natively(
    responses_gw, openai_client, native, upstream, upstream_b
):
    upstream_b.reset(status=503)
    client = openai_client(responses_gw)
    body = {"model": "m/down", "input": "Say hello."}
    fields = {"models": ["m/down", "m/shared"], "provider": {"ignore": ["chat-up"]}, "route": "fallback"}
    assert explained(responses_gw, "responses", {**body, **fields}) == [("down", "m/down"), ("native", "m/shared")]
    raw = client.responses.with_raw_response.create(**body, extra_body=fields)
    assert served_by(raw.headers) == ("native", "m/shared")
    assert raw.parse().output_text == "Hello from the fake Responses upstream."
    assert (len(upstream_b.received), len(native.received), len(upstream.received)) == (1, 1, 0)
    assert not OWNED & set(upstream_b.received[0].body)  # the chat translation
    sent = native.received[0].body  # the client's body passed through
    assert sent["model"] == "native-shared" and not OWNED & set(sent)


def test_a_malformed_routing_field_is_an_openai_shaped_400(responses_gw, openai_client, native, upstream):
    client = openai_client(responses_gw)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m/shared", input="hi", extra_body={"provider": "native"})
    assert caught.value.body == {
        "message": "`provider` must be an object.",
        "type": "invalid_request_error",
        "param": "provider",
        "code": "invalid_type",
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m/shared", input="hi", extra_body={"models": "m/shared"})
    assert caught.value.code == "invalid_type" and caught.value.param == "models"
    assert (len(native.received), len(upstream.received)) == (0, 0)
