"""Spend reports: what each key, team or model spent over a UTC day, ISO week or calendar
month, summed from the ledger's events. Pure functions; `gateway usage report` prints them.

Windows follow the budgets (gateway.tenants.limits counts spend per UTC day and calendar
month), so a key's monthly line here is what its monthly budget is measured against; a week
is the ISO week (Monday to Sunday). Everything counts the row that ended each call (`final`),
which holds what the key was billed for the whole call (a stream continued elsewhere: every
token the client received, once); the rows of failed attempts before it are the operator's
upstream cost, never the key's (`gateway.usage.events`). Cost is summed in nano-dollars, so
the total is exactly the sum of the rows.

Raw events are not always whole where the daily aggregates are: Redis trims a day's stream
at about a million entries and may keep the streams in an `allkeys-lru` Redis of their own,
and events older than their retention are pruned while the aggregates stay. So each day of
the report is checked against the aggregates' count of calls (`ledger_days`), and what the
raw events miss is said (`missing`), not left for the reader to take the rows as whole.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.usage.aggregates import NANOS_PER_USD, SUM_CAP, DayRows, cost_nanos, merge_rows, parse_counters
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


def ledger_days(days: Mapping[date, DayRows]) -> dict[date, tuple[int, int]]:
    """Per UTC day, the calls (final rows) and their cost in nano-dollars as the day's
    aggregates count them (its `model` rows): what the day's raw events add up to when none
    were lost."""
    out: dict[date, tuple[int, int]] = {}
    for day in days:
        counters = parse_counters(merge_rows(days, (day,), "model"), 1).values()
        requests = sum(c.requests for c in counters)
        if requests:
            out[day] = (requests, sum(c.cost_nanos for c in counters))
    return out


class SpendTally:
    """Spend per `by` (key, team or model) summed one event at a time, for the days `start`
    to `end`: what it holds grows with the names, never with the events (a busy month is tens
    of millions of them, a few hundred bytes each, once materialised)."""

    __slots__ = ("by", "counted", "end", "lines", "start", "total")

    def __init__(self, by: str, start: date, end: date) -> None:
        if by not in GROUPINGS:
            raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
        self.by, self.start, self.end = by, start, end
        self.lines: dict[str, SpendLine] = {}
        self.total = SpendLine()
        self.counted: dict[date, list[int]] = {}  # day -> [calls, nano-dollars] the events hold

    def add(self, event: UsageEvent) -> None:
        if not self.start <= event.day <= self.end:
            return
        name = _name(event, self.by)
        line = self.lines.get(name)
        if line is None:
            line = self.lines[name] = SpendLine()
        line.add(event)
        self.total.add(event)
        if event.final:
            day = self.counted.setdefault(event.day, [0, 0])
            day[0] += 1
            day[1] += cost_nanos(event.cost)

    def report(self, window: str, ledger: Mapping[date, tuple[int, int]] | None = None) -> dict[str, Any]:
        """The report, most expensive first (then most tokens, then name). With `ledger`
        (`ledger_days` of the window), the calls the events miss are `missing`."""
        ordered = sorted(
            self.lines.items(),
            key=lambda item: (-item[1].cost_nanos, -(item[1].prompt_tokens + item[1].completion_tokens), item[0]),
        )
        body: dict[str, Any] = {
            "by": self.by,
            "window": {"name": window, "start": self.start.isoformat(), "end": self.end.isoformat()},
            "rows": [{self.by: name, **line.to_json()} for name, line in ordered],
            "totals": self.total.to_json(),
        }
        missing = _missing(ledger or {}, self.counted, self.start, self.end)
        if missing is not None:
            body["missing"] = missing
        return body


def spend_report(
    events: Iterable[UsageEvent],
    by: str,
    window: str,
    start: date,
    end: date,
    ledger: Mapping[date, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """`SpendTally`'s report of `events`."""
    tally = SpendTally(by, start, end)
    for event in events:
        tally.add(event)
    return tally.report(window, ledger)


def _missing(
    ledger: Mapping[date, tuple[int, int]], counted: Mapping[date, list[int]], start: date, end: date
) -> dict[str, Any] | None:
    """The calls and cost the aggregates count and the events do not, and on which days;
    None when the events are whole (or hold more: aggregates pruned sooner)."""
    requests = nanos = 0
    days = []
    for day in sorted(ledger):
        calls, cost = ledger[day]
        held = counted.get(day, [0, 0])
        if start <= day <= end and calls > held[0]:
            requests += calls - held[0]
            nanos += max(cost - held[1], 0)
            days.append(day.isoformat())
    if not requests:
        return None
    return {"requests": requests, "cost_usd": nanos / NANOS_PER_USD, "days": days}
