"""A budget refusal and the key listing write dollars as people read them: `$0.00005`, not
Python's `$5e-05` (a hostile tester's finding), while JSON keeps numbers as numbers."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import anthropic
import httpx
import openai
import pytest

from gateway.protocol.errors import SDK_WAIT_MAX_S
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


def test_a_request_that_alone_reserves_more_than_the_whole_budget_is_not_retried(start_gateway, upstream, tmp_path):
    """A call whose reservation alone exceeds the key's whole budget can never pass, yet its
    429 said "$0.00 spent" and Retry-After until the period's end (hours): the anthropic SDK,
    which honours any Retry-After, slept that long to be refused again. Like a request too
    large for a tpm, it now carries no Retry-After and `x-should-retry: false`: one attempt
    per SDK, the upstream never asked, and the message says what to change."""
    data = tmp_path / "data"
    key = create_key("tiny", "--budget-usd", "0.00005", "--budget-period", "day", data_dir=data)
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)
    gw = start_gateway(
        one_backend_policy(upstream.base_url, models={MODEL: PRICES}), env={"GATEWAY_DATA_DIR": str(data)}
    )
    sent: list[str] = []
    hooks = {"request": [lambda request: sent.append(request.url.path)]}
    client = openai.OpenAI(
        base_url=gw.url + "/v1", api_key=key, http_client=openai.DefaultHttpxClient(event_hooks=hooks)
    )
    assert client.max_retries == 2  # the SDK's default: it would retry a 429
    # 200 completion tokens at $0.40 per 1M reserve $0.00008, more than the whole $0.00005.
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=MODEL, messages=ASK["messages"], max_tokens=200)
    assert sent == ["/v1/chat/completions"]
    assert upstream.received == []
    assert "retry-after" not in refused.value.response.headers
    assert refused.value.response.headers["x-should-retry"] == "false"
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "budget_exceeded"
    assert error["metadata"] == {"limit": "budget", "scope": "key", "name": "tiny"}
    assert error["message"] == (
        "Request too large for key `tiny`: budget ($0.00005 per day): this request reserves $0.00008 "
        "at its dearest candidate's prices. Shorten the prompt or lower max_tokens; retrying will not help."
    )
    messages = anthropic.Anthropic(
        base_url=gw.url, api_key=key, http_client=anthropic.DefaultHttpxClient(event_hooks=hooks)
    )
    assert messages.max_retries == 2
    with pytest.raises(anthropic.RateLimitError) as refused_message:
        messages.messages.create(model=MODEL, messages=ASK["messages"], max_tokens=200)
    assert sent == ["/v1/chat/completions", "/v1/messages"]
    assert "retry-after" not in refused_message.value.response.headers
    assert "Request too large for key `tiny`: budget ($0.00005 per day)" in str(refused_message.value)
    assert upstream.received == []
    # A call that fits is admitted as before.
    client.chat.completions.create(model=MODEL, messages=ASK["messages"], max_tokens=MAX_TOKENS)
    assert len(upstream.received) == 1
    client.close()
    messages.close()


def test_a_used_up_budget_says_when_it_resets_and_that_retrying_sooner_will_not_help(start_gateway, upstream, tmp_path):
    """A used-up budget's 429 once said Retry-After until its period ends, hours or weeks away. The
    anthropic SDK honours any Retry-After: with its default two retries, a call on a used-up
    monthly budget slept until the month's end. The refusal now also says `x-should-retry:
    false`, which both SDKs read: one attempt, the error at once, and no Retry-After (Codex CLI
    slept through one), the message saying when."""
    data = tmp_path / "data"
    key = create_key("tiny", "--budget-usd", "0.00005", "--budget-period", "month", data_dir=data)
    upstream.reset(prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)
    gw = start_gateway(
        one_backend_policy(upstream.base_url, models={MODEL: PRICES}), env={"GATEWAY_DATA_DIR": str(data)}
    )
    spent = [httpx.post(gw.url + "/v1/chat/completions", json=ASK, headers=bearer(key), timeout=30) for _ in range(3)]
    assert [a.status_code for a in spent] == [200, 200, 429]
    now = datetime.now(UTC)
    month_end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC).timestamp() - time.time()
    if month_end < SDK_WAIT_MAX_S + 30:  # the last minutes of a month: a wait the SDKs may sit out
        return
    # The month's end in words, within the test's time; no Retry-After (Codex CLI sleeps any).
    said = int(spent[2].json()["error"]["message"].rsplit("Retry after ", 1)[1].rstrip("s."))
    assert abs(said - month_end) < 30
    assert spent[2].headers["x-should-retry"] == "false" and "retry-after" not in spent[2].headers

    sent: list[str] = []
    hooks = {"request": [lambda request: sent.append(request.url.path)]}
    messages = anthropic.Anthropic(
        base_url=gw.url, api_key=key, http_client=anthropic.DefaultHttpxClient(event_hooks=hooks)
    )
    assert messages.max_retries == 2
    with pytest.raises(anthropic.RateLimitError) as refused:
        messages.messages.create(model=MODEL, messages=ASK["messages"], max_tokens=MAX_TOKENS)
    assert sent == ["/v1/messages"]
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "key `tiny`: budget ($0.00005 per month, $0.00004 spent)" in str(refused.value)
    assert len(upstream.received) == 2
    messages.close()
