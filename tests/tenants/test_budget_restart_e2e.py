"""Without Redis, limits are counted in the gateway's memory; a restart must not give every
key and team its budget back. The spend counts start from the ledger: what each key and team
was billed today and this month.

As elsewhere in the tenant tests, the fake upstream reports exactly the usage the gateway
reserves at admission (prompt estimate and max_tokens), so every call costs COST, reserved
and billed alike, and the counts are exact."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.protocol.tokens import estimate_prompt_tokens
from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import gateway_cli
from tests.support.policies import one_backend_policy
from tests.tenants.support import bearer, cli, create_key

MODEL = "qwen/qwen3-32b"
MAX_TOKENS = 50
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": MAX_TOKENS}
PROMPT = estimate_prompt_tokens(ASK)
COST = (PROMPT * 1000.0 + MAX_TOKENS * 2000.0) / 1e6  # at the prices below
BUDGET = f"{2.5 * COST:.9f}"  # two calls fit, a third does not


def ledger(data) -> list[dict]:
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_restart_keeps_what_keys_and_teams_spent_today_and_this_month(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    solo = create_key("solo", "--budget-usd", BUDGET, "--budget-period", "day", data_dir=data)
    made = cli("teams", "create", "platform", "--budget-usd", BUDGET, data_dir=data)
    assert made.returncode == 0, made.stderr
    a = create_key("team-a", "--team", "platform", data_dir=data)
    b = create_key("team-b", "--team", "platform", data_dir=data)
    policy = one_backend_policy(upstream.base_url, models={MODEL: {"input_price": 1000.0, "output_price": 2000.0}})
    env = {"GATEWAY_DATA_DIR": str(data)}
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)

    def ask(gw, key: str) -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30)

    first = start_gateway(policy, env=env)
    assert [ask(first, solo).status_code for _ in range(3)] == [200, 200, 429]
    assert [ask(first, key).status_code for key in (a, b, a)] == [200, 200, 429]
    assert len(upstream.received) == 4
    assert first.stop() == 0  # a graceful stop: the ledger has every call
    billed = [row for row in ledger(data) if row["final"]]
    assert sorted(row["key"] for row in billed) == ["solo", "solo", "team-a", "team-b"]

    fresh = create_key("fresh", "--budget-usd", BUDGET, "--budget-period", "day", data_dir=data)
    second = start_gateway(policy, env=env)
    view = httpx.get(second.url + "/v1/key", headers=bearer(solo)).json()["data"]
    assert view["usage_daily"] == pytest.approx(2 * COST) and view["usage_monthly"] == pytest.approx(2 * COST)
    assert view["limit_remaining"] == pytest.approx(0.5 * COST)
    refused = ask(second, solo)
    assert refused.status_code == 429 and "key `solo`: budget" in refused.json()["error"]["message"], refused.text
    # The team's budget holds for both its keys: each spent one call of the two it allows.
    for key in (a, b):
        assert httpx.get(second.url + "/v1/key", headers=bearer(key)).json()["data"]["usage_monthly"] == pytest.approx(
            COST
        )
        refused = ask(second, key)
        assert refused.status_code == 429 and "team `platform`: budget" in refused.json()["error"]["message"]
    assert len(upstream.received) == 4  # nothing more reached the backend

    # A key that spent nothing before the restart still has its whole budget.
    assert [ask(second, fresh).status_code for _ in range(3)] == [200, 200, 429]


def test_a_key_is_counted_no_more_for_a_call_than_the_ledger_bills_it(start_gateway, upstream, tmp_path):
    """An upstream's absurd usage (10^9 completion tokens at $2,000 per million: $2*10^6) is
    billed at the ledger's bound per call (MAX_COST_USD); the key's spend counter took it at
    the budget bound instead ($10^9), so what GET /v1/key showed and what the ledger held (and
    a restart would count) disagreed (review finding)."""
    from gateway.proxy.usage import MAX_COST_USD, MAX_TOKENS_PER_CALL

    data = tmp_path / "data"
    key = create_key("flooded", data_dir=data)
    policy = one_backend_policy(upstream.base_url, models={MODEL: {"input_price": 1000.0, "output_price": 2000.0}})
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS_PER_CALL)
    gw = start_gateway(policy, env={"GATEWAY_DATA_DIR": str(data)})
    answer = httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30)
    assert answer.status_code == 200
    view = httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]
    assert view["usage_daily"] == MAX_COST_USD
    assert gw.stop() == 0
    assert [row["cost"] for row in ledger(data) if row["final"]] == [MAX_COST_USD]
