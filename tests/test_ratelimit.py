"""gateway/ratelimit.py: the sliding window, Retry-After, shared counting in a real Redis,
and failing open when Redis fails."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config.loader import ConfigError, parse_config
from gateway.config.schema import RateLimitsConfig
from gateway.metrics import Metrics
from gateway.protocol.errors import GatewayError
from gateway.ratelimit import WINDOW_S, Limit, LocalWindows, RateLimiter, applicable_limits, retry_after

LIMITS = RateLimitsConfig(default_key_rpm=5, keys={"vip": 50}, routes={"auto": 8})


class Clock:
    def __init__(self, now: float = 1_000_020.0) -> None:  # 20 s into a window
        self.now = now

    def __call__(self) -> float:
        return self.now


async def admitted(
    limiter: RateLimiter, n: int, key: str | None = "app", target: str | None = "auto", config=LIMITS
) -> int:
    ok = 0
    for _ in range(n):
        try:
            await limiter.admit(key, target, config)
            ok += 1
        except GatewayError as exc:
            assert exc.status == 429
    return ok


def test_which_limits_apply():
    assert applicable_limits(LIMITS, "app", "auto") == (Limit("key", "app", 5), Limit("route", "auto", 8))
    assert applicable_limits(LIMITS, "vip", "other") == (Limit("key", "vip", 50),)
    assert applicable_limits(LIMITS, None, "auto") == (Limit("route", "auto", 8),)  # open gateway: no key
    assert applicable_limits(RateLimitsConfig(), "app", "auto") == ()


async def test_a_key_gets_its_limit_per_minute_then_429_with_retry_after():
    clock = Clock()
    metrics = Metrics()
    limiter = RateLimiter(metrics, clock=clock)
    assert await admitted(limiter, 5) == 5
    with pytest.raises(GatewayError) as refused:
        await limiter.admit("app", "auto", LIMITS)
    error = refused.value
    assert error.status == 429 and error.type == "rate_limit_error" and error.code == "rate_limit_exceeded"
    assert "`app`" in error.message and "5 requests per minute" in error.message
    assert error.headers["x-ratelimit-limit-requests"] == "5"
    wait = int(error.headers["retry-after"])
    assert 1 <= wait <= 2 * WINDOW_S
    # Waiting as told is enough (one request comes back), and not waiting is not.
    clock.now += wait - 2
    assert await admitted(limiter, 1) == 0
    clock.now += 2
    assert await admitted(limiter, 1) == 1
    assert metrics.rate_limited._value.get() == 2


async def test_a_refusal_by_one_limit_uses_up_none_of_the_others():
    limiter = RateLimiter(clock=Clock())
    assert await admitted(limiter, 8, key="vip") == 8  # the route's limit
    assert await admitted(limiter, 3, key="vip") == 0
    assert await admitted(limiter, 5, key="other", target="elsewhere") == 5  # other keys have their own
    # vip spent 8 of its 50, not 11: the refused ones counted nowhere.
    assert await admitted(limiter, 50, key="vip", target=None) == 42


def test_the_window_slides_over_the_previous_minute():
    windows = LocalWindows()
    limit = (Limit("route", "auto", 10),)
    for _ in range(10):
        assert windows.check_and_count(limit, window=7, elapsed=0.9) is None
    assert windows.check_and_count(limit, window=7, elapsed=0.95) is not None
    # A quarter into the next minute, three quarters of the last one still count: 7.5.
    assert [windows.check_and_count(limit, window=8, elapsed=0.25) for _ in range(3)] == [None, None, None]
    assert windows.check_and_count(limit, window=8, elapsed=0.25) is not None
    # Two windows later, nothing is left.
    assert windows.check_and_count(limit, window=10, elapsed=0.0) is None


@pytest.mark.parametrize(
    "previous, current, elapsed", [(0, 10, 0.3), (10, 4, 0.2), (20, 9, 0.9), (0, 30, 0.99), (9, 9, 0.0)]
)
def test_retry_after_is_when_the_estimate_drops_below_the_limit(previous, current, elapsed):
    limit = 10
    wait = retry_after(limit, previous, current, elapsed)

    def estimate(after: float) -> float:
        t = elapsed + after / WINDOW_S
        return previous * (1 - t) + current if t < 1 else current * (1 - (t - 1))

    assert estimate(wait + 0.01) < limit
    assert wait == 0 or estimate(max(wait - 0.5, 0)) >= limit - 0.5 * max(previous, current) / WINDOW_S


def test_rate_limit_config_is_validated_with_lines():
    base = textwrap.dedent("""
        backends:
          m: {type: mock, models: {mock/small: {}}}
        routes:
          auto: {models: [mock/small]}
    """)
    config, _ = parse_config(base + "rate_limits: {routes: {auto: 3, mock/small: 9}, keys: {app: 4}}")
    assert config.rate_limits.routes == {"auto": 3, "mock/small": 9} and config.rate_limits.active
    with pytest.raises(ConfigError) as bad:
        parse_config(base + "rate_limits:\n  routes:\n    autoo: 3\n  keys: {app: 0}\n")
    problems = [str(p) for p in bad.value.problems]
    assert any("rate_limits.keys.app" in p and "greater than 0" in p for p in problems), problems
    with pytest.raises(ConfigError) as unknown:
        parse_config(base + "rate_limits:\n  routes:\n    autoo: 3\n")
    assert [str(p) for p in unknown.value.problems] == [
        "rate_limits.routes.autoo (line 8): `autoo` is neither a route nor a served model"
    ]


@pytest.mark.redis
async def test_replicas_share_counters_through_redis(redis_server):
    from redis.asyncio import Redis

    clock = Clock()
    clients = [Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)]
    a, b = (RateLimiter(redis=c, clock=clock) for c in clients)
    ok = 0
    for i in range(8):
        ok += await admitted(a if i % 2 else b, 1)
    assert ok == 5  # one limit of 5 for key `app`, whichever replica counted
    # Counters expire on their own.
    ttl = await clients[0].pttl(f"{{gw:rl}}:key:app:{int(clock.now // WINDOW_S)}")
    assert 0 < ttl <= 2 * WINDOW_S * 1000 + 5000
    for c in clients:
        await c.aclose()


@pytest.mark.redis
async def test_a_failing_redis_lets_requests_through_counted_locally_then_shares_again(redis_server, caplog):
    from redis.asyncio import Redis

    clock = Clock()
    metrics = Metrics()
    client = Redis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    limiter = RateLimiter(metrics, client, store_retry_s=0.2, clock=clock)
    assert await admitted(limiter, 2) == 2
    redis_server.stop()
    # Redis is down: no request fails because of it; the limit still holds, per process.
    assert await admitted(limiter, 2) == 2
    assert metrics.rate_limiter_errors._value.get() == 1  # then local counting, no retry storm
    assert "rate-limit store failed" in caplog.text
    assert await admitted(limiter, 5) == 3
    redis_server.start()
    import asyncio

    await asyncio.sleep(0.25)  # past store_retry_s: the next request tries Redis again
    assert await admitted(limiter, 1) == 1
    assert (
        await client.get(f"{{gw:rl}}:key:app:{int(clock.now // WINDOW_S)}") == b"1"
    )  # counted in Redis (restarted empty)
    await client.aclose()
