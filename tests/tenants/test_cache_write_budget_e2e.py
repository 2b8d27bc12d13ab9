"""A budget holds for prompts written to a prompt cache, as Claude Code's are: such tokens
are billed at the offer's `cache_write_price` (1.25x `input_price` by default on
`type: anthropic`; Anthropic's one-hour cache costs 2x), so the reservation must price the
prompt at that rate, not at `input_price`, or every call overspends the budget by the
difference."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.support.poll import poll
from tests.tenants.support import bearer, create_key

CONFIG = """
backends:
  claude:
    type: anthropic
    base_url: {a}
    api_key: sk-ant-test-key-123456
    models:
      anthropic/claude-x:
        upstream_id: claude-x
        input_price: 1000.0
        output_price: 1000.0
        context_length: 200000
        max_output_tokens: 100
routes:
  big: {{models: [anthropic/claude-x]}}
"""
MAX_TOKENS = 10
# Claude Code marks its prompt for caching: Anthropic writes it to the cache and bills it so.
PROMPT = [{"role": "user", "content": [{"type": "text", "text": "x" * 3000, "cache_control": {"type": "ephemeral"}}]}]


def test_a_prompt_written_to_the_cache_is_reserved_at_the_cache_write_price(start_gateway, claude, tmp_path):
    """Hostile testing: the reservation priced the prompt at `input_price`, so a call whose
    prompt (exactly the gateway's estimate) was all written to the cache cost 25% more than
    it reserved, and a key with max_tokens on every call overspent its budget, which README
    says such calls never do. Four calls of a budget with room for three went through."""
    data = tmp_path / "data"
    probe = create_key("probe", data_dir=data)
    env = {"GATEWAY_DATA_DIR": str(data), "GATEWAY_KEYS_REFRESH_S": "0.2"}
    gw = start_gateway(CONFIG.format(a=claude.base_url), env=env)
    counted = httpx.post(
        gw.url + "/v1/messages/count_tokens", json={"model": "big", "messages": PROMPT}, headers=bearer(probe)
    )
    prompt = counted.json()["input_tokens"]  # the gateway's own estimate: the upstream bills exactly that
    claude.reset(input_tokens=0, cache_creation_tokens=prompt, output_tokens=MAX_TOKENS)
    cost = (prompt * 1000.0 * 1.25 + MAX_TOKENS * 1000.0) / 1e6  # each call's real bill
    # Room for three calls and most of a fourth: the fourth, were it priced at input_price,
    # would fit (its reservation is below a real call's cost), and overspend.
    budget = round(3.9 * cost, 6)
    key = create_key("cached", "--budget-usd", str(budget), "--budget-period", "day", data_dir=data)
    poll(lambda: httpx.get(gw.url + "/v1/key", headers=bearer(key)).status_code == 200, what="the new key")
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)

    answers = []
    for _ in range(4):
        try:
            message = client.messages.create(model="big", max_tokens=MAX_TOKENS, messages=PROMPT)
            answers.append(message.usage.cache_creation_input_tokens)
        except anthropic.RateLimitError as refused:
            assert refused.response.json()["error"]["type"] == "rate_limit_error"
            answers.append("refused")
    assert answers == [prompt, prompt, prompt, "refused"]
    assert len(claude.received) == 3  # the refused call never reached the upstream
    spent = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert spent["usage_daily"] == pytest.approx(3 * cost) and spent["usage_daily"] <= budget, spent
    client.close()
