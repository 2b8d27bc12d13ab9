"""OpenRouter's usage accounting through the real openai SDK: `usage: {"include": true}` adds
`usage.cost` (USD, at the backend's list prices, what the ledger records), in the final
usage chunk for streams; non-streamed answers carry `x-gateway-cost-usd`."""

from __future__ import annotations

import json

import pytest

from gateway.usage.rankings import today_utc
from tests.e2e.usage_helpers import gateway_cli
from tests.support.policies import one_backend_policy
from tests.support.poll import poll

MODEL = "qwen/qwen3-32b"
PRICES = {MODEL: {"input_price": 1000.0, "output_price": 2000.0}}  # USD per 1M tokens
COST = (11 * 1000.0 + 7 * 2000.0) / 1e6  # the fake upstream's usage: 11 prompt, 7 completion
MESSAGES = [{"role": "user", "content": "Say hello."}]
ACCOUNTING = {"usage": {"include": True}}


@pytest.fixture
def gw(start_gateway, upstream, tmp_path):
    return start_gateway(
        one_backend_policy(upstream.base_url, models=PRICES),
        env={"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_USAGE_FLUSH_S": "0.05"},
    )


def ledger_costs(gw, tmp_path) -> list[float]:
    day = today_utc().isoformat()
    done = gateway_cli("usage", "export", "--start", day, "--end", day, "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["cost"] for line in done.stdout.splitlines()]


def test_a_non_streamed_answer_carries_its_cost_when_asked(gw, upstream, openai_client, tmp_path):
    client = openai_client(gw)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, extra_body=ACCOUNTING)
    answer = raw.parse()
    assert answer.usage.cost == pytest.approx(COST, abs=1e-12)
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 7)
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(COST, abs=1e-12)
    assert "usage" not in upstream.received[-1].body  # the gateway's field, not sent upstream
    assert answer.choices[0].message.content == "Hello from the fake upstream."

    # Not asked: the body is the upstream's, untouched; the header is there all the same.
    plain = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert "cost" not in plain.parse().usage.model_dump()
    assert float(plain.headers["x-gateway-cost-usd"]) == pytest.approx(COST, abs=1e-12)
    poll(lambda: len(ledger_costs(gw, tmp_path)) == 2, what="both calls recorded")
    assert ledger_costs(gw, tmp_path) == [pytest.approx(COST, abs=1e-12)] * 2  # what the client read

    # Whatever its value, the field is the gateway's: never sent on (hostile testing found any
    # value but exactly {"include": true} forwarded, and a strict upstream answering 400).
    for value in ({"include": False}, {}, {"include": "true"}):
        no_cost = client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_body={"usage": value})
        assert "cost" not in no_cost.usage.model_dump()
        assert "usage" not in upstream.received[-1].body


def test_a_stream_carries_its_cost_in_the_final_usage_chunk(gw, upstream, openai_client):
    client = openai_client(gw)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_body=ACCOUNTING))
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]  # usage.include alone asks for the chunk
    assert with_usage[0].usage.cost == pytest.approx(COST, abs=1e-12)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        == "Hello from the fake upstream."
    )
    sent = upstream.received[-1].body
    assert "usage" not in sent and sent["stream_options"] == {"include_usage": True}

    # Both ways of asking together give one usage chunk, with cost.
    both = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, extra_body=ACCOUNTING
        )
    )
    assert [c.usage.cost for c in both if c.usage is not None] == [pytest.approx(COST, abs=1e-12)]
    # Not asked for cost: the usage chunk as the upstream sent it.
    plain = list(
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert [c.usage.model_dump().get("cost") for c in plain if c.usage is not None] == [None]


def test_a_stream_whose_upstream_sends_no_usage_gets_the_estimate_with_its_cost(gw, upstream, openai_client):
    upstream.reset(send_usage=False)
    chunks = list(
        openai_client(gw).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_body=ACCOUNTING)
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.cost > 0
    expected = (usage.prompt_tokens * 1000.0 + usage.completion_tokens * 2000.0) / 1e6
    assert usage.cost == pytest.approx(expected, abs=1e-12)


def test_a_non_streamed_answer_without_usage_gets_the_billed_estimate_with_its_cost(
    gw, upstream, openai_client, tmp_path
):
    """Hostile testing found an answer whose upstream sent no usage billed an estimate (the
    ledger's row) yet handed to a client that asked for its cost with no `usage` at all: it
    gets the usage it was billed, priced, as a stream without usage gets the estimated chunk."""
    upstream.reset(send_usage=False)
    client = openai_client(gw)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, extra_body=ACCOUNTING)
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    expected = (usage.prompt_tokens * 1000.0 + usage.completion_tokens * 2000.0) / 1e6
    assert usage.cost == pytest.approx(expected, abs=1e-12)
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(expected, abs=1e-12)
    text = client.completions.create(model=MODEL, prompt="def add(a, b):", extra_body=ACCOUNTING)
    assert text.usage is not None and text.usage.cost > 0
    poll(lambda: len(ledger_costs(gw, tmp_path)) == 2, what="both calls recorded")
    assert ledger_costs(gw, tmp_path) == [pytest.approx(expected, abs=1e-12), pytest.approx(text.usage.cost, abs=1e-12)]

    # Not asked: the upstream's body untouched, no usage added.
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert plain.usage is None


def test_text_completions_carry_their_cost_as_chat_does(gw, upstream, openai_client, tmp_path):
    """A new user's walkthrough found `/v1/completions` forwarding `usage` to the backend and
    adding no cost: the field is the gateway's there too, and the answer is priced as chat's."""
    client = openai_client(gw)
    raw = client.completions.with_raw_response.create(model=MODEL, prompt="def add(a, b):", extra_body=ACCOUNTING)
    answer = raw.parse()
    assert answer.usage.cost == pytest.approx(COST, abs=1e-12)
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 7)
    assert answer.choices[0].text == "Hello from the fake upstream."
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(COST, abs=1e-12)
    assert upstream.received[-1].body == {"model": MODEL, "prompt": "def add(a, b):"}

    chunks = list(client.completions.create(model=MODEL, prompt="def add(a, b):", stream=True, extra_body=ACCOUNTING))
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]  # usage.include alone asks for the chunk
    assert with_usage[0].usage.cost == pytest.approx(COST, abs=1e-12)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake upstream. "
    assert upstream.received[-1].body == {
        "model": MODEL,
        "prompt": "def add(a, b):",
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    # Not asked, whatever the field's value: no cost, and the field is not sent on.
    for value in ({"include": False}, {}, {"include": "true"}):
        plain = client.completions.create(model=MODEL, prompt="x", extra_body={"usage": value})
        assert "cost" not in plain.usage.model_dump()
        assert "usage" not in upstream.received[-1].body
    assert len(upstream.received) == 5
    poll(lambda: len(ledger_costs(gw, tmp_path)) == 5, what="every call recorded")
    assert ledger_costs(gw, tmp_path) == [pytest.approx(COST, abs=1e-12)] * 5  # what the clients read
