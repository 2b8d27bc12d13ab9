"""Benchmark: a week's ranking over 10 million imported events, answered from Redis aggregates.

What it does, step by step:

1. Starts a private redis-server on a free port (or uses --redis-url).
2. Builds 10M events' worth of aggregates. Building and writing 10M event objects one by one
   would time Python, not the design, so events are drawn from a pool of --shapes distinct
   synthetic events (Zipf-weighted models, authors, backends, apps and categories; log-normal
   tokens, latency, TTFT and speed). Each day's events are a random draw from the pool; every
   shape is added to an IncrementBatch (the same sums live recording writes) as many times
   as it was drawn. The resulting per-day hashes are
   exactly those 10M such events would leave, and are written with
   RedisUsageStore.load_increments (pipelined HINCRBY, the bulk path).
3. Times the live, idempotent path too (the Lua script with per-event dedupe and the raw
   stream) on --live-events events, for events/s per writer.
4. Times GET /v1/rankings's work for a week (and a month, and the chart's series) through
   RedisUsageStore.rankings: the pipelined reads plus the pure computation.

Run: .venv/bin/python bench/rankings_bench.py [--events 10000000] [--days 35]
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.usage.aggregates import IncrementBatch
from gateway.usage.events import UsageEvent
from gateway.usage.rankings import ranking_query, series_query
from gateway.usage.redis_store import RedisUsageStore

END = date(2025, 3, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str, Path]:
    binary = shutil.which("redis-server")
    if not binary:
        sys.exit("redis-server is not installed (make system-deps)")
    workdir = Path(tempfile.mkdtemp(prefix="rankings-bench-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(workdir / "redis.log"),
        ]
    )
    import redis

    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            redis.Redis(port=port).ping()
            return proc, f"redis://127.0.0.1:{port}/0", workdir
        except redis.RedisError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k**s) for k in range(1, n + 1)]


def event_shapes(count: int, rng: random.Random) -> list[UsageEvent]:
    """Distinct synthetic events: what the traffic is made of (the day is set per draw)."""
    authors = [f"author{i}" for i in range(20)]
    models = [f"{authors[i % len(authors)]}/model-{i}" for i in range(60)]
    backends = [f"backend{i}" for i in range(12)]
    offers = {m: rng.sample(backends, rng.randint(1, 4)) for m in models}
    apps = [f"https://app{i}.example" for i in range(300)]
    categories = [
        "programming",
        "roleplay",
        "marketing",
        "seo",
        "technology",
        "science",
        "translation",
        "legal",
        "finance",
        "chat",
    ]
    speed = {
        (b, m): (rng.uniform(20, 200), rng.uniform(200, 3000), rng.uniform(50, 800)) for m in models for b in offers[m]
    }
    shapes = []
    model_w, app_w, cat_w = zipf_weights(len(models)), zipf_weights(len(apps)), zipf_weights(len(categories), 0.8)
    for i in range(count):
        model = rng.choices(models, model_w)[0]
        backend = rng.choice(offers[model])
        tps, latency, ttft = speed[(backend, model)]
        prompt, completion = int(rng.lognormvariate(7.5, 1.2)), int(rng.lognormvariate(5.5, 1.0))
        shapes.append(
            UsageEvent(
                id=f"shape-{i}",
                timestamp=datetime(2025, 1, 1, tzinfo=UTC),
                model=model,
                backend=backend,
                prompt_tokens=prompt,
                completion_tokens=completion,
                category=rng.choices(categories, cat_w)[0],
                app=rng.choices(apps, app_w)[0] if rng.random() < 0.8 else None,
                cost=(prompt * 0.3 + completion * 1.2) / 1e6,
                latency_ms=latency * rng.lognormvariate(0, 0.3),
                ttft_ms=ttft * rng.lognormvariate(0, 0.3),
                tokens_per_second=tps * rng.lognormvariate(0, 0.2),
                status=200 if rng.random() < 0.98 else 502,
            )
        )
    return shapes


def aggregate(shapes: list[UsageEvent], events: int, days: int, rng: random.Random) -> IncrementBatch:
    batch = IncrementBatch()
    per_day = events // days
    for d in range(days):
        day = END - timedelta(days=d)
        drawn = Counter(rng.choices(range(len(shapes)), k=per_day + (events % days if d == 0 else 0)))
        for index, times in drawn.items():
            batch.add(shapes[index], times=times, day=day)
    return batch


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--shapes", type=int, default=5000)
    parser.add_argument("--live-events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--redis-url")
    args = parser.parse_args()

    from redis.asyncio import Redis

    proc = workdir = None
    url = args.redis_url
    if url is None:
        proc, url, workdir = start_redis()
    client = Redis.from_url(url)
    store = RedisUsageStore(client, prefix="bench")
    try:
        rng = random.Random(42)
        t = time.perf_counter()
        shapes = event_shapes(args.shapes, rng)
        batch = aggregate(shapes, args.events, args.days, rng)
        built = time.perf_counter() - t
        t = time.perf_counter()
        await store.load_increments(batch)
        loaded = time.perf_counter() - t
        sums = batch.sums
        fields_per_day = defaultdict(int)
        for day, _, _ in sums:
            fields_per_day[day] += 1
        print(
            f"{args.events:,} events over {args.days} days from {args.shapes:,} shapes: aggregates built in {built:.1f} s, "
            f"written in {loaded:.1f} s ({len(sums):,} hash fields, {statistics.mean(fields_per_day.values()):,.0f} per day)"
        )
        info = await client.info("memory")
        print(f"redis memory used: {info['used_memory_human']}")

        # Outside the ranked weeks, so the rankings below read only the 10M events' aggregates.
        live = [
            replace(shapes[i % len(shapes)], id=f"live-{i}", timestamp=datetime(2025, 1, 1, tzinfo=UTC))
            for i in range(args.live_events)
        ]
        t = time.perf_counter()
        for start in range(0, len(live), 500):
            await store.record(live[start : start + 500])
        elapsed = time.perf_counter() - t
        print(f"live path (Lua: dedupe + aggregates + raw stream), batches of 500: {len(live) / elapsed:,.0f} events/s")

        for label, run in (
            ("week ranking", lambda: store.rankings(ranking_query("week", END, 20))),
            ("month ranking", lambda: store.rankings(ranking_query("month", END, 20))),
            ("weekly series, 8 weeks", lambda: store.series(series_query("week", 8, END, 10))),
        ):
            body = await run()
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                body = await run()
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            extra = f", {body['totals']['requests']:,} requests ranked" if isinstance(body.get("totals"), dict) else ""
            print(
                f"{label}: p50 {statistics.median(times):.1f} ms, min {times[0]:.1f} ms, max {times[-1]:.1f} ms{extra}"
            )
    finally:
        await client.aclose()
        if proc is not None:
            proc.terminate()
            proc.wait()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
