"""Every attempt of a call is a ledger row (issue 12): failed attempts linked to the final row
by `call_id`, in SQLite and in Redis's raw stream, while rankings count only final rows."""

from __future__ import annotations

from datetime import date

import pytest

from gateway.config.schema import ModelOffer
from gateway.config.snapshot import Offer
from gateway.proxy.outcome import Attempt, CallOutcome
from gateway.proxy.usage import Usage
from gateway.usage.rankings import ranking_query
from gateway.usage.recorder import UsageRecorder
from gateway.usage.redis_store import RedisUsageStore
from gateway.usage.sqlite_store import SqliteUsageStore
from gateway.usage.writer import WriterProcess
from tests.usage.test_recorder import NOON

pytestmark = pytest.mark.redis

QWEN = Offer("qwen/qwen3-32b", "vllm", "Qwen/Qwen3-32B", ModelOffer(input_price=1.0, output_price=2.0))
DAY = date(2025, 3, 10)


def fell_back_twice() -> CallOutcome:
    """Timed out on `slow`, 503 from `busy`, then answered by `vllm`."""
    return CallOutcome(
        request_id="req-1",
        requested_model="auto",
        stream=False,
        offer=QWEN,
        started_at=NOON,
        route="auto",
        api_key_name="alice",
        attempts=[
            Attempt("slow", "deepseek/deepseek-v3.2", "timeout", None, 2.5),
            Attempt("busy", "z-ai/glm-5", "http_503", 503, 0.25),
            Attempt("vllm", QWEN.model, None, 200, 1.0),
        ],
        usage=Usage(100, 20),
        cost_usd=0.00014,
        latency_s=3.9,
        ttft_s=1.0,
    )


def answered_at_once() -> CallOutcome:
    outcome = fell_back_twice()
    outcome.attempts = outcome.attempts[-1:]
    return outcome


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """Factory: a fresh store of the kind (a new file, or a new Redis database)."""
    made = []

    def make(name: str):
        if request.param == "sqlite":
            store = SqliteUsageStore(tmp_path / f"{name}.sqlite3")
        else:
            from redis.asyncio import Redis

            server = request.getfixturevalue("redis_server")
            db = len(made)
            store = RedisUsageStore(Redis.from_url(server.url.rsplit("/", 1)[0] + f"/{db}"), owns_client=True)
        made.append(store)
        return store

    yield make


async def record(store, outcome: CallOutcome) -> UsageRecorder:
    recorder = UsageRecorder(store)
    recorder.call_finished(outcome)
    await recorder.flush()
    return recorder


async def test_two_failed_attempts_and_the_answer_are_three_rows_and_rank_as_one_call(make_store):
    fell_back, direct = make_store("fell-back"), make_store("direct")
    recorder = await record(fell_back, fell_back_twice())
    await record(direct, answered_at_once())
    assert recorder.recorded == 3 and recorder.dropped == 0

    rows = [e async for e in fell_back.export(DAY, DAY)]
    assert [(e.attempt, e.final, e.backend, e.model, e.status, e.error) for e in rows] == [
        (1, False, "slow", "deepseek/deepseek-v3.2", 504, "timeout"),
        (2, False, "busy", "z-ai/glm-5", 503, "http_503"),
        (3, True, "vllm", "qwen/qwen3-32b", 200, None),
    ]
    call_id = rows[0].call_id
    assert call_id and all(e.call_id == call_id for e in rows)
    assert [e.id for e in rows] == [f"{call_id}-1", f"{call_id}-2", f"{call_id}-3"]
    assert [(e.prompt_tokens, e.completion_tokens, e.cost) for e in rows] == [
        (0, 0, 0.0),
        (0, 0, 0.0),
        (100, 20, 0.00014),
    ]
    assert [e.latency_ms for e in rows] == [2500.0, 250.0, 3900.0]
    assert all(e.key == "alice" and e.endpoint == "chat" and e.request_id == "req-1" for e in rows)
    if isinstance(fell_back, RedisUsageStore):
        assert await fell_back.redis.xlen(fell_back.key(DAY, "events")) == 3  # the raw stream itself

    query = ranking_query("day", DAY.isoformat(), 10)
    ranked, once = await fell_back.rankings(query), await direct.rankings(query)
    providers = ranked.pop("throughput")
    once.pop("throughput")
    assert ranked == once  # the failed attempts change no ranking
    assert ranked["totals"]["requests"] == 1 and ranked["totals"]["failed"] == 0
    assert ranked["totals"]["tokens"] == 120
    # They count in their providers' uptime: each attempt once, the answering one included.
    uptime = {(r["backend"], r["model"]): (r["attempts"], r["attempts_failed"], r["uptime"]) for r in providers}
    assert uptime == {
        ("vllm", "qwen/qwen3-32b"): (1, 0, 1.0),
        ("slow", "deepseek/deepseek-v3.2"): (1, 1, 0.0),
        ("busy", "z-ai/glm-5"): (1, 1, 0.0),
    }
    assert [r["requests"] for r in providers] == [1, 0, 0]  # the table's first row: the model that ranks
    for store in (fell_back, direct):
        await store.aclose()


