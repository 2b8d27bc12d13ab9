"""A client's model name or id, quoted in an error, is bounded: its first 200 characters and
an ellipsis, whatever its length, on every API and by each API's own SDK (a 100 KB `model`
was sent back whole)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.tenants.support import bearer, create_key

CONFIG = """
backends:
  up:
    type: openai
    base_url: {url}
    api_key: sk-a-123456
    models:
      qwen/qwen3-coder: {{}}
      acme/embed: {{kind: embedding}}
routes:
  coder: {{models: [qwen/qwen3-coder]}}
  other: {{models: [qwen/qwen3-coder]}}
aliases:
  "long-*": other
"""
HI = [{"role": "user", "content": "hi"}]
LONG = "long-" + "x" * 100_000  # an alias maps it: routed, so refused past resolving too
UNKNOWN = "no/" + "y" * 100_000


def bounded(message: str, name: str) -> None:
    assert name[:200] + "…" in message and name[:201] not in message, message[:400]
    assert len(message) < 1000


@pytest.fixture
def setup(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    narrow = create_key("narrow", "--models", "coder", data_dir=data)
    wide = create_key("wide", data_dir=data)
    gw = start_gateway(CONFIG.format(url=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    return gw, narrow, wide


def test_a_long_model_name_is_quoted_bounded(setup, upstream):
    gw, narrow, wide = setup
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=wide, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        oa.chat.completions.create(model=UNKNOWN, messages=HI)
    bounded(caught.value.body["message"], UNKNOWN)
    in_url = UNKNOWN[:20_000]  # within the request head's limit
    with pytest.raises(openai.NotFoundError) as caught:
        oa.models.retrieve(in_url)
    bounded(caught.value.body["message"], in_url)
    with pytest.raises(openai.BadRequestError) as caught:  # an embedding model asked to chat
        oa.embeddings.create(model=LONG, input="hi")
    bounded(caught.value.body["message"], LONG)
    narrowed = openai.OpenAI(base_url=gw.url + "/v1", api_key=narrow, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as caught:  # a key limited to other models
        narrowed.chat.completions.create(model=LONG, messages=HI)
    bounded(caught.value.body["message"], LONG)
    claude = anthropic.Anthropic(base_url=gw.url, api_key=wide, max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as refused:
        claude.messages.create(model=UNKNOWN, max_tokens=16, messages=HI)
    bounded(refused.value.body["error"]["message"], UNKNOWN)
    with pytest.raises(anthropic.NotFoundError) as refused:
        claude.messages.count_tokens(model=UNKNOWN, messages=HI)
    bounded(refused.value.body["error"]["message"], UNKNOWN)
    listed = httpx.get(
        gw.url + "/v1/models", params={"after_id": in_url}, headers={**bearer(wide), "anthropic-version": "2023-06-01"}
    )
    assert listed.status_code == 400
    bounded(listed.json()["error"]["message"], in_url)
    assert upstream.received == []


def test_a_long_response_id_is_quoted_bounded(setup):
    gw, _, wide = setup
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=wide, max_retries=0)
    previous = "resp_" + "z" * 100_000
    with pytest.raises(openai.BadRequestError) as caught:
        oa.responses.create(model="coder", input="Go on.", previous_response_id=previous)
    assert caught.value.body["code"] == "previous_response_not_found"
    bounded(caught.value.body["message"], previous)
    asked = "resp_" + "z" * 20_000  # within the request head's limit
    with pytest.raises(openai.NotFoundError) as caught:
        oa.responses.retrieve(asked)
    bounded(caught.value.body["message"], asked)
    stored = oa.responses.create(model="coder", input="Say hello.")
    items = httpx.get(f"{gw.url}/v1/responses/{stored.id}/input_items", params={"after": asked}, headers=bearer(wide))
    assert items.status_code == 400
    bounded(items.json()["error"]["message"], asked)
