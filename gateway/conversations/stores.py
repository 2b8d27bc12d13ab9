"""Choosing the stored-responses store the settings name: Redis when GATEWAY_REDIS_URL is
set (the gateway's own client, shared), else SQLite in the data directory, beside the usage
store. Retention and the record size limit are settings too (GATEWAY_RESPONSES_*)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.conversations.store import DAY_S, ResponseStore, StoreLimits

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.settings import Settings

FILE_NAME = "responses.sqlite3"


def limits_of(settings: Settings) -> StoreLimits:
    return StoreLimits(
        settings.responses_retention_days * DAY_S,
        settings.responses_max_record_bytes,
        settings.responses_max_bytes_per_key,
    )


def open_response_store(settings: Settings, redis: Redis | None) -> ResponseStore:
    limits = limits_of(settings)
    if settings.redis_url and redis is not None:
        from gateway.conversations.redis_store import RedisResponseStore

        return RedisResponseStore(redis, limits)
    from gateway.conversations.sqlite_store import SqliteResponseStore

    return SqliteResponseStore(settings.data_dir / FILE_NAME, limits)
