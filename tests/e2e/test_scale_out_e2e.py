"""Two gateway processes behind one Redis, as replicas run: they share rate-limit counters
and usage aggregates, and one dying (SIGKILL, no goodbye) neither breaks the other nor
loses what it had recorded."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.e2e.usage_helpers import poll_rankings
from tests.support.clock import one_rate_limit_window
from tests.support.policies import one_backend_policy
from tests.support.scrape import scrape

pytestmark = pytest.mark.redis

LIMITED, FREE = "qwen/qwen3-32b", "z-ai/glm-5"  # one model per route, so the rankings tell them apart
ASK = {"messages": [{"role": "user", "content": "Say hello."}]}


def policy(base_url: str) -> str:
    return one_backend_policy(
        base_url,
        models=[LIMITED, FREE],
        routes={"auto": [LIMITED], "other": [FREE]},
        rate_limits={"routes": {"auto": 6}},
    )


def ask(gw, route: str) -> int:
    return httpx.post(gw.url + "/v1/chat/completions", json={**ASK, "model": route}, timeout=10).status_code


def requests_for(body: dict, model: str) -> int:
    return sum(m["requests"] for m in body["models"] if m["model"] == model)


def test_replicas_share_rate_limits_and_usage_and_survive_each_other(start_gateway, upstream, redis_server):
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_FLUSH_S": "0.05"}
    a, b = start_gateway(policy(upstream.base_url), env=env), start_gateway(policy(upstream.base_url), env=env)

    # Usage: either replica ranks what both served; A's calls reach Redis before A dies.
    assert [ask(a, "other"), ask(b, "other"), ask(a, "other")] == [200, 200, 200]
    poll_rankings(b.url, lambda body: requests_for(body, FREE) == 3, window="week")
    poll_rankings(a.url, lambda body: requests_for(body, FREE) == 3, window="week")

    # Rate limits count per wall-clock minute, so everything the limit decides happens in one
    # quick burst clear of the minute's edge: the calls, A's death and B's next call. The
    # waits for flushed usage come before and after it, never inside.
    with one_rate_limit_window():
        statuses = [ask(a if i % 2 == 0 else b, "auto") for i in range(10)]
        a.signal(signal.SIGKILL)
        a.proc.wait(10)
        after_a_died = ask(b, "auto")

    assert statuses == [200] * 6 + [429] * 4  # one limit for both replicas
    assert after_a_died == 429  # what A counted still counts: it lives in Redis, not in A
    # B goes on serving.
    assert ask(b, "other") == 200
    metrics = scrape(b.url)
    assert metrics.value("gateway_rate_limited_total") == 2 + 1  # B's share of the four refusals, and the last
    assert metrics.value("gateway_requests_total", route="other", model=FREE, backend="up", status="200") == 2
    body = poll_rankings(
        b.url, lambda body: requests_for(body, FREE) == 4 and requests_for(body, LIMITED) >= 3, window="week"
    )
    # A's three answered "auto" calls may have died in its buffer with it (SIGKILL): B's are there.
    assert 3 <= requests_for(body, LIMITED) <= 6
