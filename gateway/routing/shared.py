"""Sharing observed stats and circuit state between replicas through Redis.

The routing decision never waits on Redis: it reads `LiveState`, in memory. This background
task pushes what `LiveState` folded into `pending` since the last round (one Lua script
call per backend+model that saw traffic, so EWMAs and failure counts merge atomically
whatever the number of replicas) and pulls the merged values back, every
`gateway.routing.shared_sync_s`. Each replica thus routes by what all of them saw, a
fraction of a second late, for a few Redis calls a second rather than one or more per
request. If Redis is unreachable the gateway keeps routing on its own observations and
pushes them, still folded, once it is back. Push and pull fail apart: observations a push
applied are never sent again (a failure sent twice would count twice), even if the pull
after it fails; only those a push did not apply are folded into the next round.

Keys, all under one hash tag so that every script's keys live in one Redis Cluster slot:
`{gw:routing}:keys` (set of `backend\\x1fmodel`) and one hash per backend+model,
`{gw:routing}:k:<backend>\\x1f<model>`. Both expire `ttl_s` (a day) after the last push
that touched them, and a pull removes from the set the members whose hash has expired, so
a backend+model no replica serves any more leaves Redis within a day. Every key a script
touches is passed in its KEYS.

Earlier versions used untagged keys (`gw:routing:...`): during a rolling upgrade old and
new replicas do not see each other's observations (each group shares within itself), and
the old keys expire a day after the last old replica stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.routing.deltas import PendingShare
from gateway.routing.live import LiveState
from gateway.routing.stats import Key, Observed

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("gateway.routing")

PREFIX = "{gw:routing}:"
KEYSET = PREFIX + "keys"
TTL_S = 86400
_SEP = "\x1f"

# ARGV: member, reset (0/1), failures, failed_at, threshold, blocked_until, alpha, updated_at,
#       ttft kept, ttft observed, tps kept, tps observed, ttl, latency kept, latency observed,
#       then the kept ttft, tps and latency samples.
# KEYS: the backend+model's hash, the key set.
_APPLY = """
local h = KEYS[1]
local ttl = ARGV[13]
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ttl)
local alpha = tonumber(ARGV[7])
local function merge(field, count_field, first, kept, observed)
  if observed == 0 then return end
  local prev = redis.call('HGET', h, field)  -- false when unset
  local value = nil
  if prev then value = tonumber(prev) end
  -- samples dropped locally (the oldest) still count, as they did in the local EWMA
  local n = tonumber(redis.call('HGET', h, count_field) or '0') + observed - kept
  for i = first, first + kept - 1 do
    local x = tonumber(ARGV[i])
    if value == nil then value = x else value = value + math.max(alpha, 1 / (n + 1)) * (x - value) end
    n = n + 1
  end
  redis.call('HSET', h, field, string.format('%.6f', value), count_field, n, 'updated_at', ARGV[8])
end
local ttft_kept, tps_kept, latency_kept = tonumber(ARGV[9]), tonumber(ARGV[11]), tonumber(ARGV[14])
merge('ttft', 'samples', 16, ttft_kept, tonumber(ARGV[10]))
merge('tps', 'tps_samples', 16 + ttft_kept, tps_kept, tonumber(ARGV[12]))
merge('latency', 'latency_samples', 16 + ttft_kept + tps_kept, latency_kept, tonumber(ARGV[15]))
if ARGV[2] == '1' then
  redis.call('HSET', h, 'failures', 0, 'opened_at', 0)
end
local failures = tonumber(ARGV[3])
if failures > 0 then
  local total = redis.call('HINCRBY', h, 'failures', failures)
  local opened = tonumber(redis.call('HGET', h, 'opened_at') or '0')
  if opened > 0 or total >= tonumber(ARGV[5]) then redis.call('HSET', h, 'opened_at', ARGV[4]) end
end
local blocked = tonumber(ARGV[6])
if blocked > 0 and blocked > tonumber(redis.call('HGET', h, 'blocked_until') or '0') then
  redis.call('HSET', h, 'blocked_until', ARGV[6])
end
redis.call('EXPIRE', h, ttl)
return 1
"""

# Reads every listed backend+model's hash; drops from the key set those that expired.
# KEYS: the key set, then the hashes; ARGV: the members the hashes belong to, in that order.
_READ = """
local rows = {}
for i = 2, #KEYS do
  local row = redis.call('HGETALL', KEYS[i])
  if #row == 0 then redis.call('SREM', KEYS[1], ARGV[i - 1]) end
  rows[i - 1] = row
