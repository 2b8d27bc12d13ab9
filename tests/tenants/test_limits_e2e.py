"""Key and team limits as clients meet them, exact under concurrency: two gateway processes
share one real Redis, more requests than the limit arrive at once across both, and exactly
the limit's worth get through. Plus the rate-limit headers, GET /v1/key, and the suffix bypass.

The fake upstream reports exactly the usage the gateway reserves at admission (the prompt
estimate and max_tokens), so the counts are exact whatever the timing: an answer that
settles before a later request arrives frees nothing."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateway.protocol.tokens import estimate_prompt_tokens
from tests.support.clock import clear_of_minute_edge
from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, cli, create_key

MODEL = "qwen/qwen3-32b"
MAX_TOKENS = 50
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": MAX_TOKENS}
PROMPT = estimate_prompt_tokens(ASK)
TOKENS = PROMPT + MAX_TOKENS  # reserved per call, and what the upstream reports
PRICES = {"input_price": 1000.0, "output_price": 2000.0}  # USD per 1M tokens: dear, so cents per call
COST = (PROMPT * 1000.0 + MAX_TOKENS * 2000.0) / 1e6
POLICY_MODELS = {MODEL: PRICES}


def exact_usage(upstream, delay_s: float = 0.0) -> None:
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS, delay_s=delay_s)


def burst(gateways, keys: list[str], n: int, body=ASK) -> list[httpx.Response]:
    """`n` requests at once, spread over the gateways and keys in turn."""

    def send(i: int) -> httpx.Response:
        gw = gateways[i % len(gateways)]
        return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=bearer(keys[i % len(keys)]), timeout=60)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(send, range(n)))


def statuses(responses) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


@pytest.fixture
def two_gateways(start_gateway, upstream, redis_server, tmp_path):
    def start(**extra_env):
        env = {
            "GATEWAY_REDIS_URL": redis_server.url,
            "GATEWAY_USAGE_SHUTDOWN_FLUSH_S": "0.5",
            "GATEWAY_KEYS_REFRESH_S": "0.2",
            **extra_env,
        }
        policy = one_backend_policy(upstream.base_url, models=POLICY_MODELS)
        return [start_gateway(policy, env=env), start_gateway(policy, env=env)]

    return start


def make(name: str, *flags: str, redis_server, tmp_path) -> str:
    return create_key(name, *flags, data_dir=tmp_path, redis_url=redis_server.url)


@pytest.mark.redis
def test_rpm_tpm_and_concurrency_are_exact_across_two_replicas(two_gateways, upstream, redis_server, tmp_path):
    rpm_key = make("rpm", "--rpm", "5", redis_server=redis_server, tmp_path=tmp_path)
    tpm_key = make("tpm", "--tpm", str(3 * TOKENS + TOKENS // 2), redis_server=redis_server, tmp_path=tmp_path)
    conc_key = make("conc", "--max-concurrent", "2", redis_server=redis_server, tmp_path=tmp_path)
    gateways = two_gateways()
    exact_usage(upstream, delay_s=0.5)
    clear_of_minute_edge(margin_s=20)

    rpm = burst(gateways, [rpm_key], 12)
    assert statuses(rpm) == {200: 5, 429: 7}
    refused = next(r for r in rpm if r.status_code == 429)
    assert "key `rpm`: rpm (5 requests per minute)" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    assert len(upstream.received) == 5

    tpm = burst(gateways, [tpm_key], 8)
    assert statuses(tpm) == {200: 3, 429: 5}
    assert all("tpm" in r.json()["error"]["message"] for r in tpm if r.status_code == 429)
    assert len(upstream.received) == 8

    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS, delay_s=3.0)  # all six in flight together
    conc = burst(gateways, [conc_key], 6)
    assert statuses(conc) == {200: 2, 429: 4}
    assert all("max_concurrent" in r.json()["error"]["message"] for r in conc if r.status_code == 429)
    # Once those two end, their slots are free again.
    exact_usage(upstream)
    assert statuses(burst(gateways, [conc_key], 2)) == {200: 2}


@pytest.mark.redis
def test_a_budget_and_a_team_budget_shared_by_two_keys_hold_across_replicas(
    two_gateways, upstream, redis_server, tmp_path
):
    budget = f"{3.5 * COST:.9f}"
    solo = make("solo", "--budget-usd", budget, "--budget-period", "day", redis_server=redis_server, tmp_path=tmp_path)
    made = cli("teams", "create", "platform", "--budget-usd", budget, data_dir=tmp_path, redis_url=redis_server.url)
    assert made.returncode == 0, made.stderr
    a = make("team-a", "--team", "platform", redis_server=redis_server, tmp_path=tmp_path)
    b = make("team-b", "--team", "platform", redis_server=redis_server, tmp_path=tmp_path)
    gateways = two_gateways()
    exact_usage(upstream, delay_s=0.5)

    spent = burst(gateways, [solo], 8)
    assert statuses(spent) == {200: 3, 429: 5}
    body = next(r for r in spent if r.status_code == 429).json()["error"]
    assert body["code"] == "budget_exceeded" and "key `solo`: budget" in body["message"]

    shared = burst(gateways, [a, b], 8)
    assert statuses(shared) == {200: 3, 429: 5}
    assert all("team `platform`: budget" in r.json()["error"]["message"] for r in shared if r.status_code == 429)
    assert len(upstream.received) == 6

    # Each key sees its own spend; the settlement is asynchronous with Redis.
    def usage(key):
        return httpx.get(gateways[1].url + "/v1/key", headers=bearer(key)).json()["data"]

    solo_view = poll(lambda: (u := usage(solo))["usage_daily"] == pytest.approx(3 * COST) and u, what="solo's spend")
    assert solo_view["limit"] == pytest.approx(3.5 * COST) and solo_view["limit_reset"] == "daily"
    assert solo_view["limit_remaining"] == pytest.approx(0.5 * COST) and solo_view["label"] == "solo"
    views = [usage(a), usage(b)]
    assert sum(v["usage_monthly"] for v in views) == pytest.approx(3 * COST)
    assert all(v["team"] == "platform" and v["limit"] is None for v in views)
    # Each key sees its team's budget too, spent by both keys (it had no way to see it).
    for view in views:
        team = view["team_budget"]
        assert (team["name"], team["limit"], team["limit_reset"]) == ("platform", pytest.approx(3.5 * COST), "monthly")
        assert team["usage_monthly"] == pytest.approx(3 * COST) == team["usage_daily"]
        assert team["limit_remaining"] == pytest.approx(0.5 * COST)
    assert solo_view["team_budget"] is None


def test_success_carries_openai_rate_limit_headers_and_v1_key_shows_the_state(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("paced", "--rpm", "10", "--tpm", "10000", "--budget-usd", "5", data_dir=data)
    gw = start_gateway(one_backend_policy(upstream.base_url, models=POLICY_MODELS), env={"GATEWAY_DATA_DIR": str(data)})
    exact_usage(upstream)
    clear_of_minute_edge()
    seen = []
    for _ in range(3):
        r = httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key))
        assert r.status_code == 200
        seen.append({k: v for k, v in r.headers.items() if k.startswith("x-ratelimit-")})
    assert [(h["x-ratelimit-remaining-requests"], h["x-ratelimit-remaining-tokens"]) for h in seen] == [
        ("9", str(10000 - TOKENS)),
        ("8", str(10000 - 2 * TOKENS)),
        ("7", str(10000 - 3 * TOKENS)),
    ]
    assert {h["x-ratelimit-limit-requests"] for h in seen} == {"10"}
    assert {h["x-ratelimit-limit-tokens"] for h in seen} == {"10000"}
    assert all(re.fullmatch(r"1m\d+(\.\d+)?s", h["x-ratelimit-reset-requests"]) for h in seen), seen
    view = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert view["usage_daily"] == pytest.approx(3 * COST) and view["usage_monthly"] == pytest.approx(3 * COST)
    assert view["limit"] == 5.0 and view["limit_remaining"] == pytest.approx(5.0 - 3 * COST)
    assert view["limit_reset"] == "monthly"
    assert view["rate_limit"] == {"requests": 10, "interval": "1m", "tokens": 10000, "max_concurrent": None}
    # A failed call gives its reservation back and costs nothing.
    upstream.reset(status=500)
    assert httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key)).status_code >= 500
    exact_usage(upstream)
    r = httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key))
    assert r.headers["x-ratelimit-remaining-tokens"] == str(10000 - 4 * TOKENS)
    assert r.headers["x-ratelimit-remaining-requests"] == "5"  # the failed call was a request all the same


def test_v1_key_shows_the_rpm_the_routing_yaml_holds_a_key_to(start_gateway, upstream, tmp_path):
    """A key without an rpm of its own is held to the YAML's (its `rate_limits.keys` entry,
    else `default_key_rpm`): GET /v1/key said `requests: null`, no limit, while its calls
    carried x-ratelimit-limit-requests and met 429s at the YAML's rpm."""
    data = tmp_path / "data"
    listed = create_key("listed", data_dir=data)
    unlisted = create_key("unlisted", data_dir=data)
    own = create_key("own", "--rpm", "9", data_dir=data)
    policy = one_backend_policy(
        upstream.base_url, models=POLICY_MODELS, rate_limits={"default_key_rpm": 7, "keys": {"listed": 3, "own": 5}}
    )
    gw = start_gateway(policy, env={"GATEWAY_DATA_DIR": str(data)})
    exact_usage(upstream)
    clear_of_minute_edge()
    for key, rpm in ((listed, 3), (unlisted, 7), (own, 9)):
        r = httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key))
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == str(rpm)
        view = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
        assert view["rate_limit"] == {"requests": rpm, "interval": "1m", "tokens": None, "max_concurrent": None}


