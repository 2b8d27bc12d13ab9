"""The rankings, computed from per-day aggregates: pure functions, no I/O.

Definitions follow OpenRouter's public rankings. A window is the N UTC days ending on `end`
inclusive (day 1, week 7, month 30); the previous window is the N days just before.
tokens = prompt + completion; share = fraction of the window's chat tokens (embedding
models rank only in their category, `embeddings`; `totals` count every call); growth =
tokens / previous_tokens - 1 (None without previous tokens). An app's trend is its window
tokens minus the mean of its tokens in the three preceding windows. Ties are broken by name
so that every store and every replica produce the same order. The calls of apps past a
day's app limit (`gateway.usage.aggregates.OTHER_APPS`) rank among the top apps as one row,
`"app": "others"` titled "Others"; it is not an app, so it never trends.

Only a call's final row ranks (a model whose calls all failed has no tokens and stays off the
leaderboard). Failures show per provider instead: each throughput row (one model on one
backend) has its `uptime`, the share of its attempts in the window that answered, counting
the attempts that failed before another candidate answered (`uptime_fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.usage.aggregates import (
    ANSWERED,
    ATTEMPTS,
    FAILED,
    MEASURES,
    NANOS_PER_USD,
    OTHER_APPS,
    Counters,
    DayRows,
    bucket_value,
    merge_rows,
    parse_counters,
    parse_histograms,
)
from gateway.usage.events import EMBEDDINGS_CATEGORY, author_of

if TYPE_CHECKING:
    from gateway.config.snapshot import ConfigSnapshot

WINDOW_DAYS = {"day": 1, "week": 7, "month": 30}
TRENDING_WINDOWS = 3  # preceding windows an app's trend compares against
Prices = Mapping[tuple[str, str], tuple[float, float]]  # (backend, model) -> (input, output) USD per 1M
MAX_LIMIT = 500
MAX_SERIES_PERIODS = 120


class QueryError(ValueError):
    """A ranking parameter that cannot be used; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


_Query = TypeVar("_Query", "RankingQuery", "SeriesQuery")


def today_utc() -> date:
    return datetime.now(UTC).date()


def _parse_end(end: str | date | None) -> date:
    if end is None or end == "":
        return today_utc()
    if isinstance(end, date):
        return end
    try:
        return date.fromisoformat(end)
    except ValueError:
        raise QueryError("end", f"`end` must be a date as YYYY-MM-DD, got {end!r}.") from None


