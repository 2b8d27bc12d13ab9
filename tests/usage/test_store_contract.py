"""The contract every usage store keeps, run against SQLite (temp dir) and a real redis-server."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime

import orjson
import pytest

from gateway.usage.aggregates import NANOS_PER_USD, SUM_CAP
from gateway.usage.events import MAX_COST_USD, UsageEvent
from gateway.usage.jsonl import event_line, import_lines
from gateway.usage.rankings import ranking_query, series_query
from gateway.usage.redis_store import RedisUsageStore
from gateway.usage.sqlite_store import SqliteUsageStore
from tests.usage.fixtures import EVENTS, EXPECTED, WEEK_END, billed_call, varied_events

pytestmark = pytest.mark.redis


def week(limit=3):
    return ranking_query("week", WEEK_END, limit)


def twin_of(store, request):
    """A second writer on the same store, as another gateway process would open it."""
    if isinstance(store, SqliteUsageStore):
        return SqliteUsageStore(store.path)
    from redis.asyncio import Redis

    return RedisUsageStore(Redis.from_url(request.getfixturevalue("redis_server").url), owns_client=True)


async def test_rankings_match_the_hand_computed_fixture(store):
    assert await store.record(EVENTS) == len(EVENTS)
    body = await store.rankings(week())
    body.pop("throughput")
    assert body == EXPECTED


async def test_recording_is_idempotent_by_id(store):
    await store.record(EVENTS[:5])
    assert await store.record(EVENTS) == len(EVENTS) - 5  # a retried batch that partly landed
    assert await store.record(EVENTS) == 0
    assert await store.record([EVENTS[0], EVENTS[0]]) == 0
    body = await store.rankings(week())
    body.pop("throughput")
    assert body == EXPECTED


async def test_duplicates_within_one_batch_count_once(store):
    assert await store.record([EVENTS[0], EVENTS[0], EVENTS[1]]) == 2
    body = await store.rankings(ranking_query("week", WEEK_END, 10))
    assert body["totals"]["tokens"] == 600_000 and body["totals"]["requests"] == 2


async def test_batches_larger_than_one_write_count_each_event_once(store):
    """More events than one SQLite transaction or one Redis script call takes, over several days."""
    events = varied_events(1000)
    assert await store.record(events) == 1000
    assert await store.record(events[::3]) == 0
    totals = (await store.rankings(ranking_query("week", WEEK_END, 10)))["totals"]
    assert totals["requests"] == 1000 and totals["tokens"] == sum(e.tokens for e in events)
    assert totals["failed"] == sum(1 for e in events if e.status >= 400)


async def test_two_writers_on_one_store_count_each_event_once(store, request):
    twin = twin_of(store, request)
    events = varied_events(600)
    try:
        written = await asyncio.gather(
            store.record(events[:400]),
            twin.record(events[200:]),
            store.record(events[100:300]),
            twin.record(events[500:]),
        )
    finally:
        await twin.aclose()
    assert sum(written) == 600
    totals = (await store.rankings(ranking_query("week", WEEK_END, 10)))["totals"]
    assert totals["requests"] == 600 and totals["tokens"] == sum(e.tokens for e in events)


async def test_counters_stay_exact_beyond_double_precision(store):
    big = 2**52 + 1  # sums of these need more than a double's 53 bits
    events = [
        UsageEvent(
            id=f"big{i}",
            timestamp=datetime(2025, 3, 10, tzinfo=UTC),
            model="qwen/qwen3-32b",
            backend="groq",
            prompt_tokens=big,
            completion_tokens=i,
            cost=0.0,
        )
        for i in range(3)
    ]
    assert await store.record(events) == 3
    totals = (await store.rankings(week()))["totals"]
    assert totals["prompt_tokens"] == 3 * big and totals["tokens"] == 3 * big + 3


async def test_export_returns_each_recorded_event_of_the_range_once(store):
    await store.record(EVENTS)
    await store.record(EVENTS)
    exported = [e async for e in store.export(date(2025, 3, 10), date(2025, 3, 16))]
    assert sorted(e.id for e in exported) == ["w1", "w2", "w3", "w4", "w5", "w6", "w7"]
    by_id = {e.id: e for e in EVENTS}
    for event in exported:
        assert event.to_json() == by_id[event.id].to_json()  # every field survives the round trip
    assert [e async for e in store.export(date(2025, 4, 1), date(2025, 4, 30))] == []


async def test_import_skips_bad_lines_by_number_and_is_idempotent(store):
    lines = [event_line(e) for e in EVENTS[:3]]
    lines.insert(
        1, b'{"id": "bad-1", "timestamp": "yesterday", "model": "a/b", "prompt_tokens": 1, "completion_tokens": 1}\n'
    )
    lines.insert(3, b"not json at all\n")
    lines.append(
        b'{"id": "bad-2", "timestamp": "2025-03-10T00:00:00Z", "model": "nomodel", "prompt_tokens": -1, "completion_tokens": 1}\n'
    )
    report = await import_lines(store, lines)
    assert report.imported == 3 and report.duplicates == 0
    assert [b.number for b in report.bad] == [2, 4, 6]
    assert "timestamp" in report.bad[0].reason
    assert "JSON" in report.bad[1].reason
    assert "model" in report.bad[2].reason and "prompt_tokens" in report.bad[2].reason
    again = await import_lines(store, lines)
    assert (again.imported, again.duplicates, len(again.bad)) == (0, 3, 3)


async def test_series_reads_the_same_aggregates(store):
    await store.record(EVENTS)
    body = await store.series(series_query("week", 4, WEEK_END, 2))
    assert body["totals"] == [1_200_000, 600_000, 800_000, 1_000_000]


async def test_both_stores_rank_identically(tmp_path, redis_server):
    """Same events, same JSON to the last digit, throughput medians included."""
    from redis.asyncio import Redis

    sqlite = SqliteUsageStore(tmp_path / "u.sqlite3")
    redis = RedisUsageStore(Redis.from_url(redis_server.url), owns_client=True)
    try:
        for s in (sqlite, redis):
            await s.record(EVENTS)
        for query in (week(3), ranking_query("month", WEEK_END, 20), ranking_query("day", "2025-03-14", 1)):
            assert await sqlite.rankings(query) == await redis.rankings(query)
        # Calls of every kind, in batches the stores split differently (transactions, days).
        for s in (sqlite, redis):
            await s.record(varied_events(1500, seed=3))
        for query in (week(20), ranking_query("day", "2025-03-11", 20)):
            assert await sqlite.rankings(query) == await redis.rankings(query)
    finally:
        await sqlite.aclose()
        await redis.aclose()


async def test_redis_keys_share_one_hash_tag_per_day(redis_server):
    """Everything one event touches lives in one cluster slot: the day's hash tag."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    store = RedisUsageStore(client)
    await store.record(EVENTS)
    keys = sorted(k.decode() for k in await client.keys("*"))
    assert keys
    for key in keys:
        assert re.fullmatch(
            r"\{usage:\d{4}-\d{2}-\d{2}\}:(model|category|app|offer|hist|titles|events|apps|seen:\w+)", key
        ), key
    assert 0 < await client.ttl("{usage:2025-03-10}:seen:w1") <= store.dedupe_ttl_s
    # Without a retention, streams and aggregates are kept: no TTL (see test_retention.py).
    assert await client.ttl("{usage:2025-03-10}:events") == -1
    assert await client.ttl("{usage:2025-03-10}:model") == -1
    assert 0 < await client.ttl("{usage:2025-03-10}:apps") <= 2 * 86400
    await client.aclose()


