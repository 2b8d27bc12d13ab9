"""The per-day counters both stores keep, so that a ranking reads a handful of rows per day.

An event becomes a list of integer increments (`event_increments`), each addressed by
(part, field) within its UTC day. Both stores apply exactly these increments (SQLite with
upserts, Redis with HINCRBY), so they hold identical aggregates and rank identically.

Parts and their fields (the unit separator joins the names; header-supplied names are
cleaned of control characters before they get here):

- `model`:    model|metric                  tokens, requests, failures, cost per model
- `category`: category|model|metric         tokens and requests per category, for its leaders
- `app`:      app|metric                    tokens and requests per app, for top and trending apps
- `offer`:    backend|model|metric          everything, per model as served by one backend
- `hist`:     backend|model|measure|bucket  histograms of speed, latency, TTFT (medians), and
              the attempts' outcomes (`attempts`: bucket 1 answered, 0 failed by the provider)

Only a call's final row is a request (`model`, `category`, `app`, `offer`, the timings); every
row, the failed attempts before a call's final row included, counts in its offer's
`attempts` outcomes, from which the rankings' provider uptime is read (`attempt_outcome`).

Authors and backends are not kept separately: each is a function of the `model`/`offer` keys.
App titles are not counters; they travel beside the increments (`titles`).

Apps are named by clients (HTTP-Referer), so a day's app table is bounded: the first
`max_apps` apps of a UTC day (in the order the store writes their events) keep a row of
their own; calls of any later app count in one `OTHER_APPS` row, so totals stay exact and
a client inventing names grows nothing (`DayApps`, applied by both stores as they write).
Cost is kept in nano-dollars so that sums are exact integers.
"""

from __future__ import annotations

import functools
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gateway.proxy.usage import TokenCounts
from gateway.usage.events import UsageEvent

SEP = "\x1f"
PARTS = ("model", "category", "app", "offer", "hist")

# Histogram buckets are powers of 2**(1/8): a median read from them is within about 4.5%.
_BUCKET_BASE: float = 2**0.125
_LOG_BASE = math.log(_BUCKET_BASE)
MEASURES = ("tps", "latency_ms", "ttft_ms")

NANOS_PER_USD = 1_000_000_000

# The app row of the calls of apps past a day's limit. A control character keeps it apart
# from every client-supplied name (`clean_label` removes them).
OTHER_APPS = "\x1eothers"
MAX_APPS_PER_DAY = 1_000


def bucket_of(value: float) -> int:
    return math.floor(math.log(value) / _LOG_BASE)


def bucket_value(bucket: int, fraction: float = 0.5) -> float:
    """A value `fraction` of the way through a bucket in log space (0.5: its geometric middle)."""
    return float(_BUCKET_BASE ** (bucket + fraction))


# The most a stored sum holds (a day's cost of one model, a key's spend of a day): inside the
# stores' 64-bit integers whatever the calls add up to. Each call is bounded (MAX_COST_USD,
# MAX_TOKENS_PER_CALL), their sum is not: nine thousand calls at the bound would overflow it,
# and a write that fails holds every tenant's events of its batch. Sums stop here instead.
SUM_CAP = 9_000_000_000_000_000_000


def cost_nanos(cost_usd: float) -> int:
    return round(cost_usd * NANOS_PER_USD)


@dataclass(slots=True)
class Counters(TokenCounts):
    """Sums over calls: the token fields of `Usage`, and how many calls, failures, estimates."""

    requests: int = 0
    failed: int = 0
    estimated: int = 0
    cost_nanos: int = 0

    @property
    def tokens(self) -> int:
        return self.total_tokens

    def add(self, other: Counters) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.requests += other.requests
        self.failed += other.failed
        self.estimated += other.estimated
        self.cost_nanos += other.cost_nanos


# metric name in storage -> Counters attribute
_METRICS = {
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "reasoning": "reasoning_tokens",
    "cached": "cached_tokens",
    "requests": "requests",
    "failed": "failed",
    "estimated": "estimated",
    "cost_nanos": "cost_nanos",
}


# What each part keeps: models and offers everything, categories and apps what they rank by.
_SLIM = ("prompt", "completion", "requests")
_PART_METRICS = {"model": None, "offer": None, "category": _SLIM, "app": _SLIM}

METRICS = tuple(_METRICS)  # the order of `metric_values`

# Events of one group (model, backend, category, app) touch the same fields, only by
# different amounts: field names are built once per group, not once per event.
Group = tuple[str, str, str, str | None]
GroupFields = tuple[tuple[tuple[str, str], ...], ...]  # per metric: the (part, field) pairs it increments


def group_of(event: UsageEvent) -> Group:
    return (event.model, event.backend, event.category, event.app)


