"""Spend reports: what each key, team or model spent over a UTC day, ISO week or calendar
month, summed from the ledger's events. Pure functions; `gateway usage report` prints them.

Windows follow the budgets (gateway.tenants.limits counts spend per UTC day and calendar
month), so a key's monthly line here is what its monthly budget is measured against; a week
is the ISO week (Monday to Sunday). Everything counts the row that ended each call (`final`),
which holds what the key was billed for the whole call (a stream continued elsewhere: every
token the client received, once); the rows of failed attempts before it are the operator's
upstream cost, never the key's (`gateway.usage.events`). Cost is summed in nano-dollars, so
the total is exactly the sum of the rows.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.usage.aggregates import NANOS_PER_USD, SUM_CAP, cost_nanos
from gateway.usage.events import UsageEvent

GROUPINGS = ("key", "team", "model")
WINDOWS = ("day", "week", "month")
NO_KEY, NO_TEAM = "(no key)", "(no team)"


def window_of(name: str, end: date) -> tuple[date, date]:
    """The first and last UTC day of the `name` window that holds `end`."""
    if name == "day":
        return end, end
    # Computed without stepping past the window: the week or month holding 9999-12-31 ends
    # there (a day after it overflowed `date`: a traceback from `gateway usage report`).
    if name == "week":
        start = end - timedelta(days=end.weekday())
        return start, end + timedelta(days=min(6 - end.weekday(), (date.max - end).days))
    if name == "month":
        return end.replace(day=1), end.replace(day=calendar.monthrange(end.year, end.month)[1])
    raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {name!r}")


@dataclass(slots=True)
class SpendLine:
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanos: int = 0

    def add(self, event: UsageEvent) -> None:
        if not event.final:
            return  # a failed attempt's row: the operator's cost, not billed to the key
        self.requests += 1
        self.failed += 0 if event.succeeded else 1
        self.prompt_tokens += event.prompt_tokens
        self.completion_tokens += event.completion_tokens
        self.cost_nanos += cost_nanos(event.cost)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_nanos / NANOS_PER_USD,
        }


@dataclass(frozen=True, slots=True)
class DaySpend:
    """What one key, as a member of one team, was billed on one UTC day: its final rows' cost."""

    key: str | None
    team: str | None
    day: date
    cost_nanos: int


class DaySpends:
    """Sums the billed cost of events per (key, team, day), for calls made with a key or team."""

    __slots__ = ("_sums",)

    def __init__(self) -> None:
        self._sums: dict[tuple[str | None, str | None, date], int] = {}

    def add(self, event: UsageEvent) -> None:
        if event.final and (event.key or event.team):
            at = (event.key, event.team, event.day)
            self._sums[at] = self._sums.get(at, 0) + cost_nanos(event.cost)

    def rows(self) -> list[DaySpend]:
        return [
            DaySpend(key, team, day, min(nanos, SUM_CAP)) for (key, team, day), nanos in self._sums.items() if nanos
        ]


def _name(event: UsageEvent, by: str) -> str:
    if by == "key":
        return event.key or NO_KEY
    if by == "team":
        return event.team or NO_TEAM
    return event.model


def spend_report(events: Iterable[UsageEvent], by: str, window: str, start: date, end: date) -> dict[str, Any]:
    """Spend per `by` (key, team or model), most expensive first (then most tokens, then name)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    lines: dict[str, SpendLine] = {}
    total = SpendLine()
    for event in events:
        if not start <= event.day <= end:
            continue
        name = _name(event, by)
        line = lines.get(name)
        if line is None:
            line = lines[name] = SpendLine()
        line.add(event)
        total.add(event)
    ordered = sorted(
        lines.items(),
        key=lambda item: (-item[1].cost_nanos, -(item[1].prompt_tokens + item[1].completion_tokens), item[0]),
    )
    return {
        "by": by,
        "window": {"name": window, "start": start.isoformat(), "end": end.isoformat()},
        "rows": [{by: name, **line.to_json()} for name, line in ordered],
        "totals": total.to_json(),
    }
