"""The one interface every usage store implements, and the choice of store from the settings.

A store keeps two things: the events themselves (for export) and the per-day aggregates of
`gateway.usage.aggregates` (for rankings). `record` is idempotent by event id, so a batch
retried after an outage, or a file imported twice, never counts a call twice. Rankings are
computed by the pure functions of `gateway.usage.rankings` from what `read_aggregates`
returns, so every store ranks identically.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.usage.aggregates import MAX_APPS_PER_DAY, DayRows
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import Period, Prices, RankingQuery, SeriesQuery, compute_rankings, compute_series

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.settings import Settings


class UsageStore(abc.ABC):
    """Where usage events and their aggregates live."""

    name: str = "store"

    @abc.abstractmethod
    async def record(self, events: Sequence[UsageEvent]) -> int:
        """Store the events whose ids were never stored; return how many were new."""

    @abc.abstractmethod
    async def read_aggregates(self, spans: Mapping[str, Period]) -> dict[date, DayRows]:
        """Per-day aggregate rows: for each part (model, app, ...) the days of its span."""

    @abc.abstractmethod
    def export(self, start: date, end: date) -> AsyncIterator[UsageEvent]:
        """Events of the UTC days from `start` to `end` inclusive, day by day."""

    async def aclose(self) -> None:
        return None

    async def import_events(self, events: Sequence[UsageEvent]) -> int:
        """Load history (e.g. a JSONL file): the same idempotent path as live recording."""
        return await self.record(events)

    # The computations take tens to hundreds of milliseconds for long windows: on a thread,
    # so that a ranking never stalls the proxied calls sharing this event loop.
    async def rankings(self, query: RankingQuery, prices: Prices | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(compute_rankings, query, await self.read_aggregates(query.spans()), prices)

    async def series(self, query: SeriesQuery) -> dict[str, Any]:
        return await asyncio.to_thread(compute_series, query, await self.read_aggregates(query.spans()))


def open_store(settings: Settings, redis: Redis | None = None) -> UsageStore:
    """Redis when GATEWAY_REDIS_URL is set (for several replicas), else SQLite in the data dir."""
    return store_for(settings.redis_url, settings.data_dir, redis, settings.usage_max_apps_per_day)


def store_for(
    redis_url: str | None, data_dir: Path, redis: Redis | None = None, max_apps_per_day: int = MAX_APPS_PER_DAY
) -> UsageStore:
    """The store itself, from the settings that shape it (the writer process has only these)."""
    if redis_url:
        from redis.asyncio import Redis

        from gateway.usage.redis_store import RedisUsageStore

        client = redis or Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
        return RedisUsageStore(client, owns_client=redis is None, max_apps_per_day=max_apps_per_day)
    from gateway.usage.sqlite_store import SqliteUsageStore

    return SqliteUsageStore(Path(data_dir) / "usage.sqlite3", max_apps_per_day=max_apps_per_day)
