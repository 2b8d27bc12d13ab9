"""Sharing observed stats and circuit state between replicas through Redis.

The routing decision never waits on Redis: it reads `LiveState`, in memory. This background
task pushes the observations queued in `LiveState.outbox` (one Lua script call each, so
EWMAs and failure counts merge atomically whatever the number of replicas) and pulls the
merged values back, every `gateway.routing.shared_sync_s`. Each replica thus routes by what
all of them saw, a fraction of a second late. If Redis is unreachable the gateway keeps
routing on its own observations and retries the push later.

Keys: `gw:routing:keys` (set of `backend\\x1fmodel`) and one hash per backend+model,
`gw:routing:k:<backend>\\x1f<model>`, idle-expired after a day.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from gateway.routing.live import LiveState
from gateway.routing.stats import Key, Observed

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("gateway.routing")

PREFIX = "gw:routing:"
KEYSET = PREFIX + "keys"
_SEP = "\x1f"
OUTBOX_LIMIT = 20_000

_APPLY = """
local h, set, op = KEYS[1], KEYS[2], ARGV[1]
redis.call('SADD', set, ARGV[2])
if op == 'ttft' or op == 'tps' then
  local value, alpha = tonumber(ARGV[4]), tonumber(ARGV[5])
  local count_field = 'samples'
  if op == 'tps' then count_field = 'tps_samples' end
  local prev = redis.call('HGET', h, op)
  local n = tonumber(redis.call('HGET', h, count_field) or '0')
  local new = value
  if prev then new = tonumber(prev) + math.max(alpha, 1 / (n + 1)) * (value - tonumber(prev)) end
  redis.call('HSET', h, op, string.format('%.6f', new), 'updated_at', ARGV[3])
  redis.call('HINCRBY', h, count_field, 1)
elseif op == 'ok' then
  redis.call('HSET', h, 'failures', 0, 'opened_at', 0)
elseif op == 'fail' then
  local failures = redis.call('HINCRBY', h, 'failures', 1)
  local opened = tonumber(redis.call('HGET', h, 'opened_at') or '0')
  if opened > 0 or failures >= tonumber(ARGV[4]) then redis.call('HSET', h, 'opened_at', ARGV[3]) end
elseif op == 'block' then
  local current = tonumber(redis.call('HGET', h, 'blocked_until') or '0')
  if tonumber(ARGV[3]) > current then redis.call('HSET', h, 'blocked_until', ARGV[3]) end
end
redis.call('EXPIRE', h, 86400)
return 1
"""


def member(key: Key) -> str:
    return key[0] + _SEP + key[1]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float(raw: dict[str, str], field: str) -> float | None:
    value = raw.get(field)
    return float(value) if value is not None else None


class SharedLiveState:
    """Keeps one `LiveState` in step with every other replica's through Redis."""

    def __init__(self, redis: "Redis", live: LiveState, interval_s: float = 0.5) -> None:
        self.redis = redis
        self.live = live
        self.interval_s = interval_s
        self.sync_failures = 0  # consecutive; for logs and a metric later
        live.outbox = deque(maxlen=OUTBOX_LIMIT)
        self._script = redis.register_script(_APPLY)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sync_once()

    async def sync_once(self) -> bool:
        outbox = self.live.outbox
        assert outbox is not None
        ops = list(outbox)
        outbox.clear()
        try:
            await self._push(ops)
            await self._pull()
        except Exception as exc:  # noqa: BLE001 - Redis down: route on local observations
            outbox.extendleft(reversed(ops))  # try again next round (oldest dropped when full)
            self.sync_failures += 1
            if self.sync_failures == 1:
                log.warning("cannot share routing stats through Redis (%s); routing on local observations", exc)
            return False
        if self.sync_failures:
            log.info("routing stats shared through Redis again after %d failed syncs", self.sync_failures)
        self.sync_failures = 0
        return True

    async def _push(self, ops: list[tuple]) -> None:
        if not ops:
            return
        pipe = self.redis.pipeline(transaction=False)
        for op in ops:
            kind, key, *args = op
            name = member(key)
            await self._script(keys=[PREFIX + "k:" + name, KEYSET], args=[kind, name, *args], client=pipe)
        await pipe.execute()

    async def _pull(self) -> None:
        members = await self.redis.smembers(KEYSET)
        if not members:
            return
        names = sorted(_text(m) for m in members)
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(PREFIX + "k:" + name)
        rows = await pipe.execute()
        for name, row in zip(names, rows):
            if not row or _SEP not in name:
                continue
            raw = {_text(k): _text(v) for k, v in row.items()}
            backend, model = name.split(_SEP, 1)
            key = (backend, model)
            observed = Observed(
                ttft_s=_float(raw, "ttft"),
                tokens_per_s=_float(raw, "tps"),
                samples=int(raw.get("samples", 0)),
                tps_samples=int(raw.get("tps_samples", 0)),
                updated_at=_float(raw, "updated_at") or 0.0,
            )
            if observed.samples or observed.tps_samples:
                self.live.stats.replace(key, observed)
            self.live.circuits.replace(
                key,
                int(raw.get("failures", 0)),
                _float(raw, "opened_at") or 0.0,
                _float(raw, "blocked_until") or 0.0,
            )
