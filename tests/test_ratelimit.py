"""gateway/tenants/limits.py (the counters) and gateway/ratelimit.py (Retry-After, headers):
exact admission in memory and in a real Redis, reserve-then-settle, sweeping of dead calls."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config.loader import ConfigError, parse_config
from gateway.config.schema import RateLimitsConfig
from gateway.ratelimit import RateLimiter, format_reset, retry_after, scopes_for
from gateway.tenants.keys import Credential, Limits, VirtualKey
from gateway.tenants.limits import NANO, WINDOW_S, Ask, Clock, LocalCounters, RedisCounters, Refused, Scope, Window
from gateway.tenants.principal import Principal

T0 = 1_800_000_020.0  # 20 s into a window


class Counters:
    """Local or Redis counters behind one synchronous-looking face for the tests."""

    def __init__(self, impl) -> None:
        self.impl = impl
        self.n = 0
        self.admitted: list[Ask] = []  # the asks admitted, in order

    async def admit(self, scopes, tokens=0, nano=0, now=T0, deadline=None) -> Refused | Window:
        self.n += 1
        ask = Ask(f"t{self.n}", tokens, nano, deadline or now + 600)
        result = self.impl.admit(tuple(scopes), ask, Clock.at(now))
        if not isinstance(result, (Refused, Window)):
            result = await result
        if isinstance(result, Window):
            self.admitted.append(ask)
        return result

    async def settle(self, scopes, ask, tokens, nano, now=T0, flush=True) -> None:
        self.impl.settle(tuple(scopes), ask, Clock.at(now).window, tokens, nano, Clock.at(now))
        if flush and isinstance(self.impl, RedisCounters):
            await self.impl.flush()

    async def spent(self, scope_id, now=T0):
        got = self.impl.spent(scope_id, Clock.at(now))
        return got if isinstance(got, tuple) else await got


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
async def counters(request):
    if request.param == "local":
        yield Counters(LocalCounters())
        return
    from redis.asyncio import Redis

    server = request.getfixturevalue("redis_server")
    client = Redis.from_url(server.url)
    counters = Counters(RedisCounters(client))
    yield counters
    await counters.impl.aclose()  # the script client's own connection
    await client.aclose()


async def admitted(counters, scopes, n, **kw) -> int:
    ok = 0
    for _ in range(n):
        ok += isinstance(await counters.admit(scopes, **kw), Window)
    return ok


async def test_rpm_admits_exactly_the_limit_and_a_refusal_counts_nowhere(counters):
    key, route = Scope("key", "app", rpm=5), Scope("route", "auto", rpm=8)
    assert await admitted(counters, [key, route], 7) == 5
    refused = await counters.admit([key, route])
    assert isinstance(refused, Refused) and (refused.scope, refused.kind, refused.current) == (key, "rpm", 5)
    # The route counted 5, not 8: refused requests used up none of it.
    assert await admitted(counters, [Scope("key", "other", rpm=50), route], 10) == 3


async def test_tokens_are_reserved_then_settled_to_the_real_usage(counters):
    key = Scope("key", "app", tpm=1000)
    assert await admitted(counters, [key], 5, tokens=300) == 3  # 900 reserved, the 4th would make 1200
    await counters.settle([key], counters.admitted[0], tokens=0, nano=0)  # a failed call gives its 300 back
    assert await admitted(counters, [key], 2, tokens=300) == 1
    await counters.settle([key], counters.admitted[-1], tokens=100, nano=0)  # used 100 of its 300
    assert await admitted(counters, [key], 3, tokens=200) == 1


async def test_concurrency_slots_free_when_a_call_ends_or_its_deadline_passes(counters):
    key = Scope("key", "app", max_concurrent=2)
    assert await admitted(counters, [key], 3, deadline=T0 + 5) == 2
    await counters.settle([key], counters.admitted[1], 0, 0)
    assert await admitted(counters, [key], 2) == 1
    # A replica died holding the first slot: past its deadline the slot is swept.
    assert await admitted(counters, [key], 1, now=T0 + 6) == 1


async def test_a_budget_is_reserved_at_the_estimate_and_settled_at_the_real_cost(counters):
    key = Scope("key", "app", budget_usd=1.0, budget_period="day", track_spend=True)
    team = Scope("team", "t", budget_usd=10.0, track_spend=True)
    assert await admitted(counters, [key, team], 5, nano=NANO // 4) == 4  # 4 x $0.25 reserved
    refused = await counters.admit([key, team], nano=NANO // 4)
    assert isinstance(refused, Refused) and refused.kind == "budget" and refused.current == 0
    await counters.settle([key, team], counters.admitted[-1], tokens=0, nano=NANO // 10)  # really cost $0.10
    assert await counters.spent("key:app") == (NANO // 10, NANO // 10)
    assert await counters.spent("team:t") == (NANO // 10, NANO // 10)
    assert await admitted(counters, [key, team], 2, nano=NANO // 10) == 1  # 0.75 + 0.10 + 0.10 <= 1
    # A new UTC day starts a new daily budget; the team's monthly spend carries on.
    tomorrow = T0 + 86_400
    assert await counters.spent("key:app", now=tomorrow) == (0, NANO // 10)


async def test_spend_is_counted_for_keys_without_a_budget(counters):
    key = Scope("key", "free", track_spend=True)
    assert isinstance(await counters.admit([key]), Window)
    await counters.settle([key], counters.admitted[-1], tokens=10, nano=1234)
    assert await counters.spent("key:free") == (1234, 1234)


async def test_spend_of_a_costly_call_is_counted_to_the_nano_dollar(counters):
    """Redis took the amounts as Lua numbers, which it writes as '1e+14' from 10^14 on, and
    INCRBY refused them: a call of $100,000 or more broke the script for every tenant."""
    key = Scope("key", "rich", budget_usd=1e9, budget_period="day", track_spend=True)
    assert isinstance(await counters.admit([key], nano=123_456_789_012_345_678), Window)
    await counters.settle([key], counters.admitted[-1], tokens=10, nano=987_654_321_098_765_432)
    assert await counters.spent("key:rich") == (987_654_321_098_765_432,) * 2


@pytest.mark.redis
async def test_redis_spend_stops_at_the_cap_rather_than_fail_the_script(redis_server):
    """INCRBY past 64 bits is an error that failed the whole script call, other tenants'
    settlements with it; spend stops at the ledger's cap instead (review finding)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    counters = Counters(RedisCounters(client))
    key, other = Scope("key", "flood", track_spend=True), Scope("key", "bystander", track_spend=True)
    for _ in range(10):
        assert isinstance(await counters.admit([key]), Window)
        await counters.settle([key], counters.admitted[-1], tokens=1, nano=10**18, flush=False)
    assert isinstance(await counters.admit([other]), Window)
    await counters.settle([other], counters.admitted[-1], tokens=1, nano=5)  # in the same script call
    assert await counters.spent("key:flood") == (9 * 10**18, 9 * 10**18)
    assert await counters.spent("key:bystander") == (5, 5)
    await counters.impl.aclose()
    await client.aclose()


