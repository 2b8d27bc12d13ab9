"""A call that outlives GATEWAY_LIMITS_INFLIGHT_TTL_S keeps its key's concurrency slot.

The deadline a ticket carries is there to free the slots and reservations of calls whose
replica died and so will never settle them. Hostile testing found it also swept the
tickets of live calls: a stream longer than the TTL (ten minutes by default: a long
reasoning answer from a slow provider) lost its `max_concurrent` slot and its budget
reservation while it still ran, and the key got one more call in flight than its limit,
in this process's counts as in Redis's. A live call's ticket is now renewed while it runs."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, create_key

ASK = {"model": "qwen/qwen3-32b", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 50}
TTL_S = 2.0


@pytest.mark.parametrize("store", ["local", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_stream_longer_than_the_inflight_ttl_keeps_its_slot(start_gateway, upstream, request, tmp_path, store):
    env = {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_LIMITS_INFLIGHT_TTL_S": str(TTL_S)}
    redis_url = None
    if store == "redis":
        redis_url = request.getfixturevalue("redis_server").url
        env["GATEWAY_REDIS_URL"] = redis_url
    key = create_key("long", "--max-concurrent", "1", data_dir=tmp_path / "data", redis_url=redis_url)
    gw = start_gateway(one_backend_policy(upstream.base_url), env=env)
    upstream.reset(chunk_delay_s=1.5)  # about 12 s for the whole stream: past the TTL several times
    streamed: list[int] = []

    def stream() -> None:
        body = {**ASK, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=bearer(key), timeout=60) as r:
            streamed.append(r.status_code)
            r.read()

    def call() -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30)

    long_call = threading.Thread(target=stream)
    long_call.start()
    poll(lambda: streamed == [200], what="the stream to start")
    refused = []
    for _ in range(3):
        time.sleep(TTL_S)  # past the ticket's first deadline, then past each renewed one
        refused.append(call())
        assert upstream.streams_completed == 0, "the stream ended before the checks"  # still in flight
    assert [r.status_code for r in refused] == [429, 429, 429], [r.text for r in refused]
    assert all(r.json()["error"]["metadata"]["limit"] == "max_concurrent" for r in refused)
    upstream.behaviour.chunk_delay_s = 0.0  # checked: the rest of the stream at once
    long_call.join()
    assert upstream.streams_completed == 1
    assert call().status_code == 200  # its slot is given back when it ends


@pytest.mark.redis
def test_the_slot_of_a_call_whose_replica_died_is_still_freed_after_the_ttl(
    start_gateway, upstream, redis_server, tmp_path
):
    """What the deadline is for: renewal comes from the replica running the call, so one
    killed mid-call renews nothing, and the other replicas get its slot back after the TTL."""
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_LIMITS_INFLIGHT_TTL_S": str(TTL_S)}
    key = create_key("orphan", "--max-concurrent", "1", data_dir=tmp_path, redis_url=redis_server.url)
    policy = one_backend_policy(upstream.base_url)
    doomed, survivor = start_gateway(policy, env=env), start_gateway(policy, env=env)
    upstream.reset(chunk_delay_s=1.5)
    streamed: list[int] = []

    def stream() -> None:
        body = {**ASK, "stream": True}
        try:
            with httpx.stream("POST", doomed.url + "/v1/chat/completions", json=body, headers=bearer(key)) as r:
                streamed.append(r.status_code)
                r.read()
        except httpx.HTTPError:
            pass  # its gateway was killed

    long_call = threading.Thread(target=stream)
    long_call.start()
    poll(lambda: streamed == [200], what="the stream to start")
    busy = httpx.post(survivor.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30)
    assert busy.status_code == 429
    doomed.proc.kill()
    long_call.join()
    upstream.reset()
    poll(
        lambda: httpx.post(survivor.url + "/v1/chat/completions", json=ASK, headers=bearer(key)).status_code == 200,
        what="the dead replica's slot freed",
        timeout=15,
    )
