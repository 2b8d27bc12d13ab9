"""A day's app table is bounded: apps past the limit count in one `others` row, totals stay exact.

Run against both stores (SQLite in a temp dir, a real redis-server), with the default limit.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from gateway.usage.aggregates import MAX_APPS_PER_DAY, SEP, merge_rows, parse_counters
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import Period, ranking_query

pytestmark = pytest.mark.redis

DAY = date(2025, 3, 16)
APPS = 10_000


def call(i: int, app: str, day: date = DAY, prompt: int | None = None) -> UsageEvent:
    return UsageEvent(
        id=f"{day}-{i}",
        timestamp=datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=i % 86_000),
        model="qwen/qwen3-32b",
        backend="groq",
        prompt_tokens=100 + i if prompt is None else prompt,
        completion_tokens=10,
        app=app,
        app_title=f"Title {app}",
    )


async def record_in_batches(store, events, size=500):
    for start in range(0, len(events), size):
        assert await store.record(events[start : start + size]) == len(events[start : start + size])


async def app_rows(store, day: date) -> tuple[set[str], dict[str, str]]:
    days = await store.read_aggregates({"app": Period(day, day)})
    rows = days[day]
    names = {(f.decode() if isinstance(f, bytes) else f).rsplit(SEP, 1)[0] for f in rows.parts["app"]}
    return names, rows.titles


async def test_ten_thousand_apps_keep_at_most_the_limit_plus_others(store):
    events = [call(i, f"https://app-{i}.example") for i in range(APPS)]
    await record_in_batches(store, events)
    names, titles = await app_rows(store, DAY)
    assert len(names) == MAX_APPS_PER_DAY + 1  # the first 1,000 apps of the day, and `others`
    assert len(titles) == MAX_APPS_PER_DAY  # titles only for apps with a row
    assert {f"https://app-{i}.example" for i in range(MAX_APPS_PER_DAY)} <= names

    # An app that has its row keeps counting there; one more new app goes to others.
    await store.record([call(APPS, "https://app-0.example", prompt=1), call(APPS + 1, "https://late.example")])
    body = await store.rankings(ranking_query("day", DAY, 3))
    tokens = sum(e.tokens for e in events) + 11 + (100 + APPS + 1 + 10)
    assert body["totals"]["tokens"] == tokens and body["totals"]["requests"] == APPS + 2

    top = body["apps"]["top"]
    others_tokens = sum(e.tokens for e in events[MAX_APPS_PER_DAY:]) + (100 + APPS + 1 + 10)
    assert top[0] == {
        "rank": 1,
        "app": "others",
        "title": "Others",
        "tokens": others_tokens,
        "requests": APPS - MAX_APPS_PER_DAY + 1,
        "share": round(others_tokens / tokens, 6),
        "previous_tokens": 0,
        "growth": None,
        "trend": float(others_tokens),
    }
    # Next come the apps with rows, largest first; the app table sums to the total.
    assert [row["app"] for row in top[1:]] == ["https://app-999.example", "https://app-998.example"]
    days = await store.read_aggregates({"app": Period(DAY, DAY)})
    apps = parse_counters(merge_rows(days, [DAY], "app"), 1)
    assert len(apps) == MAX_APPS_PER_DAY + 1 and sum(c.tokens for c in apps.values()) == tokens
    assert (apps["https://app-0.example"].requests, apps["https://app-0.example"].tokens) == (2, 110 + 11)
    trending = [row["app"] for row in body["apps"]["trending"]]
    assert len(trending) == 3 and "others" not in trending  # others is not an app: it never trends
    assert set(top[1]) == set(top[0])  # the same shape as any app's row

    # The limit is per day: the next day starts with an empty table.
    next_day = DAY + timedelta(days=1)
    await store.record([call(i, f"https://app-{APPS + i}.example", day=next_day) for i in range(3)])
    names, _ = await app_rows(store, next_day)
    assert len(names) == 3 and "\x1eothers" not in names
