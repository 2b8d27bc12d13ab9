"""The interface of a stored-responses store, and what one record holds.

A record is one Response object as the client received it (what `GET /v1/responses/{id}`
returns) plus the conversation items a request with `previous_response_id` set to it
continues from. Each record belongs to an owner (the client key's name that created it;
one owner for everyone on a gateway without keys): every read and delete names the owner,
and a record of another owner is as absent as one that never existed, so nothing tells a
key that an id exists under someone else.

Bounded twice: a record whose serialised form exceeds `max_record_bytes` is not stored
(`put` says so; the client's answer is unaffected), and every record expires `ttl_s` after
it was written (the retention). A store that fails (Redis unreachable, SQLite locked for
too long) raises `StoreUnavailable`; the caller decides what that means for its request.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import orjson

DAY_S = 86_400.0
DEFAULT_RETENTION_DAYS = 30
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024


class StoreUnavailable(Exception):
    """The store could not be read or written; the message says why, without secrets."""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """How long records live and how large one may be."""

    ttl_s: float = DEFAULT_RETENTION_DAYS * DAY_S
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Response the gateway produced, and the items its continuation starts from."""

    response: dict[str, Any]
    items: list[dict[str, Any]]

    @property
    def id(self) -> str:
        return str(self.response["id"])

    def encode(self) -> bytes:
        return orjson.dumps({"response": self.response, "items": self.items})

    @classmethod
    def decode(cls, data: bytes | str) -> StoredResponse:
        value = orjson.loads(data)
        return cls(value["response"], value["items"])


class ResponseStore(abc.ABC):
    """Where stored responses live. All methods are safe to call from the event loop."""

    name: str = "store"

    def __init__(self, limits: StoreLimits) -> None:
        self.limits = limits

    async def put(self, owner: str, record: StoredResponse) -> bool:
        """Store `record` for `owner`; False (nothing stored) when it is over the size limit."""
        data = record.encode()
        if len(data) > self.limits.max_record_bytes:
            return False
        await self._put(owner, record.id, data)
        return True

    @abc.abstractmethod
    async def _put(self, owner: str, response_id: str, data: bytes) -> None:
        """Write the encoded record, replacing one with the same id, to expire after the TTL."""

    @abc.abstractmethod
    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The record, or None if it does not exist, has expired or is another owner's."""

    @abc.abstractmethod
    async def delete(self, owner: str, response_id: str) -> bool:
        """Delete the owner's record; False if there was none to delete (or not theirs)."""

    async def aclose(self) -> None:
        return None