async def test_sqlite_store_survives_reopening(tmp_path):
    path = tmp_path / "usage.sqlite3"
    first = SqliteUsageStore(path)
    await first.record(EVENTS)
    await first.aclose()
    second = SqliteUsageStore(path)
    assert await second.record(EVENTS) == 0
    body = await second.rankings(week())
    await second.aclose()
    body.pop("throughput")
    assert body == EXPECTED


async def test_day_spends_sum_each_key_and_team_billed_per_day(store):
    """What budgets start from without Redis (gateway.ratelimit.RateLimiter.seed_spend): the
    final rows' cost per key, team and day from the first day asked; a failed attempt's row is
    the operator's cost, and a call without key or team is nobody's budget."""

    def call(i: int, day: int, key: str | None, team: str | None, cost: float, final: bool = True) -> UsageEvent:
        return billed_call(f"s{i}", day, i, key, team, cost, final)

    await store.record(
        [
            call(0, 1, "solo", None, 9.0),  # before the first day asked
            call(1, 2, "solo", None, 0.1),
            call(2, 2, "solo", None, 0.2),
            call(3, 2, "solo", None, 5.0, final=False),  # a failed attempt before the call's final row
            call(4, 3, "solo", None, 1e-9),
            call(5, 3, "a", "platform", 0.25),
            call(6, 3, "b", "platform", 0.5),
            call(7, 3, None, None, 7.0),  # an open gateway's call
            call(8, 3, "c", None, 0.0),  # cost nothing: no row
        ]
    )
    rows = sorted((s.key, s.team, s.day.isoformat(), s.cost_nanos) for s in await store.day_spends(date(2025, 3, 2)))
    assert rows == [
        ("a", "platform", "2025-03-03", 250_000_000),
        ("b", "platform", "2025-03-03", 500_000_000),
        ("solo", None, "2025-03-02", 300_000_000),
        ("solo", None, "2025-03-03", 1),
    ]