end
return rows
"""


def member(key: Key) -> str:
    return key[0] + _SEP + key[1]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def hash_key(name: str) -> str:
    return PREFIX + "k:" + name


def script_args(name: str, share: PendingShare, ttl_s: int = TTL_S) -> list[str | int | float]:
    """The script's ARGV for one backend+model's folded observations."""
    return [
        name,
        1 if share.reset else 0,
        share.failures,
        repr(share.failed_at),
        share.threshold,
        repr(share.blocked_until),
        repr(share.alpha),
        repr(share.updated_at),
        len(share.ttft),
        share.ttft_count,
        len(share.tps),
        share.tps_count,
        ttl_s,
        len(share.latency),
        share.latency_count,
        *map(repr, share.ttft),
        *map(repr, share.tps),
        *map(repr, share.latency),
    ]


def _float(raw: dict[str, str], field: str) -> float | None:
    value = raw.get(field)
    return float(value) if value is not None else None


class SharedLiveState:
    """Keeps one `LiveState` in step with every other replica's through Redis."""

    def __init__(
        self,
        redis: Redis,
        live: LiveState,
        interval_s: float = 0.5,
        ttl_s: int = TTL_S,
        on_sync_failure: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.live = live
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.sync_failures = 0  # consecutive, for the log; every one is also counted by `on_sync_failure`
        # Told of each failed round (`gateway_routing_stats_sync_failures_total`): the log speaks
        # once per outage, so without it a Redis failing every other round went unseen.
        self._on_sync_failure = on_sync_failure
        live.share_with_replicas()
        self._script = redis.register_script(_APPLY)
        self._read = redis.register_script(_READ)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sync_once()

    async def sync_once(self) -> bool:
        taken = self.live.take_pending()
        try:
            await self._push(taken)
        except Exception as exc:
            return self._failed(exc)
        # Pushed: whatever happens to the pull, these observations are in Redis now and must
        # not be sent again (a failure pushed twice would open the shared circuit early).
        try:
            await self._pull()
        except Exception as exc:
            return self._failed(exc)
        if self.sync_failures:
            log.info("routing stats shared through Redis again after %d failed syncs", self.sync_failures)
        self.sync_failures = 0
        return True

    def _failed(self, exc: Exception) -> bool:
        self.sync_failures += 1
        if self._on_sync_failure is not None:
            self._on_sync_failure()
        if self.sync_failures == 1:
            log.warning("cannot share routing stats through Redis (%s); routing on local observations", exc)
        return False

    async def _push(self, taken: dict[Key, PendingShare]) -> None:
        """Apply `taken`; what was not applied is put back, to be pushed again next round,
        folded with what comes meanwhile. If the connection fails, every share is put back:
        a script whose answer was lost may then apply twice, the rarer and lesser error."""
        if not taken:
            return
        # A context manager: a pipeline whose script check (`SCRIPT EXISTS`, before its own
        # commands) fails or times out still holds its connection, which only its exit returns
        # to the pool (else it stays in use for good, and its collection warns "Unclosed
        # Pipeline client").
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, share in taken.items():
                name = member(key)
                await self._script(
                    keys=[hash_key(name), KEYSET], args=script_args(name, share, self.ttl_s), client=pipe
                )
            try:
                results = await pipe.execute(raise_on_error=False)
            except BaseException:
                self.live.put_back(taken)
                raise
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            self.live.put_back(
                {key: share for (key, share), result in zip(taken.items(), results) if isinstance(result, Exception)}
            )
            raise errors[0]

    async def _pull(self) -> None:
        members = await self.redis.smembers(KEYSET)
        if not members:
            return
        names = sorted(_text(m) for m in members)
        rows = await self._read(keys=[KEYSET, *map(hash_key, names)], args=names)
        for name, row in zip(names, rows):
            if not row or _SEP not in name:
                continue
            raw = {_text(k): _text(v) for k, v in zip(row[::2], row[1::2])}
            backend, model = name.split(_SEP, 1)
            key = (backend, model)
            observed = Observed(
                ttft_s=_float(raw, "ttft"),
                tokens_per_s=_float(raw, "tps"),
                samples=int(raw.get("samples", 0)),
                tps_samples=int(raw.get("tps_samples", 0)),
                updated_at=_float(raw, "updated_at") or 0.0,
                latency_s=_float(raw, "latency"),
                latency_samples=int(raw.get("latency_samples", 0)),
            )
            if observed.samples or observed.tps_samples or observed.latency_samples:
                self.live.stats.replace(key, observed)
            self.live.circuits.replace(
                key,
                int(raw.get("failures", 0)),
                _float(raw, "opened_at") or 0.0,
                _float(raw, "blocked_until") or 0.0,
            )