def _parse_int(name: str, value: str | int | None, default: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise QueryError(name, f"`{name}` must be an integer, got {value!r}.") from None
    if not 1 <= number <= high:
        raise QueryError(name, f"`{name}` must be between 1 and {high}, got {number}.")
    return number


def ranking_query(window: str | None, end: str | date | None, limit: str | int | None) -> RankingQuery:
    """The query the API and the CLI build from their parameters, validated the same way."""
    window = window or "week"
    if window not in WINDOW_DAYS:
        raise QueryError("window", f"`window` must be one of {', '.join(WINDOW_DAYS)}, got {window!r}.")
    return _readable(RankingQuery(window, _parse_end(end), _parse_int("limit", limit, 20, MAX_LIMIT)))


def series_query(
    granularity: str | None, periods: str | int | None, end: str | date | None, limit: str | int | None
) -> SeriesQuery:
    granularity = granularity or "week"
    if granularity not in ("day", "week"):
        raise QueryError("granularity", f"`granularity` must be day or week, got {granularity!r}.")
    default_periods = 8 if granularity == "week" else 28
    return _readable(
        SeriesQuery(
            granularity,
            _parse_int("periods", periods, default_periods, MAX_SERIES_PERIODS),
            _parse_end(end),
            _parse_int("limit", limit, 10, MAX_LIMIT),
        )
    )


def _readable(query: _Query) -> _Query:
    """`query`, once the days it reads are known to be dates: a QueryError naming `end` when
    they would start before year 1 (date arithmetic overflows there). Checked here, where
    the API and the CLI both build their queries: `gateway rankings --end 0001-01-01` was a
    traceback."""
    try:
        query.spans()
    except OverflowError:
        raise QueryError(
            "end",
            f"`end` {query.end.isoformat()} is too early: the days this query reads would start before 0001-01-01.",
        ) from None
    return query


def prices_of(snapshot: ConfigSnapshot) -> dict[tuple[str, str], tuple[float, float]]:
    """List prices of every configured offer, for the throughput table."""
    return {
        (name, model): (offer.input_price, offer.output_price)
        for name, backend in snapshot.config.backends.items()
        for model, offer in backend.models.items()
    }


@dataclass(frozen=True, slots=True)
class Period:
    """UTC days from `start` to `end`, both included."""

    start: date
    end: date

    @classmethod
    def ending(cls, end: date, days: int) -> Period:
        return cls(end - timedelta(days=days - 1), end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def before(self, count: int = 1) -> Period:
        """The period of the same length `count` periods earlier."""
        shift = timedelta(days=self.days * count)
        return Period(self.start - shift, self.end - shift)

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "days": self.days}


@dataclass(frozen=True, slots=True)
class RankingQuery:
    window: str  # day | week | month
    end: date
    limit: int = 20

    @property
    def period(self) -> Period:
        return Period.ending(self.end, WINDOW_DAYS[self.window])

    def spans(self) -> dict[str, Period]:
        """Which days each aggregate part must be read for."""
        period = self.period
        compared = Period(period.before(1).start, period.end)
        return {
            "model": compared,
            "app": Period(period.before(TRENDING_WINDOWS).start, period.end),
            "category": compared,  # the window's leaders, and the embedding models of both windows
            "offer": period,
            "hist": period,
        }


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    granularity: str  # day | week
    periods: int
    end: date
    limit: int = 10

    def buckets(self) -> list[Period]:
        last = Period.ending(self.end, 7 if self.granularity == "week" else 1)
        return [last.before(i) for i in reversed(range(self.periods))]

    def spans(self) -> dict[str, Period]:
        buckets = self.buckets()
        span = Period(buckets[0].start, buckets[-1].end)
        return {"model": span, "category": span}  # categories: which models are embedding models


Days = Mapping[date, DayRows]


def _counters(days: Days, period: Period, part: str, width: int = 1) -> dict[Any, Counters]:
    """One part's counters summed over a period: rows merged first, then parsed once."""
    return parse_counters(merge_rows(days, period.dates(), part), width)


def _ordered(totals: Mapping[Any, Counters]) -> list[tuple[Any, Counters]]:
    return sorted(totals.items(), key=lambda item: (-item[1].tokens, -item[1].requests, str(item[0])))


def _embedding_models(days: Days, period: Period) -> frozenset[str]:
    """The models that answered embedding calls in `period`: only `kind: embedding` offers
    answer them, so their calls are all in the `embeddings` category."""
    return frozenset(
        model for category, model in _counters(days, period, "category", 2) if category == EMBEDDINGS_CATEGORY
    )


def _chat(totals: Mapping[str, Counters], embedding: frozenset[str]) -> dict[str, Counters]:
    """What the model leaderboards rank: chat models. Embedding tokens are prompt tokens at a
    fraction of chat prices, and a RAG indexer embeds millions an hour: ranked with chat they
    would top every leaderboard. They rank in their own category (`categories`) instead."""
    return {model: c for model, c in totals.items() if model not in embedding}


def _with_tokens(totals: Mapping[Any, Counters]) -> dict[Any, Counters]:
    """What a token leaderboard ranks: a model whose calls all failed has no tokens, and
    ranking it (last, with 0) says nothing about usage. Its failures still count in `totals`."""
    return {name: c for name, c in totals.items() if c.tokens}


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def _growth(tokens: int, previous: int) -> float | None:
    return round(tokens / previous - 1, 6) if previous else None


def _usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def _entries(
    current: Mapping[str, Counters], previous: Mapping[str, Counters], key: str, total: int
) -> list[dict[str, Any]]:
    previous_rank = {name: rank for rank, (name, _) in enumerate(_ordered(previous), 1)}
    out = []
    for rank, (name, c) in enumerate(_ordered(current), 1):
        before = previous.get(name)
        previous_tokens = before.tokens if before else 0
        entry: dict[str, Any] = {"rank": rank, "previous_rank": previous_rank.get(name), key: name}
        if key == "model":
            entry["author"] = author_of(name)
        entry.update(
            tokens=c.tokens,
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            reasoning_tokens=c.reasoning_tokens,
            cached_tokens=c.cached_tokens,
            requests=c.requests,
            failed=c.failed,
            cost=_usd(c.cost_nanos),
            share=_ratio(c.tokens, total),
            previous_tokens=previous_tokens,
            growth=_growth(c.tokens, previous_tokens),
        )
        out.append(entry)
    return out


def _by_author(models: Mapping[str, Counters]) -> dict[str, Counters]:
    authors: dict[str, Counters] = {}
    for model, counters in models.items():
        authors.setdefault(author_of(model), Counters()).add(counters)
    return authors


def _median(histogram: Mapping[int, int]) -> float | None:
    """The median of a log-bucketed histogram, interpolated within its bucket (in log space)."""
    count = sum(histogram.values())
    if not count:
        return None
    middle = (count + 1) // 2
    seen = 0
    for bucket in sorted(histogram):
        inside = histogram[bucket]
        if seen + inside >= middle:
            return round(bucket_value(bucket, (middle - seen - 0.5) / inside), 2)
        seen += inside
    return None  # unreachable


def compute_rankings(query: RankingQuery, days: Days, prices: Prices | None = None) -> dict[str, Any]:
    period = query.period
    previous_period = period.before(1)
    limit = query.limit
    models = _counters(days, period, "model")
    previous_models = _counters(days, previous_period, "model")
    total = sum(c.tokens for c in models.values())
    previous_total = sum(c.tokens for c in previous_models.values())

    embedding = _embedding_models(days, Period(previous_period.start, period.end))
    ranked = _with_tokens(_chat(models, embedding))
    previously_ranked = _with_tokens(_chat(previous_models, embedding))
    chat_total = sum(c.tokens for c in ranked.values())  # what the leaderboards' shares are of
    model_entries = _entries(ranked, previously_ranked, "model", chat_total)
    shown = model_entries[:limit]
    others_tokens = chat_total - sum(e["tokens"] for e in shown)
    author_entries = _entries(_by_author(ranked), _by_author(previously_ranked), "author", chat_total)

    return {
        "window": {"name": query.window, **period.to_json()},
        "previous_window": previous_period.to_json(),
        "totals": {
            "tokens": total,
            "prompt_tokens": sum(c.prompt_tokens for c in models.values()),
            "completion_tokens": sum(c.completion_tokens for c in models.values()),
            "requests": sum(c.requests for c in models.values()),
            "failed": sum(c.failed for c in models.values()),
            "cost": _usd(sum(c.cost_nanos for c in models.values())),
            "previous_tokens": previous_total,
            "growth": _growth(total, previous_total),
        },
        "models": shown,
        "others": {
            "models": len(model_entries) - len(shown),
            "tokens": others_tokens,
            "share": _ratio(others_tokens, chat_total),
        },
        "authors": author_entries[:limit],
        "categories": _categories(days, period, limit),
        "apps": _apps(days, period, limit),
        "throughput": _throughput(days, period, models, prices or {}, limit),
    }


def _categories(days: Days, period: Period, limit: int) -> dict[str, list[dict[str, Any]]]:
    per_category: dict[str, dict[str, Counters]] = {}
    for (category, model), counters in _with_tokens(_counters(days, period, "category", 2)).items():
        per_category.setdefault(category, {})[model] = counters
    totals = {category: sum(c.tokens for c in models.values()) for category, models in per_category.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for category in sorted(per_category, key=lambda c: (-totals[c], c)):
        out[category] = [
            {
                "rank": rank,
                "model": model,
                "author": author_of(model),
                "tokens": c.tokens,
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "requests": c.requests,
                "share": _ratio(c.tokens, totals[category]),
            }
            for rank, (model, c) in enumerate(_ordered(per_category[category])[:limit], 1)
        ]
    return out


def _apps(days: Days, period: Period, limit: int) -> dict[str, list[dict[str, Any]]]:
    current = _counters(days, period, "app")
    preceding = [_counters(days, period.before(i), "app") for i in range(1, TRENDING_WINDOWS + 1)]
    total = sum(c.tokens for c in current.values())
    titles: dict[str, str] = {}  # the latest title an app sent
    for d in sorted(days):
        if d <= period.end:
            titles.update(days[d].titles)
    ordered = _ordered(current)
    rows: list[dict[str, Any]] = []
    for rank, (app, c) in enumerate(ordered, 1):
        history = [p[app].tokens if app in p else 0 for p in preceding]
        others = app == OTHER_APPS
        rows.append(
            {
                "rank": rank,
                "app": "others" if others else app,
                "title": "Others" if others else titles.get(app),
                "tokens": c.tokens,
                "requests": c.requests,
                "share": _ratio(c.tokens, total),
                "previous_tokens": history[0],
                "growth": _growth(c.tokens, history[0]),
                "trend": round(c.tokens - sum(history) / len(history), 3),
            }
        )
    apps = (row for (app, _), row in zip(ordered, rows) if app != OTHER_APPS)  # "others" never trends
    trending = sorted(apps, key=lambda r: (-r["trend"], r["app"]))
    return {"top": rows[:limit], "trending": [{**r, "trending_rank": i} for i, r in enumerate(trending[:limit], 1)]}


def _throughput(
    days: Days, period: Period, models: Mapping[str, Counters], prices: Prices, limit: int
) -> list[dict[str, Any]]:
    offers = _counters(days, period, "offer", 2)
    histograms = parse_histograms(merge_rows(days, period.dates(), "hist"))
    # Offers whose every attempt failed before another candidate answered ended no call: they
    # have no counters, only attempt outcomes, and belong in the table for their uptime.
    for backend, model, measure in histograms:
        if measure == ATTEMPTS and (backend, model) not in offers:
            offers[(backend, model)] = Counters()
    model_order = {model: i for i, (model, _) in enumerate(_ordered(models))}
    rows = []
    for (backend, model), c in offers.items():
        medians = {measure: _median(histograms.get((backend, model, measure), {})) for measure in MEASURES}
        outcomes = histograms.get((backend, model, ATTEMPTS), {})
        answered, failed = outcomes.get(ANSWERED, 0), outcomes.get(FAILED, 0)
        price = prices.get((backend, model))
        rows.append(
            {
                "model": model,
                "author": author_of(model),
                "backend": backend,
                "requests": c.requests,
                "failed": c.failed,
                "tokens": c.tokens,
                "median_tokens_per_second": medians["tps"],
                "median_latency_ms": medians["latency_ms"],
                "median_ttft_ms": medians["ttft_ms"],
                "input_price": price[0] if price else None,
                "output_price": price[1] if price else None,
                "cost_per_million_tokens": round(c.cost_nanos / c.tokens / 1000, 6) if c.tokens else None,
                **uptime_fields(answered, failed),
            }
        )
    rows.sort(
        key=lambda r: (
            model_order.get(r["model"], len(model_order)),
            -(r["median_tokens_per_second"] or 0.0),
            r["backend"],
        )
    )
    return rows[:limit]


def uptime_fields(answered: int, failed: int) -> dict[str, Any]:
    """A provider's uptime for one model over the window, as OpenRouter shows it: the share of
    its attempts that answered, every attempt counted (fallbacks included), except those the
    request itself decided (`gateway.usage.aggregates.attempt_outcome`); None without any."""
    attempts = answered + failed
    return {
        "attempts": attempts,
        "attempts_failed": failed,
        "uptime": round(answered / attempts, 4) if attempts else None,
    }


def compute_series(query: SeriesQuery, days: Days) -> dict[str, Any]:
    """Tokens per chat model per day or week: the stacked bar chart's data, top `limit` models
    plus others (embedding models are not in it: see `_chat`)."""
    buckets = query.buckets()
    embedding = _embedding_models(days, Period(buckets[0].start, buckets[-1].end))
    per_bucket = [_chat(_counters(days, bucket, "model"), embedding) for bucket in buckets]
    overall: dict[str, Counters] = {}
    for totals in per_bucket:
        for model, counters in totals.items():
            overall.setdefault(model, Counters()).add(counters)
    ranked = [model for model, _ in _ordered(_with_tokens(overall))]
    top = ranked[: query.limit]
    series = [
        {
            "model": model,
            "author": author_of(model),
            "tokens": [t[model].tokens if model in t else 0 for t in per_bucket],
            "total": overall[model].tokens,
        }
        for model in top
    ]
    others = [sum(c.tokens for m, c in t.items() if m not in top) for t in per_bucket]
    return {
        "granularity": query.granularity,
        "periods": [b.to_json() for b in buckets],
        "models": series,
        "others": others,
        "totals": [sum(c.tokens for c in t.values()) for t in per_bucket],
    }


def all_days(spans: Iterable[Period]) -> list[date]:
    """Every day any span covers, sorted."""
    return sorted({d for span in spans for d in span.dates()})