def test_a_model_limit_cannot_be_dodged_with_a_suffix_a_route_or_a_fallback_list(start_gateway, upstream):
    gw = start_gateway(
        one_backend_policy(upstream.base_url, models=[MODEL], rate_limits={"routes": {MODEL: 4}}),
    )
    clear_of_minute_edge()
    bodies = [
        {**ASK, "model": f"{MODEL}:floor"},
        {**ASK, "model": f"{MODEL}:nitro"},
        {**ASK, "model": "auto"},  # a route whose candidate is the model
        {**ASK, "model": f"{MODEL}:floor", "models": [f"{MODEL}:nitro"]},
    ] * 3
    got = [httpx.post(gw.url + "/v1/chat/completions", json=body).status_code for body in bodies]
    assert got == [200] * 4 + [429] * 8
    assert len(upstream.received) == 4


def test_workers_without_redis_say_loudly_that_limits_are_per_worker(start_gateway, upstream):
    gw = start_gateway(one_backend_policy(upstream.base_url), workers=2)
    poll(lambda: gw.log().count("counted per worker") == 2, what="each worker's warning", context=gw.log)
    assert "together they allow up to 2 times each limit" in gw.log()


def test_a_streamed_call_settles_its_real_usage_when_the_stream_ends(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("streamer", "--tpm", "10000", data_dir=data)
    gw = start_gateway(one_backend_policy(upstream.base_url, models=POLICY_MODELS), env={"GATEWAY_DATA_DIR": str(data)})
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=5)  # the stream uses 5 of its 50 reserved
    clear_of_minute_edge()
    with httpx.stream("POST", gw.url + "/v1/chat/completions", json={**ASK, "stream": True}, headers=bearer(key)) as r:
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-tokens"] == str(10000 - TOKENS)  # reserved at admission
        body = r.read()
    assert body.endswith(b"data: [DONE]\n\n")
    exact_usage(upstream)
    after = httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key))
    assert after.headers["x-ratelimit-remaining-tokens"] == str(10000 - (PROMPT + 5) - TOKENS)
