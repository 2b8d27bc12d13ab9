"""What one usage event costs in Redis: run against a throwaway redis-server.

    .venv/bin/python bench/usage_redis_memory.py [N]

Records N realistic events (the gateway's own ids, an app with a title, a key, timings) on
one day through `RedisUsageStore`, then reports MEMORY USAGE of the day's raw stream and of
an idempotency marker, and the growth of `used_memory`, per event. The README's Redis sizing
(retention section) is computed from these figures.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from gateway.usage.events import UsageEvent, event_id, new_call_id
from gateway.usage.redis_store import RedisUsageStore, _raw
from tests.support.services import RedisServer


def realistic(n: int) -> list[UsageEvent]:
    start = datetime(2025, 3, 10, tzinfo=UTC)
    models = ["qwen/qwen3-32b", "deepseek/deepseek-v3.2", "moonshotai/kimi-k2.5", "z-ai/glm-5"]
    events = []
    for i in range(n):
        call = new_call_id()
        events.append(
            UsageEvent(
                id=event_id(call, 1),
                timestamp=start + timedelta(seconds=i * 86400 / n),
                model=models[i % len(models)],
                backend="openrouter",
                prompt_tokens=1200 + i % 500,
                completion_tokens=300 + i % 200,
                route="auto",
                category="programming",
                app="https://cline.bot",
                app_title="Cline",
                cached_tokens=512,
                cost=0.000731,
                latency_ms=2345.678,
                ttft_ms=456.789,
                tokens_per_second=61.234,
                request_id=f"req-3f2a9c1b7d4e{i:010x}",
                key="team-a",
                call_id=call,
            )
        )
    return events


async def measure(n: int) -> None:
    server = RedisServer().start()
    try:
        client = Redis.from_url(server.url)
        store = RedisUsageStore(client)
        before = (await client.info("memory"))["used_memory"]
        events = realistic(n)
        for i in range(0, n, 500):
            await store.record(events[i : i + 500])
        after = (await client.info("memory"))["used_memory"]
        day = events[0].day
        stream = await client.memory_usage(store.key(day, "events"), samples=0)
        marker = await client.memory_usage(store.key(day, f"seen:{events[0].id}"), samples=0)
        aggregates = sum(
            [
                await client.memory_usage(store.key(day, p), samples=0) or 0
                for p in ("model", "category", "app", "offer", "hist", "titles")
            ]
        )
        print(f"events: {n}, one stream entry's JSON: {len(_raw(events[0]))} B")
        print(f"stream: {stream} B, {stream / n:.0f} B per event")
        print(f"idempotency marker: {marker} B per event")
        print(f"one day's aggregates: {aggregates} B")
        print(f"used_memory growth: {after - before} B, {(after - before) / n:.0f} B per event")
        await client.aclose()
    finally:
        server.cleanup()


if __name__ == "__main__":
    tempfile.tempdir = None
    asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
