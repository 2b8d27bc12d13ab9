"""Stored responses in Redis, shared by every replica: a conversation continues on any of them.

One hash per record, `gwresp:<id>` with fields `owner` and `data`, written with its TTL by
one Lua script (which leaves another owner's record alone), so Redis itself expires it (no
sweeper). Reads fetch both fields and compare the owner here; a delete compares it in a Lua
script, so it never removes another owner's record. A Redis that fails or times out is `StoreUnavailable`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.conversations.store import DEFAULT_LIMITS, ResponseStore, StoredResponse, StoreLimits, StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

PREFIX = "gwresp:"

# Write a record unless another owner's (live: Redis drops expired keys) holds the id.
# KEYS: the record. ARGV: owner, data, TTL in ms.
_PUT_OWNED = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'data', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_DELETE_OWNED = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
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
        try:
            return bool(await self._put_owned(keys=[PREFIX + response_id], args=[owner, data, ttl_ms]))
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
            return bool(await self._delete_owned(keys=[PREFIX + response_id], args=[owner]))
        except RedisError as exc:
            raise StoreUnavailable(f"the response store (Redis) failed: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