def test_which_scopes_apply():
    config = RateLimitsConfig(default_key_rpm=5, keys={"vip": 50}, routes={"auto": 8, "qwen/qwen3-32b": 3})
    assert scopes_for(Principal("app"), ("auto",), config) == (Scope("key", "app", 5), Scope("route", "auto", 8))
    assert scopes_for(Principal(None), ("auto", "qwen/qwen3-32b", "x"), config) == (
        Scope("route", "auto", 8),
        Scope("route", "qwen/qwen3-32b", 3),
    )
    key = VirtualKey("v", (Credential("h", "p", 0.0),), Limits(tpm=100, budget_usd=2.0, budget_period="day"))
    team = Limits(rpm=9)
    assert scopes_for(Principal("v", "t", key, team), (), config) == (
        Scope("key", "v", 5, 100, None, 2.0, "day", True),  # the YAML's default rpm fills in
        Scope("team", "t", 9, None, None, None, "month", True),
    )


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


def test_reset_times_are_formatted_as_openai_does():
    assert [format_reset(s) for s in (0.012, 1.0, 17.5, 360.0, 100.25)] == ["12ms", "1s", "17.5s", "6m0s", "1m40.25s"]


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


@pytest.mark.redis
async def test_with_redis_a_settlement_rides_with_the_next_admission_and_counts_before_it(redis_server):
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    counters = Counters(RedisCounters(client))
    key = Scope("key", "app", max_concurrent=1, track_spend=True)
    assert await admitted(counters, [key], 2) == 1
    await counters.settle([key], counters.admitted[0], tokens=5, nano=777, flush=False)
    assert counters.impl.pending  # queued, not sent
    assert await admitted(counters, [key], 1) == 1  # the slot freed by the settlement sent along
    assert not counters.impl.pending
    assert await counters.spent("key:app") == (777, 777)
    await counters.impl.aclose()
    await client.aclose()