async def test_sums_past_64_bits_stop_at_the_cap_and_the_ledger_goes_on(store):
    """Each call's cost is bounded, their sum is not: ten thousand calls at the bound add up
    to 10^19 nano-dollars, past the stores' 64-bit integers. The write failed (SQLite: an
    OverflowError binding the batch's sum; Redis: HINCRBY's overflow error, after part of the
    script had written), and was retried for ever with every tenant's events in the batch.
    Sums now stop at SUM_CAP; the calls are recorded, and so are the calls after them."""
    dear = [billed_call(f"dear{n}", 10, n % 60, "victim", None, MAX_COST_USD) for n in range(10_000)]
    assert await store.record(dear) == 10_000
    assert await store.record([billed_call("cheap", 10, 1, "other", None, 0.5)]) == 1
    totals = (await store.rankings(ranking_query("week", date(2025, 3, 10), 10)))["totals"]
    assert totals["requests"] == 10_001 and totals["cost"] == SUM_CAP / NANOS_PER_USD
    spends = {s.key: s.cost_nanos for s in await store.day_spends(date(2025, 3, 1))}
    if isinstance(store, SqliteUsageStore):  # Redis counts spend in the limiter's keys instead
        assert spends == {"victim": SUM_CAP, "other": NANOS_PER_USD // 2}


async def test_an_import_refuses_lines_the_store_could_not_write_by_their_number(store):
    """Values that validated but crashed the write with a traceback (ending the whole import):
    an infinite timing (`"inf"` as a string), an attempt count past SQLite's 64-bit integers,
    a timestamp whose zone puts it before year 1 in UTC."""
    line = {"timestamp": "2026-01-01T00:00:00Z", "model": "a/b", "prompt_tokens": 1, "completion_tokens": 1}
    lines = [
        orjson.dumps({**line, "id": "ok"}),
        orjson.dumps({**line, "id": "i1", "latency_ms": "inf"}),
        orjson.dumps({**line, "id": "i2", "ttft_ms": "Infinity"}),
        orjson.dumps({**line, "id": "i3", "tokens_per_second": "inf"}),
        orjson.dumps({**line, "id": "n1", "attempts": 2**63}),
        orjson.dumps({**line, "id": "n2", "attempt": 2**63}),
        orjson.dumps({**line, "id": "t1", "timestamp": "0001-01-01T00:00:00+01:00"}),
    ]
    report = await import_lines(store, lines)
    assert report.imported == 1 and [bad.number for bad in report.bad] == [2, 3, 4, 5, 6, 7]
    assert [bad.reason.split(":")[0] for bad in report.bad] == [
        "latency_ms",
        "ttft_ms",
        "tokens_per_second",
        "attempts",
        "attempt",
        "line",
    ]
    assert "years 1-9999" in report.bad[-1].reason
