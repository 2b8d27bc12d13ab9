"""Fixtures the usage tests share."""

from __future__ import annotations

import pytest

from gateway.usage.redis_store import RedisUsageStore
from gateway.usage.sqlite_store import SqliteUsageStore


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path):
    """Each store implementation in turn (the Redis one on a private redis-server)."""
    if request.param == "sqlite":
        s = SqliteUsageStore(tmp_path / "usage.sqlite3")
    else:
        from redis.asyncio import Redis

        server = request.getfixturevalue("redis_server")
        s = RedisUsageStore(Redis.from_url(server.url), owns_client=True)
    yield s
    await s.aclose()
