"""Keys on every ingress, as each API's own SDK meets them: a key restricted to some models
sees only those in `GET /v1/models` (OpenAI's and Anthropic's lists); 403 and 429 with
retry-after on /v1/messages, /v1/responses, /v1/embeddings and /v1/completions in each
API's own error shape; Anthropic's max_tokens bounds the tokens a Messages call reserves, and
its answer carries x-gateway-cost-usd."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.support.clock import clear_of_minute_edge
from tests.tenants.support import bearer, create_key

CONFIG = """
backends:
  up:
    type: openai
    base_url: {a}
    api_key: sk-a-123456
    apis: [chat, embeddings, completions]
    models:
      acme/embed: {{upstream_id: acme-embed-v1, kind: embedding, input_price: 0.1}}
      acme/embed-big: {{kind: embedding, input_price: 0.2}}
      qwen/qwen3-coder: {{upstream_id: Qwen/Qwen3-Coder, input_price: 1.0, output_price: 2.0}}
      meta/llama: {{input_price: 1.0, output_price: 2.0}}
routes:
  embed: {{models: [acme/embed]}}
  big-embed: {{models: [acme/embed-big]}}
  coder: {{models: [qwen/qwen3-coder]}}
  other: {{models: [meta/llama]}}
aliases:
  "text-embedding-*": embed
