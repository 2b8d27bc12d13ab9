"""A model at its own limit (all clients together) is skipped like a provider answering 429:
the next candidate serves the call, and the client gets 429 only when every candidate is
limited. Exact counts per upstream, in one process and across two sharing Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.clock import clear_of_minute_edge
from tests.support.scrape import scrape

FIRST, SECOND = "qwen/qwen3-32b", "deepseek/deepseek-v3.2"
ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def policy(a, b, limits: dict[str, int]) -> str:
    rows = "\n".join(f'    "{name}": {rpm}' for name, rpm in limits.items())
    return f"""
backends:
  up-a:
    type: openai
    base_url: {a.base_url}
    api_key: sk-a
    models: {{"{FIRST}": {{}}}}
  up-b:
    type: openai
    base_url: {b.base_url}
    api_key: sk-b
    models: {{"{SECOND}": {{}}}}
routes:
  auto:
    models: ["{FIRST}", "{SECOND}"]
    strategy: ordered
rate_limits:
  routes:
{rows}
"""


def send(gw, body=ASK) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


def test_a_limited_model_is_skipped_for_the_next_candidate(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, {FIRST: 5}))
    clear_of_minute_edge()
    answers = [send(gw) for _ in range(12)]
    assert [r.status_code for r in answers] == [200] * 12  # nobody refused: the second model took over
    assert [r.headers["x-gateway-model"] for r in answers] == [FIRST] * 5 + [SECOND] * 7
    assert (len(upstream.received), len(upstream_b.received)) == (5, 7)
    m = scrape(gw.url)
    assert m.value("gateway_candidates_skipped_total", backend="up-a", reason="model_limit") == 7
    assert m.value("gateway_limit_refusals_total", limit="rpm", scope="model") == 7
    assert m.value("gateway_rate_limited_total") == 0  # no client was refused


def test_the_client_gets_429_only_when_every_candidate_is_limited(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, {FIRST: 3, SECOND: 2}))
    clear_of_minute_edge()
    answers = [send(gw) for _ in range(8)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    assert (len(upstream.received), len(upstream_b.received)) == (3, 2)
    refused = answers[-1]
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert f"`{FIRST}`" in error["message"] and f"`{SECOND}`" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    # A suffix or a direct request for the model counts on the model all the same.
    assert send(gw, {**ASK, "model": f"{FIRST}:floor"}).status_code == 429
    assert send(gw, {**ASK, "model": SECOND, "models": [FIRST]}).status_code == 429
    assert (len(upstream.received), len(upstream_b.received)) == (3, 2)


def test_an_unlimited_model_pays_nothing_and_is_never_skipped(start_gateway, upstream, upstream_b):
    gw = start_gateway(policy(upstream, upstream_b, {SECOND: 1}))
    clear_of_minute_edge()
    assert [send(gw).status_code for _ in range(6)] == [200] * 6
    assert (len(upstream.received), len(upstream_b.received)) == (6, 0)
    # Zero (every configured offer's series starts at 0 so the dashboard has data), never counted.
    assert scrape(gw.url).value("gateway_candidates_skipped_total", backend="up-a", reason="model_limit") == 0.0


@pytest.mark.redis
def test_model_limits_are_exact_across_two_replicas_under_concurrency(
    start_gateway, upstream, upstream_b, redis_server
):
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    text = policy(upstream, upstream_b, {FIRST: 6, SECOND: 4})
    gateways = [start_gateway(text, env=env), start_gateway(text, env=env)]
    upstream.reset(delay_s=0.3)  # every call still in flight while the others arrive
    upstream_b.reset(delay_s=0.3)
    clear_of_minute_edge()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: send(gateways[i % 2]), range(20)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 10 + [429] * 10
    assert (len(upstream.received), len(upstream_b.received)) == (6, 4)
