"""The one interface every usage store implements, and how long a store keeps what it holds.

A store keeps two things: the events themselves (for export) and the per-day aggregates of
`gateway.usage.aggregates` (for rankings). `record` is idempotent by event id, so a batch
retried after an outage, or a file imported twice, never counts a call twice. Rankings are
computed by the pure functions of `gateway.usage.rankings` from what `read_aggregates`
returns, so every store ranks identically.

Which implementation the settings choose is `gateway.usage.stores`: this module imports none
of them, so an implementation can import the interface without a cycle.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.usage.aggregates import DayRows
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import (
    Period,
    Prices,
    RankingQuery,
    SeriesQuery,
    compute_rankings,
    compute_series,
    today_utc,
)
from gateway.usage.spend import DaySpend, DaySpends


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

    @abc.abstractmethod
    async def ensure_open(self) -> None:
        """Open the store now and raise its failure here (a file that cannot be made or is
        not a database, a Redis that does not answer) rather than at the first read or write:
        for a command that must not report anything about a store it cannot use, such as an
        import of no events, which would otherwise never touch it."""

    async def aclose(self) -> None:
        return None

    async def day_spends(self, first_day: date) -> list[DaySpend]:
        """What each key and team was billed per UTC day from `first_day` on (the final rows'
        cost): without Redis, the in-memory budgets start from it (`RateLimiter.seed_spend`).
        This reads every event; a store that can sum them where they lie does so instead."""
        sums = DaySpends()
        async for event in self.export(first_day, today_utc() + timedelta(days=1)):
            sums.add(event)
        return sums.rows()

    async def import_events(self, events: Sequence[UsageEvent]) -> int:
        """Load history (e.g. a JSONL file): the same idempotent path as live recording."""
        return await self.record(events)

    # The computations take tens to hundreds of milliseconds for long windows: on a thread,
    # so that a ranking never stalls the proxied calls sharing this event loop.
    async def rankings(self, query: RankingQuery, prices: Prices | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(compute_rankings, query, await self.read_aggregates(query.spans()), prices)

    async def series(self, query: SeriesQuery) -> dict[str, Any]:
        return await asyncio.to_thread(compute_series, query, await self.read_aggregates(query.spans()))
