"""Keys in Redis as two running replicas meet them: a key made, restricted and revoked with
the CLI while both run reaches both within seconds, without a restart."""

from __future__ import annotations

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
