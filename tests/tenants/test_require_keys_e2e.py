"""GATEWAY_REQUIRE_KEYS: a gateway that must never be open. Without it, a gateway with no
client key at all serves anyone (documented), and so does a process started after its key
store lost every virtual key (a Redis restarted without its data): the running ones stay
closed, but one restarted meanwhile has no way to know keys were ever made."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, create_key

ASK = {"model": "qwen/qwen3-32b", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5}


def _chat(gw, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=headers or {}, timeout=30)


@pytest.mark.redis
def test_a_process_started_after_the_key_store_lost_its_keys_stays_closed(
    start_gateway, upstream, redis_server, tmp_path
):
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_REQUIRE_KEYS": "1", "GATEWAY_KEYS_REFRESH_S": "0.2"}
    policy = one_backend_policy(upstream.base_url)
    first = start_gateway(policy, env=env)
    refused = _chat(first)  # no key made yet: refused, not open
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "missing_api_key")
    assert "every API request is refused" in first.log()
    key = create_key("app", data_dir=tmp_path, redis_url=redis_server.url)
    poll(lambda: _chat(first, bearer(key)).status_code == 200, what="the new key let in", timeout=15)
    first.stop()
    redis.Redis.from_url(redis_server.url).flushall()  # Redis restarted without its data
    second = start_gateway(policy, env=env)
    for headers, code in ((None, "missing_api_key"), (bearer(key), "invalid_api_key")):  # as a running one would
        answer = _chat(second, headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, code)
    assert len(upstream.received) == 1  # the call made while the key existed
    # Without the setting the same process is open, as documented.
    opened = start_gateway(policy, env={"GATEWAY_REDIS_URL": redis_server.url})
    assert _chat(opened).status_code == 200 and len(upstream.received) == 2


def test_a_key_made_later_lets_its_caller_in(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    env = {"GATEWAY_REQUIRE_KEYS": "true", "GATEWAY_DATA_DIR": str(data), "GATEWAY_KEYS_REFRESH_S": "0.2"}
    gw = start_gateway(one_backend_policy(upstream.base_url), env=env)
    assert _chat(gw).status_code == 401
    key = create_key("app", data_dir=data)
    poll(lambda: _chat(gw, bearer(key)).status_code == 200, what="the new key let in", timeout=15)
    assert _chat(gw).status_code == 401 and len(upstream.received) == 1
