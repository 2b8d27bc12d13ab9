"""Key limits through a Redis that hangs for a moment (stopped with SIGSTOP, as a fork for a
snapshot or a slow command stalls it): requests go on, admitted on this process's counts,
and once Redis answers again it holds neither more nor less than the calls made.

Before, an admission that timed out ran when Redis resumed (its command waited in the
socket): the ticket it took held a `max_concurrent` slot and a budget reservation for
`GATEWAY_LIMITS_INFLIGHT_TTL_S` (ten minutes), since the call was settled only in memory,
so a key with `max_concurrent: 2` was refused for ten minutes after a 1.5 s hang; and what
the outage's calls cost never reached Redis's spend, so the budget forgot it for good."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from gateway.protocol.tokens import estimate_prompt_tokens
from tests.support.clock import clear_of_minute_edge
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.support.scrape import scrape
from tests.support.services import RedisServer
from tests.tenants.support import bearer, create_key

MODEL = "qwen/qwen3-32b"
MAX_TOKENS = 50
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": MAX_TOKENS}
PROMPT = estimate_prompt_tokens(ASK)
PRICES = {"input_price": 1000.0, "output_price": 2000.0}  # USD per 1M tokens: cents per call
COST = (PROMPT * 1000.0 + MAX_TOKENS * 2000.0) / 1e6
STORE_RETRY_S = 5.0  # the limiter's wait before it asks a failed Redis again


@pytest.mark.redis
def _budgeted_gateway(start_gateway, upstream, redis_server, tmp_path, name: str, *limits: str):
    """A gateway on `redis_server` and a key `name` with `limits` and a $1 daily budget: the
    gateway, the key, and a call with it (its status), clear of a minute's edge."""
    budget = ("--budget-usd", "1", "--budget-period", "day")
    key = create_key(name, *limits, *budget, data_dir=tmp_path, redis_url=redis_server.url)
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    gw = start_gateway(one_backend_policy(upstream.base_url, models={MODEL: PRICES}), env=env)
    clear_of_minute_edge()

    def call() -> int:
        return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30).status_code

    return gw, key, call


def test_a_redis_hang_leaves_no_slot_taken_and_loses_no_spend(start_gateway, upstream, redis_server, tmp_path):
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)
    gw, key, call = _budgeted_gateway(start_gateway, upstream, redis_server, tmp_path, "hung", "--max-concurrent", "2")

    assert call() == 200  # counted in Redis
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            during = list(pool.map(lambda _: call(), range(2)))  # each admission times out: counted here
        time.sleep(1.0)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert during == [200, 200]
    time.sleep(STORE_RETRY_S + 0.5)  # Redis is asked again
    after = [call() for _ in range(3)]  # one at a time: two ghost tickets would refuse them all
    assert after == [200, 200, 200]

    shared = redis.Redis(port=redis_server.port)
    assert shared.zcard("{gw:rl}:fl:key:hung") == 0  # no ticket left behind
    assert int(shared.get("{gw:rl}:rst:key:hung") or 0) == 0  # nor any reservation
    # Redis's spend holds every call, the two it did not admit included.
    spent = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert spent["usage_daily"] == pytest.approx(6 * COST, abs=1e-9)
    assert len(upstream.received) == 6
    shared.close()
    # What the hang let through, counted: the two calls admitted on the process's own counts.
    assert scrape(gw.url).value("gateway_limits_admitted_locally_total") == 2


