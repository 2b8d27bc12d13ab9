"""The Redis usage store's own conduct against a real redis-server (what every store does
alike is tests/usage/test_store_contract.py)."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeout
from redis.retry import Retry

from gateway.usage.redis_store import RedisUsageStore
from gateway.usage.stores import store_for
from tests.support.poll import apoll, poll
from tests.support.services import pool_in_use
from tests.usage.fixtures import EVENTS

pytestmark = pytest.mark.redis


async def test_a_write_that_times_out_returns_its_connection_to_the_pool(redis_server):
    """The write's pipeline checks its scripts first (SCRIPT EXISTS), holding a connection of
    the pool: when that check times out (a hung Redis), the connection goes back to the pool
    and nothing is left for the collector to warn about ("Unclosed Pipeline client")."""
    client = Redis.from_url(redis_server.url, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    store = RedisUsageStore(client, owns_client=True)
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        assert await store.record(EVENTS[:2]) == 2
        assert pool_in_use(client) == 0
        redis_server.pause(2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(RedisTimeout):
                await store.record(EVENTS[2:4])
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert reported == []
        assert pool_in_use(client) == 0

        async def written_once_redis_answers() -> bool:
            try:
                await store.record(EVENTS[2:4])
            except RedisTimeout:
                return False
            return True

        await apoll(written_once_redis_answers, what="the paused redis-server to answer again")
        assert pool_in_use(client) == 0
        days = sorted(e.day for e in EVENTS[:4])
        assert sorted([e.id async for e in store.export(days[0], days[-1])]) == sorted(e.id for e in EVENTS[:4])
    finally:
        loop.set_exception_handler(handler)
        await store.aclose()


async def test_the_writers_first_write_after_redis_closed_its_idle_connection_succeeds(redis_server, tmp_path):
    """Hostile testing: a Redis that closes idle clients (`timeout`, as managed Redis services
    set) closed the writer process's pooled connection between two quiet moments, and the
    next batch failed on it ("Connection closed by server"): a usage write failure counted
    and logged for every lull, retried 0.2 s later. The writer's client now tries a closed
    connection's command once more on a new one, as the gateway's own client does (a write
    that may have reached Redis counts once: events carry their ids)."""
    import redis as sync_redis

    store = store_for(redis_server.url, tmp_path)  # the writer process's store and client
    admin = sync_redis.Redis(port=redis_server.port)
    try:
        assert await store.record(EVENTS[:2]) == 2
        admin.config_set("timeout", 1)

        def idle_connection_closed() -> bool:
            return len(admin.client_list()) == 1  # only this admin client is left

        poll(idle_connection_closed, what="redis-server to close the writer's idle connection", timeout=10)
        assert await store.record(EVENTS[2:4]) == 2
        days = sorted(e.day for e in EVENTS[:4])
        assert sorted([e.id async for e in store.export(days[0], days[-1])]) == sorted(e.id for e in EVENTS[:4])
    finally:
        admin.close()
        await store.aclose()
