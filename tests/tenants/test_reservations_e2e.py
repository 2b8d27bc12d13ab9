"""What a call reserves of its key's tokens per minute: every answer it can produce. A chat
request with `n` answers, or a completions request with `n` / `best_of`, may use max_tokens
for each, and a completions or embeddings batch answers each prompt or input, so the reservation counts
each (else a tpm or budget is overrun by that factor)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.clock import clear_of_minute_edge
from tests.tenants.support import bearer, create_key

CONFIG = """
backends:
  up:
    type: openai
    base_url: {a}
    api_key: sk-a-123456
    apis: [chat, completions, embeddings]
    models:
      acme/embed: {{kind: embedding, input_price: 0.1}}
      qwen/qwen3-coder: {{input_price: 1.0, output_price: 2.0}}
routes:
  coder: {{models: [qwen/qwen3-coder]}}
  embed: {{models: [acme/embed]}}
"""
TPM = 100_000


def reserved(gw, key: str, path: str, body: dict) -> int:
    r = httpx.post(gw.url + path, json=body, headers=bearer(key), timeout=30)
    assert r.status_code == 200, r.text
    return TPM - int(r.headers["x-ratelimit-remaining-tokens"])  # a fresh key: only this call counted


def test_each_answer_a_call_asks_for_is_reserved(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    keys = [create_key(f"k{i}", "--tpm", str(TPM), data_dir=data) for i in range(10)]
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    chat = {"model": "coder", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 50}
    text = {"model": "coder", "prompt": "def add(a, b):", "max_tokens": 20}
    clear_of_minute_edge()
    one = reserved(gw, keys[0], "/v1/chat/completions", chat)
    assert reserved(gw, keys[1], "/v1/chat/completions", {**chat, "n": 3}) == one + 2 * 50
    single = reserved(gw, keys[2], "/v1/completions", text)
    assert reserved(gw, keys[3], "/v1/completions", {**text, "n": 2}) == single + 20
    assert reserved(gw, keys[4], "/v1/completions", {**text, "n": 2, "best_of": 4}) == single + 3 * 20
    assert reserved(gw, keys[5], "/v1/completions", {**text, "max_tokens": 60}) == single + 40  # max_tokens counts
    # A batch of prompts: each prompt (the longest's estimate, as routing reads it) and its answers.
    batch = {**text, "prompt": ["def add(a, b):", "def sub(a, b):", "def mul(a, b):"]}
    assert reserved(gw, keys[6], "/v1/completions", batch) == 3 * single
    assert reserved(gw, keys[7], "/v1/completions", {**batch, "n": 2}) == 3 * (single + 20)
    embed = {"model": "embed", "input": "a cat"}
    assert reserved(gw, keys[9], "/v1/embeddings", {**embed, "input": ["a cat", "a dog", "a cow"]}) == 3 * reserved(
        gw, keys[8], "/v1/embeddings", embed
    )
    assert len(upstream.received) == 10


def test_a_call_whose_answers_cannot_fit_the_tpm_is_refused(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("small", "--tpm", "300", data_dir=data)
    gw = start_gateway(CONFIG.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    ask = {"model": "coder", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 100, "n": 4}
    clear_of_minute_edge()
    r = httpx.post(gw.url + "/v1/chat/completions", json=ask, headers=bearer(key))
    assert r.status_code == 429 and r.json()["error"]["metadata"]["limit"] == "tpm", r.text
    assert httpx.post(gw.url + "/v1/chat/completions", json={**ask, "n": 2}, headers=bearer(key)).status_code == 200
    assert len(upstream.received) == 1


PRICEY = """
backends:
  up:
    type: openai
    base_url: {a}
    api_key: sk-a-123456
    models:
      qwen/qwen3-coder: {{input_price: 1.0, output_price: 1000.0, context_length: 131072}}
routes:
  coder: {{models: [qwen/qwen3-coder]}}
"""


def test_messages_requests_in_flight_never_overspend_a_budget(start_gateway, upstream, tmp_path):
    """Hostile testing: Anthropic's max_tokens is a ceiling, so a Messages call reserved the
    usual completion (1024), not the 3000 it could write: four concurrent calls of a $5/day
    key writing 3000 tokens at $1000/M were all admitted and spent $12. Spend now reserves
    the longest answer a candidate can give, as for a chat call setting max_tokens."""
    data = tmp_path / "data"
    key = create_key("capped", "--budget-usd", "5", "--budget-period", "day", data_dir=data)
    gw = start_gateway(PRICEY.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    upstream.reset(completion_tokens=3000, delay_s=1.0)  # all four in flight together
    body = {"model": "coder", "max_tokens": 3000, "messages": [{"role": "user", "content": "Write a lot."}]}

    assert four_at_once(gw, "/v1/messages", body, key) == [200, 429, 429, 429]  # $3 reserved: no room for a second
    assert len(upstream.received) == 1
    view = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert 3.0 < view["usage_daily"] <= 5.0, view  # the one call: 3000 tokens at $1000/M and its prompt


def four_at_once(gw, path: str, body: dict, key: str) -> list[int]:
    """The statuses of four calls of `body` sent together, sorted."""

    def ask(_: int) -> int:
        return httpx.post(gw.url + path, json=body, headers=bearer(key), timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        return sorted(pool.map(ask, range(4)))


def test_a_chat_call_reserves_the_larger_of_max_tokens_and_max_completion_tokens(start_gateway, upstream, tmp_path):
    """Hostile testing: with both fields set, spend reserved only `max_completion_tokens`, so a
    caller sending `max_completion_tokens: 1` beside `max_tokens: 3000` to an upstream that
    reads only `max_tokens` (DeepSeek's API documents no other) had four concurrent calls of a
    $5/day key admitted, each writing 3000 tokens at $1000/M: $12 spent. The reservation now
    takes the larger, as it takes the dearest candidate's prices."""
    data = tmp_path / "data"
    key = create_key("both", "--budget-usd", "5", "--budget-period", "day", data_dir=data)
    gw = start_gateway(PRICEY.format(a=upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    upstream.reset(completion_tokens=3000, delay_s=1.0)  # all four in flight together
    body = {
        "model": "coder",
        "max_completion_tokens": 1,
        "max_tokens": 3000,
        "messages": [{"role": "user", "content": "Write a lot."}],
    }

    assert four_at_once(gw, "/v1/chat/completions", body, key) == [200, 429, 429, 429]
    assert len(upstream.received) == 1
    view = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert 3.0 < view["usage_daily"] <= 5.0, view