@functools.lru_cache(maxsize=4096)
def group_fields(group: Group) -> GroupFields:
    """For each metric (in METRICS order), the (part, field) pairs an event of `group` adds it to."""
    model, backend, category, app = group
    prefixes = [("model", model), ("offer", f"{backend}{SEP}{model}"), ("category", f"{category}{SEP}{model}")]
    if app:
        prefixes.append(("app", app))
    return tuple(
        tuple(
            (part, f"{prefix}{SEP}{metric}")
            for part, prefix in prefixes
            if (kept := _PART_METRICS[part]) is None or metric in kept
        )
        for metric in METRICS
    )


def metric_values(event: UsageEvent) -> tuple[int, ...]:
    """The event's counters, in METRICS order."""
    return (
        event.prompt_tokens,
        event.completion_tokens,
        event.reasoning_tokens,
        event.cached_tokens,
        1,
        0 if event.succeeded else 1,
        1 if event.estimated else 0,
        cost_nanos(event.cost),
    )


ATTEMPTS = "attempts"  # the `hist` measure of attempt outcomes: bucket 1 answered, 0 failed
ANSWERED, FAILED = 1, 0

# Error labels of attempts that failed because of the request, not the provider.
# An answer over `max_response_bytes` is the request's doing (how much it asked for), as the
# circuit breakers take it too.
_CLIENT_CAUSED = frozenset(
    {"context_length", "context_length_exceeded", "client_disconnected", "cancelled", "response_too_large"}
)
# ... and of calls the gateway itself ended: its shutdown's grace period ran out mid-answer, or
# its own fault after the provider had answered (a translation): neither says the provider failed.
_GATEWAY_CAUSED = frozenset({"shutdown", "internal_error"})


def attempt_outcome(event: UsageEvent) -> int | None:
    """Whether this attempt counts for its provider's uptime (ANSWERED) or against it (FAILED);
    None when the request, not the provider, decided it: the client left (499), the prompt did
    not fit, or the upstream refused the request itself (a 4xx other than 408 and 429); and
    when the gateway did (`shutdown`, `internal_error`). A 4xx that says the gateway's backend
    is misconfigured (a wrong `upstream_id`) is the provider entry's failure."""
    if event.status < 400:
        return ANSWERED
    error = event.error
    if event.status == 499 or error in _CLIENT_CAUSED or error in _GATEWAY_CAUSED:
        return None
    if event.status < 500 and event.status not in (408, 429) and error not in ("misconfigured", "rate_limited"):
        return None
    return FAILED


def hist_buckets(event: UsageEvent) -> list[tuple[str, int]]:
    """(measure, bucket) of what an event counts in its offer's histograms: each timing of a
    successful final row, and every row's attempt outcome."""
    outcome = attempt_outcome(event)
    out = [] if outcome is None else [(ATTEMPTS, outcome)]
    if not event.final or not event.succeeded:
        return out
    out.extend(
        (measure, bucket_of(value))
        for measure, value in (
            ("tps", event.tokens_per_second),
            ("latency_ms", event.latency_ms),
            ("ttft_ms", event.ttft_ms),
        )
        if value is not None and value > 0
    )
    return out


def hist_field(backend: str, model: str, measure: str, bucket: int) -> str:
    return f"{backend}{SEP}{model}{SEP}{measure}{SEP}{bucket}"


def event_increments(event: UsageEvent) -> list[tuple[str, str, int]]:
    """(part, field, increment) for one event, all within `event.day`: the definition every
    write path applies (`IncrementBatch` and the Redis script sum exactly these). A failed
    attempt before a call's final row only counts its attempt outcome."""
    out: list[tuple[str, str, int]] = []
    if event.final:
        for fields, value in zip(group_fields(group_of(event)), metric_values(event)):
            if value:
                out.extend((part, name, value) for part, name in fields)
    out.extend(
        ("hist", hist_field(event.backend, event.model, measure, bucket), 1) for measure, bucket in hist_buckets(event)
    )
    return out


class DayApps:
    """The apps one day's table holds, and which row a call of an app goes to.

    An app already there keeps its row; a new one gets a row while fewer than `limit` apps
    have one, else it counts in `OTHER_APPS` (whose row is not one of the `limit`).
    """

    __slots__ = ("known", "limit")

    def __init__(self, known: Iterable[str], limit: int) -> None:
        self.known = set(known)
        self.known.discard(OTHER_APPS)
        self.limit = limit

    def row_of(self, app: str) -> str:
        known = self.known
        if app in known:
            return app
        if len(known) < self.limit:
            known.add(app)
            return app
        return OTHER_APPS


