"""Usage an upstream reports is not believed past MAX_TOKENS_PER_CALL, and the ledger takes
no call past it or past MAX_COST_USD. Hostile testing: one answer claiming 10^14 completion
tokens was priced at 2*10^10 USD; its nano-dollars overflowed the SQLite store's 64-bit
sums, and the writer retried that batch (every key's calls in it) for ever, so they were
never recorded nor counted against budgets after a restart."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson

from gateway.proxy.messages_format import usage_from_anthropic
from gateway.proxy.responses_format import usage_of_response
from gateway.proxy.usage import MAX_TOKENS_PER_CALL, Usage
from gateway.usage.events import UsageEvent
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
    assert messages.completion_tokens == MAX_TOKENS_PER_CALL and messages.prompt_tokens == 3
    # Under the bound, every count as reported.
    assert Usage.from_openai({"prompt_tokens": 131072, "completion_tokens": 7}) == Usage(131072, 7)


async def test_the_dearest_call_the_ledger_takes_fits_its_sums(tmp_path):
    store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    try:
        dear = UsageEvent(
            id="dear",
            timestamp=datetime(2025, 3, 10, 12, tzinfo=UTC),
            model="qwen/qwen3-32b",
            backend="vllm",
            prompt_tokens=MAX_TOKENS_PER_CALL,
            completion_tokens=MAX_TOKENS_PER_CALL,
            cost=1e9,
            key="victim",
        )
        assert await store.record([dear]) == 1
        spends = await store.day_spends(date(2025, 3, 1))
        assert [(s.key, s.cost_nanos) for s in spends] == [("victim", 10**18)]
        # An imported line past the bounds is refused by its number, not a traceback.
        line = orjson.loads(orjson.dumps(dear.to_json()))
        lines = [orjson.dumps({**line, "id": "ok"}), orjson.dumps({**line, "id": "big", "completion_tokens": HUGE})]
        lines.append(orjson.dumps({**line, "id": "dear2", "cost": 2e10}))
        report = await import_lines(store, lines)
        assert report.imported == 1 and [bad.number for bad in report.bad] == [2, 3]
    finally:
        await store.aclose()
