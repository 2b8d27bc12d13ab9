"""Keys in Redis as two running replicas meet them: a key made, restricted and revoked with
the CLI while both run reaches both within seconds, without a restart."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, cli, create_key

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}]}


@pytest.mark.redis
def test_a_key_made_updated_and_revoked_in_redis_reaches_both_running_replicas(
    start_gateway, upstream, redis_server, tmp_path
):
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_KEYS_REFRESH_S": "0.2"}
    policy = one_backend_policy(upstream.base_url, models=["qwen/qwen3-32b", "meta/llama-3-8b"])
    gateways = [start_gateway(policy, env=env), start_gateway(policy, env=env)]

    def status(gw, key: str, model: str = "auto") -> int:
        return httpx.post(
            gw.url + "/v1/chat/completions", json={**ASK, "model": model}, headers=bearer(key)
        ).status_code

    key = create_key("late", data_dir=tmp_path, redis_url=redis_server.url)  # made while both run
    for gw in gateways:
        poll(lambda gw=gw: status(gw, key) == 200, what="the new key accepted", timeout=10)
        assert status(gw, key, "meta/llama-3-8b") == 200

    narrowed = cli("keys", "update", "late", "--models", "qwen/*", data_dir=tmp_path, redis_url=redis_server.url)
    assert narrowed.returncode == 0, narrowed.stderr
    for gw in gateways:
        poll(lambda gw=gw: status(gw, key, "meta/llama-3-8b") == 403, what="the narrowed key refused", timeout=10)
        assert status(gw, key, "qwen/qwen3-32b") == 200

    revoked = cli("keys", "revoke", "late", data_dir=tmp_path, redis_url=redis_server.url)
    assert revoked.returncode == 0, revoked.stderr
    for gw in gateways:
        poll(lambda gw=gw: status(gw, key, "qwen/qwen3-32b") == 401, what="the revoked key refused", timeout=10)
    before = len(upstream.received)
    assert [status(gw, key, "qwen/qwen3-32b") for gw in gateways] == [401, 401]
    assert len(upstream.received) == before  # nothing revoked reaches the upstream
    assert not (tmp_path / "keys.sqlite3").exists()  # the CLI wrote to Redis only


@pytest.mark.redis
def test_a_key_made_on_one_replica_works_on_the_other_at_once(start_gateway, upstream, redis_server, tmp_path):
    """Hostile testing: a provisioning flow that made a key through one replica's admin API
    and used it at once through the load balancer got 401 from the other replica until its
    next refresh of the key store. An unknown key now makes the view catch up once before it
    is refused; a storm of unknown keys reads the store a few times, not once per request."""
    import redis

    env = {
        "GATEWAY_REDIS_URL": redis_server.url,
        "GATEWAY_KEYS_REFRESH_S": "3600",
        "GATEWAY_ADMIN_KEY": "sk-admin",
        "GATEWAY_AUTH_FAILURES_PER_MINUTE": "8",  # a short storm fills it
    }
    policy = one_backend_policy(upstream.base_url, models=["qwen/qwen3-32b"])
    create_key("first", data_dir=tmp_path, redis_url=redis_server.url)  # closed from the start
    a, b = start_gateway(policy, env=env), start_gateway(policy, env=env)
    made = httpx.post(a.url + "/admin/keys", json={"name": "fresh", "rpm": 9}, headers=bearer("sk-admin"))
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    answered = httpx.post(b.url + "/v1/chat/completions", json=ASK, headers=bearer(key))
    assert answered.status_code == 200, answered.text
    assert len(upstream.received) == 1
    described = httpx.get(b.url + "/v1/key", headers=bearer(key))
    assert described.status_code == 200 and described.json()["data"]["label"] == "fresh", described.text
    messages = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    made2 = httpx.post(a.url + "/admin/keys", json={"name": "fresh2"}, headers=bearer("sk-admin")).json()["key"]
    assert httpx.post(b.url + "/v1/messages", json=messages, headers={"x-api-key": made2}).status_code == 200

    store = redis.Redis.from_url(redis_server.url)
    # The throttle counts per minute of the system's monotonic clock (shared by processes):
    # the storm starts early in one, so its count is not reset midway.
    while time.monotonic() % 60 > 52:  # the storm takes a second or two
        time.sleep(0.5)
    store.config_resetstat()
    refused = [httpx.post(b.url + "/v1/chat/completions", json=ASK, headers=bearer(f"sk-guess-{i}")) for i in range(8)]
    assert [r.status_code for r in refused] == [401] * 8  # the throttle's 8 a minute, each counted once
    reads = store.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    assert reads == 8  # one catch-up each, one after the other (concurrent ones share one: test_directory.py)
    store.config_resetstat()
    throttled = [httpx.post(b.url + "/v1/chat/completions", json=ASK, headers=bearer(f"sk-more-{i}")) for i in range(5)]
    assert [r.status_code for r in throttled] == [429] * 5
    assert "cmdstat_get" not in store.info("commandstats")  # an address refused anyway reads no store
    assert len(upstream.received) == 2
