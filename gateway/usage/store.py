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
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.usage.aggregates import DayRows
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import Period, Prices, RankingQuery, SeriesQuery, compute_rankings, compute_series

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a store keeps what it holds, in days; 0 keeps it.

    Raw events (SQLite's `events` rows, Redis's event streams) are for export and can be
    large; aggregates (per-day counters) are what rankings read, and are small.
    """

    events_days: int = 0
    aggregates_days: int = 0

    @property
    def prunes(self) -> bool:
        return bool(self.events_days or self.aggregates_days)


KEEP_EVERYTHING = Retention()


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


def retention_of(settings: Settings) -> Retention:
    return Retention(settings.usage_events_retention_days, settings.usage_aggregates_retention_days)


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
    )


def store_for(
    redis_url: str | None,
    data_dir: Path,
    redis: Redis | None = None,
    *,
    retention: Retention = KEEP_EVERYTHING,
    events_redis_url: str | None = None,
    prunes: bool = True,
) -> UsageStore:
    """The store itself, from the settings that choose it (what the writer process is given)."""
    if redis_url:
        from redis.asyncio import Redis

        from gateway.usage.redis_store import RedisUsageStore

        def connect(url: str) -> Redis:
            return Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0)

        client = redis or connect(redis_url)
        # A second URL for the raw streams; the same URL again is the one Redis.
        events = connect(events_redis_url) if events_redis_url and events_redis_url != redis_url else None
        return RedisUsageStore(
            client, owns_client=redis is None, retention=retention, events_redis=events, owns_events_client=True
        )
    from gateway.usage.sqlite_store import SqliteUsageStore

    return SqliteUsageStore(Path(data_dir) / "usage.sqlite3", retention=retention if prunes else KEEP_EVERYTHING)
