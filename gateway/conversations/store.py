"""The interface of a stored-responses store, and what one record holds.

A record is one Response object as the client received it (what `GET /v1/responses/{id}`
returns) plus the conversation items a request with `previous_response_id` set to it
continues from. Each record belongs to an owner (the client key's name that created it;
one owner for everyone on a gateway without keys): every read and delete names the owner,
and a record of another owner is as absent as one that never existed, so nothing tells a
key that an id exists under someone else.

Bounded three ways: a record whose serialised form exceeds `max_record_bytes` is not stored
(`put` says so; the client's answer is unaffected), every record expires `ttl_s` after it
was written (the retention), and one owner's live records together hold at most
`max_owner_bytes`: a write past it evicts that owner's oldest records first (a key that
keeps storing cannot fill the disk, or the Redis its rate limits live in). A store that fails (Redis unreachable, SQLite locked for
too long) raises `StoreUnavailable`; the caller decides what that means for its request.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Literal

import orjson

DAY_S = 86_400.0
DEFAULT_RETENTION_DAYS = 30
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_OWNER_BYTES = 256 * 1024 * 1024


PutResult = Literal["stored", "too_large", "id_taken", "not_encodable"]


class StoreUnavailable(Exception):
    """The store could not be read or written; the message says why, without secrets."""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """How long records live and how large one may be."""

    ttl_s: float = DEFAULT_RETENTION_DAYS * DAY_S
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_owner_bytes: int = DEFAULT_MAX_OWNER_BYTES  # one owner's live records together


DEFAULT_LIMITS = StoreLimits()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A Response the gateway produced, and the items its continuation starts from."""

    response: dict[str, Any]
    items: list[dict[str, Any]]
    # Where the request's own input starts in `items` (after the conversation it continued);
    # it ends where the response's output begins.
    input_from: int = 0

    @property
    def id(self) -> str:
        return str(self.response["id"])

    @property
    def input(self) -> list[dict[str, Any]]:
        """The input items of the request this response answered."""
        end = len(self.items) - len(self.response.get("output") or ())
        return self.items[self.input_from : max(end, self.input_from)]

    def encode(self) -> bytes:
        return orjson.dumps({"response": self.response, "items": self.items, "input_from": self.input_from})

    @classmethod
    def decode(cls, data: bytes | str) -> StoredResponse:
        value = orjson.loads(data)
        return cls(value["response"], value["items"], value.get("input_from", 0))


class ResponseStore(abc.ABC):
    """Where stored responses live. All methods are safe to call from the event loop."""

    name: str = "store"

    def __init__(self, limits: StoreLimits) -> None:
        self.limits = limits

    async def put(self, owner: str, record: StoredResponse) -> PutResult:
        """Store `record` for `owner`: `stored`, or why not: `too_large` (over the size
        limit), `id_taken` (a live record of another owner has this id: a backend answering
        natively chose the id, and one owner's record must never replace another's) or
        `not_encodable` (JSON nested deeper than orjson writes, in a field of the client's
        input that the translation did not read: parsed, never sent, so never refused)."""
        try:
            data = record.encode()
        except TypeError as exc:
            if "Recursion limit" not in str(exc):
                raise  # not the client's depth: a value that is not JSON is a bug, shown as one
            return "not_encodable"
        if len(data) > self.limits.max_record_bytes:
            return "too_large"
        return "stored" if await self._put(owner, record.id, data) else "id_taken"

    @abc.abstractmethod
    async def _put(self, owner: str, response_id: str, data: bytes) -> bool:
        """Write the encoded record to expire after the TTL, replacing one with the same id
        only if it is the same owner's or expired; False if another owner's live one is there.
        Then evict the owner's oldest records while their sizes add up past `max_owner_bytes`
        (never the one just written)."""

    @abc.abstractmethod
    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The record, or None if it does not exist, has expired or is another owner's."""

    @abc.abstractmethod
    async def delete(self, owner: str, response_id: str) -> bool:
        """Delete the owner's record; False if there was none to delete (or not theirs)."""

    async def aclose(self) -> None:
        return None
