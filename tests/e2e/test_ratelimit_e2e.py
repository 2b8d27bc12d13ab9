"""The gateway's own rate limits as clients meet them: the openai SDK's RateLimitError, with
Retry-After; and a Redis outage that fails nobody's request."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.clock import clear_of_minute_edge
from tests.support.policies import one_backend_policy
from tests.support.scrape import scrape

LIMITS = {"keys": {"team-a": 3}, "routes": {"qwen/qwen3-32b": 100}}
KEYS = {"GATEWAY_API_KEYS": "team-a:sk-team-a,team-b:sk-team-b"}
ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


def test_a_key_over_its_limit_gets_an_openai_shaped_429_with_retry_after(start_gateway, upstream, openai_client):
    gw = start_gateway(one_backend_policy(upstream.base_url, rate_limits=LIMITS), env=KEYS)
    clear_of_minute_edge()
    team_a, team_b = openai_client(gw, api_key="sk-team-a"), openai_client(gw, api_key="sk-team-b")
    for _ in range(3):
        team_a.chat.completions.create(**ASK)
    with pytest.raises(openai.RateLimitError) as refused:
        team_a.chat.completions.create(**ASK)
    error = refused.value
    assert error.code == "rate_limit_exceeded" and error.type == "rate_limit_error"
    assert error.body["param"] is None and "team-a" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-request-id"]
    assert len(upstream.received) == 3  # the refused call never reached a backend
    for _ in range(5):
        team_b.chat.completions.create(**ASK)  # no limit for team-b's key
    m = scrape(gw.url)
    assert m.value("gateway_rate_limited_total") == 1
    assert m.value("gateway_requests_total", route="auto", model="unknown", backend="", status="429") == 1


@pytest.mark.redis
def test_limits_count_in_redis_and_a_redis_outage_fails_no_request(start_gateway, upstream, redis_server):
    import redis

    # The usage ledger shares this Redis; at shutdown it would wait for it to come back.
    env = {**KEYS, "GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    gw = start_gateway(one_backend_policy(upstream.base_url, rate_limits=LIMITS), env=env)
    clear_of_minute_edge()
    headers = {"authorization": "Bearer sk-team-b"}
    ask_model = {**ASK, "model": "qwen/qwen3-32b"}  # limited by model id, 100 per minute
    for _ in range(2):
        assert httpx.post(gw.url + "/v1/chat/completions", json=ask_model, headers=headers).status_code == 200
    shared = redis.Redis(port=redis_server.port)
    assert sum(int(shared.get(key)) for key in shared.keys("{gw:rl}:route:qwen/qwen3-32b:*")) == 2
    redis_server.stop()
    for _ in range(3):
        r = httpx.post(gw.url + "/v1/chat/completions", json=ask_model, headers=headers)
        assert r.status_code == 200, r.text
    metrics = scrape(gw.url)
    assert metrics.value("gateway_rate_limiter_errors_total") >= 1  # one per try of the store, 5 s apart
    assert metrics.value("gateway_limits_admitted_locally_total") == 3  # every request it let through
    assert "rate-limit store failed" in gw.log()


def test_a_route_limit_names_the_route_as_an_entry_of_rate_limits_routes(start_gateway, upstream):
    """A new user: `rate_limits: {routes: {auto: 2}}` refused the third call with "Rate limit
    reached for model `auto`", a route. The entry is named as what it is (a route's or a
    model's name under rate_limits.routes)."""
    gw = start_gateway(one_backend_policy(upstream.base_url, rate_limits={"routes": {"auto": 2}}))
    clear_of_minute_edge()
    statuses = [httpx.post(gw.url + "/v1/chat/completions", json=ASK).status_code for _ in range(2)]
    refused = httpx.post(gw.url + "/v1/chat/completions", json=ASK)
    assert statuses == [200, 200] and refused.status_code == 429
    error = refused.json()["error"]
    assert error["message"].startswith(
        "Rate limit reached for `auto` (rate_limits.routes): rpm (2 requests per minute)."
    )
    assert error["metadata"] == {"limit": "rpm", "scope": "route", "name": "auto"}
