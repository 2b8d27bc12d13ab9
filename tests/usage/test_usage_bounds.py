"""Usage an upstream reports is not believed past MAX_TOKENS_PER_CALL, and the ledger holds
no call past that or MAX_COST_USD. Hostile testing: one answer claiming 10^14 completion
tokens was priced at 2*10^10 USD; its nano-dollars overflowed the SQLite store's 64-bit
integers, and the writer retried that batch (every key's calls in it) for ever, so they were
never recorded nor counted against budgets after a restart. Review: embeddings' usage was
not bounded, and sums of bounded fields (an Anthropic prompt's three parts, a continued
stream's two completions) could pass the bound."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.messages_format import usage_from_anthropic
from gateway.proxy.openai_formats import embeddings_usage
from gateway.proxy.outcome import CallOutcome
from gateway.proxy.responses_format import usage_of_response
from gateway.proxy.usage import MAX_TOKENS_PER_CALL, Usage
from gateway.usage.aggregates import cost_nanos
from gateway.usage.events import MAX_COST_USD, UsageEvent, finished_call
from gateway.usage.jsonl import import_lines
from gateway.usage.sqlite_store import SqliteUsageStore

HUGE = 10**14


def test_an_upstreams_usage_is_read_no_higher_than_the_bound():
    chat = Usage.from_openai(
        {
            "prompt_tokens": HUGE,
            "completion_tokens": HUGE,
            "completion_tokens_details": {"reasoning_tokens": HUGE},
        }
    )
    assert chat is not None
    assert (chat.prompt_tokens, chat.completion_tokens, chat.reasoning_tokens) == (MAX_TOKENS_PER_CALL,) * 3
    response = usage_of_response({"input_tokens": HUGE, "output_tokens": HUGE})
    assert response is not None and (response.prompt_tokens, response.completion_tokens) == (MAX_TOKENS_PER_CALL,) * 2
    messages = usage_from_anthropic({"input_tokens": 3, "output_tokens": HUGE})
    assert messages is not None and messages.completion_tokens == MAX_TOKENS_PER_CALL and messages.prompt_tokens == 3
    embedded = embeddings_usage({"prompt_tokens": 10**19})
    assert embedded is not None and embedded.prompt_tokens == MAX_TOKENS_PER_CALL
    # Under the bound, every count as reported.
    assert Usage.from_openai({"prompt_tokens": 131072, "completion_tokens": 7}) == Usage(131072, 7)


def _call(id: str, **values) -> UsageEvent:
    return UsageEvent(
        id=id,
        timestamp=datetime(2025, 3, 10, 12, tzinfo=UTC),
        model="qwen/qwen3-32b",
        backend="vllm",
        key="victim",
        **{"prompt_tokens": 10, "completion_tokens": 5, **values},
    )


def test_the_ledger_takes_no_call_past_its_bounds():
    # Sums of bounded reports: an Anthropic prompt's fresh, read and written parts (3 x 10^9).
    summed = usage_from_anthropic(
        {
            "input_tokens": MAX_TOKENS_PER_CALL,
            "cache_read_input_tokens": MAX_TOKENS_PER_CALL,
            "cache_creation_input_tokens": MAX_TOKENS_PER_CALL,
            "output_tokens": 1,
        }
    )
    assert summed is not None and summed.prompt_tokens == 3 * MAX_TOKENS_PER_CALL
    offer = Offer("qwen/qwen3-32b", "vllm", "qwen3", ModelOffer(input_price=1e6, output_price=1e6))
    outcome = CallOutcome("req", "auto", False, offer=offer, usage=summed, cost_usd=2e10, api_key_name="victim")
    call = finished_call(outcome)
    assert call is not None
    event = UsageEvent.from_call(call)
    assert (event.prompt_tokens, event.cached_tokens, event.cache_write_tokens) == (MAX_TOKENS_PER_CALL,) * 3
    assert event.completion_tokens == 1 and event.cost == MAX_COST_USD


async def test_the_dearest_calls_the_ledger_takes_are_recorded_and_read_back(tmp_path):
    store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    try:
        dear = [
            _call(
                f"dear{n}", prompt_tokens=MAX_TOKENS_PER_CALL, completion_tokens=MAX_TOKENS_PER_CALL, cost=MAX_COST_USD
            )
            for n in range(3)
        ]
        assert await store.record(dear) == 3
        exported = [e async for e in store.export(date(2025, 3, 10), date(2025, 3, 10))]
        assert [(e.prompt_tokens, e.cost) for e in exported] == [(MAX_TOKENS_PER_CALL, MAX_COST_USD)] * 3
        spends = await store.day_spends(date(2025, 3, 1))
        assert [(s.key, s.cost_nanos) for s in spends] == [("victim", 3 * cost_nanos(MAX_COST_USD))]
        # An imported line past the bounds is refused by its number, not changed or a traceback.
        line = orjson.loads(orjson.dumps(_call("ok").to_json()))
        untotalled = {name: value for name, value in line.items() if name != "tokens"}  # else checked against it
        lines = [
            orjson.dumps(line),
            orjson.dumps({**line, "id": "big", "completion_tokens": HUGE}),
            orjson.dumps({**line, "id": "dear", "cost": 2e10}),
            # Numbers written as strings, which validation reads as numbers: bounded the same
            # (they went past the check, then overflowed the batch's write with a traceback).
            orjson.dumps({**line, "id": "s1", "cost": "1e300"}),
            orjson.dumps({**untotalled, "id": "s2", "prompt_tokens": "99999999999999999999"}),
            orjson.dumps({**line, "id": "s3", "cost": "9e9"}),
        ]
        report = await import_lines(store, lines)
        assert report.imported == 1 and [bad.number for bad in report.bad] == [2, 3, 4, 5, 6]
        assert [bad.reason.split(":")[0] for bad in report.bad] == [
            "completion_tokens",
            "cost",
            "cost",
            "prompt_tokens",
            "cost",
        ]
    finally:
        await store.aclose()