@pytest.mark.redis
def test_a_redis_at_maxmemory_for_a_moment_leaves_no_slot_taken_and_loses_no_spend(
    start_gateway, upstream, redis_server, tmp_path
):
    """Hostile testing: the state Redis runs `noeviction`, so at `maxmemory` it refuses the
    limiter's script with an OOM error. The settlements that call carried were dropped (kept
    only after a lost connection): the ticket of a call that ended during a one-second OOM
    held the key's only `max_concurrent` slot in Redis until its deadline (ten minutes of
    429s after Redis had recovered), and what the call cost never reached the key's spend.
    Redis refuses such a script before it writes anything, so the settlements are kept and
    sent again, as after a lost connection."""
    # The upstream answers fewer tokens than admission reserved: the settlement's first
    # write is the tokens-per-minute correction (INCRBY), which Redis refuses at maxmemory.
    upstream.reset(prompt_tokens=3, completion_tokens=4, delay_s=1.0)
    cost = (3 * 1000.0 + 4 * 2000.0) / 1e6
    limits = ("--max-concurrent", "1", "--tpm", "100000")
    gw, key, call = _budgeted_gateway(start_gateway, upstream, redis_server, tmp_path, "oom", *limits)
    shared = redis.Redis(port=redis_server.port)

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(call)  # admitted in Redis: its ticket holds the key's one slot there
        poll(lambda: shared.zcard("{gw:rl}:fl:key:oom") == 1, what="the call's ticket in Redis")
        shared.config_set("maxmemory-policy", "noeviction")
        shared.config_set("maxmemory", 1)  # at maxmemory: every write that grows memory is refused
        try:
            assert first.result() == 200
            # The call's settlement went to Redis as it ended, and was refused.
            poll(lambda: scrape(gw.url).value("gateway_rate_limiter_errors_total") == 1, what="the refused settlement")
        finally:
            shared.config_set("maxmemory", 0)
    time.sleep(STORE_RETRY_S + 0.5)  # Redis is asked again
    upstream.reset(prompt_tokens=3, completion_tokens=4)
    assert [call() for _ in range(3)] == [200, 200, 200]  # the ended call's ticket held the slot: 429s

    def settled() -> bool:  # the last call settles with Redis just after its answer
        return shared.zcard("{gw:rl}:fl:key:oom") == 0 and int(shared.get("{gw:rl}:rst:key:oom") or 0) == 0

    poll(settled, what="no ticket or reservation left in Redis")
    spent = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert spent["usage_daily"] == pytest.approx(4 * cost, abs=1e-9)  # the refused settlement's spend included
    assert scrape(gw.url).value("gateway_limits_admitted_locally_total") == 0
    shared.close()


@pytest.mark.redis
def test_settlements_kept_for_redis_reach_it_without_another_call_to_their_replica(
    start_gateway, upstream, redis_server, tmp_path
):
    """Hostile testing: settlements Redis could not take were sent only with their replica's
    next call. A replica the load balancer sent nothing more (the key's client pinned to
    the other one) kept them for good: its ended call's ticket held the key's only slot for
    every replica until the ticket's deadline. The replica now sends them again on its own
    once Redis is asked again."""
    upstream.reset(prompt_tokens=3, completion_tokens=4, delay_s=1.0)
    key = create_key(
        "pinned", "--max-concurrent", "1", "--tpm", "100000", data_dir=tmp_path, redis_url=redis_server.url
    )
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    policy = one_backend_policy(upstream.base_url)
    first, other = start_gateway(policy, env=env), start_gateway(policy, env=env)
    shared = redis.Redis(port=redis_server.port)
    clear_of_minute_edge()

    def call(gw) -> int:
        return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30).status_code

    with ThreadPoolExecutor(1) as pool:
        ended = pool.submit(call, first)
        poll(lambda: shared.zcard("{gw:rl}:fl:key:pinned") == 1, what="the call's ticket in Redis")
        shared.config_set("maxmemory-policy", "noeviction")
        shared.config_set("maxmemory", 1)  # its settlement is refused (see the test above)
        try:
            assert ended.result() == 200
            poll(lambda: scrape(first.url).value("gateway_rate_limiter_errors_total") == 1, what="the refusal")
        finally:
            shared.config_set("maxmemory", 0)
    # No further call reaches `first`; it settles with Redis on its own once it asks again.
    poll(lambda: shared.zcard("{gw:rl}:fl:key:pinned") == 0, what="the ended call's ticket released", timeout=15)
    upstream.reset(prompt_tokens=3, completion_tokens=4)
    assert [call(other) for _ in range(2)] == [200, 200]
    shared.close()


@pytest.mark.redis
def test_a_key_created_while_redis_hangs_is_a_503_that_says_it_may_still_be_made(start_gateway, upstream, redis_server):
    """The write was sent when the store timed out, and a hung Redis runs it when it resumes:
    a plain "retry shortly" led the admin to a 409 for a key whose secret nobody saw."""
    env = {
        "GATEWAY_REDIS_URL": redis_server.url,
        "GATEWAY_ADMIN_KEY": "sk-admin-test",
        "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5",
    }
    gw = start_gateway(one_backend_policy(upstream.base_url), env=env)
    admin = {"authorization": "Bearer sk-admin-test"}
    # A first key: Redis has the write's script from then on, so the write sent during the
    # hang runs when Redis resumes (before, it could have found the script unknown).
    assert httpx.post(gw.url + "/admin/keys", json={"name": "early"}, headers=admin).status_code == 201
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        made = httpx.post(gw.url + "/admin/keys", json={"name": "late"}, headers=admin, timeout=30)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert made.status_code == 503, made.text
    error = made.json()["error"]
    assert error["code"] == "key_store_unavailable" and "may still take effect" in error["message"]
    assert "rotate it" in error["message"]

    # As it says: the key exists once Redis runs the write, and rotating it gives a secret that works.
    def made_late() -> bool:
        return "late" in [k["name"] for k in httpx.get(gw.url + "/admin/keys", headers=admin).json()["data"]]

    poll(made_late, what="the key written during the hang")
    assert httpx.post(gw.url + "/admin/keys", json={"name": "late"}, headers=admin).status_code == 409
    secret = httpx.post(gw.url + "/admin/keys/late/rotate", headers=admin).json()["key"]
    assert httpx.get(gw.url + "/v1/key", headers=bearer(secret)).json()["data"]["label"] == "late"


