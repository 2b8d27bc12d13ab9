"""Hand-computed traffic: two consecutive weeks, categories, apps, an `Others` tail.

The ranked week is 2025-03-10 .. 2025-03-16 (ranked with limit=3), the previous week
2025-03-03 .. 2025-03-09; two earlier weeks feed the apps' trend. Every number in EXPECTED
was worked out by hand from the events below (see the comments), not by running the code.

Week (1,000,000 tokens):            Previous week (800,000 tokens):
  deepseek/deepseek-v3.2  600,000     qwen/qwen3-32b          400,000
  qwen/qwen3-32b          300,000     deepseek/deepseek-v3.2  300,000
  moonshotai/kimi-k2.5     45,000     z-ai/glm-5              100,000
  z-ai/glm-5               30,000
  z-ai/glm-4.6             25,000   (+ one failed qwen call with no tokens)
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from gateway.usage.events import UsageEvent

WEEK_END = "2025-03-16"
CLINE, TAVERN, OLD = "https://cline.bot", "https://sillytavern.app", "https://old.example"


def _event(
    id,
    when,
    model,
    backend,
    prompt,
    completion,
    *,
    category="chat",
    app=None,
    title=None,
    cost=0.0,
    latency=1000.0,
    ttft=200.0,
    tps=50.0,
    status=200,
) -> UsageEvent:
    return UsageEvent(
        id=id,
        timestamp=datetime.fromisoformat(when).replace(tzinfo=UTC),
        model=model,
        backend=backend,
        prompt_tokens=prompt,
        completion_tokens=completion,
        category=category,
        app=app,
        app_title=title,
        cost=cost,
        latency_ms=latency,
        ttft_ms=ttft,
        tokens_per_second=tps,
        status=status,
    )


EVENTS = [
    # -- the ranked week ------------------------------------------------------------------
    _event(
        "w1",
        "2025-03-10T00:00:00",
        "deepseek/deepseek-v3.2",
        "deepseek",
        300_000,
        100_000,
        category="programming",
        app=CLINE,
        title="Cline",
        cost=0.12,
        latency=1000,
        ttft=100,
        tps=40,
    ),
    _event(
        "w2",
        "2025-03-12T08:30:00",
        "deepseek/deepseek-v3.2",
        "deepseek",
        150_000,
        50_000,
        category="programming",
        app=CLINE,
        title="Cline",
        cost=0.08,
        latency=3000,
        ttft=300,
        tps=60,
    ),
    _event(
        "w3",
        "2025-03-14T12:00:00",
        "qwen/qwen3-32b",
        "groq",
        200_000,
        100_000,
        app=TAVERN,
        title="SillyTavern",
        cost=0.03,
        latency=500,
        ttft=50,
        tps=400,
    ),
    _event(
        "w4",
        "2025-03-16T23:59:59",
        "moonshotai/kimi-k2.5",
        "openrouter",
        35_000,
        10_000,
        category="programming",
        app=CLINE,
        title="Cline",
        cost=0.045,
    ),
    _event("w5", "2025-03-11T10:00:00", "z-ai/glm-5", "zhipu", 30_000, 0, cost=0.03),
    _event("w6", "2025-03-13T10:00:00", "z-ai/glm-4.6", "zhipu", 20_000, 5_000, cost=0.025),
    _event(
        "w7",
        "2025-03-15T10:00:00",
        "qwen/qwen3-32b",
        "groq",
        0,
        0,
        app=TAVERN,
        status=502,
        latency=20,
        ttft=None,
        tps=None,
    ),
    # -- the previous week ----------------------------------------------------------------
    _event("p1", "2025-03-03T00:00:00", "qwen/qwen3-32b", "groq", 300_000, 100_000, app=TAVERN, cost=0.04),
    _event(
        "p2",
        "2025-03-05T00:00:00",
        "deepseek/deepseek-v3.2",
        "deepseek",
        80_000,
        20_000,
        category="programming",
        app=CLINE,
        cost=0.02,
    ),
    _event("p3", "2025-03-07T00:00:00", "deepseek/deepseek-v3.2", "deepseek", 150_000, 50_000, app=TAVERN, cost=0.04),
    _event("p4", "2025-03-09T23:59:59", "z-ai/glm-5", "zhipu", 100_000, 0, cost=0.1),
    # -- two weeks before that: only the apps' trend reads them ------------------------------
    _event("q1", "2025-02-26T00:00:00", "qwen/qwen3-32b", "groq", 500_000, 100_000, app=TAVERN),  # P2
    _event("r1", "2025-02-20T00:00:00", "qwen/qwen3-32b", "groq", 250_000, 50_000, app=TAVERN),  # P3
    _event("r2", "2025-02-21T00:00:00", "qwen/qwen3-32b", "groq", 800_000, 100_000, app=OLD),  # P3, absent since
]


def _entry(
    rank, previous_rank, key, name, tokens, prompt, completion, requests, share, previous, growth, cost, failed=0
):
    entry = {"rank": rank, "previous_rank": previous_rank, key: name}
    if key == "model":
        entry["author"] = name.split("/")[0]
    entry.update(
        tokens=tokens,
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=0,
        cached_tokens=0,
        requests=requests,
        failed=failed,
        cost=cost,
        share=share,
        previous_tokens=previous,
        growth=growth,
    )
    return entry


# GET /v1/rankings?window=week&end=2025-03-16&limit=3, minus `throughput` (checked apart:
# its medians come from histograms and are exact only to a bucket).
EXPECTED = {
    "window": {"name": "week", "start": "2025-03-10", "end": "2025-03-16", "days": 7},
    "previous_window": {"start": "2025-03-03", "end": "2025-03-09", "days": 7},
    "totals": {
        "tokens": 1_000_000,
        "prompt_tokens": 735_000,
        "completion_tokens": 265_000,
        "requests": 7,
        "failed": 1,
        "cost": 0.33,
        "previous_tokens": 800_000,
        "growth": 0.25,
    },
    "models": [
        # 600k of 1M; previously 2nd with 300k: growth 600/300 - 1
        _entry(1, 2, "model", "deepseek/deepseek-v3.2", 600_000, 450_000, 150_000, 2, 0.6, 300_000, 1.0, 0.2),
        # 300k (the failed call adds a request, no tokens); previously 1st with 400k
        _entry(2, 1, "model", "qwen/qwen3-32b", 300_000, 200_000, 100_000, 2, 0.3, 400_000, -0.25, 0.03, failed=1),
        _entry(3, None, "model", "moonshotai/kimi-k2.5", 45_000, 35_000, 10_000, 1, 0.045, 0, None, 0.045),
    ],
    # glm-5 (30k) + glm-4.6 (25k)
    "others": {"models": 2, "tokens": 55_000, "share": 0.055},
    "authors": [
        _entry(1, 2, "author", "deepseek", 600_000, 450_000, 150_000, 2, 0.6, 300_000, 1.0, 0.2),
        _entry(2, 1, "author", "qwen", 300_000, 200_000, 100_000, 2, 0.3, 400_000, -0.25, 0.03, failed=1),
        # glm-5 + glm-4.6 = 55k, previously 100k (glm-5): 55/100 - 1
        _entry(3, 3, "author", "z-ai", 55_000, 50_000, 5_000, 2, 0.055, 100_000, -0.45, 0.055),
    ],
    "categories": {
        # 600k + 45k = 645k
        "programming": [
            {
                "rank": 1,
                "model": "deepseek/deepseek-v3.2",
                "author": "deepseek",
                "tokens": 600_000,
                "prompt_tokens": 450_000,
                "completion_tokens": 150_000,
                "requests": 2,
                "share": 0.930233,
            },  # 600/645
            {
                "rank": 2,
                "model": "moonshotai/kimi-k2.5",
                "author": "moonshotai",
                "tokens": 45_000,
                "prompt_tokens": 35_000,
                "completion_tokens": 10_000,
                "requests": 1,
                "share": 0.069767,
            },  # 45/645
        ],
        # 300k + 30k + 25k = 355k
        "chat": [
            {
                "rank": 1,
                "model": "qwen/qwen3-32b",
                "author": "qwen",
                "tokens": 300_000,
                "prompt_tokens": 200_000,
                "completion_tokens": 100_000,
                "requests": 2,
                "share": 0.84507,
            },  # 300/355
            {
                "rank": 2,
                "model": "z-ai/glm-5",
                "author": "z-ai",
                "tokens": 30_000,
                "prompt_tokens": 30_000,
                "completion_tokens": 0,
                "requests": 1,
                "share": 0.084507,
            },  # 30/355
            {
                "rank": 3,
                "model": "z-ai/glm-4.6",
                "author": "z-ai",
                "tokens": 25_000,
                "prompt_tokens": 20_000,
                "completion_tokens": 5_000,
                "requests": 1,
                "share": 0.070423,
            },  # 25/355
        ],
    },
    "apps": {
        # Attributed tokens: Cline 400k + 200k + 45k = 645k, SillyTavern 300k; 945k in all.
        # Trend: Cline 645k - mean(100k, 0, 0); SillyTavern 300k - mean(600k, 600k, 300k).
        "top": [
            {
                "rank": 1,
                "app": CLINE,
                "title": "Cline",
                "tokens": 645_000,
                "requests": 3,
                "share": 0.68254,
                "previous_tokens": 100_000,
                "growth": 5.45,
                "trend": 611_666.667,
            },
            {
                "rank": 2,
                "app": TAVERN,
                "title": "SillyTavern",
                "tokens": 300_000,
                "requests": 2,
                "share": 0.31746,
                "previous_tokens": 600_000,
                "growth": -0.5,
                "trend": -200_000.0,
            },
        ],
        "trending": [
            {
                "rank": 1,
                "app": CLINE,
                "title": "Cline",
                "tokens": 645_000,
                "requests": 3,
                "share": 0.68254,
                "previous_tokens": 100_000,
                "growth": 5.45,
                "trend": 611_666.667,
                "trending_rank": 1,
            },
            {
                "rank": 2,
                "app": TAVERN,
                "title": "SillyTavern",
                "tokens": 300_000,
                "requests": 2,
                "share": 0.31746,
                "previous_tokens": 600_000,
                "growth": -0.5,
                "trend": -200_000.0,
                "trending_rank": 2,
            },
        ],
    },
}

# Throughput rows in order (model rank, then speed), with the true medians of the window's
# successful calls (lower median for an even count); the histograms must land within 5%.
EXPECTED_THROUGHPUT = [
    ("deepseek/deepseek-v3.2", "deepseek", 2, 40.0, 1000.0, 100.0),
    ("qwen/qwen3-32b", "groq", 2, 400.0, 500.0, 50.0),
    ("moonshotai/kimi-k2.5", "openrouter", 1, 50.0, 1000.0, 200.0),
]


def varied_events(count: int, seed: int = 7) -> list[UsageEvent]:
    """Calls of every kind: failed, estimated, with and without app, title, timings or cost, over three days."""
    rng = random.Random(seed)
    start = datetime(2025, 3, 10, tzinfo=UTC)
    return [
        UsageEvent(
            id=f"e{i}",
            timestamp=start + timedelta(minutes=rng.randrange(3 * 24 * 60)),
            model=rng.choice(["deepseek/deepseek-v3.2", "qwen/qwen3-32b", "z-ai/glm-5"]),
            backend=rng.choice(["groq", "zhipu"]),
            prompt_tokens=rng.choice([0, 1, 1200]),
            completion_tokens=rng.choice([0, 7, 300]),
            category=rng.choice(["chat", "programming"]),
            app=rng.choice([None, "https://cline.bot", "team-a"]),
            app_title=rng.choice([None, "Cline", "Other"]),
            cached_tokens=rng.choice([0, 200]),
            reasoning_tokens=rng.choice([0, 90]),
            cost=rng.choice([0.0, 1e-9, 0.000462, 1.5]),
            latency_ms=rng.choice([None, 0.0, 20.0, 1500.5]),
            ttft_ms=rng.choice([None, 150.0]),
            tokens_per_second=rng.choice([None, 0.0, 48.3]),
            status=rng.choice([200, 200, 429, 502]),
            estimated=rng.random() < 0.2,
        )
        for i in range(count)
    ]


def billed_call(
    id: str, day: int, minute: int, key: str | None, team: str | None, cost: float, final: bool = True
) -> UsageEvent:
    """One row of a call made with a key (and team) on a day of March 2025: what budgets count."""
    return UsageEvent(
        id=id,
        timestamp=datetime(2025, 3, day, 12, minute, tzinfo=UTC),
        model="qwen/qwen3-32b",
        backend="vllm",
        prompt_tokens=10,
        completion_tokens=5,
        cost=cost,
        key=key,
        team=team,
        final=final,
    )
