"""Stored responses in Redis, shared by every replica: a conversation continues on any of them.

One hash per record, `gwresp:<id>` with fields `owner` and `data`, written with its TTL in
one transaction, so Redis itself expires it (no sweeper). Reads fetch both fields and
compare the owner here; a delete compares it in a Lua script, so it never removes another
owner's record. A Redis that fails or times out is `StoreUnavailable`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.conversations.store import ResponseStore, StoreLimits, StoredResponse, StoreUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

PREFIX = "gwresp:"

_DELETE_OWNED = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisResponseStore(ResponseStore):
    name = "redis"

    def __init__(self, redis: Redis, limits: StoreLimits = StoreLimits(), *, owns_client: bool = False) -> None:
        super().__init__(limits)
        self.redis = redis
        self._owns_client = owns_client
        self._delete_owned = redis.register_script(_DELETE_OWNED)

    async def _put(self, owner: str, response_id: str, data: bytes) -> None:
        key = PREFIX + response_id
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping={"owner": owner, "data": data})
                pipe.pexpire(key, max(int(self.limits.ttl_s * 1000), 1))
                await pipe.execute()
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
