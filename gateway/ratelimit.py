"""The gateway's own rate limits: requests per minute per client key and per route.

The `rate_limits:` section of the routing YAML sets them (none by default). A window
slides, approximated from two fixed one-minute windows: this minute's count plus last
minute's weighted by how much of it still lies within the last 60 s. That is O(1) memory
per counter and, unlike plain fixed windows, lets no burst of twice the limit through
across a window boundary.

With Redis (GATEWAY_REDIS_URL) every replica counts in the same keys, checked and
incremented together by one Lua script in one round trip; without Redis each worker
process counts in its own memory. A Redis that fails or is slow never fails a request:
the limiter counts the error, logs it once per outage, and counts locally until Redis
answers again (fail open).

Key limits apply to authenticated client keys (GATEWAY_API_KEYS names); an open gateway
has no key to count by, so only its route limits apply.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.config.schema import RateLimitsConfig
from gateway.protocol.errors import GatewayError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from gateway.metrics import Metrics

log = logging.getLogger("gateway.ratelimit")

WINDOW_S = 60.0
_STRICTLY_AFTER = 0.05  # at the exact moment the estimate equals the limit it still refuses
# One hash tag for every counter: a script checks several limits (key and route) at once, and
# on Redis Cluster the keys of one script call must live in one slot.
KEY_PREFIX = "{gw:rl}:"

# KEYS: per limit, this window's key then the previous window's. ARGV: the previous
# window's weight, the keys' time to live (ms), then each limit. Checks every limit before
# counting any, so a request refused by one limit uses up none of the others.
# Returns {0, 0, 0} when admitted, else {index of the refusing limit, current, previous}.
_CHECK_AND_COUNT = """
local weight = tonumber(ARGV[1])
local n = #KEYS / 2
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  if previous * weight + current >= tonumber(ARGV[2 + i]) then
    return {i, current, previous}
  end
end
for i = 1, n do
  if redis.call('INCR', KEYS[2 * i - 1]) == 1 then
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[2])
  end
end
return {0, 0, 0}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # "key" or "route"
    name: str  # client key name, or route / model id
    per_minute: int

    @property
    def counter(self) -> str:
        return f"{self.scope}:{self.name}"


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: Limit
    retry_after_s: float

    def error(self) -> GatewayError:
        seconds = max(1, math.ceil(self.retry_after_s))
        what = "client key" if self.limit.scope == "key" else "model"
        return GatewayError(
            429,
            f"Rate limit reached for {what} `{self.limit.name}`: {self.limit.per_minute} requests per minute. "
            f"Retry after {seconds}s.",
            code="rate_limit_exceeded",
            headers={
                "retry-after": str(seconds),
                "x-ratelimit-limit-requests": str(self.limit.per_minute),
                "x-ratelimit-remaining-requests": "0",
            },
        )


def applicable_limits(config: RateLimitsConfig, key_name: str | None, target: str | None) -> tuple[Limit, ...]:
    """The limits one request counts against: its key's, and its route's (or model's)."""
    limits = []
    if key_name is not None:
        rpm = config.keys.get(key_name, config.default_key_rpm)
        if rpm:
            limits.append(Limit("key", key_name, rpm))
    if target is not None:
        rpm = config.routes.get(target)
        if rpm:
            limits.append(Limit("route", target, rpm))
    return tuple(limits)


def retry_after(limit: int, previous: float, current: float, elapsed: float) -> float:
    """Seconds until the sliding estimate drops below `limit` if no request comes meanwhile.

    `elapsed` is the fraction of the current window gone by. Within this window the
    estimate is previous * (1 - f) + current; in the next one, current * (1 - g).
    """
    if current < limit and previous > 0:
        fraction = 1.0 - (limit - current) / previous
        return max(fraction - elapsed, 0.0) * WINDOW_S + _STRICTLY_AFTER
    into_next = max(0.0, 1.0 - limit / current) if current else 0.0
    return (1.0 - elapsed + into_next) * WINDOW_S + _STRICTLY_AFTER


class LocalWindows:
    """Per-process counters: this window's and last window's count per limit."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}  # counter -> [window, current, previous]

    def _rolled(self, counter: str, window: int) -> list[int]:
        entry = self._counts.get(counter)
        if entry is None:
            entry = self._counts[counter] = [window, 0, 0]
        elif entry[0] != window:
            entry[2] = entry[1] if entry[0] == window - 1 else 0
            entry[1] = 0
            entry[0] = window
        return entry

    def check_and_count(self, limits: tuple[Limit, ...], window: int, elapsed: float) -> Refusal | None:
        entries = [self._rolled(limit.counter, window) for limit in limits]
        for limit, (_, current, previous) in zip(limits, entries):
            if previous * (1.0 - elapsed) + current >= limit.per_minute:
                return Refusal(limit, retry_after(limit.per_minute, previous, current, elapsed))
        for entry in entries:
            entry[1] += 1
        return None


class RateLimiter:
    def __init__(
        self,
        metrics: Metrics | None = None,
        redis: Redis | None = None,
        *,
        store_timeout_s: float = 0.5,
        store_retry_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._redis = redis
        self._script = redis.register_script(_CHECK_AND_COUNT) if redis is not None else None
        self._local = LocalWindows()
        self._store_timeout_s = store_timeout_s
        self._store_retry_s = store_retry_s
        self._clock = clock
        self._store_down_until = 0.0  # monotonic; while in the future, count locally

    async def admit(self, key_name: str | None, target: str | None, config: RateLimitsConfig) -> None:
        """Return if the request may go on; raise a 429 GatewayError if a limit is reached."""
        if not config.active:
            return
        limits = applicable_limits(config, key_name, target)
        if not limits:
            return
        now = self._clock()
        window = int(now // WINDOW_S)
        elapsed = (now % WINDOW_S) / WINDOW_S
        refusal = None
        if self._script is not None and time.monotonic() >= self._store_down_until:
            try:
                refusal = await self._check_shared(limits, window, elapsed)
            except Exception as exc:
                self._store_failed(exc)
                refusal = self._local.check_and_count(limits, window, elapsed)
            else:
                if self._store_down_until:
                    log.warning("rate-limit store answers again: limits are shared across replicas")
                    self._store_down_until = 0.0
        else:
            refusal = self._local.check_and_count(limits, window, elapsed)
        if refusal is not None:
            if self._metrics is not None:
                self._metrics.rate_limit_hit()
            raise refusal.error()

    async def _check_shared(self, limits: tuple[Limit, ...], window: int, elapsed: float) -> Refusal | None:
        keys = []
        for limit in limits:
            keys += [f"{KEY_PREFIX}{limit.counter}:{window}", f"{KEY_PREFIX}{limit.counter}:{window - 1}"]
        args = [1.0 - elapsed, int(2 * WINDOW_S * 1000) + 5000, *(limit.per_minute for limit in limits)]
        assert self._script is not None
        async with asyncio.timeout(self._store_timeout_s):
            index, current, previous = await self._script(keys=keys, args=args)
        if not index:
            return None
        limit = limits[int(index) - 1]
        return Refusal(limit, retry_after(limit.per_minute, int(previous), int(current), elapsed))

    def _store_failed(self, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.rate_limiter_error()
        if not self._store_down_until:
            log.error(
                "rate-limit store failed (%s: %s): counting locally, letting requests through, retrying in %gs",
                type(exc).__name__,
                exc,
                self._store_retry_s,
            )
        self._store_down_until = time.monotonic() + self._store_retry_s