async def test_attempt_rows_recorded_again_are_not_counted_again(make_store):
    store = make_store("again")
    recorder = UsageRecorder(store)
    recorder.call_finished(fell_back_twice())
    batch = recorder.next_batch()
    assert await store.record(batch) == 3
    assert await store.record(batch) == 0  # a retried batch: same ids, nothing new
    assert len([e async for e in store.export(DAY, DAY)]) == 3
    assert (await store.rankings(ranking_query("day", DAY.isoformat(), 10)))["totals"]["requests"] == 1
    await store.aclose()


async def test_the_writer_process_writes_every_attempt_row(tmp_path):
    writer = WriterProcess(None, tmp_path)
    recorder = UsageRecorder(writer)
    recorder.call_finished(fell_back_twice())
    await recorder.flush()
    await writer.aclose()
    store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    rows = [e async for e in store.export(DAY, DAY)]
    assert [(e.attempt, e.final) for e in rows] == [(1, False), (2, False), (3, True)]
    assert (await store.rankings(ranking_query("day", DAY.isoformat(), 10)))["totals"]["requests"] == 1
    await store.aclose()


GLM = Offer("z-ai/glm-5", "zhipu", "glm-5", ModelOffer(input_price=3.0, output_price=4.0))


def continued_after_a_lost_hedge() -> CallOutcome:
    """A hedge lost on `slow` (its prompt estimated), a stream on `vllm` broken after 40
    tokens, continued by `zhipu` with the last 20: billed as the client received it."""
    delivered = Usage(10, 40, estimated=True)
    broken = Attempt("vllm", QWEN.model, "protocol", None, 1.0, usage=delivered, cost_usd=9e-5)
    lost = Attempt("slow", "deepseek/deepseek-v3.2", "hedge_lost", None, 0.3, usage=Usage(10, 0, estimated=True))
    lost.cost_usd = 4e-6
    outcome = CallOutcome(
        request_id="req-2",
        requested_model="auto",
        stream=True,
        offer=GLM,
        started_at=NOON,
        route="auto",
        api_key_name="alice",
        attempts=[lost, broken, Attempt("zhipu", GLM.model, None, 200, 0.5)],
        usage=Usage(52, 20),  # the continuation's own: its prompt held the 40-token prefill
        latency_s=1.9,
        ttft_s=0.2,
    )
    outcome.carry(delivered, QWEN)
    outcome.bill()
    return outcome


async def test_a_continued_call_ranks_once_with_what_the_client_received(make_store):
    store = make_store("continued")
    await record(store, continued_after_a_lost_hedge())
    rows = [e async for e in store.export(DAY, DAY)]
    billed = (10 * 1.0 + 40 * 2.0 + 20 * 4.0) / 1e6
    assert [(e.final, e.backend, e.status, e.error, e.prompt_tokens, e.completion_tokens) for e in rows] == [
        (False, "slow", 499, "hedge_lost", 10, 0),  # the operator's cost, not an upstream 502
        (False, "vllm", 502, "protocol", 10, 40),
        (True, "zhipu", 200, None, 10, 60),
    ]
    assert [e.cost for e in rows] == [4e-6, 9e-5, pytest.approx(billed)]
    ranked = await store.rankings(ranking_query("day", DAY.isoformat(), 10))
    assert ranked["totals"]["requests"] == 1 and ranked["totals"]["tokens"] == 70
    assert ranked["totals"]["cost"] == pytest.approx(billed)
    assert [(m["model"], m["tokens"]) for m in ranked["models"]] == [("z-ai/glm-5", 70)]
    # The lost hedge is not its provider's failure; the broken stream is.
    uptime = {(r["backend"], r["model"]): (r["attempts"], r["attempts_failed"]) for r in ranked["throughput"]}
    assert ("slow", "deepseek/deepseek-v3.2") not in uptime or uptime[("slow", "deepseek/deepseek-v3.2")] == (0, 0)
    assert uptime[("vllm", "qwen/qwen3-32b")] == (1, 1)
    await store.aclose()
