"""Who pays for a call that failed over (issue 12's billing rule), as a running gateway
records it: the key is billed for every token the client received, once, at the prices of
the attempts that delivered them; the rows of attempts before the final one are the
operator's upstream cost and never billed; rankings and the daily aggregates count the call
once, with the tokens the client received.

Checked in every place a bill is read: the usage chunk the client got, each ledger row, the
key's spend (`GET /v1/key`, what its budget is settled against), the aggregates (SQLite) and
`/v1/rankings`. Prices (USD per 1M tokens, from `CONFIG`): flaky 1 in / 2 out, steady 3 in /
4 out.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from gateway.protocol.chat import parse_chat_request
from gateway.usage.aggregates import cost_nanos
from tests.e2e.test_failover_table_e2e import CONFIG, ENV, FULL_ANSWER, HEDGED_CONFIG, PINNED_CIRCUIT, chunks_of
from tests.support import fault_upstream as fault
from tests.support.fault_upstream import FaultUpstream
from tests.support.poll import poll

ADMIN = {"GATEWAY_ADMIN_KEY": "sk-admin"}
FLAKY_IN, FLAKY_OUT, STEADY_IN, STEADY_OUT = 1.0, 2.0, 3.0, 4.0


@pytest.fixture
def primary():
    server = FaultUpstream("flaky").start()
    yield server
    server.stop()


@pytest.fixture
def fallback():
    server = FaultUpstream("steady").start()
    yield server
    server.stop()


def _usd(prompt: int, completion: int, input_price: float, output_price: float) -> float:
    return (prompt * input_price + completion * output_price) / 1_000_000


def _start(start_gateway, primary, fallback, config: str = CONFIG, prefill: str = "prefill: continue_final_message"):
    text = config.format(
        primary=primary.base_url, fallback=fallback.base_url, timeout_s=10, circuit=PINNED_CIRCUIT, prefill=prefill
    )
    gw = start_gateway(text, env={**ENV, **ADMIN})
    made = httpx.post(
        gw.url + "/admin/keys", json={"name": "payer", "budget_usd": 1.0}, headers={"authorization": "Bearer sk-admin"}
    )
    assert made.status_code == 201, made.text
    return gw, made.json()["key"]


def _rows(gw, count: int) -> list[dict]:
    """Every ledger row, in attempt order, once there are `count`."""
    path = Path(gw.dir) / "data" / "usage.sqlite3"

    def rows() -> list[dict] | None:
        if not path.exists():
            return None
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            found = [dict(r) for r in db.execute("SELECT * FROM events ORDER BY attempt")]
        return found if len(found) >= count else None

    found = poll(rows, what=f"{count} rows in the ledger", ignore=(sqlite3.OperationalError,))
    assert len(found) == count, found
    return found


def _aggregates(gw) -> dict[str, int]:
    """The day's `model` part of the aggregates: `model|metric` -> value."""
    path = Path(gw.dir) / "data" / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT field, value FROM aggregates WHERE part = 'model'").fetchall()
    return {field.replace("\x1f", "|"): value for field, value in rows}


def _key_spend(gw, key: str) -> dict:
    """GET /v1/key once the call is settled (its usage no longer 0)."""

    def spent() -> dict | None:
        data = httpx.get(gw.url + "/v1/key", headers={"authorization": f"Bearer {key}"}).json()["data"]
        return data if data["usage_daily"] > 0 else None

    return poll(spent, what="the call settled on the key")


