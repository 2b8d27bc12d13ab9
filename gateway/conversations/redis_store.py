"""Stored responses in Redis, shared by every replica: a conversation continues on any of them.

One hash per record, `gwresp:<id>` with fields `owner` and `data`, written with its TTL by
one Lua script (which leaves another owner's record alone), so Redis itself expires it (no
sweeper). Reads fetch both fields and compare the owner here; a delete compares it in a Lua
script, so it never removes another owner's record. A Redis that fails or times out is `StoreUnavailable`.

Each owner's byte budget is kept beside its records: `gwresp-owner:<owner>` (a sorted set of
its record ids by write time) and `gwresp-sizes:<owner>` (id -> size, and `_total`), both
expiring with the owner's newest record. The write script forgets entries older than the
TTL (their records expired on their own), then evicts the oldest records while the total is
past the budget.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.conversations.store import DEFAULT_LIMITS, ResponseStore, StoredResponse, StoreLimits, StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

PREFIX = "gwresp:"

OWNER_IDS = "gwresp-owner:"
OWNER_SIZES = "gwresp-sizes:"

# Write a record unless another owner's (live: Redis drops expired keys) holds the id, then
# keep the owner's records within its byte budget, oldest evicted first.
# KEYS: the record, the owner's ids, the owner's sizes. ARGV: owner, data, TTL in ms, now in
# ms, the id, the budget in bytes.
_PUT_OWNED = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
    return 0
end
local ttl, now, id, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local function forget(old)
    local size = tonumber(redis.call('HGET', KEYS[3], old) or '0')
    redis.call('HDEL', KEYS[3], old)
    redis.call('ZREM', KEYS[2], old)
    if size > 0 then
        redis.call('HINCRBY', KEYS[3], '_total', -size)
    end
end
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
    forget(old)  -- expired on its own
end
forget(id)  -- replaced: counted again below
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'data', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, id)
redis.call('HSET', KEYS[3], id, string.len(ARGV[2]))
local total = redis.call('HINCRBY', KEYS[3], '_total', string.len(ARGV[2]))
while total > budget do
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if oldest == nil or oldest == id then
        break
    end
    forget(oldest)
    redis.call('DEL', ARGV[7] .. oldest)
    total = tonumber(redis.call('HGET', KEYS[3], '_total'))
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
"""

# KEYS: the record, the owner's ids, the owner's sizes. ARGV: owner, the id.
_DELETE_OWNED = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
    local size = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
    redis.call('HDEL', KEYS[3], ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
    if size > 0 then
        redis.call('HINCRBY', KEYS[3], '_total', -size)
    end
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisResponseStore(ResponseStore):
    name = "redis"

    def __init__(self, redis: Redis, limits: StoreLimits = DEFAULT_LIMITS, *, owns_client: bool = False) -> None:
        super().__init__(limits)
        self.redis = redis
        self._owns_client = owns_client
        self._delete_owned = redis.register_script(_DELETE_OWNED)
        self._put_owned = redis.register_script(_PUT_OWNED)

    async def _put(self, owner: str, response_id: str, data: bytes) -> bool:
        ttl_ms = max(int(self.limits.ttl_s * 1000), 1)
        keys = [PREFIX + response_id, OWNER_IDS + owner, OWNER_SIZES + owner]
        now_ms = int(time.time() * 1000)
        args: list[str | bytes | int] = [owner, data, ttl_ms, now_ms, response_id, self.limits.max_owner_bytes, PREFIX]
        try:
            return bool(await self._put_owned(keys=keys, args=args))
        except RedisError as exc:
            raise StoreUnavailable(f"the response store (Redis) failed: {type(exc).__name__}") from None

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        try:
            stored_owner, data = await self.redis.hmget(PREFIX + response_id, ["owner", "data"])
        except RedisError as exc:
            raise StoreUnavailable(f"the response store (Redis) failed: {type(exc).__name__}") from None
        if data is None or stored_owner is None or _text(stored_owner) != owner:
            return None
        return StoredResponse.decode(data)

    async def delete(self, owner: str, response_id: str) -> bool:
        try:
            keys = [PREFIX + response_id, OWNER_IDS + owner, OWNER_SIZES + owner]
            return bool(await self._delete_owned(keys=keys, args=[owner, response_id]))
        except RedisError as exc:
            raise StoreUnavailable(f"the response store (Redis) failed: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