"""
EVERYTHING = {"embed", "big-embed", "coder", "other", "acme/embed", "acme/embed-big", "qwen/qwen3-coder", "meta/llama"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def setup(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    narrow = create_key("narrow", "--models", "coder,embed,qwen/*", "--rpm", "4", data_dir=data)
    wide = create_key("wide", data_dir=data)
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    return gw, narrow, wide


def test_a_key_restricted_to_some_models_lists_and_explains_only_those(setup):
    gw, narrow, wide = setup
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=narrow, max_retries=0)
    assert {m.id for m in oa.models.list()} == {"coder", "embed", "qwen/qwen3-coder"}
    assert oa.models.retrieve("coder").id == "coder"
    assert oa.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"  # an alias of `embed`
    for hidden in ("other", "meta/llama", "big-embed"):
        with pytest.raises(openai.NotFoundError):
            oa.models.retrieve(hidden)
    # Nor does it get the routing explanation (backends, prices, live stats) of the others.
    explain = gw.url + "/v1/route/explain"
    assert httpx.post(explain, json={"model": "coder", "messages": HI}, headers=bearer(narrow)).status_code == 200
    for model in ("other", "meta/llama"):
        refused = httpx.post(explain, json={"model": model, "messages": HI}, headers=bearer(narrow))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed", refused.text
    refused = httpx.post(
        explain + "?endpoint=embeddings", json={"model": "big-embed", "input": "hi"}, headers=bearer(narrow)
    )
    assert refused.status_code == 403
    assert httpx.post(explain, json={"model": "other", "messages": HI}, headers=bearer(wide)).status_code == 200
    an = anthropic.Anthropic(base_url=gw.url, api_key=narrow, max_retries=0)
    assert [m.id for m in an.models.list()] == ["coder", "qwen/qwen3-coder"]  # no embedding models
    with pytest.raises(anthropic.NotFoundError):
        an.models.retrieve("meta/llama")
    # A key without a list sees everything, as before.
    everyone = openai.OpenAI(base_url=gw.url + "/v1", api_key=wide, max_retries=0)
    assert {m.id for m in everyone.models.list()} == EVERYTHING
    for c in (oa, an, everyone):
        c.close()


def test_count_tokens_refuses_a_model_the_key_may_not_use_as_messages_does(setup, upstream):
    gw, narrow, wide = setup
    an = anthropic.Anthropic(base_url=gw.url, api_key=narrow, max_retries=0)
    assert an.messages.count_tokens(model="coder", messages=HI).input_tokens > 0
    for hidden in ("other", "meta/llama"):
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            an.messages.count_tokens(model=hidden, messages=HI)
        assert denied.value.body["type"] == "error" and denied.value.body["error"]["type"] == "permission_error"
        assert f"may not use `{hidden}`" in denied.value.body["error"]["message"]
    # A fallback list naming a hidden model is refused too, as /v1/messages refuses it.
    fallback = {"model": "coder", "models": ["other"], "messages": HI}
    for path in ("/v1/messages/count_tokens", "/v1/messages"):
        refused = httpx.post(gw.url + path, json={**fallback, "max_tokens": 5}, headers=bearer(narrow))
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error", path
    # An unknown name is the 404 it is for every key; a key without a list counts anything.
    with pytest.raises(anthropic.NotFoundError):
        an.messages.count_tokens(model="nobody/nothing", messages=HI)
    everyone = anthropic.Anthropic(base_url=gw.url, api_key=wide, max_retries=0)
    assert everyone.messages.count_tokens(model="other", messages=HI).input_tokens > 0
    assert upstream.received == []  # counting asks no backend
    for c in (an, everyone):
        c.close()


def test_every_ingress_refuses_a_model_and_a_limit_in_its_own_shape(setup, upstream):
    gw, narrow, _ = setup
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=narrow, max_retries=0)
    an = anthropic.Anthropic(base_url=gw.url, api_key=narrow, max_retries=0)

    def calls(model_chat: str, model_embed: str):
        return [
            lambda: an.messages.create(model=model_chat, max_tokens=50, messages=HI),
            lambda: oa.responses.create(model=model_chat, input="hi"),
            lambda: oa.embeddings.create(model=model_embed, input="hi"),
            lambda: oa.completions.create(model=model_chat, prompt="hi"),
        ]

    for i, call in enumerate(calls("other", "big-embed")):
        error = anthropic.PermissionDeniedError if i == 0 else openai.PermissionDeniedError
        with pytest.raises(error) as denied:
            call()
        assert denied.value.status_code == 403 and "may not use `" in str(denied.value), i
    assert upstream.received == []  # nothing refused reached the upstream

    clear_of_minute_edge()
    for call in calls("coder", "embed"):  # the key's rpm is 4: one call per ingress
        call()
    assert len(upstream.received) == 4
    for i, call in enumerate(calls("coder", "embed")):
        error = anthropic.RateLimitError if i == 0 else openai.RateLimitError
        with pytest.raises(error) as limited:
            call()
        response = limited.value.response
        assert response.status_code == 429 and float(response.headers["retry-after"]) > 0, i
        assert "rpm" in str(limited.value), i
    assert len(upstream.received) == 4
    # Each in its API's own shape: Anthropic's {type: error, error: {type, message}}, OpenAI's {error: {...}}.
    raw = httpx.post(
        gw.url + "/v1/messages", json={"model": "coder", "max_tokens": 5, "messages": HI}, headers=bearer(narrow)
    )
    message = "Rate limit reached for key `narrow`: rpm (4 requests per minute)."
    assert raw.json()["type"] == "error" and raw.json()["error"]["type"] == "rate_limit_error"
    assert raw.json()["error"]["message"].startswith(message)
    for path, body in (
        ("/v1/responses", {"model": "coder", "input": "hi"}),
        ("/v1/embeddings", {"model": "embed", "input": "hi"}),
        ("/v1/completions", {"model": "coder", "prompt": "hi"}),
    ):
        error = httpx.post(gw.url + path, json=body, headers=bearer(narrow)).json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded", path
        assert error["metadata"] == {"limit": "rpm", "scope": "key", "name": "narrow"} and error["message"].startswith(
            message
        )
    assert len(upstream.received) == 4
    for c in (oa, an):
        c.close()


def test_a_messages_call_reserves_no_more_tokens_than_its_max_tokens(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    # The default completion reserve (1024) alone is over this key's tpm; max_tokens 100 is not.
    key = create_key("small", "--tpm", "1000", data_dir=data)
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    body = {"model": "coder", "max_tokens": 100, "messages": HI}
    prompt = httpx.post(gw.url + "/v1/messages/count_tokens", json=body, headers=bearer(key)).json()["input_tokens"]
    clear_of_minute_edge()
    r = httpx.post(gw.url + "/v1/messages", json=body, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == 1000 - (prompt + 100)
    assert len(upstream.received) == 1 and upstream.received[0].body["max_tokens"] == 100
    usage = r.json()["usage"]  # priced at coder's 1.0 / 2.0 USD per 1M tokens
    assert float(r.headers["x-gateway-cost-usd"]) == pytest.approx(
        (usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0) / 1e6
    )


def test_failed_authentication_on_messages_is_throttled_in_anthropics_shape(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("good", data_dir=data)
    gw = start_gateway(
        CONFIG.format(a=upstream.base_url),
        env={"GATEWAY_DATA_DIR": str(data), "GATEWAY_AUTH_FAILURES_PER_MINUTE": "3"},
    )
    clear_of_minute_edge()
    body = {"model": "coder", "max_tokens": 20, "messages": HI}
    with httpx.Client() as client:
        answers = [
            client.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": f"sk-wrong-{i}"}) for i in range(5)
        ]
        assert [r.status_code for r in answers] == [401] * 3 + [429] * 2
        assert answers[0].json()["error"]["type"] == "authentication_error"
        throttled = answers[-1]
        assert throttled.json()["type"] == "error" and throttled.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # Anthropic's model list and model lookup, throttled alike, said no Retry-After
        # (hostile testing): their Anthropic-shaped errors dropped the error's headers.
        anthropic_headers = {"x-api-key": "sk-wrong-models", "anthropic-version": "2023-06-01"}
        for path in ("/v1/models", "/v1/models/coder"):
            listed = client.get(gw.url + path, headers=anthropic_headers)
            assert listed.status_code == 429 and listed.json()["error"]["type"] == "rate_limit_error", path
            assert 1 <= int(listed.headers["retry-after"]) <= 60, path
        good = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
        assert (
            good.messages.create(model="coder", max_tokens=20, messages=HI).type == "message"
        )  # same address, never refused
    assert len(upstream.received) == 1


def test_a_request_larger_than_the_keys_whole_tpm_is_not_retried(start_gateway, upstream, tmp_path):
    """A call reserving more tokens than the key's tokens per minute can never pass, yet its
    429 said Retry-After: 120, and the SDKs, honouring it, waited two minutes to be refused
    again. It now carries no Retry-After and `x-should-retry: false`, which both SDKs read:
    one attempt each, the upstream never asked, and the message says what to change."""
    data = tmp_path / "data"
    key = create_key("small", "--tpm", "100", data_dir=data)
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    sent: list[str] = []
    hooks = {"request": [lambda request: sent.append(request.url.path)]}
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, http_client=openai.DefaultHttpxClient(event_hooks=hooks))
    an = anthropic.Anthropic(base_url=gw.url, api_key=key, http_client=anthropic.DefaultHttpxClient(event_hooks=hooks))
    assert oa.max_retries == an.max_retries == 2  # the SDKs' defaults: they would retry a 429
    with pytest.raises(openai.RateLimitError) as big:
        oa.chat.completions.create(model="coder", messages=HI, max_tokens=1000)
    with pytest.raises(anthropic.RateLimitError) as big_message:
        an.messages.create(model="coder", messages=HI, max_tokens=1000)
    with pytest.raises(openai.RateLimitError) as big_response:
        oa.responses.create(model="coder", input="hi", max_output_tokens=1000)
    assert sent == ["/v1/chat/completions", "/v1/messages", "/v1/responses"]
    for refused in (big.value, big_message.value, big_response.value):
        assert "retry-after" not in refused.response.headers
        assert refused.response.headers["x-should-retry"] == "false"
        assert "Request too large for key `small`: tpm (100 tokens per minute" in str(refused)
    # What to change, in each API's own words (Responses has no max_tokens).
    assert "lower max_tokens;" in str(big.value) and "lower max_tokens;" in str(big_message.value)
    assert "Shorten the input or lower max_output_tokens;" in str(big_response.value)
    assert upstream.received == []
    # A call that fits is admitted as before.
    oa.chat.completions.create(model="coder", messages=HI, max_tokens=20)
    assert len(upstream.received) == 1
    for c in (oa, an):
        c.close()
