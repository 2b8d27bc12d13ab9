"""Rankings of one tenant's traffic: a key's or a team's per-day rows, rebuilt from the ledger.

The stored aggregates (`gateway.usage.aggregates`) are global: they have no key or team
dimension, and adding one would multiply every write for a view few people open. A view
scoped to a key or a team (what a client key may see of `/v1/rankings`, or the admin's
`?key=` / `?team=` filters) is rebuilt instead from the raw events of the days it reads,
filtered, through the same `IncrementBatch` the stores apply: it ranks exactly as a store
holding only that tenant's calls would. The cost is one pass over the span's events (every
tenant's: the stores index events by day only), kept and refreshed by the caller like the
global answers. Events past the store's event retention are gone, so a scoped view reaches
back only as far as `GATEWAY_USAGE_EVENTS_RETENTION_DAYS` (0: every event is kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from gateway.usage.aggregates import MAX_APPS_PER_DAY, DayApps, DayRows, IncrementBatch
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import Period
from gateway.usage.store import UsageStore

_CHUNK = 2000  # events summed per hop to a thread: the loop never folds a long span itself


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose calls a view counts: one key's, one team's, both (a key within a team), or all."""

    key: str | None = None
    team: str | None = None

    @property
    def everything(self) -> bool:
        return self.key is None and self.team is None

    def admits(self, event: UsageEvent) -> bool:
        return (self.key is None or event.key == self.key) and (self.team is None or event.team == self.team)

    def to_json(self) -> dict[str, str | None]:
        return {"key": self.key, "team": self.team}


def _fold(batch: IncrementBatch, events: Iterable[UsageEvent]) -> None:
    for event in events:
        batch.add(event)


def _rows(batch: IncrementBatch, spans: Mapping[str, Period]) -> dict[date, DayRows]:
    """What `read_aggregates(spans)` of a store holding only these events would answer."""
    days: dict[date, DayRows] = {}
    for (day, part, name), value in batch.sums.items():
        span = spans.get(part)
        if span is not None and span.start <= day <= span.end:
            days.setdefault(day, DayRows()).parts.setdefault(part, {})[name] = value
    apps = spans.get("app")
    if apps is not None:
        for (day, app), title in batch.titles.items():
            if apps.start <= day <= apps.end:
                days.setdefault(day, DayRows()).titles[app] = title
    return days


async def scoped_aggregates(
    store: UsageStore, spans: Mapping[str, Period], scope: Scope, max_apps: int = MAX_APPS_PER_DAY
) -> dict[date, DayRows]:
    """Per-day rows of the calls `scope` admits, shaped as `UsageStore.read_aggregates`."""
    if not spans:
        return {}
    start = min(span.start for span in spans.values())
    end = max(span.end for span in spans.values())
    batch = IncrementBatch(lambda day: DayApps((), max_apps))
    chunk: list[UsageEvent] = []
    async for event in store.export(start, end):
        # Every row, as the stores count them: failed attempts before a call's final row are
        # no requests but count in their provider's uptime (`IncrementBatch.add`).
        if scope.admits(event):
            chunk.append(event)
            if len(chunk) >= _CHUNK:
                await asyncio.to_thread(_fold, batch, chunk)
                chunk = []
    if chunk:
        await asyncio.to_thread(_fold, batch, chunk)
    return await asyncio.to_thread(_rows, batch, spans)