def _rankings(gw, key: str) -> dict:
    """The day's /v1/rankings once they count the one call."""

    def counted() -> dict | None:
        response = httpx.get(
            gw.url + "/v1/rankings", params={"window": "day"}, headers={"authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        body: dict = response.json()
        return body if body["totals"]["requests"] == 1 else None

    return poll(counted, what="the call in the rankings")


def test_a_continued_stream_bills_every_token_the_client_received_once(start_gateway, primary, fallback, openai_client):
    gw, key = _start(start_gateway, primary, fallback)
    primary.script(fault.cut(after=40))
    chunks = chunks_of(openai_client(gw, api_key=key))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FULL_ANSWER
    assert len(primary.seen) == 1 and len(fallback.seen) == 1

    broken, final = _rows(gw, 2)
    # The broken attempt: its prompt (estimated: the stream broke before its usage) and the 40
    # tokens the client read from it, at flaky's prices; the operator's record, not a bill.
    prompt = broken["prompt_tokens"]
    assert prompt > 0 and broken["estimated"] == 1
    assert (broken["backend"], broken["final"], broken["completion_tokens"]) == ("flaky", 0, 40)
    assert broken["cost"] == pytest.approx(_usd(prompt, 40, FLAKY_IN, FLAKY_OUT), abs=1e-12)
    # The final row is the bill: the first prompt once, all 60 tokens the client read (40 at
    # flaky's output price, 20 at steady's); the continuation's own prompt (the original plus
    # the prefill) is not the client's.
    billed = _usd(prompt, 40, FLAKY_IN, FLAKY_OUT) + _usd(0, 20, STEADY_IN, STEADY_OUT)
    assert (final["backend"], final["final"], final["status"]) == ("steady", 1, 200)
    assert (final["prompt_tokens"], final["completion_tokens"]) == (prompt, fault.TOKENS)
    assert final["cost"] == pytest.approx(billed, abs=1e-12) and final["key"] == broken["key"] == "payer"
    # The client was told the same totals it is billed for.
    usages = [c.usage for c in chunks if c.usage is not None]
    assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == [(prompt, fault.TOKENS)]

    # The key's spend: the final row's cost, exactly once (not plus the broken row's).
    spend = _key_spend(gw, key)
    assert spend["usage_daily"] == pytest.approx(billed, abs=1e-9) and spend["limit_remaining"] == pytest.approx(
        1.0 - billed, abs=1e-9
    )
    # Aggregates and rankings: one request, on the model that ended it, with what the client got.
    body = _rankings(gw, key)
    assert body["totals"]["prompt_tokens"] == prompt and body["totals"]["completion_tokens"] == fault.TOKENS
    assert [(m["model"], m["tokens"]) for m in body["models"]] == [("test/large", prompt + fault.TOKENS)]
    aggregates = _aggregates(gw)
    assert aggregates["test/large|requests"] == 1 and aggregates["test/large|completion"] == fault.TOKENS
    assert aggregates["test/large|cost_nanos"] == cost_nanos(final["cost"])
    assert not any(field.startswith("test/small|") for field in aggregates)  # the broken attempt: no request


def test_usage_cost_of_a_continued_stream_is_what_its_key_is_billed(start_gateway, primary, fallback, openai_client):
    """OpenRouter's usage accounting on a stream continued on another backend: the cost in the
    final usage chunk priced every token at the first backend's prices (40 at flaky's, 20
    more at flaky's too), while the ledger and the key's budget bill the 20 at steady's."""
    gw, key = _start(start_gateway, primary, fallback)
    primary.script(fault.cut(after=40))
    chunks = list(
        openai_client(gw, api_key=key).chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "Count."}],
            stream=True,
            extra_body={"usage": {"include": True}},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FULL_ANSWER
    assert len(primary.seen) == 1 and len(fallback.seen) == 1
    _, final = _rows(gw, 2)
    prompt = final["prompt_tokens"]
    billed = _usd(prompt, 40, FLAKY_IN, FLAKY_OUT) + _usd(0, 20, STEADY_IN, STEADY_OUT)
    assert final["cost"] == pytest.approx(billed, abs=1e-12)
    usages = [c.usage for c in chunks if c.usage is not None]
    assert len(usages) == 1 and (usages[0].prompt_tokens, usages[0].completion_tokens) == (prompt, fault.TOKENS)
    assert usages[0].cost == pytest.approx(billed, abs=1e-12)


def test_a_continuation_that_nobody_takes_still_bills_what_was_delivered(
    start_gateway, primary, fallback, openai_client
):
    # The fallback takes a prefill but fails: the client keeps the 40 tokens it read, and pays
    # for those (at flaky's prices), once.
    gw, key = _start(start_gateway, primary, fallback)
    primary.script(fault.cut(after=40))
    fallback.script(fault.status(503))
    stream = openai_client(gw, api_key=key).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Count."}], stream=True
    )
    text: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            text.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(text) == "".join(f"t{i} " for i in range(40))
    assert len(primary.seen) == 1 and len(fallback.seen) == 1

    # Each attempt one row: the fallback's refusal (no tokens, no cost), then the broken
    # attempt, where the call ended: the final row, billing what it delivered.
    refused, final = _rows(gw, 2)
    assert (refused["backend"], refused["status"], refused["final"], refused["cost"]) == ("steady", 503, 0, 0.0)
    assert (final["backend"], final["error"], final["completion_tokens"]) == ("flaky", "protocol", 40)
    prompt = final["prompt_tokens"]
    billed = _usd(prompt, 40, FLAKY_IN, FLAKY_OUT)
    assert (final["final"], final["status"], final["estimated"]) == (1, 502, 1) and prompt > 0
    assert final["cost"] == pytest.approx(billed, abs=1e-12)
    spend = _key_spend(gw, key)
    assert spend["usage_daily"] == pytest.approx(billed, abs=1e-9)


