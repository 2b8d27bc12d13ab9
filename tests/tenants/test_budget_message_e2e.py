"""A budget refusal and the key listing write dollars as people read them: `$0.00005`, not
Python's `$5e-05` (a hostile tester's finding), while JSON keeps numbers as numbers."""

from __future__ import annotations

import json

import httpx

from gateway.protocol.tokens import estimate_prompt_tokens
from tests.support.policies import one_backend_policy
from tests.tenants.support import bearer, cli, create_key

MODEL = "qwen/qwen3-32b"
MAX_TOKENS = 50
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": MAX_TOKENS}
PROMPT = estimate_prompt_tokens(ASK)
# A free prompt and $0.40 per 1M completion tokens: every call costs 50 x 0.4 / 1M = $0.00002,
# reserved and billed alike (the upstream reports max_tokens), so a $0.00005 budget takes two.
PRICES = {"input_price": 0.0, "output_price": 0.4}


def test_a_budget_refusal_says_its_amounts_in_plain_dollars(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("tiny", "--budget-usd", "0.00005", "--budget-period", "day", data_dir=data)
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)
    gw = start_gateway(
        one_backend_policy(upstream.base_url, models={MODEL: PRICES}), env={"GATEWAY_DATA_DIR": str(data)}
    )

    answers = [httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert len(upstream.received) == 2
    error = answers[2].json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "key `tiny`: budget ($0.00005 per day, $0.00004 spent)" in error["message"], error["message"]
    assert "e-0" not in error["message"]
    # JSON keeps numbers: GET /v1/key's limit is the number the key was given.
    assert httpx.get(gw.url + "/v1/key", headers=bearer(key)).json()["data"]["limit"] == 5e-05

    listed = cli("keys", "list", data_dir=data)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert dict(zip(header.split(), row.split()))["budget_usd"] == "$0.00005"
    as_json = cli("keys", "list", "--json", data_dir=data)
    assert json.loads(as_json.stdout)[0]["budget_usd"] == 5e-05