class IncrementBatch:
    """Increments of many events summed per (day, part, field): what a bulk write applies.

    Events are summed per day and group first (a few integer additions per event); field
    names are spelled out once per group, when `sums` is read. With `apps` (the day's
    `DayApps`, built by the store from what it holds), an app past the day's limit counts
    in `OTHER_APPS`, and its title is not kept; without it apps are not bounded (bulk loads
    of known history).
    """

    def __init__(self, apps: Callable[[date], DayApps] | None = None) -> None:
        self._groups: dict[tuple[date, Group], tuple[int, ...]] = {}
        self._hist: dict[tuple[date, str, str, str, int], int] = defaultdict(int)
        self.titles: dict[tuple[date, str], str] = {}
        self._apps = apps
        self._day_apps: dict[date, DayApps] = {}

    def add(self, event: UsageEvent, times: int = 1, day: date | None = None) -> None:
        """Count `event` (`times` times, on `day` if given: bulk loads of synthetic history)."""
        day = event.day if day is None else day
        if not event.final:  # a failed attempt before the call's final row: its outcome only
            for measure, bucket in hist_buckets(event):
                self._hist[(day, event.backend, event.model, measure, bucket)] += times
            return
        app = event.app
        if app and self._apps is not None:
            apps = self._day_apps.get(day)
            if apps is None:
                apps = self._day_apps[day] = self._apps(day)
            app = apps.row_of(app)
        key = (day, (event.model, event.backend, event.category, app))
        values = metric_values(event)
        if times != 1:
            values = tuple(value * times for value in values)
        totals = self._groups.get(key)
        self._groups[key] = values if totals is None else tuple(map(operator.add, totals, values))
        for measure, bucket in hist_buckets(event):
            self._hist[(day, event.backend, event.model, measure, bucket)] += times
        if app and app == event.app and event.app_title:
            self.titles[(day, app)] = event.app_title

    @property
    def sums(self) -> dict[tuple[date, str, str], int]:
        sums: dict[tuple[date, str, str], int] = defaultdict(int)
        for (day, group), totals in self._groups.items():
            for fields, value in zip(group_fields(group), totals):
                if value:
                    for part, name in fields:
                        sums[(day, part, name)] += value
        for (day, backend, model, measure, bucket), count in self._hist.items():
            sums[(day, "hist", hist_field(backend, model, measure, bucket))] += count
        return {at: value if value <= SUM_CAP else SUM_CAP for at, value in sums.items()}


# A stored field name, as the store returns it (Redis: bytes; SQLite: str).
FieldName = str | bytes


@dataclass
class DayRows:
    """One UTC day's stored rows as read, unparsed: part -> field -> value, and app titles.

    Values may be ints or the bytes of one (Redis answers bytes); rankings merge the rows of
    a period first and parse only the merged result, which keeps a month's ranking cheap.
    """

    parts: dict[str, dict[FieldName, int | bytes]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)


def merge_rows(days: Mapping[date, DayRows], dates: Iterable[date], part: str) -> dict[FieldName, int]:
    """The sum of one part's rows over some days."""
    total: dict[FieldName, int] = {}
    for day in dates:
        rows = days.get(day)
        source = rows.parts.get(part) if rows is not None else None
        if not source:
            continue
        if not total:
            total = {name: int(value) for name, value in source.items()}
            continue
        get = total.get
        for name, value in source.items():
            total[name] = get(name, 0) + int(value)
    return total


def _text(name: FieldName) -> str:
    return name.decode() if isinstance(name, bytes) else name


def parse_counters(rows: Mapping[FieldName, int], width: int) -> dict[Any, Counters]:
    """Counters keyed by the field's names (a string for width 1, else a tuple: hence Any)."""
    out: dict[Any, Counters] = {}
    for name, value in rows.items():
        *names, metric = _text(name).split(SEP)
        attribute = _METRICS.get(metric)
        if attribute is None or len(names) != width:
            continue  # a metric from a newer version: ignore rather than fail a ranking
        key = names[0] if width == 1 else tuple(names)
        counters = out.get(key)
        if counters is None:
            counters = out[key] = Counters()
        setattr(counters, attribute, getattr(counters, attribute) + value)
    return out


def parse_histograms(rows: Mapping[FieldName, int]) -> dict[tuple[str, str, str], dict[int, int]]:
    """(backend, model, measure) -> bucket -> count. A row that does not split into those four
    (a name holding the separator, from a store written before names were checked) is skipped,
    as `parse_counters` skips what it cannot read: one bad row must not fail every ranking."""
    out: dict[tuple[str, str, str], dict[int, int]] = {}
    for name, value in rows.items():
        parts = _text(name).split(SEP)
        if len(parts) != 4 or not parts[3].isdigit():
            continue
        backend, model, measure, bucket = parts
        out.setdefault((backend, model, measure), {})[int(bucket)] = value
    return out
