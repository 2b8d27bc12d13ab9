"""Retention (issue 11 item 19): raw events and aggregates kept for a configured time, by
age, in SQLite (deleted in batches, at most hourly, in the writer) and in Redis (per-day keys
expired by age, a second Redis for the evictable raw streams), with real stores."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.usage.events import UsageEvent
from gateway.usage.rankings import ranking_query
from gateway.usage.redis_store import RedisUsageStore
from gateway.usage.sqlite_store import SqliteUsageStore
from gateway.usage.store import Retention
from gateway.usage.stores import store_for
from gateway.usage.writer import WriterProcess
from tests.support.poll import poll
from tests.support.services import RedisServer

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def event(
    id: str, when: datetime, *, app: str | None = None, title: str | None = None, key: str | None = None
) -> UsageEvent:
    return UsageEvent(
        id=id,
        timestamp=when,
        model="qwen/qwen3-32b",
        backend="vllm",
        prompt_tokens=10,
        completion_tokens=5,
        app=app,
        app_title=title,
        cost=0.5,
        key=key,
    )


def ids_in(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


def rows_in(path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute(f"SELECT DISTINCT day FROM {table}")}


async def requests_on(store, day: date) -> int:
    return (await store.rankings(ranking_query("day", day.isoformat(), 10)))["totals"]["requests"]


# -- SQLite -------------------------------------------------------------------------------------


async def test_sqlite_deletes_exactly_the_raw_events_older_than_the_limit_in_batches(tmp_path):
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, retention=Retention(events_days=2), prune_batch=3, clock=NOW.timestamp)
    cutoff = NOW - timedelta(days=2)  # 2025-03-08T12:00:00Z
    older = {f"old{i}": cutoff - timedelta(hours=i * 7) for i in range(1, 8)}  # 7 rows: three batches
    older["just-older"] = cutoff - timedelta(microseconds=1)
    kept = {"at-cutoff": cutoff, "just-newer": cutoff + timedelta(microseconds=1), "today": NOW}
    assert await store.record([event(k, when) for k, when in {**older, **kept}.items()]) == 11
    await store.aclose()  # waits for the delete the write started
    assert ids_in(path) == set(kept)
    assert store.pruned == 8
    # Raw events only: the aggregates of the days they were on stay (rankings unchanged).
    reader = SqliteUsageStore(path)
    assert await requests_on(reader, date(2025, 3, 7)) == 4
    await reader.aclose()


async def test_sqlite_deletes_at_most_once_every_prune_interval(tmp_path):
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, retention=Retention(events_days=2), clock=NOW.timestamp)  # hourly
    await store.record([event("old1", NOW - timedelta(days=3))])
    await store.wait_pruned()
    assert ids_in(path) == set()
    await store.record([event("old2", NOW - timedelta(days=3))])  # within the hour: no second delete
    assert not store.pruning and ids_in(path) == {"old2"}
    await store.aclose()
    assert ids_in(path) == {"old2"} and store.pruned == 1


async def test_sqlite_aggregates_retention_drops_whole_days_before_the_limit(tmp_path):
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, retention=Retention(aggregates_days=3), clock=NOW.timestamp)
    app = {"app": "https://cline.bot", "title": "Cline"}
    days = [NOW - timedelta(days=n) for n in (0, 3, 4, 10)]  # 03-10, 03-07, 03-06, 02-28
    await store.record([event(f"e{i}", when, **app) for i, when in enumerate(days)])
    await store.aclose()
    # Days before 2025-03-07 (3 days before 03-10) are gone; raw events are kept (no events retention).
    assert rows_in(path, "aggregates") == rows_in(path, "app_titles") == {"2025-03-10", "2025-03-07"}
    assert len(ids_in(path)) == 4


async def test_spend_of_this_month_is_kept_whatever_the_aggregates_retention(tmp_path):
    """Hostile testing: with aggregates kept 3 days, the `spend` rows a restarted gateway's
    monthly budgets start from went with them, so a monthly budget was given back. They are
    kept for the whole month now (last month's go by the retention)."""
    path = tmp_path / "usage.sqlite3"
    store = SqliteUsageStore(path, retention=Retention(aggregates_days=3), clock=NOW.timestamp)
    days = [NOW - timedelta(days=n) for n in (0, 4, 9, 10)]  # 03-10, 03-06, 03-01, 02-28
    await store.record([event(f"e{i}", when, key="mon") for i, when in enumerate(days)])
    spends = await store.day_spends(date(2025, 3, 1))
    await store.aclose()
    assert rows_in(path, "spend") == {"2025-03-10", "2025-03-06", "2025-03-01"}
    assert sorted((s.day.isoformat(), s.cost_nanos) for s in spends) == [
        ("2025-03-01", 500_000_000),
        ("2025-03-06", 500_000_000),
        ("2025-03-10", 500_000_000),
    ]
    assert rows_in(path, "aggregates") == {"2025-03-10"}


async def test_the_writer_process_applies_sqlite_retention(tmp_path):
    now = datetime.now(UTC)
    writer = WriterProcess(None, tmp_path, retention=Retention(events_days=1))
    try:
        old, new = event("old", now - timedelta(days=1, minutes=5)), event("new", now - timedelta(hours=23))
        await writer.record(
            [call for call in (_as_call(old), _as_call(new))]  # FinishedCall tuples, as the recorder sends
        )
        path = tmp_path / "usage.sqlite3"
        poll(lambda: ids_in(path) == {"new-1"}, what="the writer's retention delete", timeout=20)
    finally:
        await writer.aclose()


def _as_call(e: UsageEvent):
    """The FinishedCall tuple that builds `e` (with the id `<id>-1`)."""
    return (
        e.id, 1, True, e.timestamp.timestamp(), e.model, e.backend, None, "chat", None, None, None,
        e.prompt_tokens, e.completion_tokens, 0, 0, False, 0.0, 0.1, None, None, 200, 1, None, "chat", None, None, 0,
    )  # fmt: skip


# -- Redis --------------------------------------------------------------------------------------


def day_events(days_ago: list[int]) -> list[UsageEvent]:
    now = datetime.now(UTC)
    return [event(f"d{n}", now - timedelta(days=n), app="https://cline.bot", title="Cline") for n in days_ago]


def midnight_after(day: date, days: int) -> float:
    return datetime.combine(day + timedelta(days=days), datetime.min.time(), UTC).timestamp()


@pytest.mark.redis
async def test_redis_raw_streams_expire_by_age_and_aggregates_are_kept_without_ttl(redis_server):
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    store = RedisUsageStore(client, retention=Retention(events_days=2))
    events = day_events([0, 2, 5])
    await store.record(events)
    today, two_ago, five_ago = (e.day for e in events)
    assert not await client.exists(store.key(five_ago, "events"))  # past retention: gone at once
    for day in (today, two_ago):
        assert await client.xlen(store.key(day, "events")) == 1
        expires = await client.expiretime(store.key(day, "events"))
        assert expires == midnight_after(day, 1 + 2)  # two whole days after the day ended
    # State: every aggregate key, old or new, has no TTL that a volatile-* policy could pick.
    keys = [k async for k in client.scan_iter("*") if b":seen:" not in k and not k.endswith(b":events")]
    state = [k for k in keys if not k.endswith(b":apps")]
    assert len(state) == 3 * 6  # model, category, app, offer, hist (attempt outcomes), titles per day
    assert [await client.ttl(k) for k in state] == [-1] * len(state)
    # The day's set of apps with rows is a cache of the app hash (rebuilt from it when gone),
    # so its two-day TTL loses nothing if it expires or is evicted.
    apps = [k for k in keys if k.endswith(b":apps")]
    assert len(apps) == 3 and all(0 < ttl <= 2 * 86400 for ttl in [await client.ttl(k) for k in apps])
    assert await requests_on(store, five_ago) == 1
    await client.aclose()


@pytest.mark.redis
async def test_redis_aggregates_retention_expires_whole_days(redis_server):
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    store = RedisUsageStore(client, retention=Retention(aggregates_days=3))
    events = day_events([0, 5])
    await store.record(events)
    today, five_ago = events[0].day, events[1].day
    assert await requests_on(store, five_ago) == 0 and await requests_on(store, today) == 1
    for part in ("model", "category", "app", "offer", "titles"):  # (no timings: no `hist`)
        assert not await client.exists(store.key(five_ago, part))
        assert await client.expiretime(store.key(today, part)) == midnight_after(today, 1 + 3)
    assert await client.ttl(store.key(today, "events")) == -1  # no events retention set
    await client.aclose()


@pytest.fixture
def events_redis():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.mark.redis
async def test_raw_streams_go_to_the_events_redis_and_a_failed_raw_write_is_retried_once(redis_server, events_redis):
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    store = store_for(redis_server.url, "unused", retention=Retention(events_days=7), events_redis_url=events_redis.url)
    assert isinstance(store, RedisUsageStore) and store.events_redis is not None
    state = Redis.from_url(redis_server.url)
    raw = Redis.from_url(events_redis.url)
    events = day_events([0, 1])
    assert await store.record(events[:1]) == 1

    events_redis.stop()  # the evictable Redis is down: the state write goes through, the raw one fails
    with pytest.raises(RedisConnectionError):
        await store.record(events)
    events_redis.start()  # empty again (no persistence): what was there is gone, as eviction would do
    await store.events_redis.connection_pool.disconnect()
    assert await store.record(events) == 0  # the retry: already counted in the state Redis
    assert await store.record(events) == 0
    assert [k async for k in state.scan_iter("*:events")] == []  # no raw copies in the state Redis
    for e in events:
        assert await raw.xlen(store.key(e.day, "events")) == 1  # each copied once
    exported = [x.id async for x in store.export(events[1].day, events[0].day)]
    assert sorted(exported) == ["d0", "d1"]
    assert await requests_on(store, events[0].day) == 1 and await requests_on(store, events[1].day) == 1
    await store.aclose()
    await state.aclose()
    await raw.aclose()
