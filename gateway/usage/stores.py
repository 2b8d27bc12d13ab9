"""Choosing and opening the usage store the settings name: Redis when GATEWAY_REDIS_URL is
set, else SQLite in the data directory.

Apart from `store` (the interface) so that the interface imports no implementation; this
module imports them, and nothing imports it back but the gateway's and the CLI's entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.usage.aggregates import MAX_APPS_PER_DAY
from gateway.usage.store import KEEP_EVERYTHING, Retention, UsageStore

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.settings import Settings


def retention_of(settings: Settings) -> Retention:
    return Retention(settings.usage_events_retention_days, settings.usage_aggregates_retention_days)


SQLITE_FILE = "usage.sqlite3"  # the embedded ledger, in the data directory


def open_store(settings: Settings, redis: Redis | None = None, *, prunes: bool = False) -> UsageStore:
    """Redis when GATEWAY_REDIS_URL is set (for several replicas), else SQLite in the data dir.

    Only the store the gateway writes with makes SQLite's retention deletes (`prunes`; the
    writer process's, or the gateway's own with GATEWAY_USAGE_WRITER=inline). The CLI's does
    not: history older than the retention can be imported, and imported again without being
    counted twice, until the gateway's next hourly delete."""
    return store_for(
        settings.redis_url,
        settings.data_dir,
        redis,
        retention=retention_of(settings),
        events_redis_url=settings.redis_events_url,
        prunes=prunes,
        max_apps_per_day=settings.usage_max_apps_per_day,
    )


def store_for(
    redis_url: str | None,
    data_dir: Path,
    redis: Redis | None = None,
    *,
    retention: Retention = KEEP_EVERYTHING,
    events_redis_url: str | None = None,
    prunes: bool = True,
    max_apps_per_day: int = MAX_APPS_PER_DAY,
) -> UsageStore:
    """The store itself, from the settings that choose it (what the writer process is given)."""
    if redis_url:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        from gateway.usage.redis_store import RedisUsageStore

        def connect(url: str) -> Redis:
            # A command on a pooled connection Redis has closed (idle past its `timeout`, or a
            # restart) is tried once more on a new one: the writer's first batch after every
            # lull failed on it, a usage write failure counted and logged each time. Not on a
            # timeout (the command may be running; a hung Redis would be waited on twice); a
            # write sent twice counts once, events carry their ids.
            retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
            return Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0, retry=retry)

        client = redis or connect(redis_url)
        # A second URL for the raw streams; the same URL again is the one Redis.
        events = connect(events_redis_url) if events_redis_url and events_redis_url != redis_url else None
        return RedisUsageStore(
            client,
            owns_client=redis is None,
            retention=retention,
            events_redis=events,
            owns_events_client=True,
            max_apps_per_day=max_apps_per_day,
        )
    from gateway.usage.sqlite_store import SqliteUsageStore

    return SqliteUsageStore(
        Path(data_dir) / SQLITE_FILE,
        retention=retention if prunes else KEEP_EVERYTHING,
        max_apps_per_day=max_apps_per_day,
    )
