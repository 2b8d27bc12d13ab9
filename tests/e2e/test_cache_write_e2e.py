"""Anthropic prompt-cache writes through the real gateway: counted in the ledger and priced
at 1.25x input (issue 11 item 18), streamed and not."""

from __future__ import annotations

import pytest

from tests.e2e.test_usage_e2e import FAST_FLUSH, export_today
from tests.support.poll import poll

KEY = "sk-ant-test-key-123456"
CONFIG = """
backends:
  claude:
    type: anthropic
    base_url: {url}
    api_key: {key}
    timeout_s: 5
    models:
      anthropic/claude-sonnet-4.5: {{upstream_id: claude-sonnet-4-5, input_price: 3.0, output_price: 15.0, cached_input_price: 0.3}}
routes:
  auto:
    models: [anthropic/claude-sonnet-4.5]
"""


def test_cache_writes_are_recorded_and_priced_at_the_cache_write_rate(start_gateway, claude, openai_client):
    gw = start_gateway(CONFIG.format(url=claude.base_url, key=KEY), env=FAST_FLUSH)
    claude.reset(input_tokens=13, cache_read_tokens=100, cache_creation_tokens=2000, output_tokens=9)
    client = openai_client(gw)
    messages = [{"role": "user", "content": "Say hello."}]
    client.chat.completions.create(model="auto", messages=messages)
    list(client.chat.completions.create(model="auto", messages=messages, stream=True))

    rows = poll(lambda: (r := export_today(gw.dir / "data")) and len(r) == 2 and r, what="two ledger rows")
    for row in rows:
        assert (row["prompt_tokens"], row["cached_tokens"], row["cache_write_tokens"]) == (2113, 100, 2000)
        # 13 plain input at 3.0, 100 cache reads at 0.3, 2000 cache writes at 3.75, 9 output at 15.
        assert row["cost"] == pytest.approx((13 * 3.0 + 100 * 0.3 + 2000 * 3.75 + 9 * 15.0) / 1e6, abs=1e-12)


def test_a_responses_usage_says_the_cache_writes_it_was_billed_for(start_gateway, claude, openai_client):
    """The Responses API's `input_tokens_details.cache_write_tokens` (the `openai` SDK's
    `ResponseUsage` requires it) counts the writes the ledger bills, streamed and not; it
    said 0 whatever the backend wrote."""
    gw = start_gateway(CONFIG.format(url=claude.base_url, key=KEY), env=FAST_FLUSH)
    claude.reset(input_tokens=13, cache_read_tokens=100, cache_creation_tokens=2000, output_tokens=9)
    client = openai_client(gw)
    answered = client.responses.create(model="auto", input="Say hello.")
    with client.responses.stream(model="auto", input="Say hello.") as events:
        list(events)
        streamed = events.get_final_response()

    assert len(claude.received) == 2
    for response in (answered, streamed):
        usage = response.usage
        assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2113, 9, 2122)
        details = usage.input_tokens_details
        assert (details.cached_tokens, details.cache_write_tokens) == (100, 2000)
        assert client.responses.retrieve(response.id).usage == usage
    rows = poll(lambda: (r := export_today(gw.dir / "data")) and len(r) == 2 and r, what="two ledger rows")
    assert [(r["endpoint"], r["cache_write_tokens"]) for r in rows] == [("responses", 2000)] * 2
