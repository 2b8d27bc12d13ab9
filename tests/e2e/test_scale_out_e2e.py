"""Two gateway processes behind one Redis, as replicas run: they share rate-limit counters
and usage aggregates, and one dying (SIGKILL, no goodbye) neither breaks the other nor
loses what it had recorded."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.e2e.usage_helpers import poll_rankings
from tests.support.clock import clear_of_minute_edge
from tests.support.scrape import scrape

pytestmark = pytest.mark.redis

CONFIG = """
backends:
  up:
    type: openai
    base_url: {base_url}
    api_key: sk-upstream
    models:
      qwen/qwen3-32b: {{}}
routes:
  auto: {{models: [qwen/qwen3-32b]}}
  other: {{models: [qwen/qwen3-32b]}}
rate_limits:
  routes: {{auto: 6}}
"""
ASK = {"messages": [{"role": "user", "content": "Say hello."}]}


def ask(gw, route: str) -> int:
    return httpx.post(gw.url + "/v1/chat/completions", json={**ASK, "model": route}, timeout=10).status_code


def test_replicas_share_rate_limits_and_usage_and_survive_each_other(start_gateway, upstream, redis_server):
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_FLUSH_S": "0.05"}
    config = CONFIG.format(base_url=upstream.base_url)
    a, b = start_gateway(config, env=env), start_gateway(config, env=env)
    clear_of_minute_edge()

    statuses = [ask(a if i % 2 == 0 else b, "auto") for i in range(10)]
    assert statuses.count(200) == 6 and statuses.count(429) == 4  # one limit for both replicas
    assert statuses[:6] == [200] * 6
    refused_by_b = statuses[6:].count(429) // 2
    assert scrape(b.url).value("gateway_rate_limited_total") == refused_by_b
    # Both replicas rank the six answered calls, whichever of them served each.
    poll_rankings(a.url, lambda body: body["totals"]["requests"] == 6, window="week")

    a.signal(signal.SIGKILL)
    a.proc.wait(10)
    # B goes on serving; what A counted still counts (it lives in Redis, not in A).
    assert ask(b, "auto") == 429
    assert ask(b, "other") == 200
    assert scrape(b.url).value("gateway_requests_total", route="other", model="qwen/qwen3-32b", backend="up", status="200") == 1
    poll_rankings(b.url, lambda body: body["totals"]["requests"] == 7, window="week")