@pytest.mark.redis
def test_rankings_on_a_hung_redis_are_a_503_after_one_read_timeout_not_two(start_gateway, upstream, redis_server):
    """A read that timed out was tried again (meant for a pooled connection a restarted Redis
    closed, which fails at once): on a hung Redis the first /v1/rankings waited twice the
    usage client's 5 s socket timeout, 12 s in all, before its 503."""
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    gw = start_gateway(one_backend_policy(upstream.base_url), env=env)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = httpx.get(gw.url + "/v1/rankings?window=day", timeout=60)
        waited = time.monotonic() - started
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "usage_store_unavailable"
    assert 5.0 <= waited < 8.0, waited  # one socket timeout (5 s), not two
    assert httpx.get(gw.url + "/v1/rankings?window=day").status_code == 200  # and it reads again once Redis does


@pytest.mark.redis
def test_a_budget_used_up_in_redis_stays_enforced_while_redis_hangs(start_gateway, upstream, redis_server, tmp_path):
    """Each process counted from zero while Redis failed: a key whose budget was used up got
    as many calls again (a hostile test billed 167% of a daily budget). Now each admission in
    Redis tells the process the key's spend, and the process's own counts start from it."""
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)
    budget = f"{3.5 * COST:.6f}"  # three calls, not a fourth (each reserves its whole cost)
    key = create_key(
        "spent", "--budget-usd", budget, "--budget-period", "day", data_dir=tmp_path, redis_url=redis_server.url
    )
    env = {"GATEWAY_REDIS_URL": redis_server.url, "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5"}
    gw = start_gateway(one_backend_policy(upstream.base_url, models={MODEL: PRICES}), env=env)

    def call() -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30)

    assert [call().status_code for _ in range(3)] == [200, 200, 200]
    refused = call()
    assert refused.status_code == 429 and refused.json()["error"]["metadata"]["limit"] == "budget"
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        during = [call() for _ in range(3)]
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert [r.status_code for r in during] == [429, 429, 429], [r.text for r in during]
    assert all(r.json()["error"]["metadata"]["limit"] == "budget" for r in during)
    assert len(upstream.received) == 3
    assert scrape(gw.url).value("gateway_limits_admitted_locally_total") == 0  # none was let through


@pytest.mark.redis
def test_a_replica_whose_key_store_never_answered_is_alive_but_not_ready(start_gateway, upstream):
    """Started while Redis is down, a replica can only answer 503 key_store_unavailable (it
    cannot tell a key from a wrong one), while replicas that had loaded the keys serve from
    their copy: `/ready` keeps a load balancer's traffic off it until the store answers, and
    `/health` still says it is alive (restarting it would not help)."""
    store = RedisServer()  # its port: nothing listens on it yet
    gw = None
    try:
        gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_REDIS_URL": store.url})
        assert httpx.get(gw.url + "/health").json() == {"status": "ok"}
        ready = httpx.get(gw.url + "/ready")
        assert (ready.status_code, ready.json()) == (
            503,
            {"status": "not_ready", "reason": "The key store has not answered yet."},
        )
        refused = httpx.post(gw.url + "/v1/chat/completions", json=ASK, timeout=30)
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "key_store_unavailable")
        store.start()
        poll(lambda: httpx.get(gw.url + "/ready").status_code == 200, what="/ready once Redis answers", timeout=20)
        assert httpx.get(gw.url + "/ready").json() == {"status": "ready"}
        served = httpx.post(gw.url + "/v1/chat/completions", json=ASK, timeout=30)
        assert served.status_code == 200  # no keys in the store: the gateway is open, as documented
        assert len(upstream.received) == 1
    finally:
        if gw is not None:
            gw.stop()  # before its Redis, which its shutdown would wait for
        store.cleanup()