async def test_local_spend_of_past_days_is_forgotten_not_kept_forever():
    counters = LocalCounters()
    day = 86_400.0
    for d in range(400):  # more than a year of days, 4 keys a day
        for k in range(4):
            scope = (Scope("key", f"k{k}", track_spend=True),)
            ask = Ask(f"t{d}.{k}", 0, 0, T0 + d * day + 600)
            counters.settle(scope, ask, 0, 0, 5, Clock.at(T0 + d * day))
    assert counters.spend_periods <= 1000 + 8
    last = Clock.at(T0 + 399 * day)
    assert counters.spent("key:k0", last)[0] == 5  # today's spend is still there


def test_local_spend_of_many_keys_today_is_not_swept_again_on_every_new_key():
    """Past 1,000 (scope, period) totals, every new key's first spend rebuilt the whole table
    to forget past periods, forgetting nothing when all were today's: 3,000 keys cost 5,000
    rebuilds of a table of thousands. The bound now grows with what is current, so a sweep
    runs again only once the table has doubled."""
    counters = LocalCounters()
    clock = Clock.at(T0)
    for k in range(3000):
        counters.settle((Scope("key", f"k{k}", track_spend=True),), Ask(f"t{k}", 0, 0, T0 + 600), 0, 0, 5, clock)
    assert counters.spend_periods == 6000  # a day and a month total per key, all current
    assert counters.spend_sweeps == 3  # at 1,000 totals, then 2,000, then 4,000
    assert all(counters.spent(f"key:k{k}", clock) == (5, 5) for k in (0, 1500, 2999))
    # Past periods still go: the next day's spend sweeps yesterday's 3,000 day totals.
    tomorrow = Clock.at(T0 + 86_400)
    for k in range(2100):
        counters.settle((Scope("key", f"k{k}", track_spend=True),), Ask(f"u{k}", 0, 0, T0 + 90_000), 0, 0, 7, tomorrow)
    assert counters.spend_periods < 6000 + 2100
    assert counters.spent("key:k0", tomorrow)[0] == 7


@pytest.mark.redis
async def test_settlements_that_cannot_reach_redis_are_kept_and_sent_once_it_answers(redis_server):
    from redis.asyncio import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    client = Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    counters = Counters(RedisCounters(client))
    key = Scope("key", "app", track_spend=True)
    assert isinstance(await counters.admit([key]), Window)
    await counters.settle([key], counters.admitted[0], tokens=1, nano=500, flush=False)
    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await counters.impl.flush()
    assert counters.impl.pending
    redis_server.start()  # restarted empty
    await counters.impl.flush()
    assert not counters.impl.pending
    assert await counters.spent("key:app") == (500, 500)
    await counters.impl.flush()  # nothing left to send twice
    assert await counters.spent("key:app") == (500, 500)
    await counters.impl.aclose()
    await client.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("lean", [True, False], ids=["script client", "redis-py"])
async def test_settlements_redis_refuses_at_maxmemory_are_kept_and_sent_once_it_takes_them(redis_server, lean):
    """Hostile testing: at `maxmemory` (`noeviction`) Redis refuses the script with an OOM
    error before it writes anything; the settlements it carried were dropped, so the ticket
    of a call that had ended held its `max_concurrent` slot until its deadline and its spend
    was lost. Through both clients (redis-py names the error by class, without its prefix)."""
    from redis.asyncio import Redis
    from redis.exceptions import ResponseError

    client = Redis.from_url(redis_server.url)
    counters = Counters(RedisCounters(client, lean=lean))
    key = Scope("key", "app", tpm=1000, max_concurrent=1, track_spend=True)
    assert isinstance(await counters.admit([key], tokens=100), Window)
    # Fewer tokens than reserved: the settlement's first write is the tpm correction.
    await counters.settle([key], counters.admitted[0], tokens=40, nano=500, flush=False)
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", 1)
    try:
        with pytest.raises(ResponseError):
            await counters.impl.flush()
    finally:
        await client.config_set("maxmemory", 0)
    assert counters.impl.pending
    await counters.impl.flush()
    assert not counters.impl.pending
    assert isinstance(await counters.admit([key], tokens=100), Window)  # the ended call's slot is free
    assert await counters.spent("key:app") == (500, 500)
    await counters.impl.aclose()
    await client.aclose()