def test_the_losing_hedge_is_recorded_for_the_operator_and_never_billed(
    start_gateway, primary, fallback, openai_client
):
    gw, key = _start(start_gateway, primary, fallback, config=HEDGED_CONFIG, prefill="")
    primary.script(fault.slow(3.0))
    client = openai_client(gw, api_key=key)
    chunks = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Count."}], stream=True
    )  # hedging is for streams
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FULL_ANSWER
    assert len(primary.seen) == 1 and len(fallback.seen) == 1

    loser, winner = _rows(gw, 2)
    # The loser: called off by the gateway (499 `hedge_lost`, not an upstream's 502), its
    # prompt's cost estimated for the operator, no completion.
    prompt = loser["prompt_tokens"]
    assert (loser["backend"], loser["status"], loser["error"], loser["final"]) == ("flaky", 499, "hedge_lost", 0)
    assert prompt > 0 and loser["completion_tokens"] == 0 and loser["estimated"] == 1
    assert loser["cost"] == pytest.approx(_usd(prompt, 0, FLAKY_IN, FLAKY_OUT), abs=1e-12)
    # The winner's row is the bill, and the key pays exactly it.
    billed = _usd(fault.PROMPT_TOKENS, fault.TOKENS, STEADY_IN, STEADY_OUT)
    assert (winner["backend"], winner["status"], winner["final"]) == ("steady", 200, 1)
    assert winner["cost"] == pytest.approx(billed, abs=1e-12)
    assert _key_spend(gw, key)["usage_daily"] == pytest.approx(billed, abs=1e-9)
    body = _rankings(gw, key)
    assert body["totals"]["tokens"] == fault.PROMPT_TOKENS + fault.TOKENS
    assert body["totals"]["cost"] == pytest.approx(billed, abs=1e-9)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_an_upstream_has_its_call_pays_the_prompt_it_read(
    start_gateway, primary, fallback, stream
):
    """Hostile testing: a client that left before its answer began was billed nothing, yet
    the upstream had read its prompt (and begun answering: a hosted API bills the operator
    for it), so a key could run up upstream cost past its budget by sending and leaving. The
    key now pays the prompt estimate of the call it left, at the prices of the backend that
    had it; a stream left after it began already paid what it had received."""
    gw, key = _start(start_gateway, primary, fallback)
    primary.script(fault.slow(5.0))
    body = {"model": "auto", "messages": [{"role": "user", "content": "Count to sixty."}], "stream": stream}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=0.5)
    (row,) = _rows(gw, 1)
    assert len(primary.seen) == 1 and len(fallback.seen) == 0
    prompt = row["prompt_tokens"]
    assert (row["backend"], row["status"], row["error"], row["final"]) == ("flaky", 499, "client_disconnected", 1)
    # The gateway's own estimate of this prompt, as routing made it (the upstream never said).
    assert prompt == parse_chat_request(orjson.dumps(body)).all_prompt_tokens() > 0
    assert row["completion_tokens"] == 0 and row["estimated"] == 1
    billed = _usd(prompt, 0, FLAKY_IN, FLAKY_OUT)
    assert row["cost"] == pytest.approx(billed, abs=1e-12) and row["key"] == "payer"
    assert _key_spend(gw, key)["usage_daily"] == pytest.approx(billed, abs=1e-9)
