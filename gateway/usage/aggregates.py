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
- `hist`:     backend|model|measure|bucket  histograms of speed, latency, TTFT (medians)

Authors and backends are not kept separately: each is a function of the `model`/`offer` keys.
App titles are not counters; they travel beside the increments (`titles`).
Cost is kept in nano-dollars so that sums are exact integers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from gateway.usage.events import UsageEvent

SEP = "\x1f"
PARTS = ("model", "category", "app", "offer", "hist")

# Histogram buckets are powers of 2**(1/8): a median read from them is within about 4.5%.
_BUCKET_BASE = 2 ** 0.125
_LOG_BASE = math.log(_BUCKET_BASE)
MEASURES = ("tps", "latency_ms", "ttft_ms")

NANOS_PER_USD = 1_000_000_000


def bucket_of(value: float) -> int:
    return math.floor(math.log(value) / _LOG_BASE)


def bucket_value(bucket: int, fraction: float = 0.5) -> float:
    """A value `fraction` of the way through a bucket in log space (0.5: its geometric middle)."""
    return _BUCKET_BASE ** (bucket + fraction)


def cost_nanos(cost_usd: float) -> int:
    return round(cost_usd * NANOS_PER_USD)


@dataclass(slots=True)
class Counters:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    failed: int = 0
    estimated: int = 0
    cost_nanos: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "Counters") -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


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


def _counter_metrics(event: UsageEvent) -> list[tuple[str, int]]:
    values = (
        ("prompt", event.prompt_tokens),
        ("completion", event.completion_tokens),
        ("reasoning", event.reasoning_tokens),
        ("cached", event.cached_tokens),
        ("requests", 1),
        ("failed", 0 if event.succeeded else 1),
        ("estimated", 1 if event.estimated else 0),
        ("cost_nanos", cost_nanos(event.cost)),
    )
    return [(metric, value) for metric, value in values if value]


def event_increments(event: UsageEvent) -> list[tuple[str, str, int]]:
    """(part, field, increment) for one event, all within `event.day`."""
    metrics = _counter_metrics(event)
    out: list[tuple[str, str, int]] = []
    prefixes = [("model", event.model), ("offer", f"{event.backend}{SEP}{event.model}"),
                ("category", f"{event.category}{SEP}{event.model}")]
    if event.app:
        prefixes.append(("app", event.app))
    for part, prefix in prefixes:
        kept = _PART_METRICS[part]
        out.extend((part, f"{prefix}{SEP}{metric}", value) for metric, value in metrics if kept is None or metric in kept)
    if event.succeeded:
        for measure, value in (("tps", event.tokens_per_second), ("latency_ms", event.latency_ms), ("ttft_ms", event.ttft_ms)):
            if value is not None and value > 0:
                out.append(("hist", f"{event.backend}{SEP}{event.model}{SEP}{measure}{SEP}{bucket_of(value)}", 1))
    return out


class IncrementBatch:
    """Increments of many events summed per (day, part, field): what a bulk write applies."""

    def __init__(self) -> None:
        self.sums: dict[tuple[date, str, str], int] = defaultdict(int)
        self.titles: dict[tuple[date, str], str] = {}

    def add(self, event: UsageEvent) -> None:
        day = event.day
        sums = self.sums
        for part, name, value in event_increments(event):
            sums[(day, part, name)] += value
        if event.app and event.app_title:
            self.titles[(day, event.app)] = event.app_title


# A stored field name, as the store returns it (Redis: bytes; SQLite: str).
FieldName = str | bytes


@dataclass
class DayRows:
    """One UTC day's stored rows as read, unparsed: part -> field -> value, and app titles.

    Values may be ints or the bytes of one (Redis answers bytes); rankings merge the rows of
    a period first and parse only the merged result, which keeps a month's ranking cheap.
    """

    parts: dict[str, dict] = field(default_factory=dict)
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


def parse_counters(rows: Mapping[FieldName, int], width: int) -> dict:
    """Counters keyed by the field's names (a string for width 1, else a tuple)."""
    out: dict = {}
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
    """(backend, model, measure) -> bucket -> count."""
    out: dict[tuple[str, str, str], dict[int, int]] = {}
    for name, value in rows.items():
        backend, model, measure, bucket = _text(name).split(SEP)
        out.setdefault((backend, model, measure), {})[int(bucket)] = value
    return out