@pytest.mark.parametrize("rpm", [1, 2, 10, 60])
@pytest.mark.parametrize("step", [0.5, 23.0, 39.0])  # within the window of the calls (T0 is 20 s in)
async def test_a_client_honouring_retry_after_on_an_rpm_refusal_is_admitted_then(rpm, step):
    """Hostile testing: the wait was until the estimate fell below rpm, but admission needs
    room for one more (estimate + 1 <= rpm): a client sleeping the Retry-After was refused
    again, for up to 60/rpm seconds (at rpm 1: 17 s said, 77 s in fact)."""
    now = [T0]
    limiter = RateLimiter(clock=lambda: now[0])
    for _ in range(rpm):
        assert await limiter.model_limit("m", rpm) is None
    now[0] = T0 + step  # refused at this point of the window
    wait = await limiter.model_limit("m", rpm)
    assert wait is not None and wait > 0
    if wait > 1.0:
        now[0] = T0 + step + wait - 1.0
        assert await limiter.model_limit("m", rpm) is not None  # not a second early
    now[0] = T0 + step + wait
    assert await limiter.model_limit("m", rpm) is None  # admitted when it said


async def test_seeded_spend_counts_today_for_the_day_and_this_month_for_the_month():
    """Without Redis, a restarted gateway starts its spend counts from the ledger's rows
    (`UsageStore.day_spends`): a row of today counts for the day and the month, an earlier
    day of this month for the month alone, last month's for neither."""
    from datetime import UTC, date, datetime

    from gateway.usage.spend import DaySpend

    now = datetime(2026, 3, 5, 10, 30, tzinfo=UTC).timestamp()
    limiter = RateLimiter(clock=lambda: now)
    limiter.seed_spend(
        [
            DaySpend("solo", None, date(2026, 3, 5), 250_000_000),
            DaySpend("solo", None, date(2026, 3, 1), 1_000_000_000),
            DaySpend("solo", None, date(2026, 2, 28), 7_000_000_000),
            DaySpend("a", "platform", date(2026, 3, 5), 100_000_000),
            DaySpend("b", "platform", date(2026, 3, 4), 200_000_000),
            DaySpend(None, "lonely", date(2026, 3, 5), 5),
        ]
    )
    assert await limiter.spent("key:solo") == (0.25, 1.25)
    assert await limiter.spent("team:platform") == (0.1, pytest.approx(0.3))
    assert await limiter.spent("key:a") == (0.1, 0.1)
    assert await limiter.spent("key:b") == (0.0, 0.2)
    assert await limiter.spent("team:lonely") == (5e-9, 5e-9)
    assert await limiter.spent("key:None") == (0.0, 0.0)  # a row without a key seeds no key


def test_a_spent_budget_tells_the_sdks_not_to_retry_only_past_the_wait_they_would_sit_out():
    """The openai SDK sits out a Retry-After of up to 120 s and then succeeds after the reset:
    only a longer wait says `x-should-retry: false` (at 60 s, a refusal 90 s before the month's
    end told it to give up on a wait it would have sat out)."""
    from datetime import UTC, datetime

    from gateway.protocol.errors import SDK_WAIT_MAX_S
    from gateway.ratelimit import _refusal
    from gateway.tenants.limits import Ask, Clock, Refused, Scope

    scope = Scope("key", "tiny", budget_usd=1.0, budget_period="month")
    spent = Refused(scope, "budget", current=1e9)  # the whole dollar, in nano-dollars
    month_end = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    ask = Ask("t", 10, 1000, deadline=month_end)
    assert SDK_WAIT_MAX_S == 120.0
    soon = _refusal(spent, ask, Clock.at(month_end - 90), "chat")
    assert soon.headers == {"retry-after": "90"}
    later = _refusal(spent, ask, Clock.at(month_end - 200), "chat")
    assert later.headers == {"x-should-retry": "false"}  # and no Retry-After, Codex CLI sleeps any
    assert "Retry after 200s." in later.message
